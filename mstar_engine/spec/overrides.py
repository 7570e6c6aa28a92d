"""Dotted command-line overrides: ``train.lr=1e-4 process.steps=64``.

Each override is applied to the parsed document before conversion, so it is checked exactly
like a key in the file; problems are located at the override text.
"""
from __future__ import annotations

import re
import sys

import attrs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from mstar_engine.spec.errors import Issue, Location
from mstar_engine.spec.toml_source import MAX_NESTING, nesting_depth, nesting_issue

_TOO_DEEP = object()
_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_BARE_WORD = re.compile(r"[A-Za-z0-9_.+\-/~:]+")


def parse_value(text: str):
    """A TOML value (``1e-4``, ``true``, ``[1, 2]``, ``"x"``); a bare word is taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if _BARE_WORD.fullmatch(text):
            return text
        raise


def apply_overrides(data: dict, locs: dict[tuple, Location], overrides: list[str]) -> list[Issue]:
    """Set each ``key.path=value`` in ``data`` (in place) and record its location."""
    issues = []
    for text in overrides:
        where = Location("<command line>", override=text)
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            issues.append(Issue(where, (), "an override must look like section.key=value",
                                "for example train.lr=1e-4 or process.family=beta"))
            continue
        path = tuple(key.split("."))
        try:
            value = parse_value(raw.strip())
        except tomllib.TOMLDecodeError:
            issues.append(Issue(where, path, f"cannot read the value {raw.strip()!r}",
                                'write a TOML value: a number, true/false, [1, 2] or a quoted "string"'))
            continue
        except RecursionError:  # brackets nested hundreds of levels deep
            value = _TOO_DEEP
        if value is _TOO_DEEP or nesting_depth(value) + len(path) > MAX_NESTING:
            issues.append(attrs.evolve(nesting_issue(raw, where.file, override=text), path=path))
            continue
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                issues.append(Issue(where, path[:depth + 1], f"'{'.'.join(path[:depth + 1])}' is a value, "
                                    "not a table, so it has no keys", f"set it directly: {'.'.join(path[:depth + 1])}=..."))
                break
            locs.setdefault(path[:depth + 1], where)
            node = child
        else:
            node[path[-1]] = value
            for stale in [p for p in locs if p[:len(path)] == path]:
                del locs[stale]
            locs[path] = where
            _record_items(value, path, where, locs)
    return issues


def _record_items(value, path: tuple, where: Location, locs: dict) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            locs[path + (i,)] = where
            _record_items(item, path + (i,), where, locs)
    elif isinstance(value, dict):
        for k, item in value.items():
            locs[path + (k,)] = where
            _record_items(item, path + (k,), where, locs)
