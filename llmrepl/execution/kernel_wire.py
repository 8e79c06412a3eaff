"""Jupyter kernel messages on a Jupyter Server's kernel WebSocket, in both of its formats.

A server speaks ``v1.kernel.websocket.jupyter.org`` (Jupyter Server 2: one binary frame per
message, a table of little-endian offsets, then the channel name and the message's JSON parts)
when the client offers it, and the older JSON format otherwise (one text frame per message,
the channel as a key; a binary frame with 32-bit big-endian offsets when a message carries
buffers). This is jupyter_server's ``services/kernels/connection/base.py`` read from the
client's side. Every frame comes from the network: a malformed one decodes to ``None``,
never an exception. Stdlib only.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

__all__ = ["V1_PROTOCOL", "CHANNELS", "new_message", "encode", "decode"]

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
CHANNELS = ("shell", "iopub", "stdin", "control")
PROTOCOL_VERSION = "5.3"
_PARTS = ("header", "parent_header", "metadata", "content")


def new_message(msg_type: str, content: dict[str, Any], session: str,
                parent: dict[str, Any] | None = None) -> dict[str, Any]:
    """A message as jupyter_client's ``Session.msg`` makes it (no signature: the server signs
    what it forwards to the kernel with the kernel's key)."""
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "username": "llmrepl",
        "session": session,
        "date": datetime.now(timezone.utc).isoformat(),
        "version": PROTOCOL_VERSION,
    }
    return {"header": header, "msg_id": header["msg_id"], "msg_type": msg_type,
            "parent_header": dict(parent or {}), "metadata": {}, "content": content,
            "buffers": []}


def encode(msg: dict[str, Any], channel: str, protocol: str | None) -> bytes | str:
    """One frame: bytes for the v1 protocol, JSON text for the legacy one."""
    if protocol == V1_PROTOCOL:
        parts = [json.dumps(msg[k]).encode("utf-8") for k in _PARTS]
        name = channel.encode("ascii")
        offsets = [8 * (1 + 1 + len(parts) + 1)]
        offsets.append(offsets[-1] + len(name))
        for part in parts:
            offsets.append(offsets[-1] + len(part))
        table = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
        return table + name + b"".join(parts)
    body = {k: msg[k] for k in _PARTS}
    body["channel"] = channel
    return json.dumps(body)


def decode(frame: bytes | str, protocol: str | None) -> tuple[str, dict[str, Any]] | None:
    """``(channel, message)`` from one frame, the message shaped as jupyter_client returns it
    (``header``, ``parent_header``, ``metadata``, ``content``, ``buffers``, ``msg_id``,
    ``msg_type``); ``None`` for anything malformed."""
    try:
        if protocol == V1_PROTOCOL and isinstance(frame, bytes):
            found = _decode_v1(frame)
        elif isinstance(frame, bytes):
            found = _decode_legacy_binary(frame)
        else:
            found = _decode_legacy_text(frame)
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError, OverflowError):
        return None
    if found is None:
        return None
    channel, parts, buffers = found
    return _shaped(channel, parts, buffers)


def _decode_v1(frame: bytes) -> tuple[str, list[Any], list[bytes]] | None:
    if len(frame) < 8:
        return None
    count = int.from_bytes(frame[:8], "little")
    if count < 2 + len(_PARTS) or 8 * (count + 1) > len(frame):
        return None
    offsets = [int.from_bytes(frame[8 * (i + 1): 8 * (i + 2)], "little") for i in range(count)]
    if offsets != sorted(offsets) or offsets[0] < 8 * (count + 1) or offsets[-1] > len(frame):
        return None
    channel = frame[offsets[0]:offsets[1]].decode("ascii")
    pieces = [frame[offsets[i]:offsets[i + 1]] for i in range(1, count - 1)]
    parts = [json.loads(p) for p in pieces[: len(_PARTS)]]
    return channel, parts, pieces[len(_PARTS):]


def _decode_legacy_binary(frame: bytes) -> tuple[str, list[Any], list[bytes]] | None:
    if len(frame) < 4:
        return None
    count = int.from_bytes(frame[:4], "big")
    if count < 1 or 4 * (count + 1) > len(frame):
        return None
    offsets = [int.from_bytes(frame[4 * (i + 1): 4 * (i + 2)], "big") for i in range(count)]
    offsets.append(len(frame))
    if offsets != sorted(offsets) or offsets[0] < 4 * (count + 1):
        return None
    pieces = [frame[offsets[i]:offsets[i + 1]] for i in range(count)]
    found = _decode_legacy_text(pieces[0].decode("utf-8"))
    if found is None:
        return None
    return found[0], found[1], pieces[1:]


def _decode_legacy_text(frame: str) -> tuple[str, list[Any], list[bytes]] | None:
    body = json.loads(frame)
    if not isinstance(body, dict) or not isinstance(body.get("channel"), str):
        return None
    return body["channel"], [body.get(k) for k in _PARTS], []


def _shaped(channel: Any, parts: list[Any], buffers: list[bytes]) -> tuple[str, dict[str, Any]] | None:
    if channel not in CHANNELS or len(parts) != len(_PARTS):
        return None
    header, parent, metadata, content = parts
    if not isinstance(header, dict) or not isinstance(header.get("msg_type"), str):
        return None
    parent = parent if isinstance(parent, dict) else {}
    metadata = metadata if isinstance(metadata, dict) else {}
    if not isinstance(content, dict):
        return None
    msg = {"header": header, "parent_header": parent, "metadata": metadata, "content": content,
           "buffers": buffers, "msg_id": str(header.get("msg_id", "")),
           "msg_type": header["msg_type"]}
    return channel, msg
