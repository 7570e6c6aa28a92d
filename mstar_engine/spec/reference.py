"""The annotated reference spec: every table and key of the schema with its default, its type, bounds
and choices, and its one-line description, written as a TOML file generated from the attrs classes.

``docs/spec-reference.toml`` is its output (``python -m mstar_cli.docs`` rewrites it; a test fails
when it is stale). Its active lines are exactly the schema's defaults plus an example value for
each required key (a test reads them back), and keys unset by default (and the optional
``[distill]`` and ``[compare]`` tables) are shown as comments.
"""
from __future__ import annotations

import re
import textwrap
import typing
from typing import Any

import attrs
import tomli_w

from mstar_engine.spec.convert import expected, strip_optional
from mstar_engine.spec.schema import Spec

#: Example values for the required keys (a spec that validates on any machine).
REQUIRED_EXAMPLES = {("experiment", "name"): "reference", ("process", "family"): "gaussian",
                     ("data", "name"): "gaussian-mixture"}
#: Shown for the optional tables: a table that switches a stage on is not part of the defaults.
OPTIONAL_EXAMPLES = {("distill",): {"to": 8},
                     ("compare",): {"star-shaped": ["process.coupling.kind=independent", "process.inputs=tail"]}}
WIDTH = 100

HEADER = """\
# mstar spec reference: every table and key, its default, what it accepts and what it does.
# Generated from mstar_engine/spec/schema.py by `python -m mstar_cli.docs`; do not edit by hand.
#
# Only experiment.name, process.family and data.name are required (the values below are examples);
# every other line shows the default. Lines `# key = ...` are unset by default, and the commented
# [distill] and [compare] tables are off unless written. Copy what you need into your spec, not the
# whole file: mstar refuses keys that do nothing for a given spec (for example [network.unet] when
# the network is an MLP, or data.flip for data that are not images), so that no setting is silently
# ignored. `mstar plan SPEC` prints every resolved value of a spec and where it came from. Integer
# keys without an upper bound below are at most 2147483647 (2^31 - 1).
"""


def reference_toml() -> str:
    """The reference spec as TOML text (deterministic: the registries' names are sorted)."""
    return "\n".join([HEADER, *(_table(field, (field.name,)) for field in attrs.fields(Spec))])


def _table(field: attrs.Attribute, path: tuple) -> str:
    tp = strip_optional(typing.get_type_hints(_owner(path))[field.name])
    name = ".".join(path)
    if path in OPTIONAL_EXAMPLES:
        body = tomli_w.dumps(OPTIONAL_EXAMPLES[path]).strip().splitlines()
        keys = _keys(tp, path, commented=True) if attrs.has(tp) else []
        lines = [*_comment(f"{field.metadata['doc']}; off unless written, e.g."), f"# [{name}]",
                 *(f"# {line}" for line in body)]
        if keys:
            lines += ["#", "# Its keys:", *keys]
        return "\n".join(lines) + "\n"
    scalars = [f for f in attrs.fields(tp) if not _is_table(tp, f)]
    lines = [*_comment(field.metadata["doc"]), f"[{name}]", *_keys(tp, path, commented=False, fields=scalars)]
    tables = [_table(f, path + (f.name,)) for f in attrs.fields(tp) if _is_table(tp, f)]
    return "\n".join(["\n".join(lines) + "\n", *tables])


@attrs.frozen
class Key:
    """One leaf key of the schema, described for people."""
    path: tuple
    default: Any  # None when unset by default (or required)
    accepts: str
    doc: str
    required: bool


def schema_keys(cls: type = Spec, path: tuple = ()) -> list[Key]:
    """Every leaf key in reference order: a table's own keys, then its sub-tables."""
    own = [describe(cls, f, path) for f in attrs.fields(cls) if not _is_table(cls, f)]
    for field in attrs.fields(cls):
        tp = strip_optional(typing.get_type_hints(cls)[field.name])
        if attrs.has(tp):
            own += schema_keys(tp, path + (field.name,))
    return own


def describe(cls: type, field: attrs.Attribute, path: tuple) -> Key:
    tp, meta = strip_optional(typing.get_type_hints(cls)[field.name]), field.metadata
    accepts = expected(tp, meta)
    choices = meta.get("choices")
    if choices is not None:
        names = list(choices() if callable(choices) else choices)
        accepts = ("a list of any of " if typing.get_origin(tp) is list else "one of ") + ", ".join(
            f'"{n}"' for n in names)
    if meta.get("pattern"):
        accepts += " (letters, digits, '-', '_', '.')"
    return Key(path + (field.name,), _default(field), accepts, meta["doc"], field.default is attrs.NOTHING)


def _keys(cls: type, path: tuple, *, commented: bool, fields: list | None = None) -> list[str]:
    lines = []
    for field in fields if fields is not None else attrs.fields(cls):
        key = describe(cls, field, path)
        note = "required" if key.required else ("unset by default" if key.default is None else "")
        lines += _comment(f"{key.doc}. Accepts {key.accepts}" + (f"; {note}" if note else "") + ".")
        value = REQUIRED_EXAMPLES.get(key.path) if key.required else key.default
        if value is None:
            lines.append(f"# {field.name} = ...")
        else:
            line = tomli_w.dumps({field.name: value}).strip()
            lines.append(f"# {line}" if commented else line)
    return lines


def _default(field: attrs.Attribute) -> Any:
    if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
        return field.default.factory()
    return None if field.default is attrs.NOTHING else field.default


def _is_table(cls: type, field: attrs.Attribute) -> bool:
    tp = strip_optional(typing.get_type_hints(cls)[field.name])
    return attrs.has(tp) or typing.get_origin(tp) is dict


def _owner(path: tuple) -> type:
    cls = Spec
    for name in path[:-1]:
        cls = strip_optional(typing.get_type_hints(cls)[name])
    return cls


def _comment(text: str) -> list[str]:
    text = re.sub(r"\.\.$", ".", text)
    return textwrap.wrap(text, WIDTH - 2, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)
