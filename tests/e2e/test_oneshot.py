"""One-shot (-c) and batch (stdin) runs of the installed command against the fake server."""

from __future__ import annotations

import json
import stat
import sys

from launch import run

from llmrepl.context.builder import without_state

KEY = "sk-test-secret-abcdefghijklmnop1234"


def test_version_and_help():
    assert run(["--version"]).stdout.startswith("llmrepl ")
    out = run(["--help"]).stdout
    for flag in ("-c", "--yes", "--model", "--base-url", "--config", "--resume", "--max-steps", "--timeout", "--no-stream"):
        assert flag in out


def test_one_shot_prints_the_answer_plain(server):
    server.reply("Hello from the model.")
    p = run(["--base-url", server.base_url, "-c", "hi"])
    assert p.returncode == 0, p.stderr
    assert "Hello from the model." in p.stdout
    assert "\x1b" not in p.stdout
    body = server.requests[0]
    # --base-url and no -m: the model the server lists (issue 13), not the default name
    assert body["model"] == "fake-model" and body["stream"] is True
    assert {**body["messages"][-1], "content": without_state(body["messages"][-1]["content"])} == {"role": "user", "content": "hi"}
    assert "max_completion_tokens" in body and "max_tokens" not in body and "temperature" not in body
    assert body["tools"][0]["function"]["name"] == "run_python"


def test_one_shot_without_yes_shows_code_and_does_not_run_it(server, tmp_path):
    marker = tmp_path / "ran"
    server.reply(f"```python\nopen({str(marker)!r}, 'w').write('x')\n```")
    p = run(["--base-url", server.base_url, "-c", "make a file"])
    assert p.returncode == 0
    assert "open(" in p.stdout and "--yes" in p.stdout + p.stderr
    assert not marker.exists() and len(server.requests) == 1


def test_two_message_data_session_in_batch_mode_with_yes(server):
    server.reply("```python\nsales = {'north': 412, 'west': 380, 'south': 201}\nlen(sales)\n```")
    server.reply("There are 3 regions.")
    server.reply("```python\nmax(sales, key=sales.get)\n```")
    server.reply("The north sells most.")
    p = run(["-y", "--base-url", server.base_url], input="load the sales\nwhich region sells most?\n")
    assert p.returncode == 0, p.stderr
    assert "3\n" in p.stdout and "'north'" in p.stdout and "The north sells most." in p.stdout
    fourth = server.requests[3]["messages"]
    assert "'north'" in fourth[-1]["content"]                 # the result went back
    assert "- sales: {'north': 412" in json.dumps(fourth)  # a state note tells of `sales`
    assert [without_state(m["content"]) for m in fourth if m["role"] == "user"][0] == "load the sales"


def test_tool_call_is_run_and_answered(server):
    server.reply(tool_calls=[("run_python", json.dumps({"code": "print(6 * 7)"}))])
    server.reply("It is 42.")
    p = run(["-y", "--base-url", server.base_url, "-c", "six times seven"])
    assert p.returncode == 0 and "42" in p.stdout
    msgs = server.requests[1]["messages"]
    assert msgs[-1]["role"] == "tool" and "42" in msgs[-1]["content"]


def test_no_stream_sends_a_plain_request(server):
    server.reply("whole answer")
    p = run(["--no-stream", "--base-url", server.base_url, "-c", "hi"])
    assert "whole answer" in p.stdout and server.requests[0]["stream"] is False


def test_bad_key_exits_1_with_a_clear_message_and_no_key(server):
    server.require_key = "sk-the-right-one-0000000000000"
    p = run(["--base-url", server.base_url, "-c", "hi"], OPENAI_API_KEY=KEY)
    assert p.returncode == 1
    assert "API key" in p.stderr and "Traceback" not in p.stderr + p.stdout
    assert KEY not in p.stderr + p.stdout


def test_unreachable_server_exits_1(tmp_path):
    p = run(["--base-url", "http://127.0.0.1:9/v1", "-c", "hi"], timeout=60)
    assert p.returncode == 1
    assert "cannot reach" in p.stderr and "Traceback" not in p.stderr


def test_server_errors_say_what_happened_and_that_it_can_be_resent(server):
    server.fail(500, "The server had an error", times=3)
    p = run(["--base-url", server.base_url, "-c", "hi"])
    assert p.returncode == 1 and "500" in p.stderr and "Traceback" not in p.stderr
    assert "again" in p.stderr or "resend" in p.stderr


def test_input_in_batch_mode_fails_clearly_instead_of_hanging(server):
    server.reply("```python\nname = input('Name? ')\n```")
    server.reply("ok")
    p = run(["-y", "--base-url", server.base_url, "-c", "ask me"], timeout=30)
    assert p.returncode == 0
    assert "input() is not available" in p.stdout
    assert "InputNotAllowed" in server.requests[1]["messages"][-1]["content"]


def test_timeout_stops_a_runaway_cell(server):
    server.reply("```python\ncount = 1\nwhile True:\n    count += 1\n```")
    server.reply("```python\ncount > 1\n```")
    server.reply("done")
    p = run(["-y", "--timeout", "1", "--base-url", server.base_url, "-c", "spin"], timeout=60)
    assert p.returncode == 0
    assert "time limit" in p.stdout + p.stderr
    assert "True" in p.stdout  # the namespace survived the timeout


def test_config_error_names_file_and_key_and_exits_2(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[model]\nnmae = 'x'\n")
    p = run(["--config", str(cfg), "-c", "hi"])
    assert p.returncode == 2
    assert str(cfg) in p.stderr and "nmae" in p.stderr and "Traceback" not in p.stderr


def test_bad_flag_value_exits_2():
    p = run(["--max-steps", "zero", "-c", "hi"])
    assert p.returncode == 2 and "--max-steps" in p.stderr


def test_no_model_configured_says_how_to_set_one_up(monkeypatch):
    p = run(["-c", "hi"], timeout=60)
    assert p.returncode == 2  # a configuration error (SPEC: exit status 2)
    assert "OPENAI_API_KEY" in p.stderr and "--base-url" in p.stderr and "Ollama" in p.stderr
    assert "Traceback" not in p.stderr


def test_commands_work_without_a_model():
    p = run([], input="/py x = 20 + 22\n/py print(x)\n/vars\n")
    assert p.returncode == 0, p.stderr
    assert "42" in p.stdout and "x" in p.stdout and "int" in p.stdout


def test_journal_is_written_private_and_without_the_key(server, clean_env):
    server.reply("```python\nprint('journaled')\n```")
    server.reply("fine")
    run(["-y", "--base-url", server.base_url, "-c", "go"], OPENAI_API_KEY=KEY)
    files = list((clean_env / "sessions").glob("*.jsonl"))
    assert len(files) == 1
    text = files[0].read_text()
    assert KEY not in text
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert events[0] == "session_start" and "cell_start" in events and "cell_end" in events


def test_python_dash_m_works(server):
    server.reply("via -m")
    p = run(["--base-url", server.base_url, "-c", "hi"], command=[sys.executable, "-m", "llmrepl"])
    assert p.returncode == 0 and "via -m" in p.stdout


def test_plain_output_with_no_color(server):
    server.reply("```python\nx = 1\n```")
    p = run(["--base-url", server.base_url, "-c", "hi"], NO_COLOR="1")
    assert "\x1b" not in p.stdout and "x = 1" in p.stdout
