"""Pseudo step: the index-0 entry of a schedule given its steps 1..T (notes §2.4).

The pseudo step is the sharp marginal used by the last KL term (t = 1) and the final draw. Its
rule is the family's (:meth:`mstar_engine.families.Family.pseudo_step`; a copy of step 1 unless
the class says otherwise), applied by every builder that produces steps 1..T only (the published
non-Gaussian schedules, ``snr-matched``, and ``custom`` schedules given with T values).
"""
from __future__ import annotations

import numpy as np

from mstar_engine.families import Family, get

Params = dict[str, np.ndarray]


def with_pseudo_step(family: str | type[Family], params: Params) -> Params:
    """Prepend the family's pseudo step to arrays holding steps 1..T."""
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    first = get(family).pseudo_step(params)
    return {k: np.concatenate([[first[k]], v]) for k, v in params.items()}
