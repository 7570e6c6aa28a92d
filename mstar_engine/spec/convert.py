"""Strict conversion of parsed TOML into the attrs schema, collecting every problem.

Unknown keys, wrong types, out-of-range values and missing required keys each become an
:class:`Issue` located at the key, with the full dotted path, what was expected and, for near
misses, a did-you-mean. Conversion never stops at the first problem.
"""
from __future__ import annotations

import math
import re
import types
import typing
from typing import Any

import attrs

from mstar_engine.spec.errors import Issue, Location, did_you_mean, format_path


class Converter:
    def __init__(self, locs: dict[tuple, Location], file: str):
        self.locs = locs
        self.file = file
        self.issues: list[Issue] = []

    # ------------------------------------------------------------------ locations
    def locate(self, path: tuple) -> Location:
        """The location of ``path`` or of its nearest located parent (else the file start)."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.locs:
                return self.locs[path[:n]]
        return Location(self.file, 1, 1)

    def error(self, path: tuple, message: str, hint: str = "") -> None:
        self.issues.append(Issue(self.locate(path), path, message, hint))

    # ------------------------------------------------------------------ structure
    def structure(self, cls: type, data: Any, path: tuple) -> Any:
        """Build ``cls`` from ``data``; return None (and record issues) when it cannot be built."""
        if not isinstance(data, dict):
            self.error(path, f"expected a table, got {describe_value(data)}",
                       f"write it as a [{format_path(path)}] section")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in attrs.fields(cls)}
        for key in data:
            if key not in fields:
                hint = did_you_mean(key, list(fields))
                self.error(path + (key,), f"unknown key '{key}' in {table_name(path)}",
                           hint or f"known keys: {', '.join(fields)}")
        kwargs: dict[str, Any] = {}
        failed = False
        for name, field in fields.items():
            if name not in data:
                if field.default is attrs.NOTHING:
                    self.missing(path + (name,), hints[name], field)
                    failed = True
                continue
            value = self.value(hints[name], data[name], path + (name,), field.metadata)
            if value is _INVALID:
                failed = True
            else:
                kwargs[name] = value
        return None if failed else cls(**kwargs)

    def missing(self, path: tuple, tp: Any, field: attrs.Attribute) -> None:
        base = strip_optional(tp)
        if attrs.has(base):
            self.error(path, f"missing required table [{format_path(path)}]",
                       f"add a [{format_path(path)}] section ({field.metadata.get('doc', '')})")
            return
        example = _example(field)
        self.error(path, f"missing required key '{path[-1]}': {field.metadata.get('doc', '')}",
                   f"add {path[-1]} = {example} under [{format_path(path[:-1])}]")

    def value(self, tp: Any, raw: Any, path: tuple, meta: dict) -> Any:
        base = strip_optional(tp)
        if attrs.has(base):
            out = self.structure(base, raw, path)
            return _INVALID if out is None else out
        origin = typing.get_origin(base)
        if origin is dict:
            return self.mapping(base, raw, path, meta)
        if origin is list:
            (item_tp,) = typing.get_args(base)
            if not isinstance(raw, list):
                self.error(path, f"expected {expected(base, meta)}, got {describe_value(raw)}",
                           f"write a list, e.g. {format_path(path[-1:])} = [{_example_scalar(item_tp)}]")
                return _INVALID
            if not self.check_length(raw, path, meta):
                return _INVALID
            items = [self.scalar(item_tp, item, path + (i,), meta) for i, item in enumerate(raw)]
            return _INVALID if any(i is _INVALID for i in items) else items
        return self.scalar(base, raw, path, meta)

    def mapping(self, tp: Any, raw: Any, path: tuple, meta: dict) -> Any:
        """A table of user-chosen names (keys matching ``meta['pattern']``) to values of one type."""
        _, value_tp = typing.get_args(tp)
        if not isinstance(raw, dict):
            self.error(path, f"expected a table, got {describe_value(raw)}",
                       f"write it as a [{format_path(path)}] section")
            return _INVALID
        out, failed = {}, False
        for key, item in raw.items():
            if meta.get("pattern") and not re.fullmatch(meta["pattern"], key):
                self.error(path + (key,), f"'{key}' is not a valid name: expected letters, digits, '-', '_' or "
                                          "'.', starting with a letter or digit")
                failed = True
                continue
            value = self.value(value_tp, item, path + (key,), {})
            failed |= value is _INVALID
            out[key] = value
        return _INVALID if failed else out

    def scalar(self, tp: type, raw: Any, path: tuple, meta: dict) -> Any:
        ok = {
            bool: isinstance(raw, bool),
            int: isinstance(raw, int) and not isinstance(raw, bool),
            float: isinstance(raw, (int, float)) and not isinstance(raw, bool),
            str: isinstance(raw, str),
        }[tp]
        if not ok:
            hint = ""
            if tp is int and isinstance(raw, float) and raw.is_integer():
                hint = f"write it without a decimal point: {int(raw)}"
            elif tp in (int, float) and isinstance(raw, str) and _is_number(raw):
                hint = f"remove the quotes: {raw}"
            elif tp is bool and isinstance(raw, str) and raw.lower() in ("true", "false"):
                hint = f"write {raw.lower()} without quotes"
            elif tp is str and not isinstance(raw, (list, dict)):
                hint = f'put the value in quotes: "{raw}"'
            self.error(path, f"expected {expected(tp, meta)}, got {describe_value(raw)}", hint)
            return _INVALID
        if tp is float:
            try:
                raw = float(raw)
            except OverflowError:
                raw = math.inf if raw > 0 else -math.inf
            if not math.isfinite(raw):
                self.error(path, f"expected a finite number, got {raw}")
                return _INVALID
        if not self.check_bounds(raw, path, meta) or not self.check_choice(raw, path, meta):
            return _INVALID
        pattern = meta.get("pattern")
        if pattern and not re.fullmatch(pattern, raw):
            self.error(path, f"'{raw}' is not a valid value: expected letters, digits, '-', '_' or '.', "
                             "starting with a letter or digit")
            return _INVALID
        return raw

    # ------------------------------------------------------------------ constraints
    def check_bounds(self, raw: Any, path: tuple, meta: dict) -> bool:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return True
        if isinstance(raw, int) and abs(raw) >= 2**63:
            self.error(path, f"{raw:.3g} is out of range: expected a 64-bit integer" +
                       (f", {bounds_text(meta).removeprefix('a value ')}" if any(
                           meta.get(k) is not None for k in ("ge", "gt", "le", "lt")) else ""))
            return False
        tests = (("ge", lambda b: raw >= b), ("gt", lambda b: raw > b), ("le", lambda b: raw <= b),
                 ("lt", lambda b: raw < b))
        if all(meta.get(k) is None or test(meta[k]) for k, test in tests):
            return True
        self.error(path, f"{raw} is out of range: expected {bounds_text(meta)}")
        return False

    def check_choice(self, raw: Any, path: tuple, meta: dict) -> bool:
        choices = meta.get("choices")
        if choices is None:
            return True
        names = list(choices() if callable(choices) else choices)
        if raw in names:
            return True
        hint = did_you_mean(raw, names)
        self.error(path, f"unknown value '{raw}': expected one of {', '.join(repr(n) for n in names)}", hint)
        return False

    def check_length(self, raw: list, path: tuple, meta: dict) -> bool:
        n, exact, least = len(raw), meta.get("length"), meta.get("min_length")
        if exact is not None and n != exact:
            self.error(path, f"expected a list of exactly {exact} values, got {n}")
            return False
        if least is not None and n < least:
            self.error(path, f"expected a list of at least {least} value{'s' if least > 1 else ''}, got {n}")
            return False
        return True


_INVALID = object()


def strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def table_name(path: tuple) -> str:
    return f"[{format_path(path)}]" if path else "the top level (expected tables such as [experiment])"


def bounds_text(meta: dict) -> str:
    parts = []
    for key, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        if meta.get(key) is not None:
            parts.append(f"{sym} {meta[key]:g}")
    return "a value " + " and ".join(parts)


def expected(tp: Any, meta: dict) -> str:
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        plural = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}[item]
        bounds = any(meta.get(k) is not None for k in ("ge", "gt", "le", "lt"))
        return f"a list of {plural}" + (f", each {bounds_text(meta).removeprefix('a value ')}" if bounds else "")
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    text = names.get(tp, "a table")
    if tp in (int, float) and any(meta.get(k) is not None for k in ("ge", "gt", "le", "lt")):
        text += " " + bounds_text(meta).removeprefix("a value ")
    return text


def describe_value(raw: Any) -> str:
    if isinstance(raw, bool):
        return f"boolean {str(raw).lower()}"
    if isinstance(raw, int):
        return f"integer {raw}"
    if isinstance(raw, float):
        return f"number {raw!r}"
    if isinstance(raw, str):
        return f'string "{raw}"'
    if isinstance(raw, list):
        return "a list"
    if isinstance(raw, dict):
        return "a table"
    return f"{type(raw).__name__} {raw}"


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _example_scalar(tp: Any) -> str:
    return {int: "1", float: "0.5", bool: "true", str: '"..."'}.get(tp, "...")


def _example(field: attrs.Attribute) -> str:
    choices = field.metadata.get("choices")
    if choices is not None:
        names = list(choices() if callable(choices) else choices)
        return f'"{names[0]}"' if names else '"..."'
    return '"..."'
