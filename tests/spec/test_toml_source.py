"""The TOML location scanner (mstar_engine.spec.toml_source).

Every expected (line, col) below was counted by hand from the text next to it (1-based,
columns in characters). The property test at the end builds random valid TOML with its own
emitter, which notes where it writes each key, and compares with the scanner.
"""
from __future__ import annotations

import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstar_engine.spec.errors import SpecError
from mstar_engine.spec.toml_source import key_locations, load_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def positions(text: str) -> dict[tuple, tuple[int, int]]:
    data, locs = load_toml(text, "f.toml")
    for loc in locs.values():
        assert loc.file == "f.toml" and loc.override is None
    return {path: (loc.line, loc.col) for path, loc in locs.items()}


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# --------------------------------------------------------------------------- hand-counted cases

def test_keys_under_table_headers():
    text = doc("""
        [experiment]
        name = "x"
          seed=1

        [process]
        family = "beta"
        """)
    assert positions(text) == {
        ("experiment",): (1, 1),
        ("experiment", "name"): (2, 1),
        ("experiment", "seed"): (3, 3),
        ("process",): (5, 1),
        ("process", "family"): (6, 1),
    }


def test_dotted_header_records_the_full_path_at_the_bracket():
    text = doc("""
        [process.coupling]
        kind = "ddpm"
          [ process . schedule ]
        name = "auto"
        """)
    assert positions(text) == {
        ("process",): (1, 2),  # defined by the first header, at its part (issue #12: was not located)
        ("process", "coupling"): (1, 1),
        ("process", "coupling", "kind"): (2, 1),
        ("process", "schedule"): (3, 3),
        ("process", "schedule", "name"): (4, 1),
    }


def test_dotted_keys_record_every_prefix_at_its_part():
    text = doc("""
        [process]
        coupling.kind = "constant"
        coupling . rho = 0.5
        schedule.name="auto"
        """)
    # line 2: "coupling.kind": coupling at col 1, kind at col 10
    # line 3: "coupling . rho": coupling already recorded on line 2; rho at col 12
    # line 4: schedule at col 1, name at col 10
    assert positions(text) == {
        ("process",): (1, 1),
        ("process", "coupling"): (2, 1),
        ("process", "coupling", "kind"): (2, 10),
        ("process", "coupling", "rho"): (3, 12),
        ("process", "schedule"): (4, 1),
        ("process", "schedule", "name"): (4, 10),
    }


def test_top_level_dotted_keys():
    text = 'experiment.name = "x"\nprocess.steps = 4\n'
    assert positions(text) == {
        ("experiment",): (1, 1),
        ("experiment", "name"): (1, 12),
        ("process",): (2, 1),
        ("process", "steps"): (2, 9),
    }


def test_quoted_keys():
    text = doc("""
        ["my table"]
        "batch-size" = 1
        'literal key' = 2
        "a.b".c = 3
        "esc\\"aped" = 4
        "" = 5
        """)
    # line 4: '"a.b"' spans cols 1-5, '.' col 6, 'c' col 7
    assert positions(text) == {
        ("my table",): (1, 1),
        ("my table", "batch-size"): (2, 1),
        ("my table", "literal key"): (3, 1),
        ("my table", "a.b"): (4, 1),
        ("my table", "a.b", "c"): (4, 7),
        ("my table", 'esc"aped'): (5, 1),
        ("my table", ""): (6, 1),
    }


def test_quoted_header_parts():
    text = '[ "a b" . \'c\' ]\nx = 1\n'
    assert positions(text) == {("a b",): (1, 3), ("a b", "c"): (1, 1), ("a b", "c", "x"): (2, 1)}


def test_inline_tables():
    text = doc("""
        [process]
        coupling = { kind = "constant", rho = 0.5 }
        schedule = {name="auto",reference = "cosine", x.y = {z = 1}}
        """)
    # line 2: 'coupling' col 1, '{' col 12, 'kind' col 14, 'rho' col 33
    # line 3: 'schedule' col 1, 'name' col 13, 'reference' col 25, 'x' col 47, 'y' col 49, 'z' col 54
    assert positions(text) == {
        ("process",): (1, 1),
        ("process", "coupling"): (2, 1),
        ("process", "coupling", "kind"): (2, 14),
        ("process", "coupling", "rho"): (2, 33),
        ("process", "schedule"): (3, 1),
        ("process", "schedule", "name"): (3, 13),
        ("process", "schedule", "reference"): (3, 25),
        ("process", "schedule", "x"): (3, 47),
        ("process", "schedule", "x", "y"): (3, 49),
        ("process", "schedule", "x", "y", "z"): (3, 54),
    }


def test_array_elements_are_indexed():
    text = doc("""
        [eval]
        metrics = ["knn-kl", "fid", 'energy']
        steps = [
            64,   # first
            8,
        ]
        """)
    # line 2: '[' col 11, "knn-kl" col 12, "fid" col 22, 'energy' col 29
    assert positions(text) == {
        ("eval",): (1, 1),
        ("eval", "metrics"): (2, 1),
        ("eval", "metrics", 0): (2, 12),
        ("eval", "metrics", 1): (2, 22),
        ("eval", "metrics", 2): (2, 29),
        ("eval", "steps"): (3, 1),
        ("eval", "steps", 0): (4, 5),
        ("eval", "steps", 1): (5, 5),
    }


def test_nested_arrays_and_empty_containers():
    text = "a = [[1, 2], [], [ 3 ]]\nb = {}\nc = []\n"
    # '[1' at col 6, '1' col 7, '2' col 10, '[]' col 14, '[ 3 ]' col 18, '3' col 20
    assert positions(text) == {
        ("a",): (1, 1),
        ("a", 0): (1, 6),
        ("a", 0, 0): (1, 7),
        ("a", 0, 1): (1, 10),
        ("a", 1): (1, 14),
        ("a", 2): (1, 18),
        ("a", 2, 0): (1, 20),
        ("b",): (2, 1),
        ("c",): (3, 1),
    }


def test_arrays_of_inline_tables():
    text = doc("""
        stages = [
          { to = 32 },
          {to=16, lr = 1e-5},
        ]
        """)
    # line 2: '{' col 3, 'to' col 5; line 3: '{' col 3, 'to' col 4, 'lr' col 11
    assert positions(text) == {
        ("stages",): (1, 1),
        ("stages", 0): (2, 3),
        ("stages", 0, "to"): (2, 5),
        ("stages", 1): (3, 3),
        ("stages", 1, "to"): (3, 4),
        ("stages", 1, "lr"): (3, 11),
    }


def test_arrays_of_tables_with_indices():
    text = doc("""
        [[distill.stages]]
        to = 32

        [[distill.stages]]
        to = 16
        [distill.stages.extra]
        note = "sub-table of element 1"

        [[distill.stages.runs]]
        n = 1
        [[distill.stages.runs]]
        n = 2
        """)
    assert positions(text) == {
        ("distill",): (1, 3),
        ("distill", "stages"): (1, 1),
        ("distill", "stages", 0): (1, 1),
        ("distill", "stages", 0, "to"): (2, 1),
        ("distill", "stages", 1): (4, 1),
        ("distill", "stages", 1, "to"): (5, 1),
        ("distill", "stages", 1, "extra"): (6, 1),
        ("distill", "stages", 1, "extra", "note"): (7, 1),
        ("distill", "stages", 1, "runs"): (9, 1),
        ("distill", "stages", 1, "runs", 0): (9, 1),
        ("distill", "stages", 1, "runs", 0, "n"): (10, 1),
        ("distill", "stages", 1, "runs", 1): (11, 1),
        ("distill", "stages", 1, "runs", 1, "n"): (12, 1),
    }


def test_nested_arrays_of_tables_restart_per_parent_element():
    text = doc("""
        [[a]]
        [[a.b]]
        [[a]]
        [[a.b]]
        [[a.b]]
        x = 1
        """)
    assert positions(text) == {
        ("a",): (1, 1),
        ("a", 0): (1, 1),
        ("a", 0, "b"): (2, 1),
        ("a", 0, "b", 0): (2, 1),
        ("a", 1): (3, 1),
        ("a", 1, "b"): (4, 1),
        ("a", 1, "b", 0): (4, 1),
        ("a", 1, "b", 1): (5, 1),
        ("a", 1, "b", 1, "x"): (6, 1),
    }


def test_multiline_strings_hide_brackets_equals_and_hashes():
    text = doc('''
        [experiment]
        description = """
        [process]
        family = "gaussian"  # not a key
        [[fake]]
        """
        name = 'x'
        notes = \'\'\'
        [data] = # '' "
        \'\'\'
        seed = 3
        ''')
    assert positions(text) == {
        ("experiment",): (1, 1),
        ("experiment", "description"): (2, 1),
        ("experiment", "name"): (7, 1),
        ("experiment", "notes"): (8, 1),
        ("experiment", "seed"): (11, 1),
    }
    data, _ = load_toml(text, "f.toml")
    assert "[process]" in data["experiment"]["description"]


def test_multiline_strings_with_escaped_and_trailing_quotes():
    text = 'a = """x\\"""y"""\nb = """q"""""\nc = \'\'\'r\'\'\'\'\'\nd = """\\\\"""\ne = 1\n'
    data, _ = load_toml(text, "f.toml")
    assert data == {"a": 'x"""y', "b": 'q""', "c": "r''", "d": "\\", "e": 1}
    assert positions(text) == {("a",): (1, 1), ("b",): (2, 1), ("c",): (3, 1), ("d",): (4, 1), ("e",): (5, 1)}


def test_single_line_strings_with_brackets_commas_and_hashes():
    text = 'a = ["]", "a,b", \'#\', "\\"]"]\nb = "x # y"  # real comment [z]\nc = 1\n'
    # '"]"' col 6, '"a,b"' col 11, "'#'" col 18, '"\\"]"' col 23
    assert positions(text) == {
        ("a",): (1, 1),
        ("a", 0): (1, 6),
        ("a", 1): (1, 11),
        ("a", 2): (1, 18),
        ("a", 3): (1, 23),
        ("b",): (2, 1),
        ("c",): (3, 1),
    }


def test_comments_blank_lines_and_whitespace():
    text = doc("""
        # [not] = "a table"

           # indented comment
        [t]   # comment after a header
        \tk = 1 # comment = 2
        l = [ # comment inside an array ]
          1, # one
          # a whole comment line [x]
          2
        ] # after
        """)
    assert positions(text) == {
        ("t",): (4, 1),
        ("t", "k"): (5, 2),
        ("t", "l"): (6, 1),
        ("t", "l", 0): (7, 3),
        ("t", "l", 1): (9, 3),
    }


def test_scalars_of_every_kind():
    text = doc("""
        a = 1979-05-27T07:32:00Z
        b = 1979-05-27 07:32:00
        c = 0x1F
        d = -inf
        e = 1_000
        f = true
        """)
    assert positions(text) == {(k,): (i + 1, 1) for i, k in enumerate("abcdef")}


def test_crlf_line_endings():
    text = '[t]\r\na = "x"\r\nb = [1,\r\n  2]\r\n'
    assert positions(text) == {("t",): (1, 1), ("t", "a"): (2, 1), ("t", "b"): (3, 1), ("t", "b", 0): (3, 6),
                               ("t", "b", 1): (4, 3)}


def test_non_ascii_columns_count_characters():
    text = '[t]\ndesc = "ééé" # ü\n"ü" = 1\n'
    assert positions(text) == {("t",): (1, 1), ("t", "desc"): (2, 1), ("t", "ü"): (3, 1)}


def test_first_occurrence_wins_for_implicit_tables():
    # "a" is first written on line 1 (dotted key), then extended on line 2
    text = "a.b = 1\na.c = 2\n"
    assert positions(text) == {("a",): (1, 1), ("a", "b"): (1, 3), ("a", "c"): (2, 3)}


def test_key_locations_agrees_with_load_toml():
    text = doc("""
        [x]
        y = [1, {z = 2}]
        """)
    assert key_locations(text, "f.toml") == load_toml(text, "f.toml")[1]


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        ('a = "x\n', 1, 7, "illegal character"),
        ("a 1\n", 1, 3, "expected '=' after a key"),
        ("[a\nb = 1\n", 1, 3, "expected ']' at the end of a table declaration"),
        ("x = 1\ny = [1,\n", 2, 8, "invalid value"),                     # end of document: end of last line
        ("a = dirichlet\n", 1, 5, "invalid value"),
        ("[a]\nb = 1\n[a]\n", 3, 3, "cannot declare ('a',) twice"),
    ],
)
def test_syntax_errors_are_located(text, line, col, message):
    with pytest.raises(SpecError) as info:
        load_toml(text, "f.toml")
    (issue,) = info.value.issues
    assert (issue.location.file, issue.location.line, issue.location.col) == ("f.toml", line, col)
    assert issue.message.startswith("TOML syntax error: " + message)
    assert "(at line" not in issue.message and "end of document" not in issue.message
    assert str(issue).startswith(f"f.toml:{line}:{col}: TOML syntax error: ")


# --------------------------------------------------------------------------- property test

BARE_CHARS = "abcxyz_-0123456789"
TRICKY = ["]", "[", "[[t]]", ",", "#", "=", "{", "}", "k = 1", " ", ".", "'", '\\"', "\\\\", "\\u00e9", "é", "x"]


class Emitter:
    """Writes TOML text while noting the (line, col) where each key path first appears."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.line, self.col = 1, 1
        self.expected: dict[tuple, tuple[int, int]] = {}
        self.fresh = 0

    def write(self, s: str) -> None:
        self.chunks.append(s)
        for ch in s:
            if ch == "\n":
                self.line, self.col = self.line + 1, 1
            else:
                self.col += 1

    def mark(self, path: tuple) -> None:
        self.expected.setdefault(path, (self.line, self.col))

    def name(self) -> str:
        self.fresh += 1
        return f"k{self.fresh}"

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def key_text(draw, name: str) -> str:
    style = draw(st.sampled_from(["bare", "bare", "basic", "literal"]))
    if style == "bare":
        return name
    if style == "literal":
        return f"'{name}'"
    return f'"{name}"'


def quoted_key(draw, em: Emitter) -> tuple[str, str]:
    """A key that can only be written quoted: (as written, as parsed)."""
    written = '"' + draw(st.sampled_from(["a.b", "x y", "#", "=", "[k]", 'q\\"q', "", "ü"])) + em.name() + '"'
    return written, tomllib.loads(f"v = {written}")["v"]


def emit_string(draw, em: Emitter) -> None:
    kind = draw(st.sampled_from(["basic", "literal", "ml-basic", "ml-literal"]))
    parts = draw(st.lists(st.sampled_from(TRICKY), max_size=4))
    if kind == "basic":
        em.write('"' + "".join(parts) + '"')
    elif kind == "literal":
        em.write("'" + "".join(p for p in parts if "'" not in p and "\\" not in p) + "'")
    elif kind == "ml-basic":
        body = "\n".join(parts + draw(st.lists(st.sampled_from(['\\"""', "[x]", "a = 1", "# c", '"']), max_size=3)))
        tail = draw(st.sampled_from(["", '"', '""']))
        body = body.rstrip('"')  # at most two quotes may end the content
        if (len(body) - len(body.rstrip("\\"))) % 2:
            body += "\\"  # a lone backslash would escape the closing quotes
        em.write('"""' + body + tail + '"""')
    else:
        body = "\n".join(p for p in parts + draw(st.lists(st.sampled_from(["[x]", "a = 1", "# c", "'", "\\"]),
                                                          max_size=3)))
        body = body.replace("'''", "").rstrip("'")
        tail = draw(st.sampled_from(["", "'", "''"]))
        em.write("'''" + body + tail + "'''")


def emit_value(draw, em: Emitter, path: tuple, depth: int) -> None:
    kinds = ["scalar", "string"] + (["array", "inline"] if depth < 3 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "scalar":
        em.write(draw(st.sampled_from(["42", "-1_000", "0x1F", "+7", "1e-4", "3.14", "inf", "-nan", "true",
                                       "false", "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00"])))
    elif kind == "string":
        emit_string(draw, em)
    elif kind == "array":
        em.write("[")
        n = draw(st.integers(0, 3))
        for i in range(n):
            em.write(draw(st.sampled_from(["", " ", "\n  ", " # c ] [\n "])))
            em.mark(path + (i,))
            emit_value(draw, em, path + (i,), depth + 1)
            if i < n - 1 or draw(st.booleans()):
                em.write(draw(st.sampled_from([",", " ,", ", # x\n"])))
        em.write(draw(st.sampled_from(["", " ", "\n"])) + "]")
    else:
        em.write("{")
        n = draw(st.integers(0, 3))
        for i in range(n):
            em.write(draw(st.sampled_from(["", " "])))
            emit_key_value(draw, em, path, depth + 1)
            if i < n - 1:
                em.write(draw(st.sampled_from([",", " , "])))
        em.write(draw(st.sampled_from(["", " "])) + "}")


def emit_key(draw, em: Emitter, table: tuple) -> tuple:
    path = table
    n = draw(st.integers(1, 3))
    for i in range(n):
        if i:
            em.write(draw(st.sampled_from([".", " . ", ". "])))
        if draw(st.integers(0, 5)) == 0:
            written, parsed = quoted_key(draw, em)
        else:
            parsed = em.name()
            written = key_text(draw, parsed)
        path += (parsed,)
        em.mark(path)
        em.write(written)
    return path


def emit_key_value(draw, em: Emitter, table: tuple, depth: int) -> None:
    path = emit_key(draw, em, table)
    em.write(draw(st.sampled_from(["=", " = ", "  =\t"])))
    emit_value(draw, em, path, depth)


def emit_body(draw, em: Emitter, table: tuple) -> None:
    for _ in range(draw(st.integers(0, 3))):
        em.write(draw(st.sampled_from(["", "  ", "\t"])))
        emit_key_value(draw, em, table, 0)
        em.write(draw(st.sampled_from(["\n", "  # trailing [x] = 'y'\n", "\n\n", "\r\n"])))
        if draw(st.booleans()):
            em.write(draw(st.sampled_from(["# comment [t]\n", "\n", "   # a = 1\n"])))


@st.composite
def documents(draw):
    em = Emitter()
    emit_body(draw, em, ())
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["table", "subtable", "aot"]))
        if kind == "table":
            name = em.name()
            emit_header(draw, em, [name], (name,), aot=False)
            emit_body(draw, em, (name,))
        elif kind == "subtable":
            a, b = em.name(), em.name()
            emit_header(draw, em, [a, b], (a, b), aot=False, prefixes=[(a,)])
            emit_body(draw, em, (a, b))
        else:
            name = em.name()
            for i in range(draw(st.integers(1, 3))):
                emit_header(draw, em, [name], (name, i), aot=True, parent=(name,))
                emit_body(draw, em, (name, i))
                if draw(st.booleans()):
                    sub = em.name()
                    for j in range(draw(st.integers(1, 2))):
                        emit_header(draw, em, [name, sub], (name, i, sub, j), aot=True,
                                    parent=(name, i, sub), prefixes=[(name, i)])
                        emit_body(draw, em, (name, i, sub, j))
                if draw(st.booleans()):
                    sub = em.name()
                    emit_header(draw, em, [name, sub], (name, i, sub), aot=False, prefixes=[(name, i)])
                    emit_body(draw, em, (name, i, sub))
    return em


def emit_header(draw, em: Emitter, parts: list[str], path: tuple, aot: bool, parent: tuple = (),
                prefixes: list[tuple] = ()) -> None:
    """``prefixes``: the tables the header's leading parts name (resolved), each located at its part
    when no earlier line defined it."""
    indent = draw(st.sampled_from(["", "  "]))
    em.write(indent)
    if parent:
        em.mark(parent)
    em.mark(path)
    em.write("[[" if aot else "[")
    em.write(draw(st.sampled_from(["", " "])))
    for i, p in enumerate(parts):
        if i:
            em.write(draw(st.sampled_from([".", " . "])))
        if i < len(prefixes):
            em.mark(prefixes[i])
        em.write(key_text(draw, p))
    em.write(draw(st.sampled_from(["", " "])))
    em.write("]]" if aot else "]")
    em.write(draw(st.sampled_from(["\n", " # header\n"])))


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(documents())
def test_scanner_matches_an_independent_emitter(em):
    text = em.text
    tomllib.loads(text)  # the emitter writes valid TOML
    assert positions(text) == em.expected, text
