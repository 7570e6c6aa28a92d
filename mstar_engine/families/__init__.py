"""Exponential families: one module per family, the protocol in :mod:`.base`, and the registry.

Importing this package registers every built-in family. A custom family is a subclass of
:class:`Family` decorated with :func:`register`; it is then usable by name in a spec and the
contract test suite runs on it unchanged.
"""
from mstar_engine.families.base import REGISTRY, DomainError, Family, register
from mstar_engine.families import (  # noqa: F401  (imported for registration)
    beta,
    categorical,
    dirichlet,
    gamma,
    gaussian,
    von_mises,
    vmf,
    wishart,
)

__all__ = ["REGISTRY", "DomainError", "Family", "register", "get"]


def get(name: str) -> type[Family]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
