"""Data domains: where data lives, and which families can model which domain.

This module is pure Python (no torch) so that spec validation stays light.
"""
from __future__ import annotations

import attrs


@attrs.frozen
class Domain:
    name: str
    description: str
    requirement: str  # what data must satisfy, phrased for error messages
    discrete: bool = False  # values repeat exactly (nearest-neighbour distances can be zero)


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("real", "real vectors or images in R^d", "finite real values"),
        Domain("unit-box", "values in the open box (0,1)^d", "values strictly inside (0, 1)"),
        Domain("positive", "positive reals (0, inf)^d", "strictly positive values"),
        Domain("simplex", "probability vectors on the simplex", "non-negative vectors that sum to 1"),
        Domain("sphere", "unit vectors on the sphere S^{d-1}", "unit-norm vectors (‖x‖ = 1)"),
        Domain("circle", "angles on the circle", "angles in [-pi, pi)"),
        Domain("spd", "symmetric positive-definite matrices", "symmetric positive-definite p×p matrices"),
        Domain("categorical", "one-hot tokens over K classes", "one-hot vectors over K classes", discrete=True),
    )
}

#: Which data domains each family's domain can model directly. Gaussian noise lives in R^d, so
#: it accepts every continuous domain (it is the DDPM baseline; its head maps back to the domain).
ACCEPTS: dict[str, frozenset[str]] = {
    "real": frozenset({"real", "unit-box", "positive", "simplex", "sphere", "circle", "spd"}),
    "unit-box": frozenset({"unit-box"}),
    "positive": frozenset({"positive"}),
    "simplex": frozenset({"simplex"}),
    "sphere": frozenset({"sphere"}),
    "circle": frozenset({"circle"}),
    "spd": frozenset({"spd"}),
    "categorical": frozenset({"categorical"}),
}


def family_accepts(family_domain: str, data_domain: str) -> bool:
    return data_domain in ACCEPTS[family_domain]
