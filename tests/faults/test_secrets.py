"""The key stays secret everywhere (issue 11, class 4).

The namespace digest, /vars, /history, banners, /model, snapshots and error messages
redact the API key; a message the person types that holds it is redacted before it is sent,
with a notice; the credentials in a base URL's ``user:password@`` are redacted in the
journal and on screen. Property (d) of ``assert_ok`` looks for the whole key on screen and
on disk; these tests also look at what the server received, and for pieces of the key and
for the base URL's password.
"""

from __future__ import annotations

import json

from launch import closed_port

from llmrepl.context.builder import without_state

from .harness import KEY, PROMPT, fault_run, spawn_repl, write_config

MSG = "what do I have?"
PASSWORD = "hunter2-url-password-77"  # the base URL's password in these tests


def _sent(server) -> str:
    """Everything the server received, as one text."""
    return json.dumps(server.requests, ensure_ascii=False)


def _files(home) -> str:
    """Every file under $LLMREPL_HOME, as text."""
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in home.rglob("*") if p.is_file())


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://alice:{PASSWORD}@", 1)


def test_key_in_a_variable_stays_out_of_the_digest_and_vars(server):
    """The issue's example: ``token = os.environ['OPENAI_API_KEY']`` put the key into every
    later request's namespace summary, and /vars showed it."""
    r = fault_run(server, ["/py import os; token = os.environ['OPENAI_API_KEY']", "/vars", MSG])
    # (d): not on screen (/vars), not on disk; command output is not journaled, so check_shown=False
    r.assert_ok(journaled=[("user", MSG)], check_shown=False)
    system = server.requests[0]["messages"][-1]["content"]  # the state after the history
    assert "- token: '[REDACTED]'" in system, system
    assert KEY not in _sent(server)
    assert "token" in r.stdout and "[REDACTED]" in r.stdout  # /vars lists it, redacted


def test_key_as_a_name_a_dict_key_a_column_or_inside_a_long_string(server):
    """Names, dict keys, column names and long strings are digest text too; a value cut
    short for the digest must not leave a piece of the key behind."""
    cell = ("/py import os, pandas as pd; k = os.environ['OPENAI_API_KEY']; globals()[k] = 1; "
            "d = {k: 1}; df = pd.DataFrame({k: [1], 'b': [2]}); blurb = 'x' * 25 + k + 'y' * 100; "
            "named = pd.Series([1], name=k)")
    r = fault_run(server, [cell, "/vars", MSG])
    r.assert_ok(journaled=[("user", MSG)], check_shown=False)
    sent = _sent(server)
    # KEY[:15] is what a 40-character preview of ``blurb`` shows of the key: too short to
    # look like an sk- key, long enough to matter
    for piece in (KEY, KEY[:15], KEY[-15:]):
        assert piece not in sent, f"{piece!r} reached the server"
        assert piece not in r.stdout, f"{piece!r} shown by /vars"
    system = server.requests[0]["messages"][-1]["content"]  # the state after the history
    assert "- df: pandas.DataFrame 1×2 · columns: [REDACTED] (int64), b (int64)" in system, system


def test_message_holding_the_key_is_redacted_with_a_notice(server):
    """The person pastes the key into a message: the model, the journal, /history and the
    history file get [REDACTED], and the person is told."""
    message = f"my key is {KEY} why does it fail?"
    r = fault_run(server, [message, "/history"])
    r.assert_ok(check_shown=False)
    assert KEY not in _sent(server)
    assert without_state(server.requests[0]["messages"][-1]["content"]) == "my key is [REDACTED] why does it fail?"
    assert r.said("your message contained the API key"), r.excerpt()
    assert [u["text"] for u in r.events("user")] == ["my key is [REDACTED] why does it fail?"]
    assert "you: my key is [REDACTED] why does it fail?" in r.stdout  # /history


def test_key_split_across_two_lines_of_output(server):
    """A key printed in two pieces on two lines is still the key: neither half reaches the
    model (the whole key printed on one line never did)."""
    cell = ("/py import os; k = os.environ['OPENAI_API_KEY']; print(k[:10]); print(k[10:]); "
            "print('  ' + k[:20] + chr(10) + '    ' + k[20:])")
    r = fault_run(server, [cell, MSG])
    r.assert_ok(journaled=[("user", MSG)])
    sent = _sent(server)
    for piece in (KEY[:10], KEY[10:], KEY[:20], KEY[20:]):
        assert piece not in sent, f"{piece!r} reached the server"
    outputs = " ".join(str(e.get("output")) for e in r.events("cell_end"))
    assert KEY[10:] not in outputs and KEY[20:] not in outputs  # nor the journal, nor _out


def test_snapshot_leaves_out_a_value_holding_the_key(server, tmp_path):
    """With snapshots on, a variable holding the key is not pickled to disk: the notice and
    the /undo report say why it cannot be rewound. An exception message that quotes the key
    (a __reduce__ that fails) is not written into the snapshot manifest either."""
    config = write_config(tmp_path / "cfg" / "config.toml", "[repl]\nsnapshots = true\n")
    bad = ("/py import os; Bad = type('Bad', (), {'__reduce__': lambda self: "
           "(_ for _ in ()).throw(ValueError(os.environ['OPENAI_API_KEY']))}); b = Bad()")
    r = fault_run(server, ["/py import os; token = os.environ['OPENAI_API_KEY']; n = 1", bad, "/undo"],
                  args=["--config", str(config)])
    r.assert_ok(check_shown=False)  # (d): the key is in no file under $LLMREPL_HOME, snapshots included
    assert (r.home / "sessions").is_dir() and list(r.home.rglob("manifests/*.json"))
    assert r.said("token (holds the API key"), r.excerpt()
    assert "could not rewind: token (holds the API key" in r.stdout, r.excerpt()


def test_base_url_credentials_not_in_banner_or_model(server):
    """``--base-url http://alice:PASSWORD@host/v1``: the banner, /model, the journal and every
    file show ``[REDACTED]@host`` instead (pty: the bytes the terminal receives)."""
    url = _with_password(server.base_url)
    repl = spawn_repl(server, base_url=url, key=None)
    repl.ask("/model")
    repl.expect("model: ")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert PASSWORD not in repl.log.getvalue(), r.excerpt()
    banner, model = r.shown.split("model: ", 1)
    assert f"at http://[REDACTED]@127.0.0.1:{server.port}/v1" in banner, r.excerpt()
    assert f"at http://[REDACTED]@127.0.0.1:{server.port}/v1" in model, r.excerpt()
    assert PASSWORD not in _files(r.home)
    assert r.events("session_start")[0]["base_url"] == f"http://[REDACTED]@127.0.0.1:{server.port}/v1"


def test_base_url_credentials_not_in_a_connection_error():
    """A base URL with credentials that cannot be reached: the error names the URL without
    its password, on screen and in the journal."""
    url = f"http://alice:{PASSWORD}@127.0.0.1:{closed_port()}/v1"
    r = fault_run(None, [MSG], base_url=url)
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("cannot reach http://[REDACTED]@127.0.0.1"), r.excerpt()
    assert PASSWORD not in r.stdout + r.stderr
    assert PASSWORD not in _files(r.home)


def test_base_url_credentials_not_in_an_auth_error(server):
    """A 401 from a base URL with credentials: the host it names has no password in it."""
    server.require_key = "sk-some-other-key-000000000000000000"
    r = fault_run(server, [MSG], base_url=_with_password(server.base_url))
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("401"), r.excerpt()
    assert PASSWORD not in r.stdout + r.stderr and PASSWORD not in _files(r.home)


def test_base_url_credentials_not_in_a_config_error():
    """A base URL that is not http(s): the config error quotes it without the password."""
    r = fault_run(None, [], base_url=f"ftp://alice:{PASSWORD}@files.example/v1", alive=False)
    assert r.returncode not in (0, None) and "model.base_url" in r.stderr, r.excerpt()
    assert PASSWORD not in r.stderr + r.stdout
    assert "ftp://[REDACTED]@files.example/v1" in r.stderr


def test_server_error_quoting_a_piece_of_the_key_is_redacted(server):
    """A server error that quotes part of the key (not key-shaped on its own: no ``sk-``, no
    ``Bearer``): the message shown and journaled holds no piece of it."""
    piece = KEY[9:]  # "secret-0123456789abcdefXYZ"
    server.fail(400, f"the key ending in {piece!r} was revoked", code="invalid_api_key")
    r = fault_run(server, [MSG])
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("400") and r.said("revoked"), r.excerpt()
    assert piece not in r.stdout + r.stderr and piece not in _files(r.home)
