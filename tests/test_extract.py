"""Tests for llmrepl.extract: fences by CommonMark rules, the cell, tool-call arguments."""

from __future__ import annotations

import json

import pytest

from llmrepl.extract import UNTAGGED_PARSE_LIMIT, Block, code_from_tool_call, extract_code

F = "```"


def only(text: str) -> Block:
    blocks = extract_code(text).blocks
    assert len(blocks) == 1, blocks
    return blocks[0]


# ---------------------------------------------------------------- which fences are Python


@pytest.mark.parametrize(
    ("text", "lang", "code"),
    [
        (f"{F}python\nx = 1\n{F}\n", "python", "x = 1"),
        (f"{F}py\nx = 1\n{F}", "py", "x = 1"),
        (f"{F}python3\nx = 1\n{F}", "python3", "x = 1"),
        (f"{F}py3\nx = 1\n{F}", "py3", "x = 1"),
        (f"{F}ipython\nx = 1\n{F}", "ipython", "x = 1"),
        (f"{F}Python\nx = 1\n{F}", "python", "x = 1"),
        (f"{F}PY\nx = 1\n{F}", "py", "x = 1"),
        (f"{F} python \nx = 1\n{F}", "python", "x = 1"),
        (f'{F}python title="x.py"\nx = 1\n{F}', "python", "x = 1"),
        (f"{F}{{.python}}\nx = 1\n{F}", "python", "x = 1"),
        (f"{F}{{.python .numberLines}}\nx = 1\n{F}", "python", "x = 1"),
        (f"{F}python:main.py\nx = 1\n{F}", "python", "x = 1"),
        ("~~~python\nx = 1\n~~~", "python", "x = 1"),
        ("~~~~\nx = 1\n~~~~~", "", "x = 1"),
        (f"{F}\nprint('hi')\n{F}", "", "print('hi')"),
        (f"   {F}python\n   x = 1\n     y = 2\n {F}", "python", "x = 1\n  y = 2"),
        (f"{F}python\r\nx = 1\r\ny = 2\r\n{F}\r\n", "python", "x = 1\ny = 2"),
        (f"{F}python\nx = 1\n\n{F}", "python", "x = 1\n"),
        (f"{F}python\ndef f():\n    return 1\n{F}", "python", "def f():\n    return 1"),
    ],
)
def test_python_blocks(text: str, lang: str, code: str) -> None:
    ex = extract_code(text)
    assert ex.blocks == [Block(lang, code, True, True)]
    assert ex.code == code
    assert not ex.incomplete and ex.other_languages == []


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        (f"{F}bash\npip install numpy\n{F}", "bash"),
        (f"{F}sh\nls -la\n{F}", "sh"),
        (f"{F}javascript\nconsole.log(1)\n{F}", "javascript"),
        (f"{F}json\n{{\"a\": 1}}\n{F}", "json"),
    ],
)
def test_other_languages_are_never_run(text: str, lang: str) -> None:
    ex = extract_code(text)
    assert ex.code is None
    assert ex.other_languages == [lang]
    assert ex.blocks[0].is_python is False and ex.blocks[0].lang == lang


@pytest.mark.parametrize(
    "body",
    [
        "pip install numpy",
        "This is prose, not code.",
        "42",  # output shown in a fence
        "[1, 2, 3]",
        "{'a': 1}",
        "",
        "   ",
    ],
)
def test_untagged_that_is_not_python(body: str) -> None:
    ex = extract_code(f"Output:\n{F}\n{body}\n{F}\n")
    assert ex.code is None
    assert ex.blocks[0].is_python is False
    assert ex.other_languages == []  # untagged is not "another language"


def test_text_and_output_fences_are_not_other_languages() -> None:
    ex = extract_code(f"{F}text\nhello\n{F}\n{F}output\n3\n{F}\n")
    assert ex.other_languages == [] and ex.code is None


def test_python_block_with_syntax_error_still_counts() -> None:
    ex = extract_code(f"{F}python\nprint('x'\n{F}")
    assert ex.blocks[0].is_python
    assert ex.code == "print('x'"


def test_untagged_with_syntax_error_is_not_python() -> None:
    ex = extract_code(f"{F}\nprint('x'\n{F}")
    assert ex.code is None and not ex.blocks[0].is_python


# ---------------------------------------------------------------- several blocks, prose


def test_several_blocks_joined_in_order() -> None:
    text = (
        "First load the data:\n\n"
        f"{F}python\nimport math\n{F}\n\n"
        "Then install something (you do this):\n\n"
        f"{F}bash\npip install x\n{F}\n\n"
        "Then compute:\n\n"
        f"{F}py\nr = math.sqrt(2)\n{F}\n"
        f"{F}\nprint(r)\n{F}\n"
        "Done."
    )
    ex = extract_code(text)
    assert [b.lang for b in ex.blocks] == ["python", "bash", "py", ""]
    assert ex.code == "import math\n\nr = math.sqrt(2)\n\nprint(r)"
    assert ex.other_languages == ["bash"]
    assert not ex.incomplete


def test_other_languages_are_listed_once_in_order() -> None:
    text = f"{F}bash\na\n{F}\n{F}js\nb\n{F}\n{F}bash\nc\n{F}\n"
    assert extract_code(text).other_languages == ["bash", "js"]


def test_prose_only() -> None:
    ex = extract_code("The answer is 42. Use ```print``` to show it, or ``` inline.")
    assert ex.blocks == [] and ex.code is None and not ex.incomplete


def test_inline_backticks_on_their_own_line_are_not_a_fence() -> None:
    ex = extract_code("```print(1)```\nmore prose\n")
    assert ex.blocks == [] and ex.code is None


def test_empty_text() -> None:
    ex = extract_code("")
    assert ex.blocks == [] and ex.code is None and not ex.incomplete


def test_empty_python_block_is_not_a_cell() -> None:
    ex = extract_code(f"{F}python\n{F}\n")
    assert ex.blocks == [Block("python", "", True, True)]
    assert ex.code is None


# ---------------------------------------------------------------- fence rules


def test_four_backticks_wrap_three() -> None:
    text = "````python\ns = '''\n```\ninner\n```\n'''\n````\n"
    ex = extract_code(text)
    assert len(ex.blocks) == 1
    assert ex.code == "s = '''\n```\ninner\n```\n'''"


def test_closing_fence_must_use_the_same_character() -> None:
    ex = extract_code(f"{F}python\nx = 1\n~~~\ny = 2\n{F}\n")
    assert ex.code == "x = 1\n~~~\ny = 2"


def test_closing_fence_with_text_after_is_content() -> None:
    ex = extract_code(f"{F}python\nx = 1\n{F} not a close\n{F}python\n{F}\n")
    assert ex.code == f"x = 1\n{F} not a close\n{F}python"


def test_closing_fence_may_be_longer_and_have_trailing_spaces() -> None:
    ex = extract_code(f"{F}python\nx = 1\n`````  \t\nprose\n")
    assert ex.code == "x = 1" and not ex.incomplete


def test_fence_indented_four_spaces_is_not_a_fence() -> None:
    ex = extract_code(f"    {F}python\n    x = 1\n    {F}\n")
    assert ex.blocks == []


def test_closing_fence_indented_four_spaces_is_content() -> None:
    ex = extract_code(f"{F}python\nx = 1\n    {F}\n")
    assert ex.incomplete and ex.code is None


def test_tilde_info_may_contain_backticks() -> None:
    assert only("~~~python `x`\nx = 1\n~~~").lang == "python"


# ---------------------------------------------------------------- cut answers


def test_unterminated_last_fence() -> None:
    text = f"{F}python\nx = 1\n{F}\nNow the rest:\n{F}python\ny = x +"
    ex = extract_code(text)
    assert ex.incomplete
    assert ex.code == "x = 1"  # the cut block is not in the cell
    assert ex.blocks[-1] == Block("python", "y = x +", False, True)


def test_unterminated_only_block() -> None:
    ex = extract_code(f"{F}python\nfor i in range(3):\n    print(i)\n")
    assert ex.incomplete and ex.code is None
    assert ex.blocks[0].code == "for i in range(3):\n    print(i)"


def test_unterminated_bash_is_incomplete_too() -> None:
    ex = extract_code(f"{F}bash\nls")
    assert ex.incomplete and ex.other_languages == ["bash"]


# ---------------------------------------------------------------- transcripts


def test_pycon_prompts_are_stripped() -> None:
    text = f"{F}pycon\n>>> x = [1, 2]\n>>> for i in x:\n...     print(i)\n...\n1\n2\n>>> len(x)\n2\n{F}"
    b = only(text)
    assert b.is_python
    assert b.code == "x = [1, 2]\nfor i in x:\n    print(i)\n\nlen(x)"


def test_python_block_written_as_a_transcript() -> None:
    assert only(f"{F}python\n>>> 1 + 1\n2\n{F}").code == "1 + 1"


def test_ipython_prompts_are_stripped() -> None:
    b = only(f"{F}ipython\nIn [1]: def f():\n   ...:     return 2\n\nIn [2]: f()\nOut[2]: 2\n{F}")
    assert b.code == "def f():\n    return 2\n\nf()"


def test_code_mentioning_prompts_is_left_alone() -> None:
    code = "s = '>>> not a prompt'\nprint(s)"
    assert only(f"{F}python\n{code}\n{F}").code == code


# ---------------------------------------------------------------- hostile text


def test_nul_bytes_do_not_crash() -> None:
    ex = extract_code(f"a\x00b\n{F}python\nx = '\x00'\n{F}\n{F}\n\x00\n{F}")
    assert ex.blocks[0].code == "x = '\x00'" and ex.blocks[0].is_python
    assert ex.blocks[1].is_python is False


def test_lone_surrogates_do_not_crash() -> None:
    ex = extract_code(f"\ud800 prose\n{F}\nx = '\udfff'\n{F}\n{F}python\ny = '\ud800'\n{F}")
    assert ex.blocks[0].is_python is False  # cannot be compiled, so not run
    assert ex.code == "y = '\ud800'"


def test_deeply_nested_untagged_does_not_crash() -> None:
    ex = extract_code(f"{F}\n" + "(" * 100_000 + f"\n{F}")
    assert ex.code is None


def test_lone_cr_line_endings() -> None:
    assert extract_code(f"{F}python\rx = 1\ry = 2\r{F}").code == "x = 1\ny = 2"


def test_five_megabytes_answer() -> None:
    # a quadratic regression would make this hang (pytest-timeout); speed is measured in benchmarks/
    chunk = f"Some prose with `ticks` and ``` inline.\n{F}python\nx = 1\n{F}\n{F}bash\nls\n{F}\n"
    text = chunk * (5_000_000 // len(chunk))
    ex = extract_code(text)
    assert len(ex.blocks) == 2 * (5_000_000 // len(chunk))


def test_five_megabytes_unterminated() -> None:
    text = f"{F}python\n" + "x = 1  # ```` `` ~~~ not closing text\n" * 130_000
    ex = extract_code(text)
    assert ex.incomplete and ex.code is None


def test_five_megabytes_of_one_tagged_block() -> None:
    text = f"{F}python\n" + "x = 1  # a line of code, padded out\n" * 140_000 + F
    ex = extract_code(text)
    assert ex.code is not None and len(ex.code) > 4_900_000


def test_huge_untagged_block_is_not_parsed() -> None:
    text = f"{F}\n" + "x = 1  # a line of code, padded out\n" * 140_000 + F
    ex = extract_code(text)
    assert ex.code is None and not ex.blocks[0].is_python


def test_untagged_block_below_the_parse_limit_is_python() -> None:
    line = "x = 1  # a line of code, padded out\n"
    body = line * (UNTAGGED_PARSE_LIMIT // len(line))
    assert extract_code(f"{F}\n{body}{F}").blocks[0].is_python


@pytest.mark.parametrize("count", [50_001, 200_001])
def test_many_fences_are_linear(count: int) -> None:
    text = "```\n" * count  # odd count: the last one stays open
    ex = extract_code(text)  # quadratic behaviour would hang here (pytest-timeout)
    assert ex.incomplete and len(ex.blocks) == (count + 1) // 2


# ---------------------------------------------------------------- tool calls


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (json.dumps({"code": "print(1)"}), "print(1)"),
        ('{"code": "for i in range(2):\n    print(i)"}', "for i in range(2):\n    print(i)"),
        ('{"code": "x = 1\\r\\ny = 2"}', "x = 1\ny = 2"),
        (json.dumps(json.dumps({"code": "x = 2"})), "x = 2"),  # encoded twice
        ('{"code": "x", "explanation": "extra keys are fine"}', "x"),
    ],
)
def test_tool_call_code(arguments: str, code: str) -> None:
    assert code_from_tool_call("run_python", arguments) == code


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("foo", '{"code": "x"}', "the model called an unknown tool 'foo'; only run_python exists"),
        ("run_python", '{"code": "print(1', "run_python arguments are not valid JSON (Unterminated string"),
        ("run_python", "{'code': 'x'}", "run_python arguments are not valid JSON (Expecting property name"),
        ("run_python", '{"python": "x"}', "run_python arguments lack a string 'code' field (got keys ['python'])"),
        ("run_python", "{}", "run_python arguments lack a string 'code' field (got keys [])"),
        ("run_python", '{"code": 3}', "run_python arguments lack a string 'code' field ('code' is a number)"),
        ("run_python", '{"code": null}', "('code' is null)"),
        ("run_python", '["print(1)"]', "must be a JSON object with a string 'code' field, got a list"),
        ("run_python", '"print(1)"', "got a string"),
        ("run_python", "", "run_python arguments are empty"),
        ("run_python", '{"code": "  "}', "run_python was called with empty code"),
        ("run_python", "[" * 100_000, "run_python arguments are not valid JSON"),
    ],
)
def test_tool_call_errors(name: str, arguments: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        code_from_tool_call(name, arguments)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
