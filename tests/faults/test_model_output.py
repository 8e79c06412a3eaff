"""Model output malformations (reliability.md §5 A): batch mode, the answer comes from the fake server.

Each test queues the faulty answer, runs ``llmrepl -y`` (so code that should run does), and
checks the four properties with ``assert_ok`` before the fault-specific expectations.
"""

from __future__ import annotations

import json

import pytest

from .harness import fault_run


def _user_cells(r):
    """cell_start records other than the harness's alive check."""
    return [e for e in r.events("cell_start") if "alive-" not in e["code"]]


def _outputs(r):
    return "\n".join(str(e.get("output", "")) for e in r.events("cell_end"))


def test_prose_only_no_code(server):
    """A1: prose only, no code fence — shown as the answer, nothing runs, no error."""
    server.reply("Paris is the capital of France.\nNo code needed.")
    r = fault_run(server, ["capital of france?"], yes=True)
    r.assert_ok(journaled=[("assistant", "Paris is the capital of France.")])
    assert "Paris is the capital of France." in r.stdout
    assert not _user_cells(r) and len(server.requests) == 1


def test_only_a_bash_block(server):
    """A4: only a bash block — not executed; the person is told llmrepl runs Python only."""
    server.reply("Run this in your shell:\n```bash\necho bash-block-ran && rm -rf /tmp/nothing\n```")
    r = fault_run(server, ["list files"], yes=True)
    r.assert_ok(journaled=[("assistant", "echo bash-block-ran")])
    assert not _user_cells(r)
    assert r.said("python only", "runs python"), r.excerpt()


def test_several_python_blocks(server):
    """A2: several Python blocks — all run, in order (none silently dropped)."""
    server.reply("First:\n```python\nprint('block-one')\n```\nThen:\n```python\nprint('block-two')\n```")
    server.reply("Both ran.")
    r = fault_run(server, ["two steps"], yes=True)
    r.assert_ok(journaled=[("cell_end", "block-one"), ("cell_end", "block-two")])
    out = _outputs(r)
    assert out.index("block-one") < out.index("block-two")


def test_unterminated_fence_at_end_of_stream(server):
    """A3: the stream ends inside an open fence — shown as incomplete, never run."""
    server.reply("Here you go:\n```python\nprint('unterminated-ran')\nx = 1\n")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok(journaled=[("assistant", "print('unterminated-ran')")])
    assert "unterminated-ran" not in _outputs(r)
    assert r.said("cut off", "incomplete", "unterminated", "not closed", "never closed"), r.excerpt()


def test_tilde_fence(server):
    """A5: a ``~~~`` fence is accepted as Python."""
    server.reply("~~~python\nprint('tilde-ran')\n~~~")
    server.reply("ok")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok(journaled=[("cell_end", "tilde-ran")])


def test_four_backtick_fence_wrapping_three(server):
    """A6: a 4-backtick fence whose code holds a ``` line keeps that line as code."""
    code = "s = '''\n```\n'''\nprint('inner-kept', len(s))"
    server.reply(f"````python\n{code}\n````")
    server.reply("ok")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok(journaled=[("cell_end", "inner-kept 5")])
    assert any(e["code"] == code for e in _user_cells(r))


def test_crlf_line_endings(server):
    """A5: an answer with CRLF line endings — the block runs, with no stray carriage returns."""
    server.reply("Run:\r\n```python\r\nx = 40 + 2\r\nprint('crlf-ran', x)\r\n```\r\n")
    server.reply("ok")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok(journaled=[("cell_end", "crlf-ran 42")])
    assert all("\r" not in e["code"] for e in _user_cells(r))


@pytest.mark.parametrize("tag", ["python3", "Python", "ipython"])
def test_python_tag_variants(server, tag):
    """A5: ``python3`` / ``Python`` / ``ipython`` tags are Python."""
    server.reply(f"```{tag}\nprint('tag-ran', {tag!r})\n```")
    server.reply("ok")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok(journaled=[("cell_end", f"tag-ran {tag}")])


def test_syntax_error_block_is_reported_without_running(server):
    """A9: a block that is a SyntaxError — nothing runs; the model is told it is a SyntaxError."""
    server.reply("```python\nprint('side-effect-' + 'ran')\nvalues = [1, 2\n```")
    server.reply("Sorry, fixed soon.")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok()
    assert "side-effect-ran" not in r.stdout and "side-effect-ran" not in _outputs(r)
    assert r.said("SyntaxError"), r.excerpt()
    assert len(server.requests) == 2, "the model should be asked to fix the code"
    fed_back = server.requests[1]["messages"][-1]["content"]
    assert "SyntaxError" in fed_back and "not run" in fed_back.lower().replace("did not run", "not run")


def test_five_megabyte_answer(server):
    """A8: a 5 MB answer — the REPL copes; the display is capped (head/tail); the journal keeps it."""
    line = "This is a very long answer line of prose, number {:07d}.\n"
    text = "".join(line.format(i) for i in range(5_000_000 // len(line.format(0))))
    server.reply(text, chunk_size=64 * 1024)
    r = fault_run(server, ["write a lot"], yes=True, timeout=90)
    r.assert_ok(journaled=[("assistant", line.format(0).strip()), ("assistant", text.strip().splitlines()[-1])])
    assert r.stdout_bytes < 1_000_000, f"{r.stdout_bytes:,} bytes shown: the display of a huge answer is not capped"


def test_nul_bytes_in_answer_and_code(server):
    """A10: NUL bytes in prose and code — nothing crashes; the code is reported like a SyntaxError."""
    server.reply("Text\x00with a zero byte.\n```python\nprint('nul-code-' + 'ran')\x00\n```")
    server.reply("ok")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok(journaled=[("assistant", "with a zero byte.")])
    assert "nul-code-ran" not in _outputs(r)
    assert "\x00" not in r.stdout
    assert r.said("null byte", "SyntaxError"), r.excerpt()


def test_lone_surrogate_in_answer(server):
    """A14: a lone surrogate (JSON "\\ud800") — rendered and journaled with replacement, no crash."""
    server.reply("Broken \ud800 character here.\nSecond line survives.")
    server.reply("ok")
    r = fault_run(server, ["go", "and again"], yes=True)
    r.assert_ok(journaled=[("assistant", "Second line survives.")])
    assert "Second line survives." in r.stdout
    assert len(server.requests) == 2, "the next message could not be sent after the surrogate"


def test_tool_call_with_broken_json_arguments(server):
    """A17: run_python arguments are truncated JSON — not run; a clear message; the conversation stays valid."""
    server.reply(tool_calls=[("run_python", '{"code": "print(\'broken-args-ran\')')])
    server.reply("I will try again.")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok()
    assert "broken-args-ran" not in _outputs(r)
    assert r.said("not valid JSON", "incomplete", "broken"), r.excerpt()
    msgs = server.requests[1]["messages"]
    assert msgs[-1]["role"] == "tool" and msgs[-1]["tool_call_id"] == "call_fake0"


def test_tool_call_for_unknown_function(server):
    """A19: a tool call for a function that does not exist — named in a clear message; answered with an error."""
    server.reply(tool_calls=[("delete_everything", json.dumps({"path": "/"}))])
    server.reply("Understood.")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok()
    assert r.said("delete_everything"), r.excerpt()
    msgs = server.requests[1]["messages"]
    assert msgs[-1]["role"] == "tool" and "delete_everything" in msgs[-1]["content"]


def test_both_text_code_and_tool_call(server):
    """A20: fenced code and a run_python call in one answer — the call runs once; the person is told about the rest."""
    server.reply("```python\nprint('from-text')\n```",
                 tool_calls=[("run_python", json.dumps({"code": "print('from-tool')"}))])
    server.reply("done")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok(journaled=[("cell_end", "from-tool")])
    out = _outputs(r)
    assert out.count("from-tool") == 1
    if "from-text" not in out:
        assert r.said("fenced code", "not run", "only its run_python"), r.excerpt()


def test_empty_answer(server):
    """A15: an empty answer — "the model returned no text" is said; nothing crashes."""
    server.reply("")
    r = fault_run(server, ["go"], yes=True)
    r.assert_ok()
    assert r.said("no text", "empty answer", "empty", "returned nothing"), r.excerpt()


def test_finish_reason_length_says_cut_off(server):
    """A3/A15: finish_reason=length — the partial answer is kept and the person is told it was cut off."""
    server.reply("Here is the beginning of a long explanation that", finish_reason="length")
    r = fault_run(server, ["explain"], yes=True)
    r.assert_ok(journaled=[("assistant", "beginning of a long explanation")])
    assert r.said("cut off"), r.excerpt()
