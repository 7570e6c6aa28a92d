"""Deeply nested arrays and inline tables (issue #12, defect 12): in a spec file, in a KEY=VALUE
override and in a [compare] variant they are one located spec error (exit 2), never a
RecursionError (which was exit 1 with an internal message)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.spec import SpecError, load_spec_text
from mstar_engine.spec.toml_source import MAX_NESTING, bracket_depth, nesting_depth

BASE = """\
[experiment]
name = "t"

[process]
family = "dirichlet"
steps = 64

[data]
name = "dirichlet-mixture"
"""
DEEP_ARRAY = "[" * 5000 + "]" * 5000
DEEP_TABLE = "{a = " * 5000 + "1" + "}" * 5000
MESSAGE = f"tables, arrays or inline tables are nested more than {MAX_NESTING} levels deep"


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output and "RecursionError" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def errors(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error: ")]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# value on line 12, after "x = ": the bracket that opens level 33 is at column 5 + 32
@pytest.mark.parametrize("value, col", [(DEEP_ARRAY, 37), (DEEP_TABLE, 5 + 32 * 5), ("[" * 40 + "]" * 40, 37)],
                         ids=["arrays-5000", "inline-tables-5000", "arrays-40"])
@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_deep_value_in_the_file(in_tmp, value, col, command):
    (in_tmp / "s.toml").write_text(BASE + f"\n[train]\nx = {value}\n", encoding="utf-8")
    result = invoke(command, "s.toml")
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert line.startswith(f"error: s.toml:12:{col}: {MESSAGE}; "), line[:200]
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("value", [DEEP_ARRAY, DEEP_TABLE, "[" * 40 + "]" * 40],
                         ids=["arrays-5000", "inline-tables-5000", "arrays-40"])
def test_deep_override(in_tmp, value):
    (in_tmp / "s.toml").write_text(BASE, encoding="utf-8")
    for args in (["validate", "s.toml", "--set", f"train.x={value}"], ["plan", "s.toml", f"train.x={value}"],
                 ["run", "s.toml", f"train.x={value}"]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        (line,) = errors(result)
        assert line.startswith(f"error: override 'train.x={value[:20]}"), line[:100]
        assert f"': train.x: {MESSAGE}; " in line


def test_deep_override_of_a_compare_variant_is_named(in_tmp):
    (in_tmp / "s.toml").write_text(BASE + f'\n[compare]\nv = ["train.x={"[" * 40 + "]" * 40}"]\n', encoding="utf-8")
    result = invoke("validate", "s.toml")
    assert result.exit_code == 2
    (line,) = errors(result)
    assert line.startswith(f"error: s.toml:12:1: train.x: in [compare] v: {MESSAGE}"), line


def test_deep_dotted_keys():
    with pytest.raises(SpecError) as info:
        load_spec_text(BASE + "\n[compare]\nx = {" + ".".join(["a"] * 3000) + " = 1}\n", "s.toml")
    (issue,) = info.value.issues
    assert (issue.location.line, issue.location.col) == (12, 6) and MESSAGE in issue.message
    with pytest.raises(SpecError) as info:
        load_spec_text(BASE, "s.toml", ["compare={" + ".".join(["a"] * 3000) + " = 1}"])
    assert MESSAGE in str(info.value)


def test_what_a_spec_needs_is_not_too_deep():
    spec = BASE + ('\n[process.schedule]\nname = "custom"\nvalues = [' + ", ".join(["0.5"] * 64) + "]\n"
                   '\n[compare]\nx = ["eval.steps=[64, 8]"]\ny = ["process.coupling={ kind = \\"constant\\", '
                   'rho = 0.5 }"]\n')
    spec = spec.replace('"dirichlet"', '"beta"').replace('"dirichlet-mixture"', '"beta-mixture"')
    load_spec_text(spec, "s.toml")


def test_depth_helpers_ignore_strings_and_comments():
    text = 'a = "' + "[" * 100 + '"\n# ' + "{" * 100 + "\nb = '''" + "[" * 100 + "'''\nc = [[1], [2]]\n"
    assert bracket_depth(text)[0] == 2
    assert nesting_depth({"a": [[1], {"b": [[]]}]}) == 5
    assert nesting_depth(3) == 0
