"""One module per exponential family, the protocol (:mod:`.base`), and plug-ins by import path.

Everything the tool knows about a family lives on its class (:class:`Family`). A spec names a
family by its registry name (the built-ins, and any class decorated with :func:`register`), by the
name of a ``mstar.families`` entry point of an installed package, or by an import path
``"package.module:Class"``; :func:`get` resolves all three, so every command, and every spawned
worker process, finds a user's family from the spec's string alone.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from mstar_engine.families import beta, categorical, dirichlet, gamma, gaussian, von_mises, vmf, wishart  # noqa: F401
from mstar_engine.families.base import REGISTRY, DomainError, Family, register

__all__ = ["REGISTRY", "DomainError", "Family", "register", "get", "available", "ENTRY_POINTS"]

#: Entry-point group of installed family plug-ins: ``name = "package.module:Class"``.
ENTRY_POINTS = "mstar.families"


def get(name: str | type[Family]) -> type[Family]:
    """The family class named ``name``: a registry name, an entry-point name or an import path
    ``"module:Class"`` (a class is returned as it is). An unknown name is a KeyError; an import
    path that does not lead to a Family subclass is a ValueError saying why."""
    if isinstance(name, type) and issubclass(name, Family):
        return name
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:
        return _load(name, name)
    found = [ep for ep in entry_points(group=ENTRY_POINTS) if ep.name == name]
    if found:
        return _load(found[0].value, f"entry point {name!r} ({ENTRY_POINTS})")
    raise KeyError(f"unknown family {name!r}; known: {', '.join(sorted(available()))}, or an import path "
                   "'package.module:Class'")


def available() -> dict[str, str]:
    """Every family a spec can name without an import path: registry name -> description, the
    installed plug-ins (entry points, described by their import path) included."""
    out = {name: cls.summary for name, cls in REGISTRY.items()}
    for ep in entry_points(group=ENTRY_POINTS):
        out.setdefault(ep.name, f"plug-in {ep.value}")
    return out


def _load(path: str, what: str) -> type[Family]:
    module, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"family {what}: cannot import module {module!r} ({exc}); put it on PYTHONPATH or "
                         "install its package") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"family {what}: module {module!r} has no attribute {attr!r}") from None
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Family)):
        raise ValueError(f"family {what}: {attr!r} is not a subclass of mstar_engine.families.Family")
    return obj
