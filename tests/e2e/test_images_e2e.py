"""Figures drawn in the terminal, end to end (issue 12 item 4): the installed ``llmrepl`` in a
pty, a model that plots, and what reaches the terminal: the kitty (or sixel) escape whose
image is the saved PNG where the terminal draws images; the saved path where it does not
(tmux, ``inline_images = "off"``, output into a pipe)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pexpect
from launch import child_env, run, spawn

PLOT = ("```python\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 3, 2]); plt.title('three points')\n```")


def _one_shot_in_a_pty(server, **env: str) -> bytes:  # type: ignore[no-untyped-def]
    for reply in (PLOT, "Drawn."):
        server.reply(reply)
    child = spawn(["--base-url", server.base_url, "-y", "-c", "plot three points"],
                  env=child_env(tty=True, **env), encoding=None, timeout=120)
    try:
        child.expect(pexpect.EOF)
        out: bytes = child.before
    finally:
        child.close()
    assert child.exitstatus == 0, out[-2000:]
    return out


def _saved(home: Path) -> bytes:
    (png,) = sorted(home.glob("sessions/*/figure-001.png"))
    return png.read_bytes()


def test_kitty_draws_the_saved_figure(server, clean_env) -> None:  # type: ignore[no-untyped-def]
    out = _one_shot_in_a_pty(server, TERM="xterm-kitty")
    chunks = re.findall(rb"\x1b_G([^;]*);([A-Za-z0-9+/=]*)\x1b\\", out)
    assert chunks, out[-2000:]
    assert chunks[0][0].startswith(b"a=T,f=100,q=2,")
    assert base64.b64decode(b"".join(data for _, data in chunks)) == _saved(clean_env)
    assert b"Drawn." in out


def test_foot_gets_sixel(server, clean_env) -> None:  # type: ignore[no-untyped-def]
    out = _one_shot_in_a_pty(server, TERM="foot")
    m = re.search(rb'\x1bP0;1;0q"1;1;(\d+);(\d+)#0;2;', out)
    assert m is not None, out[-2000:]
    assert int(m[1]) <= 120 * 10 and int(m[2]) % 6 == 0  # fits the 120-column window
    assert b"\x1b_G" not in out


def test_no_image_escape_in_tmux_when_off_or_into_a_pipe(server, clean_env) -> None:  # type: ignore[no-untyped-def]
    for env in ({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-1/default,1,0"},
                {"TERM": "xterm-kitty", "LLMREPL_INLINE_IMAGES": "off"}):
        out = _one_shot_in_a_pty(server, **env)
        assert b"\x1b_G" not in out and b"\x1bP" not in out
        assert b"figure-001.png" in out  # the saved path instead
    for reply in (PLOT, "Drawn."):
        server.reply(reply)
    done = run(["--base-url", server.base_url, "-y", "-c", "plot three points"], timeout=120,
               TERM="xterm-kitty")
    assert done.returncode == 0, done.stderr
    assert "\x1b_G" not in done.stdout and "figure-001.png" in done.stdout
