"""Figures sent to the model as pictures (``repl.send_images = true``), within the budget.

A cell's result message carries, under ``IMAGES_KEY``, references to the figures it drew
(file name, size, description; never the bytes, so the journal holds no image). When a
request is built, :meth:`ImageParts.attach` turns the references of the newest exchange
into OpenAI image parts (``{"type": "image_url", "image_url": {"url": "data:image/png;
base64,..."}}``): in the result message itself when it is a user message, and in a user
message right after the tool replies when it is a tool message (the API takes images in
user messages only). Each image is counted at a fixed estimate (``tokens.image_tokens``);
one that does not fit what the budget has left stays its description, and the model is
told. Older exchanges' figures go as their descriptions only. A server that rejects a
request carrying images (HTTP 400) turns the images off for the rest of the session.
"""

from __future__ import annotations

import base64
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from llmrepl.context.budget import NOTE_PREFIX, FitResult, is_llmrepl_note
from llmrepl.context.prompts import display_text, is_image
from llmrepl.context.tokens import TokenCounter, image_tokens, png_size

if TYPE_CHECKING:
    from llmrepl.execution.executor import ExecResult

__all__ = ["IMAGES_KEY", "MAX_IMAGES", "ImageParts"]

IMAGES_KEY = "llmrepl_images"  # llmrepl's own key on a message: never sent as it is
MAX_IMAGES = 8                  # images in one request, newest first
_MAX_PNG = 20 << 20             # OpenAI's limit per image
_PNG = b"\x89PNG\r\n\x1a\n"

Message = dict[str, Any]


class ImageParts:
    """Whether figures go to the model as images, and turning references into parts."""

    def __init__(self, *, enabled: bool = False) -> None:
        self.enabled = enabled
        self.rejected = False        # a server refused a request with images: none from now on
        self.sent = 0                # images in the request built last
        self._png: OrderedDict[str, bytes] = OrderedDict()  # the newest figures' bytes, by file

    @property
    def active(self) -> bool:
        return self.enabled and not self.rejected

    def reject(self) -> None:
        """The server answered a request with images with a 400: send none from now on."""
        self.rejected = True

    def refs(self, result: ExecResult) -> dict[str, Any]:
        """``{IMAGES_KEY: [...]}`` for the result message of ``result`` (empty when images are
        off or it drew nothing): each figure's file, size, description, cell."""
        if not self.active:
            return {}
        items = [*(getattr(result, "displays", None) or []), getattr(result, "value_data", None)]
        refs = []
        for item in items:
            if item is None or not is_image(item):
                continue
            meta = getattr(item, "metadata", None) or {}
            png = (getattr(item, "data", None) or {}).get("image/png")
            path = meta.get("filename")
            if not isinstance(path, str) or not path:
                continue
            if isinstance(png, bytes) and png.startswith(_PNG):
                self._remember(path, png)
            size = png_size(png[:24]) if isinstance(png, bytes) else None
            w, h = meta.get("width"), meta.get("height")  # ints from llmrepl, or the PNG's own
            refs.append({"path": path, "cell": result.cell, "text": display_text(item),
                         "width": w if type(w) is int and 0 < w <= 10**6 else (size or (0, 0))[0],
                         "height": h if type(h) is int and 0 < h <= 10**6 else (size or (0, 0))[1]})
        return {IMAGES_KEY: refs} if refs else {}

    def attach(self, fit: FitResult, budget: int, counter: TokenCounter) -> list[Message]:
        """``fit.messages`` as they may be sent: image references of the newest exchange made
        image parts while the budget lasts (``fit.tokens`` grows by what they cost), every
        other reference taken out."""
        self.sent = 0
        messages = fit.messages
        if not any(IMAGES_KEY in m for m in messages):
            return messages
        if not self.active:
            return [_without(m) for m in messages]
        start = max((i for i, m in enumerate(messages) if m.get("role") == "user" and not is_llmrepl_note(m)
                     and isinstance(m.get("content"), str)), default=0)
        room = budget - fit.tokens
        chosen: dict[int, list[tuple[dict[str, Any], bytes | None]]] = {}
        for i in range(len(messages) - 1, start - 1, -1):
            for ref in reversed(messages[i].get(IMAGES_KEY) or []):
                png = self._read(ref.get("path"))
                cost = image_tokens(ref.get("width"), ref.get("height")) + counter.count(_label(ref)) + 4
                fits = png is not None and cost <= room and self.sent < MAX_IMAGES
                if fits:
                    room -= cost
                    self.sent += 1
                    fit.tokens += cost
                    fit.parts["images"] = fit.parts.get("images", 0) + cost
                chosen.setdefault(i, []).insert(0, (ref, png if fits else None))
        out: list[Message] = []
        pending: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            parts = _parts(chosen.get(i, []))
            clean = _without(message)
            if message.get("role") == "tool":
                out.append(clean)
                pending += parts
            elif parts and message.get("role") == "user":
                out.append({**clean, "content": [{"type": "text", "text": str(clean.get("content") or "")}, *parts]})
            else:
                out.append(clean)
            following = messages[i + 1] if i + 1 < len(messages) else None
            if pending and (following is None or following.get("role") != "tool"):
                out.append({"role": "user", "content": [
                    {"type": "text", "text": f"{NOTE_PREFIX}The figures from the cells above, as images:"}, *pending]})
                pending = []
        return out

    def _remember(self, path: str, png: bytes) -> None:
        self._png[path] = png
        self._png.move_to_end(path)
        while len(self._png) > MAX_IMAGES:
            self._png.popitem(last=False)

    def _read(self, path: Any) -> bytes | None:
        """The PNG of a figure this session drew: kept from the cell, else read back (a file of
        at most 20 MiB that starts like a PNG; a message restored from a journal has no
        references, so only paths llmrepl's own executor reported get here)."""
        if not isinstance(path, str):
            return None
        if path in self._png:
            return self._png[path]
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_PNG + 1)
        except OSError:
            return None
        if len(data) > _MAX_PNG or not data.startswith(_PNG):
            return None
        self._remember(path, data)
        return data


def _label(ref: dict[str, Any]) -> str:
    return f"{os.path.basename(str(ref.get('path')))} (cell {ref.get('cell')}):"


def _parts(chosen: list[tuple[dict[str, Any], bytes | None]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for ref, png in chosen:
        if png is None:
            parts.append({"type": "text", "text": f"{NOTE_PREFIX}{_label(ref)[:-1]} was not sent as an image: "
                          "it does not fit the token budget (or could not be read); its description "
                          "is in the cell's result."})
            continue
        parts.append({"type": "text", "text": _label(ref)})
        parts.append({"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}})
    return parts


def _without(message: Message) -> Message:
    if IMAGES_KEY not in message:
        return message
    return {k: v for k, v in message.items() if k != IMAGES_KEY}
