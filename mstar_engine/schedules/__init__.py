"""Noise schedules, coupling schedules, schedule matching and caching (MATH.md §2, §4).

* :data:`SCHEDULES` — every named noise schedule (:class:`ScheduleInfo`: name, summary, families,
  ``build(steps, **options)`` → float64 tensors of length T + 1, index 0 the pseudo step).
* :func:`build_for_spec` — build from a spec's schedule table (passes only the relevant fields).
* :func:`gaussian_equivalent_snr` — the SNR used by the ``ddpm`` coupling rule.
* :data:`COUPLINGS` — coupling schedules ρ_t (:mod:`.coupling`).

Modules: :mod:`.gaussian` (DDPM and Theorem 2), :mod:`.decays` (closed-form published
schedules), :mod:`.pseudo` (pseudo-step rules), :mod:`.mutual_information` and
:mod:`.onehot_channel` (MI quadratures), :mod:`.mi_matched` (beta-cosine, categorical-d3pm),
:mod:`.kl_snr` (the KL-SNR measure), :mod:`.matching` (snr-matched), :mod:`.custom`,
:mod:`.cache`, :mod:`.registry`.
"""
from mstar_engine.schedules.coupling import COUPLINGS, CouplingInfo, LearnedCoupling, build_coupling
from mstar_engine.schedules.registry import (
    SCHEDULES,
    ScheduleInfo,
    build_for_spec,
    build_schedule,
    gaussian_equivalent_snr,
)

__all__ = [
    "SCHEDULES",
    "ScheduleInfo",
    "build_schedule",
    "build_for_spec",
    "gaussian_equivalent_snr",
    "COUPLINGS",
    "CouplingInfo",
    "LearnedCoupling",
    "build_coupling",
]
