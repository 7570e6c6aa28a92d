"""Fuzzing the spec loader with malformed specs made by mutating the shipped ones.

Whatever the mutation (deleted or renamed keys, values of another type or out of range, garbage
characters and lines, unknown tables, moved or duplicated lines, random overrides), loading
either succeeds or raises :class:`SpecError` whose every issue is located in the file
(``line`` within the text) or at an override. Nothing else may escape, and the CLI answers
with exit code 0 or 2 and never a traceback.
"""
from __future__ import annotations

import json
import os
import re
import typing
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstar_cli.main import cli
from mstar_engine.spec import SpecError, format_path, load_spec_text
from mstar_engine.spec.convert import strip_optional
from mstar_engine.spec.schema import Spec, dataset_names, family_names, metric_names, schedule_names

SPECS = Path(__file__).resolve().parents[2] / "specs"
BASES = {name: (SPECS / name).read_text(encoding="utf-8")
         for name in ("quickstart.toml", "distill-dirichlet.toml", "cifar10-beta.toml", "categorical.toml")}

KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_.-]+)(\s*=\s*)(.*)$")
HEADER_LINE = re.compile(r"^(\s*\[+\s*)([A-Za-z0-9_.-]+)(\s*\]+.*)$")
NUMBER = re.compile(r"^[+-]?[0-9][0-9_.eE+-]*$")


def schema_paths(cls: type = Spec, prefix: tuple = ()) -> list[tuple[tuple, type, dict]]:
    """Every leaf key of the schema: (path, type, field metadata)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in attrs.fields(cls):
        tp = strip_optional(hints[f.name])
        if attrs.has(tp):
            out += schema_paths(tp, prefix + (f.name,))
        else:
            out.append((prefix + (f.name,), tp, dict(f.metadata)))
    return out


PATHS = schema_paths()
KEYS = sorted({p[-1] for p, _, _ in PATHS} | {p[0] for p, _, _ in PATHS} | {"schedule", "coupling", "mlp", "unet"})
NAMES = sorted(set(family_names()) | set(dataset_names()) | set(metric_names()) | set(schedule_names())
               | {"mlp", "unet", "auto", "constant", "ddpm", "learned", "deterministic", "independent", "custom",
                  "unit", "symmetric", "cpu", "cuda", "fp16", "bf16", "tail", "state", "tail+state", "eps-mse"})

# ---------------------------------------------------------------------------------------- values

ints = st.one_of(st.integers(-3, 3), st.integers(-2**63, 2**63 - 1), st.sampled_from([0, 1, 2, 7, 8, 64, 65, 1024,
                                                                                         1025, 100_001]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 0.5, 1.0, 1.5, -1.0,
                                                                                     1e-300, 1e300]))


def toml_float(x: float) -> str:
    text = repr(x)
    return text if any(c in text for c in ".eninf") else text + ".0"


def toml_string(s: str) -> str:
    return json.dumps(s)  # JSON escapes are TOML escapes (lone surrogates make a TOML syntax error)


scalar_text = st.one_of(
    ints.map(str),
    floats.map(toml_float),
    st.booleans().map(lambda b: str(b).lower()),
    st.text(max_size=8).map(toml_string),
    st.sampled_from(NAMES).map(toml_string),
    st.sampled_from(["1979-05-27", "07:32:00", "1979-05-27T07:32:00Z", "'literal'", '""']),
)
value_text = st.one_of(
    scalar_text,
    st.lists(scalar_text, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.sampled_from(["[]", "{}", "{ a = 1 }", "{ kind = \"constant\", rho = 0.5 }", "[[1], [2]]",
                     '["knn-kl", "fid"]', "[64, 8]", "[32, 16, 8]", "[0.9, 0.999]", "[0, 1]"]),
)
plausible_text = st.one_of(  # values of the right kind, so that cross-field checks run
    st.sampled_from(NAMES).map(toml_string),
    st.integers(0, 130).map(str),
    st.sampled_from(["2", "3", "4", "8", "12", "63", "64", "1000", "0.5", "0.0", "1.0", "true", "false",
                     '["knn-kl"]', '["fid"]', '["auprc"]', "[0]", "[3, 10]", "[32, 16]", "[64, 128]",
                     "[0.9, 0.5, 0.1]", '"schedule.npy"', '"data"', '"x.txt"']),
)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=12)
# No "\r" (or other characters that str.splitlines() breaks lines at): see
# test_malformed_specs.py::test_end_of_document_error_with_a_line_separator_in_a_comment (a known bug).
garbage = st.text(alphabet=st.sampled_from(list("[]{}=\"'#,.\n\t \\abcxyz019-_+") + ["é", "\x00", "\x7f"]),
                  min_size=1, max_size=12)


def near_miss(draw, word: str) -> str:
    kind = draw(st.sampled_from(["drop", "swap", "double", "kebab", "upper", "replace"]))
    if len(word) < 2 or kind == "replace":
        return draw(words)
    i = draw(st.integers(0, len(word) - 2))
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    if kind == "kebab":
        return word.replace("_", "-") if "_" in word else word.replace("-", "_") + "_x"
    return word.upper()


# ---------------------------------------------------------------------------------------- mutations

def key_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if KEY_LINE.match(line)]


def pick(draw, indices: list[int], lines: list[str]) -> int:
    return draw(st.sampled_from(indices)) if indices else draw(st.integers(0, max(len(lines) - 1, 0)))


def m_delete(draw, lines, overrides):
    if lines:
        del lines[pick(draw, key_lines(lines) + [i for i, l in enumerate(lines) if HEADER_LINE.match(l)], lines)]


def m_rename_key(draw, lines, overrides):
    idx = key_lines(lines)
    if idx:
        i = draw(st.sampled_from(idx))
        m = KEY_LINE.match(lines[i])
        lines[i] = m.group(1) + near_miss(draw, m.group(2)) + m.group(3) + m.group(4)


def m_rename_table(draw, lines, overrides):
    idx = [i for i, l in enumerate(lines) if HEADER_LINE.match(l)]
    if idx:
        i = draw(st.sampled_from(idx))
        m = HEADER_LINE.match(lines[i])
        parts = m.group(2).split(".")
        j = draw(st.integers(0, len(parts) - 1))
        parts[j] = near_miss(draw, parts[j])
        lines[i] = m.group(1) + ".".join(parts) + m.group(3)


def m_retype(draw, lines, overrides):
    idx = key_lines(lines)
    if idx:
        i = draw(st.sampled_from(idx))
        m = KEY_LINE.match(lines[i])
        lines[i] = m.group(1) + m.group(2) + m.group(3) + draw(st.one_of(value_text, plausible_text))


def m_out_of_range(draw, lines, overrides):
    idx = [i for i in key_lines(lines) if NUMBER.match(KEY_LINE.match(lines[i]).group(4).strip())]
    if idx:
        i = draw(st.sampled_from(idx))
        m = KEY_LINE.match(lines[i])
        value = draw(st.sampled_from(["0", "-1", "1", "-0.0", "1e308", "-1e308", "9223372036854775807",
                                      "-9223372036854775808", "1.5", "100001", "1025", "nan", "-inf", "2", "0.99999"]))
        lines[i] = m.group(1) + m.group(2) + m.group(3) + value


def m_garbage_chars(draw, lines, overrides):
    if not lines:
        lines.append("")
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines[i])))
    lines[i] = lines[i][:j] + draw(garbage) + lines[i][j:]


def m_garbage_line(draw, lines, overrides):
    lines.insert(draw(st.integers(0, len(lines))),
                 draw(st.one_of(garbage, st.sampled_from(["[", "]]", "= 1", "key", "[a.", "x = ", "[[]]", "[]",
                                                          'a = """', "a = '''", "a = [1,", "{", "a.=1", ".a=1"]))))


def m_unknown_table(draw, lines, overrides):
    name = ".".join(draw(st.lists(st.one_of(words, st.sampled_from(KEYS)), min_size=1, max_size=3)))
    header = draw(st.sampled_from(["[{}]", "[[{}]]"])).format(name)
    body = [f"{draw(st.one_of(words, st.sampled_from(KEYS)))} = {draw(value_text)}"
            for _ in range(draw(st.integers(0, 2)))]
    where = draw(st.sampled_from(["end", "anywhere"]))
    i = len(lines) if where == "end" else draw(st.integers(0, len(lines)))
    lines[i:i] = [header, *body]


def set_key(lines: list[str], path: tuple, value: str) -> None:
    """Write ``path = value`` where a user would: replace the key in its table, else add it under the
    table's header, else add the header (with the key) at the end."""
    table, key = ".".join(path[:-1]), path[-1]
    start = next((i for i, l in enumerate(lines) if l.strip() == f"[{table}]"), None)
    if start is None:
        lines += [f"[{table}]", f"{key} = {value}"]
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for i in range(start + 1, end):
        m = KEY_LINE.match(lines[i])
        if m and m.group(2) == key:
            lines[i] = m.group(1) + key + m.group(3) + value
            return
    lines.insert(start + 1, f"{key} = {value}")


def typed_value(draw, tp, meta: dict) -> str:
    """A value of the key's own type (often in range, sometimes at or past a bound)."""
    choices = meta.get("choices")
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        n = draw(st.integers(0, 4))
        return "[" + ", ".join(typed_value(draw, item, meta) for _ in range(n)) + "]"
    if choices is not None:
        names = list(choices() if callable(choices) else choices)
        return toml_string(draw(st.one_of(st.sampled_from(names), st.sampled_from(NAMES))))
    if tp is bool:
        return draw(st.sampled_from(["true", "false"]))
    if tp is int:
        return str(draw(st.one_of(st.integers(0, 8), st.sampled_from([1, 2, 3, 4, 8, 10, 12, 16, 32, 63, 64, 65, 96,
                                                                       100, 128, 130, 256, 1000]))))
    if tp is float:
        return draw(st.sampled_from(["0.0", "0.1", "0.5", "1.0", "2.0", "1e-4", "0.999", "3"]))
    return toml_string(draw(st.sampled_from(["data", "x", "schedule.npy", "schedule.txt", "runs", "w.pth",
                                             "missing/dir", ""])))


def m_known_key(draw, lines, overrides):
    """Set a schema key to a value of its type, so that cross-field checks run."""
    path, tp, meta = draw(st.sampled_from(PATHS))
    set_key(lines, path, typed_value(draw, tp, meta))


def m_plausible_override(draw, lines, overrides):
    path, tp, meta = draw(st.sampled_from(PATHS))
    overrides.append(f"{'.'.join(path)}={typed_value(draw, tp, meta)}")


def m_move_line(draw, lines, overrides):
    idx = key_lines(lines)
    if idx:
        line = lines.pop(draw(st.sampled_from(idx)))
        lines.insert(draw(st.integers(0, len(lines))), line)


def m_duplicate_line(draw, lines, overrides):
    if lines:
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(draw(st.integers(0, len(lines))), lines[i])


def m_override(draw, lines, overrides):
    path, _, _ = draw(st.sampled_from(PATHS))
    dotted = ".".join(path)
    kind = draw(st.sampled_from(["plausible", "plausible", "any", "near-miss", "no-equals", "into-scalar",
                                 "garbage", "table"]))
    if kind == "plausible":
        overrides.append(f"{dotted}={draw(plausible_text)}")
    elif kind == "any":
        overrides.append(f"{dotted}={draw(value_text)}")
    elif kind == "near-miss":
        parts = list(path)
        j = draw(st.integers(0, len(parts) - 1))
        parts[j] = near_miss(draw, parts[j])
        overrides.append(f"{'.'.join(parts)}={draw(plausible_text)}")
    elif kind == "no-equals":
        overrides.append(dotted)
    elif kind == "into-scalar":
        overrides.append(f"{dotted}.{draw(words)}={draw(plausible_text)}")
    elif kind == "table":
        overrides.append(f"{'.'.join(path[:-1]) or path[0]}={draw(value_text)}")
    else:
        overrides.append(draw(garbage).replace("\n", " ") + draw(st.sampled_from(["", "=", "=1", "=[", "=x y"])))


MUTATIONS = [m_delete, m_rename_key, m_rename_table, m_retype, m_out_of_range, m_garbage_chars, m_garbage_line,
             m_unknown_table, m_known_key, m_move_line, m_duplicate_line, m_override]


#: Mutations that keep the spec well-typed most of the time, so that the cross-field checks run.
PLAUSIBLE = [m_known_key, m_known_key, m_plausible_override]


@st.composite
def malformed_specs(draw):
    base = draw(st.sampled_from(sorted(BASES)))
    lines = BASES[base].split("\n")
    overrides: list[str] = []
    applied = []
    pool = draw(st.sampled_from([MUTATIONS, PLAUSIBLE]))
    for mutation in draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4)):
        mutation(draw, lines, overrides)
        applied.append(mutation.__name__)
    return base, "\n".join(lines), overrides, applied


# ---------------------------------------------------------------------------------------- checks

ISSUE_LINE = re.compile(r"^(?:(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+)|override '(?P<override>.*)'): ")


def check_issue(issue, text: str, file: str, overrides: list[str]) -> None:
    loc = issue.location
    lines = text.split("\n")
    if loc.override is not None:
        assert loc.override in overrides, (loc.override, overrides)
        assert str(issue).startswith(f"override '{loc.override}': ")
    else:
        assert loc.file == file
        assert 1 <= loc.line <= len(lines), (str(issue), len(lines))
        assert 1 <= loc.col <= len(lines[loc.line - 1]) + 1, (str(issue), lines[loc.line - 1])
        assert str(issue).startswith(f"{file}:{loc.line}:{loc.col}: ")
    if issue.path:
        assert f": {format_path(issue.path)}: " in str(issue)
    assert issue.message and "Traceback" not in str(issue)


def load_and_check(text: str, overrides: list[str]) -> bool:
    """True when the spec is valid; otherwise check every issue of the SpecError."""
    try:
        loaded = load_spec_text(text, "spec.toml", overrides)
    except SpecError as exc:
        assert exc.issues, "a SpecError without errors"
        for issue in exc.issues + exc.warnings:
            check_issue(issue, text, "spec.toml", overrides)
        return False
    for issue in loaded.warnings:
        check_issue(issue, text, "spec.toml", overrides)
    return True


SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.mark.parametrize("name", sorted(BASES))
def test_bases_are_valid(name):
    assert load_and_check(BASES[name], [])


@settings(max_examples=int(os.environ.get("MSTAR_FUZZ_EXAMPLES", 800)), **SETTINGS)  # 10 s; 5000 in a soak
@given(malformed_specs())
def test_mutated_specs_fail_cleanly(example):
    base, text, overrides, applied = example
    load_and_check(text, overrides)


@settings(max_examples=300, **SETTINGS)
@given(malformed_specs())
def test_mutated_specs_through_the_cli(tmp_path_factory, example):
    base, text, overrides, applied = example
    path = tmp_path_factory.mktemp("fuzz") / "spec.toml"
    path.write_text(text, encoding="utf-8", newline="")
    args = ["validate", str(path)]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(cli, args)
    out = result.output
    assert "Traceback" not in out
    assert result.exit_code in (0, 2), out
    if result.exit_code == 2:
        errors = [line for line in out.splitlines() if line.startswith("error: ")]
        assert errors, out
        for line in errors:
            m = ISSUE_LINE.match(line.removeprefix("error: "))
            assert m, line
            if m["file"] is not None:
                assert m["file"] == str(path)
                read = text.replace("\r\n", "\n").replace("\r", "\n")  # as Path.read_text sees it
                assert 1 <= int(m["line"]) <= read.count("\n") + 1
        assert f"FAIL {path}: {len(errors)} error" in out
    else:
        assert f"OK {path}: " in out
