"""The advisory risk scan: what a cell may do, labelled before it runs."""

from __future__ import annotations

import pytest

from llmrepl.execution.risk import scan


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
