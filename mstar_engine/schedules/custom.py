"""``custom`` schedules: values given in the spec (a list) or in a ``.npy`` file, validated.

Accepted forms, for a family with T steps:

* one array of length T or T + 1 holding the family's *primary* schedule (the table below);
* a mapping {parameter: array} with every schedule parameter of the family;
* a ``.npy`` file with a 1-D array (primary) or a 2-D array of shape (P, T) or (P, T + 1) whose
  rows are the family's P schedule parameters in the family's order.

Length T: steps 1..T; the pseudo step is added by the family's rule (:mod:`.pseudo`). Length T + 1:
index 0 is the pseudo step, taken as given.

| family | primary array | other parameters when only the primary is given |
|---|---|---|
| gaussian | ᾱ_t in (0, 1): mean = sqrt(ᾱ), var = 1 − ᾱ | — |
| beta, dirichlet | ν_t ≥ 0 | — |
| vmf, von-mises | κ_t > 0 | — |
| categorical | β̄_t in [0, 1] (β̄ > 0 for t ≥ 1) | — |
| wishart | n_t > p − 1 | ξ_t of ``wishart-exp`` for the same T |
| gamma | α_t > 0 | ξ_t of ``gamma-exp`` for the same T |

Every value must be finite; the ranges above are checked and a violation is a ValueError that
names the parameter, the first offending index and value, and the rule.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mstar_engine.schedules.decays import gamma_exp, wishart_exp
from mstar_engine.schedules.pseudo import with_pseudo_step

PARAMS = {
    "gaussian": ("mean", "var"),
    "beta": ("nu",),
    "dirichlet": ("nu",),
    "vmf": ("kappa",),
    "von-mises": ("kappa",),
    "categorical": ("bar_beta",),
    "wishart": ("df", "xi"),
    "gamma": ("shape", "xi"),
}
PRIMARY = {"gaussian": "alpha_bar", "wishart": "df", "gamma": "shape"}


def _params_of(family: str) -> tuple[str, ...]:
    if family in PARAMS:
        return PARAMS[family]
    try:
        from mstar_engine.families import get
        return tuple(get(family).schedule_params)
    except (ImportError, KeyError):
        raise ValueError(f"custom schedule: unknown family {family!r}") from None


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


class ScheduleValueError(ValueError):
    """A custom schedule value outside its family's range: parameter ``name`` at step ``step``
    (0 is the pseudo step) is ``value`` and must be ``rule``."""

    def __init__(self, name: str, rule: str, step: int, value: float) -> None:
        super().__init__(f"custom schedule: {name} must be {rule}; step {step} is {value!r}")
        self.name, self.rule, self.step, self.value = name, rule, step, value


def _require(arr: np.ndarray, ok: np.ndarray, name: str, rule: str, offset: int) -> None:
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        raise ScheduleValueError(name, rule, i + offset, float(arr[i]))


def _validate(family: str, params: dict[str, np.ndarray], event_shape, offset: int) -> None:
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


def build_custom(steps: int, family: str, values=None, file: str | Path | None = None,
                 event_shape=None) -> dict[str, np.ndarray]:
    """Validated arrays of length T + 1 for ``family`` from ``values`` or ``file`` (exactly one)."""
    if (values is None) == (file is None):
        raise ValueError("a custom schedule needs exactly one of values (a list) or file (a .npy path)")
    names = _params_of(family)
    if file is not None:
        raw = _load_npy(file)
        if raw.ndim == 2:
            if raw.shape[0] != len(names):
                raise ValueError(f"custom schedule file '{file}': a 2-D array needs one row per schedule "
                                 f"parameter {names} of the {family} family, got {raw.shape[0]} rows")
            values = dict(zip(names, raw))
        else:
            values = raw
    if isinstance(values, Mapping):
        missing, extra = set(names) - set(values), set(values) - set(names)
        if missing or extra:
            raise ValueError(f"custom schedule for the {family} family needs arrays {names}; "
                             f"missing {sorted(missing)}, unexpected {sorted(extra)}")
        params = {k: _as_array(values[k], k) for k in names}
        for k, arr in params.items():
            _check_length(arr, steps, k)
        if len({arr.shape[0] for arr in params.values()}) != 1:
            raise ValueError(f"custom schedule: the arrays {names} differ in length")
    else:
        arr = _as_array(values, "values")
        primary = PRIMARY.get(family, names[0])
        _check_length(arr, steps, f"values ({primary})")
        params = _from_primary(family, names, arr, steps)
    with_pseudo = next(iter(params.values())).shape[0] == steps + 1
    _validate(family, params, event_shape, 0 if with_pseudo else 1)
    if not with_pseudo:
        params = with_pseudo_step(family, params)
    return params


def _from_primary(family: str, names: tuple[str, ...], arr: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    if family == "gaussian":
        _require(arr, (arr > 0) & (arr < 1), "alpha_bar", "in (0, 1) (the Gaussian family needs var = 1 − ᾱ > 0)",
                 0 if arr.shape[0] == steps + 1 else 1)
        return {"mean": np.sqrt(arr), "var": 1 - arr}
    if family in ("wishart", "gamma"):
        other = (wishart_exp if family == "wishart" else gamma_exp)(steps)["xi"]
        if arr.shape[0] == steps + 1:
            other = np.concatenate([[other[0]], other])  # both pseudo-step rules copy step 1
        return {names[0]: arr, "xi": other}
    if len(names) != 1:
        raise ValueError(f"custom schedule: the {family} family has several schedule arrays {names}; "
                         "give a mapping {name: values} or a 2-D .npy file")
    return {names[0]: arr}
