"""``setting()``: an attrs field that carries its documentation and its constraints.

The converter (:mod:`.convert`) reads these constraints, so each default and each bound is
written once, here in the schema.
"""
from __future__ import annotations

from typing import Any, Callable

import attrs

REQUIRED = attrs.NOTHING

#: Largest value of an integer key without an upper bound of its own.
INT_MAX = 2**31 - 1
INT_MAX_WHY = ("sizes and counts in a spec are below 2^31 (larger ones overflow 32-bit index arithmetic "
               "or could never be allocated)")


def setting(default: Any = REQUIRED, doc: str = "", *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None,
            choices: tuple | Callable[[], list[str]] | None = None,
            length: int | None = None, min_length: int | None = None, pattern: str | None = None,
            max_length: int | None = None, why: str | None = None,
            factory: Callable[[], Any] | None = None) -> Any:
    """Declare one spec key. ``choices`` may be a tuple or a callable returning the names
    (used for registries: families, schedules, datasets, metrics). ``max_length``: the longest
    string (or, for a table of names, the longest name); ``why``: the reason for the bounds, the
    hint of an out-of-range error. Integer keys without ``le``/``lt`` are at most :data:`INT_MAX`."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices,
            "length": length, "min_length": min_length, "pattern": pattern, "max_length": max_length,
            "why": why}
    if factory is not None:
        return attrs.field(factory=factory, metadata=meta, kw_only=True)
    return attrs.field(default=default, metadata=meta, kw_only=True)


def section(cls: type, doc: str = "") -> Any:
    """A nested table with every key defaulted."""
    return attrs.field(factory=cls, metadata={"doc": doc, "section": True}, kw_only=True)
