"""The advisory risk scan (what a cell may do, labelled before it runs) and hidden characters."""

from __future__ import annotations

import pytest

from llmrepl.execution.risk import describe_hidden, hidden_characters, scan


def labels(code: str) -> list[str]:
    return [r.label for r in scan(code)]


@pytest.mark.parametrize(
    "code, label",
    [
        ("import os\nos.remove('x')", "delete files"),
        ("import shutil as sh\nsh.rmtree('build')", "delete files"),
        ("from pathlib import Path\nPath('a').unlink()", "delete files"),
        ("import subprocess\nsubprocess.run(['ls'])", "run processes"),
        ("from os import system\nsystem('ls')", "run processes"),
        ("import socket\ns = socket.socket()", "open network connections"),
        ("import requests\nrequests.get('http://x')", "open network connections"),
        ("import os\nkey = os.environ['OPENAI_API_KEY']", "read secrets"),
        ("open('/home/me/.ssh/id_rsa').read()", "read secrets"),
        ("import os\nos.getenv('HOME')", "read secrets"),
        ("import subprocess\nsubprocess.run('pip install pandas', shell=True)", "install packages"),
        ("eval('1+1')", "run dynamic code (eval/exec)"),
        ("import os\nos._exit(1)", "end or signal processes"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "end or signal processes"),
        ("open('out.txt', 'w').write('x')", "write files"),
        ("df.to_csv('out.csv')", "write files"),
    ],
)
def test_labels(code, label):
    assert label in labels(code)


def test_plain_data_code_has_no_labels():
    code = "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\nprint(df.describe())\nopen('data.csv').read()"
    assert labels(code) == []


def test_high_risk_flags():
    risks = {r.label: r.high for r in scan("import os\nos.remove('x')\nopen('y', 'w')")}
    assert risks == {"delete files": True, "write files": False}


def test_syntax_error_gives_no_labels():
    assert scan("def (") == []


def test_line_numbers_point_at_the_first_use():
    (risk,) = scan("x = 1\n\nimport subprocess\nsubprocess.run(['true'])")
    assert risk.where == 4


# -- hidden characters: refused by the engine, not advisory --------------------------------


@pytest.mark.parametrize(
    "code, name",
    [
        ("x = 1  # note\rimport os", "U+000D CARRIAGE RETURN"),
        ("s = 'a\u202eb'", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("s = '\u2066x\u2069'", "U+2066 LEFT-TO-RIGHT ISOLATE"),
        ("user = 'admin\u200b'", "U+200B ZERO WIDTH SPACE"),
        ("a = 1\n\x0cb = 2", "U+000C FORM FEED"),
        ("print('x\x1b[2Jy')", "U+001B ESCAPE"),
        ("s = 'a\x9db'", "U+009D CONTROL CHARACTER"),
        ("\ufeffx = 1", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("x\u3164 = 1", "U+3164 HANGUL FILLER"),
        ("s = 'soft\u00adhyphen'", "U+00AD SOFT HYPHEN"),
        ("s = 'line\u2028sep'", "U+2028 LINE SEPARATOR"),
    ],
)
def test_characters_that_show_unlike_what_python_reads_are_found(code, name):
    assert name in describe_hidden(hidden_characters(code))


def test_ordinary_code_has_no_hidden_characters():
    code = "# naïve café, 中文, emoji 🧑\u200d💻 and ❤\ufe0f\u200d🔥\nx = 'tab\\there'\r\n\tif x:\n\t\tpass\n"
    assert hidden_characters(code) == []


def test_a_variation_selector_inside_a_name_is_found():
    """`allowed` and `allowed` + U+FE00 are two variables that print the same."""
    assert hidden_characters("allowed = False\nallowed\ufe00 = True\nif allowed\ufe00: pass")
    assert hidden_characters("x\U000e0100 = 1") and hidden_characters("x\u180b = 1")


def test_hidden_characters_are_reported_by_line_and_summed_up():
    found = hidden_characters("a = 1\nb = '\u202e'\n\nc = '\u200b\u200b\u200b'\n" + "d = '\u200c'\n" * 6)
    assert [h.line for h in found[:2]] == [2, 4]
    text = describe_hidden(found)
    assert text.startswith("U+202E RIGHT-TO-LEFT OVERRIDE on line 2, U+200B ZERO WIDTH SPACE on line 4")
    assert text.endswith("and 4 more")  # each (character, line) once, at most four named
