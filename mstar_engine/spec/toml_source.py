"""Load TOML and keep the line and column of every key.

``tomllib`` parses and validates the document; it does not report where keys are. After a
successful parse, :func:`key_locations` walks the same text once more with a small scanner that
understands just enough TOML (headers, dotted keys, strings, arrays, inline tables, comments) to
record the position of every key, table header, array-of-tables element and array element.
No maintained TOML library exposes key positions, hence this scanner (listed in the README).
"""
from __future__ import annotations

import bisect
import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from mstar_engine.spec.errors import Issue, Location, SpecError

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: Deepest nesting of tables, arrays and inline tables a spec may have (its own keys need 4: the
#: document, [process], [process.schedule] and its values = [...]); deeper documents are refused
#: before anything recurses into them (tomllib, the key scanner and the converter are recursive).
MAX_NESTING = 32
_DOTTED_RUN = re.compile(r"""(?:(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')[ \t]*\.[ \t]*){%d,}""" % MAX_NESTING)
_LOC_IN_MSG = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_LOC_EOF = re.compile(r"\s*\(at end of document\)\s*$")


def load_toml(text: str, file: str) -> tuple[dict, dict[tuple, Location]]:
    """Parse ``text``; return the document and a map from key path to :class:`Location`.

    A syntax error raises :class:`SpecError` located at the offending line and column.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([syntax_issue(exc, text, file)]) from None
    except RecursionError:  # arrays or inline tables nested hundreds of levels deep
        raise SpecError([nesting_issue(text, file)]) from None
    if nesting_depth(data) > MAX_NESTING:
        raise SpecError([nesting_issue(text, file)])
    return data, key_locations(text, file)


def nesting_depth(value) -> int:
    """How deeply tables (dicts) and arrays (lists) nest in a parsed value (a scalar: 0), without
    recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def bracket_depth(text: str) -> tuple[int, int | None]:
    """How deeply ``[`` and ``{`` nest in ``text`` (outside strings and comments), and the position
    of the first bracket that opens level ``min(depth, MAX_NESTING + 1)``. A plain loop (no
    recursion) that needs no valid TOML."""
    depth, deepest, where, i, n = 0, 0, None, 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                if c == '"' and text[j] == "\\":
                    j += 1
                elif len(quote) == 1 and text[j] == "\n":  # an unterminated one-line string ends here
                    break
                j += 1
            i = j + len(quote)
            continue
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if depth <= MAX_NESTING + 1:
                    where = i
        elif c in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return deepest, where


def nesting_issue(text: str, file: str, override: str | None = None) -> Issue:
    """The error for a document (or an override's value) nested deeper than :data:`MAX_NESTING`
    levels, located at the bracket that goes too deep (or the dotted key with too many parts)."""
    if override is not None:
        where = Location(file, override=override)
    else:
        depth, pos = bracket_depth(text)
        if depth <= 2:  # not the brackets (a spec needs two: compare = { x = ["..."] }): dotted keys
            m = _DOTTED_RUN.search(text)
            pos = m.start() if m else None
        if pos is None:
            where = Location(file, 1, 1)
        else:
            line = text.count("\n", 0, pos)
            where = Location(file, line + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1)
    return Issue(where, (), f"tables, arrays or inline tables are nested more than {MAX_NESTING} levels deep",
                 "a spec needs at most a list of numbers or strings inside a table (e.g. eval.steps = [64, 8]); "
                 "remove the extra brackets or dotted key parts")


def syntax_issue(exc: Exception, text: str, file: str) -> Issue:
    msg = str(getattr(exc, "msg", None) or exc)
    line = getattr(exc, "lineno", None)
    col = getattr(exc, "colno", None)
    if _LOC_EOF.search(str(exc)):  # at the last character written, not past the final newline (tomli ≥ 2.1)
        line = None
        msg = str(exc)
    if line is None:
        m = _LOC_IN_MSG.search(msg)
        if m:
            line, col = int(m.group(1)), int(m.group(2))
        elif _LOC_EOF.search(msg):
            lines = text.rstrip("\n").split("\n")
            line, col = len(lines), len(lines[-1]) + 1
        else:
            line, col = 1, 1
    msg = _LOC_EOF.sub("", _LOC_IN_MSG.sub("", msg))
    msg = msg[:1].lower() + msg[1:]
    return Issue(Location(file, line, col), (), f"TOML syntax error: {msg}",
                 "check quotes, brackets and '=' on this line (strings need quotes: key = \"value\")")


class _Scanner:
    """Walks TOML text that ``tomllib`` has already accepted, recording key positions."""

    def __init__(self, text: str, file: str):
        self.s = text
        self.i = 0
        self.file = file
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
        self.locs: dict[tuple, Location] = {}
        self.aot_counts: dict[tuple, int] = {}

    # ---------------------------------------------------------------- positions
    def loc(self, pos: int) -> Location:
        line = bisect.bisect_right(self.line_starts, pos) - 1
        return Location(self.file, line + 1, pos - self.line_starts[line] + 1)

    def record(self, path: tuple, pos: int) -> None:
        self.locs.setdefault(path, self.loc(pos))

    # ---------------------------------------------------------------- lexing helpers
    def peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def skip_ws(self, newlines: bool = False) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            else:
                return

    def read_string(self) -> str:
        s = self.s
        for quote in ('"""', "'''"):
            if s.startswith(quote, self.i):
                end = s.index(quote, self.i + 3)
                while quote == '"""' and _escaped(s, end):
                    end = s.index(quote, end + 1)
                while s.startswith(quote[0], end + 3):  # up to two extra quotes close the string
                    end += 1
                value = s[self.i + 3:end]
                self.i = end + 3
                return value
        quote = s[self.i]
        j = self.i + 1
        out = []
        while s[j] != quote:
            if quote == '"' and s[j] == "\\":
                out.append(s[j:j + 2])
                j += 2
                continue
            out.append(s[j])
            j += 1
        self.i = j + 1
        raw = "".join(out)
        if quote == '"':
            return tomllib.loads(f'v = "{raw}"')["v"]
        return raw

    def read_key(self) -> list[tuple[str, int]]:
        parts = []
        while True:
            self.skip_ws()
            start = self.i
            if self.peek() in ('"', "'"):
                parts.append((self.read_string(), start))
            else:
                m = BARE_KEY.match(self.s, self.i)
                parts.append((m.group(0), start))
                self.i = m.end()
            self.skip_ws()
            if self.peek() == ".":
                self.i += 1
                continue
            return parts

    # ---------------------------------------------------------------- grammar
    def resolve(self, keys: list[str]) -> tuple:
        """Insert the current index after every array-of-tables prefix of a header path."""
        path: tuple = ()
        for k in keys:
            path += (k,)
            if path in self.aot_counts:
                path += (self.aot_counts[path] - 1,)
        return path

    def document(self) -> None:
        table: tuple = ()
        while True:
            self.skip_ws(newlines=True)
            if self.i >= len(self.s):
                return
            start = self.i
            if self.peek() == "[":
                brackets = 2 if self.s.startswith("[[", self.i) else 1  # [[array of tables]] or [table]
                self.i += brackets
                parts = self.read_key()
                keys = [k for k, _ in parts]
                self.i += brackets
                self.record_prefixes(parts)
                if brackets == 1:
                    table = self.resolve(keys)
                else:
                    parent = self.resolve(keys[:-1]) + (keys[-1],)
                    self.record(parent, start)
                    n = self.aot_counts.get(parent, 0)
                    self.aot_counts[parent] = n + 1
                    table = parent + (n,)
                self.record(table, start)
            else:
                self.key_value(table)

    def record_prefixes(self, parts: list[tuple[str, int]]) -> None:
        """A header ``[a.b]`` defines table ``a`` too when no earlier line did: locate it at its
        part of the header (not at the start of the file)."""
        keys = [k for k, _ in parts]
        for n in range(1, len(parts)):
            self.record(self.resolve(keys[:n]), parts[n - 1][1])

    def key_value(self, table: tuple) -> None:
        parts = self.read_key()
        path = table
        for k, pos in parts:
            path += (k,)
            self.record(path, pos)
        self.skip_ws()
        self.i += 1  # '='
        self.skip_ws()
        self.value(path)

    def value(self, path: tuple) -> None:
        c = self.peek()
        if c in ('"', "'"):
            self.read_string()
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                self.record(path + (index,), self.i)
                self.value(path + (index,))
                index += 1
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip_ws()
                if self.peek() == "}":
                    self.i += 1
                    return
                self.key_value(path)
                self.skip_ws()
                if self.peek() == ",":
                    self.i += 1
        else:
            m = re.compile(r"[^,\]\}\n#]*").match(self.s, self.i)
            self.i = m.end()


def _escaped(s: str, pos: int) -> bool:
    n = 0
    while pos - 1 - n >= 0 and s[pos - 1 - n] == "\\":
        n += 1
    return n % 2 == 1


def key_locations(text: str, file: str) -> dict[tuple, Location]:
    scanner = _Scanner(text, file)
    scanner.document()
    return scanner.locs
