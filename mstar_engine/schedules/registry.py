"""The schedule registry: every named noise schedule and its builder. Which families a schedule fits
is said by the family classes (``Family.schedules``); ``snr-matched`` and ``custom`` fit every family.

``SCHEDULES[name].build(steps, **options)`` returns ``{param: float64 tensor of length T + 1}``
keyed by the family's schedule parameter names, index 0 being the pseudo step. Options:

* every schedule accepts ``family`` (a name, an import path or a class; checked against the
  schedule's families) and
  ``event_shape`` (used where the data shape matters: K for dirichlet/categorical, d for vmf, p
  for wishart; ignored elsewhere);
* cosine, ss-cosine: ``plus_one`` (default True: t/(T+1), the published convention);
* beta-cosine: ``x0_concentration`` (c of the Beta(c, c) reference data, default 1.5), ``cache``;
* categorical-d3pm: ``cache`` (K comes from ``event_shape[-1]``, default 27);
* snr-matched: ``family`` (required), ``reference`` (ss-cosine, ss-linear, cosine, linear;
  default ss-cosine), ``cache``;
* custom: ``family`` (required) and exactly one of ``values`` (a list, an array or a mapping) or
  ``file`` (a .npy path).

Unknown options and options set to None are rejected / ignored respectively, so callers can pass a
spec's schedule table as is (``reference=None`` means the default).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from mstar_engine.families import REGISTRY
from mstar_engine.families import get as family_class
from mstar_engine.schedules import decays, gaussian
from mstar_engine.schedules.custom import build_custom
from mstar_engine.schedules.kl_snr import kl_snr
from mstar_engine.schedules.matching import build_snr_matched
from mstar_engine.schedules.mi_matched import TEXT8_CLASSES, build_beta_cosine, build_categorical_d3pm
from mstar_engine.schedules.pseudo import with_pseudo_step


@dataclass(frozen=True)
class ScheduleInfo:
    """One named schedule. ``universal``: it fits every family; otherwise the registered families
    whose class lists it (``Family.schedules``); the builder gets the family (the first of them
    when none is given)."""

    name: str
    summary: str
    builder: Callable[..., dict[str, np.ndarray]] = field(repr=False)
    options: tuple[str, ...] = ()
    universal: bool = False

    @property
    def applies_to(self) -> tuple[str, ...] | None:
        """The registered families this schedule is made for; None when it fits every family."""
        if self.universal:
            return None
        return tuple(name for name, cls in sorted(REGISTRY.items()) if self.name in cls.schedules)

    @property
    def families(self) -> tuple[str, ...]:
        return self.applies_to if self.applies_to is not None else tuple(sorted(REGISTRY))

    def build(self, steps: int, **options) -> dict[str, torch.Tensor]:
        """Float64 tensors of length ``steps + 1`` keyed by the family's schedule parameters."""
        return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))
                for k, v in self.build_numpy(steps, **options).items()}

    def build_numpy(self, steps: int, **options) -> dict[str, np.ndarray]:
        gaussian.check_steps(steps)
        options = {k: v for k, v in options.items() if v is not None}
        family = options.pop("family", None)
        event_shape = options.pop("event_shape", None)
        unknown = set(options) - set(self.options)
        if unknown:
            allowed = ", ".join(("family", "event_shape") + self.options)
            raise ValueError(f"schedule {self.name!r} does not take option(s) {', '.join(sorted(unknown))}; "
                             f"it takes {allowed}")
        if family is not None and not self.universal and self.name not in family_class(family).schedules:
            raise ValueError(f"schedule {self.name!r} does not apply to the {family_class(family).name} family; "
                             f"it is for {', '.join(self.applies_to)}")
        if family is None and self.universal:
            raise ValueError(f"schedule {self.name!r} needs the family (option family=...)")
        family = family if family is not None or self.universal else self.applies_to[0]
        out = self.builder(int(steps), family=family, event_shape=event_shape, **options)
        for key, value in out.items():
            if value.shape != (steps + 1,) or not np.all(np.isfinite(value)):
                raise RuntimeError(f"schedule {self.name!r} built a bad {key!r} array: shape {value.shape}, "
                                   f"finite {bool(np.all(np.isfinite(value)))}")
        return out


def _shape_last(event_shape, default: int) -> int:
    return int(event_shape[-1]) if event_shape else default


def _published(fn: Callable[[int], dict]) -> Callable[..., dict]:
    """A closed-form published builder (steps 1..T) with the family's pseudo step prepended."""
    return lambda steps, family, event_shape=None: with_pseudo_step(family, fn(steps))


def _wishart(steps: int, family, event_shape=None) -> dict:
    return with_pseudo_step(family, decays.wishart_exp(steps, p=_shape_last(event_shape, 2)))


def _gaussian_builder(name: str) -> Callable[..., dict]:
    star = name.startswith("ss-")
    base = name[3:] if star else name

    def build(steps: int, family=None, event_shape=None, plus_one: bool = True) -> dict:
        fn = gaussian.build_star_shaped if star else gaussian.build_ddpm
        return fn(base, steps, plus_one=plus_one)

    return build


def _beta_cosine(steps: int, family=None, event_shape=None, **options) -> dict:
    return build_beta_cosine(steps, **options)


def _categorical_d3pm(steps: int, family=None, event_shape=None, **options) -> dict:
    return build_categorical_d3pm(steps, _shape_last(event_shape, TEXT8_CLASSES), **options)


def _snr_matched(steps: int, family: str, event_shape=None, **options) -> dict:
    return build_snr_matched(steps, family, event_shape, **options)


def _custom(steps: int, family: str, event_shape=None, **options) -> dict:
    fill_with = family_class(family).custom_fill
    fill = get(fill_with).build_numpy(steps, event_shape=event_shape) if fill_with else None
    return build_custom(steps, family, event_shape=event_shape, fill=fill, **options)


SCHEDULES: dict[str, ScheduleInfo] = {
    s.name: s
    for s in (
        ScheduleInfo("linear", "DDPM linear: beta_t from 1e-4 to 0.02 (scaled by 1000/T), "
                     "m = sqrt(abar), v = 1 - abar", _gaussian_builder("linear")),
        ScheduleInfo("cosine", "DDPM cosine of Nichol & Dhariwal (s = 0.008, t/(T+1)), m = sqrt(abar), v = 1 - abar",
                     _gaussian_builder("cosine"), ("plus_one",)),
        ScheduleInfo("ss-linear", "star-shaped equivalent of linear (Theorem 2: SNR_t - SNR_{t+1})",
                     _gaussian_builder("ss-linear")),
        ScheduleInfo("ss-cosine", "star-shaped equivalent of cosine (Theorem 2), the published SS-DDPM schedule",
                     _gaussian_builder("ss-cosine"), ("plus_one",)),
        ScheduleInfo("beta-cosine", "Beta nu_t matched to ss-cosine by mutual information I(x0; x_t) "
                     "(published, CIFAR-10)", _beta_cosine, ("x0_concentration", "cache")),
        ScheduleInfo("dirichlet-exp", "Dirichlet nu_t exponential decay 2000 -> 1e-6 (published, ratio 1.25 at "
                     "T = 64)", _published(decays.dirichlet_exp)),
        ScheduleInfo("wishart-exp", "Wishart n_t exponential decay 20000 -> p + 3, xi_t = sqrt(linspace(1, 1e-8)) "
                     "(published)", _wishart),
        ScheduleInfo("vmf-spline", "vMF log10 kappa cubic spline 3 -> -3 (published, EOSDIS fires)",
                     _published(decays.vmf_spline_schedule)),
        ScheduleInfo("categorical-d3pm", "categorical bar_beta_t matched to the D3PM cosine baseline "
                     "(published, text8)", _categorical_d3pm, ("cache",)),
        ScheduleInfo("gamma-exp", "Gamma shape 1e4 -> 1 exponential decay, xi 0 -> 1 (the 1-D analogue of "
                     "wishart-exp)", _published(decays.gamma_exp)),
        ScheduleInfo("von-mises-exp", "von Mises kappa exponential decay 1000 -> 1e-3 (ratio 1.25 at T = 64)",
                     _published(decays.von_mises_exp)),
        ScheduleInfo("snr-matched", "any family: per-step bisection so its KL-SNR equals a Gaussian reference's "
                     "SNR (cached)", _snr_matched, ("reference", "cache"), universal=True),
        ScheduleInfo("custom", "values given in the spec (list) or a .npy file, validated for the family",
                     _custom, ("values", "file"), universal=True),
    )
}

GAUSSIAN_SCHEDULES = ("linear", "cosine", "ss-linear", "ss-cosine")


def build_schedule(name: str, steps: int, **options) -> dict[str, torch.Tensor]:
    """``SCHEDULES[name].build(steps, **options)`` with a clear error for an unknown name."""
    return get(name).build(steps, **options)


def build_for_spec(name: str, steps: int, family: str, event_shape=None, reference: str | None = None,
                   values=None, file=None) -> dict[str, torch.Tensor]:
    """Build from the fields of a spec's ``[process.schedule]`` table (name already resolved from
    "auto"): ``reference`` goes to snr-matched only and ``values``/``file`` to custom only, so the
    table's defaults can be passed as they are."""
    options: dict = {"family": family, "event_shape": event_shape}
    if name == "snr-matched":
        options["reference"] = reference
    if name == "custom":
        options.update(values=values, file=file)
    return get(name).build(steps, **options)


def get(name: str) -> ScheduleInfo:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise KeyError(f"unknown schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}") from None


def gaussian_equivalent_snr(name: str, steps: int, **options) -> torch.Tensor:
    """SNR (length T + 1, float64) of the Gaussian schedule that schedule ``name`` corresponds to,
    for the ``ddpm`` coupling rule ρ_t = sqrt(SNR_t / SNR_{t−1}).

    * Gaussian schedules: their own SNR m²/v.
    * beta-cosine: the SNR of ss-cosine for the same T, the schedule it was matched to.
    * every other schedule (published decays, categorical-d3pm, snr-matched, custom): the KL-SNR
      of its arrays (:mod:`.kl_snr`), i.e. the SNR of the Gaussian that ``snr-matched`` would pair
      with it; for snr-matched this is the reference SNR at steps 1..T. Needs ``family`` for
      snr-matched and custom, and ``event_shape`` where the shape matters.
    """
    info = get(name)
    if name in GAUSSIAN_SCHEDULES:
        plus_one = options.get("plus_one", True)
        snr = gaussian.gaussian_snr(name, steps, **({"plus_one": plus_one} if "cosine" in name else {}))
        return torch.from_numpy(snr)
    if name == "beta-cosine":
        return torch.from_numpy(gaussian.gaussian_snr("ss-cosine", steps))
    family = options.get("family") or (info.applies_to[0] if info.applies_to else None)
    params = info.build_numpy(steps, **options)
    return torch.from_numpy(kl_snr(family, params, options.get("event_shape")))
