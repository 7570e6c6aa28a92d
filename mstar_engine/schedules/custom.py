"""``custom`` schedules: values given in the spec (a list) or in a ``.npy`` file, validated.

Accepted forms, for a family with T steps:

* one array of length T or T + 1 holding the family's *primary* schedule (``Family.custom_primary``,
  by default its first schedule parameter; the Gaussian family takes ᾱ_t in (0, 1): mean = sqrt(ᾱ),
  var = 1 − ᾱ), the other parameters taken from the family's ``custom_fill`` schedule for the same
  T (wishart, gamma: ξ_t of ``wishart-exp``, ``gamma-exp``);
* a mapping {parameter: array} with every schedule parameter of the family;
* a ``.npy`` file with a 1-D array (primary) or a 2-D array of shape (P, T) or (P, T + 1) whose
  rows are the family's P schedule parameters in the family's order.

Length T: steps 1..T; the pseudo step is added by the family's rule (:mod:`.pseudo`). Length T + 1:
index 0 is the pseudo step, taken as given. Ranges, by parameter: var, kappa, shape > 0; nu ≥ 0;
xi, bar_beta in [0, 1] (bar_beta > 0 for t ≥ 1); df > p − 1.

Every value must be finite; the ranges above are checked and a violation is a ValueError that
names the parameter, the first offending index and value, and the rule.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mstar_engine.families import Family, get
from mstar_engine.families.base import ScheduleValueError
from mstar_engine.schedules.pseudo import with_pseudo_step

__all__ = ["ScheduleValueError", "build_custom"]


def _as_array(values, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"custom schedule: {what} must be numbers, got {type(values).__name__}") from None
    return arr


def _load_npy(path: str | Path) -> np.ndarray:
    path = Path(path).expanduser()
    if path.suffix != ".npy":
        raise ValueError(f"custom schedule file '{path}' is not a .npy file; save the array with numpy.save")
    if not path.is_file():
        raise ValueError(f"custom schedule file '{path}' not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"custom schedule file '{path}' could not be read as a numeric .npy array: {err}") from None


def _check_length(arr: np.ndarray, steps: int, what: str) -> None:
    if arr.ndim != 1:
        raise ValueError(f"custom schedule: {what} must be one-dimensional, got shape {arr.shape}")
    if arr.shape[0] not in (steps, steps + 1):
        raise ValueError(f"custom schedule: {what} for steps = {steps} needs {steps} values (steps 1..T) or "
                         f"{steps + 1} (pseudo step 0 first), got {arr.shape[0]}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"custom schedule: {what} must be finite; index {bad[0]} is {arr[bad[0]]}")


def _require(arr: np.ndarray, ok: np.ndarray, name: str, rule: str, offset: int) -> None:
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        raise ScheduleValueError(name, rule, i + offset, float(arr[i]))


def _validate(params: dict[str, np.ndarray], event_shape, offset: int) -> None:
    """Range checks; ``offset`` is the step index of element 0 (0 with a pseudo step, else 1)."""
    for name, arr in params.items():
        if name in ("var",):
            _require(arr, arr > 0, name, "> 0", offset)
        elif name in ("kappa", "shape"):
            _require(arr, arr > 0, name, "> 0", offset)
        elif name == "nu":
            _require(arr, arr >= 0, name, ">= 0", offset)
        elif name == "xi":
            _require(arr, (arr >= 0) & (arr <= 1), name, "in [0, 1]", offset)
        elif name == "df":
            p = int(event_shape[-1]) if event_shape else 2
            _require(arr, arr > p - 1, name, f"> p − 1 = {p - 1} (p = {p})", offset)
        elif name == "bar_beta":
            _require(arr, (arr >= 0) & (arr <= 1), name, "in [0, 1]", offset)
            steps_part = arr[1:] if offset == 0 else arr  # without the pseudo step
            _require(steps_part, steps_part > 0, name, "> 0 for steps t >= 1 (log β̄/K is used)", 1)


def build_custom(steps: int, family: str | type[Family], values=None, file: str | Path | None = None,
                 event_shape=None, fill: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Validated arrays of length T + 1 for ``family`` from ``values`` or ``file`` (exactly one);
    ``fill``: the arrays (length T + 1) of the family's ``custom_fill`` schedule."""
    if (values is None) == (file is None):
        raise ValueError("a custom schedule needs exactly one of values (a list) or file (a .npy path)")
    cls = get(family)
    names = cls.schedule_params
    if file is not None:
        raw = _load_npy(file)
        if raw.ndim == 2:
            if raw.shape[0] != len(names):
                raise ValueError(f"custom schedule file '{file}': a 2-D array needs one row per schedule "
                                 f"parameter {names} of the {cls.name} family, got {raw.shape[0]} rows")
            values = dict(zip(names, raw))
        else:
            values = raw
    if isinstance(values, Mapping):
        missing, extra = set(names) - set(values), set(values) - set(names)
        if missing or extra:
            raise ValueError(f"custom schedule for the {cls.name} family needs arrays {names}; "
                             f"missing {sorted(missing)}, unexpected {sorted(extra)}")
        params = {k: _as_array(values[k], k) for k in names}
        for k, arr in params.items():
            _check_length(arr, steps, k)
        if len({arr.shape[0] for arr in params.values()}) != 1:
            raise ValueError(f"custom schedule: the arrays {names} differ in length")
    else:
        arr = _as_array(values, "values")
        _check_length(arr, steps, f"values ({cls.custom_primary or names[0]})")
        first = 0 if arr.shape[0] == steps + 1 else 1
        params = cls.schedule_from_primary(arr, {k: v[first:] for k, v in (fill or {}).items()}, first)
    with_pseudo = next(iter(params.values())).shape[0] == steps + 1
    _validate(params, event_shape, 0 if with_pseudo else 1)
    if not with_pseudo:
        params = with_pseudo_step(family, params)
    return params

