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

from mstar_engine.data.catalog import DATASETS
from mstar_engine.families import REGISTRY, get
from mstar_engine.families.domains import DOMAINS, family_accepts
from mstar_engine.spec.errors import Issue, Location, did_you_mean, format_path, locate
from mstar_engine.spec.fields import INT_MAX, INT_MAX_WHY


class Converter:
    def __init__(self, locs: dict[tuple, Location], file: str):
        self.locs = locs
        self.file = file
        self.issues: list[Issue] = []
        self.document: Any = None  # the whole parsed spec, for hints that depend on other keys

    # ------------------------------------------------------------------ issues
    def error(self, path: tuple, message: str, hint: str = "") -> None:
        self.issues.append(Issue(locate(self.locs, path, self.file), path, message, hint))

    # ------------------------------------------------------------------ structure
    def structure(self, cls: type, data: Any, path: tuple) -> Any:
        """Build ``cls`` from ``data``; return None (and record issues) when it cannot be built."""
        if not path:
            self.document = data
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
        example, note = _suggestion(path, field, self.document if isinstance(self.document, dict) else {})
        self.error(path, f"missing required key '{path[-1]}': {field.metadata.get('doc', '')}",
                   f"add {path[-1]} = {example} under [{format_path(path[:-1])}]" + (f" ({note})" if note else ""))

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
            if not self.check_text_length(key, path + (key,), meta, "name"):
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
        if isinstance(raw, str) and not self.check_text_length(raw, path, meta, "value"):
            return _INVALID
        return raw

    # ------------------------------------------------------------------ constraints
    def check_bounds(self, raw: Any, path: tuple, meta: dict) -> bool:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return True
        if isinstance(raw, int):
            meta = int_bounds(meta)
        tests = (("ge", lambda b: raw >= b), ("gt", lambda b: raw > b), ("le", lambda b: raw <= b),
                 ("lt", lambda b: raw < b))
        if all(meta.get(k) is None or test(meta[k]) for k, test in tests):
            return True
        shown = f"{raw:.4g}" if isinstance(raw, int) and abs(raw) >= 10**12 else f"{raw}"
        self.error(path, f"{shown} is out of range: expected {bounds_text(meta)}", meta.get("why") or "")
        return False

    def check_text_length(self, text: str, path: tuple, meta: dict, what: str) -> bool:
        longest = meta.get("max_length")
        if longest is None or len(text) <= longest:
            return True
        self.error(path, f"this {what} has {len(text)} characters; at most {longest} are allowed",
                   meta.get("why") or "use a shorter one")
        return False

    def check_choice(self, raw: Any, path: tuple, meta: dict) -> bool:
        choices = meta.get("choices")
        if choices is None:
            return True
        names = list(choices() if callable(choices) else choices)
        if raw in names:
            return True
        if path == ("process", "family") and isinstance(raw, str):  # a plug-in: entry point or import path
            try:
                return get(raw) is not None
            except ValueError as exc:
                self.error(path, str(exc), "name a family of mstar list families, or 'package.module:Class'")
                return False
            except KeyError:
                pass
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
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def table_name(path: tuple) -> str:
    return f"[{format_path(path)}]" if path else "the top level (expected tables such as [experiment])"


def int_bounds(meta: dict) -> dict:
    """An integer key's bounds: its own, and at most :data:`INT_MAX` when it has no upper bound
    (sizes and counts beyond 2^31 overflow 32-bit index arithmetic or could never be allocated)."""
    if meta.get("le") is not None or meta.get("lt") is not None:
        return meta
    return {**meta, "le": INT_MAX, "why": meta.get("why") or INT_MAX_WHY}


def bounds_text(meta: dict) -> str:
    parts = []
    for key, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        value = meta.get(key)
        if value is not None:
            parts.append(f"{sym} {value}" if isinstance(value, int) else f"{sym} {value:g}")
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


def _suggestion(path: tuple, field: attrs.Attribute, document: dict) -> tuple[str, str]:
    """The value to suggest for a missing required key, and a note on the choices: for
    ``process.family`` the family made for the data's domain, for ``data.name`` the synthetic
    dataset of the family's domain; otherwise the choices themselves."""
    choices = field.metadata.get("choices")
    if choices is None:
        return '"..."', ""
    names = list(choices() if callable(choices) else choices)
    listed = "one of " + ", ".join(names)
    if path == ("process", "family"):
        return _family_for_data(document, names, listed)
    if path == ("data", "name"):
        return _data_for_family(document, names, listed)
    return '"..."', listed


def _table(document: dict, name: str) -> dict:
    table = document.get(name)
    return table if isinstance(table, dict) else {}


def _family_for_data(document: dict, names: list[str], listed: str) -> tuple[str, str]:
    data = _table(document, "data")
    info = DATASETS.get(data.get("name")) if isinstance(data.get("name"), str) else None
    data_range = data.get("range") if data.get("range") in ("symmetric", "unit") else "symmetric"
    domain = info.domain_for(data_range) if info is not None else None
    if domain not in DOMAINS:  # no dataset yet, or a user's file (any domain): every family
        return '"..."', listed
    fits = [n for n in names if n in REGISTRY and family_accepts(REGISTRY[n].domain, domain)]
    own = [n for n in fits if REGISTRY[n].domain == domain] or fits
    if not own:
        return '"..."', listed
    others = [n for n in fits if n != own[0]]
    note = f"dataset '{info.name}' gives {DOMAINS[domain].description}"
    if others:
        note += f"; {', '.join(others)} also {'fits' if len(others) == 1 else 'fit'}"
    return f'"{own[0]}"', note + "; mstar list families"


def _data_for_family(document: dict, names: list[str], listed: str) -> tuple[str, str]:
    family = _table(document, "process").get("family")
    cls = REGISTRY.get(family) if isinstance(family, str) else None
    if cls is None:
        return '"..."', "mstar list datasets"
    made = [n for n in names if DATASETS[n].kind == "synthetic" and DATASETS[n].domain == cls.domain]
    if not made:
        return '"..."', "mstar list datasets"
    return f'"{made[0]}"', f"built-in {DOMAINS[cls.domain].description} for the {family} family; mstar list datasets"
