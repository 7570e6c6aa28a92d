"""The schedule registry: names, shapes, family parameter names, monotone information, options."""
import numpy as np
import pytest
import torch

from mstar_engine.schedules import SCHEDULES, ScheduleInfo, build_for_spec, build_schedule, gaussian_equivalent_snr

NAMES = {"linear", "cosine", "ss-linear", "ss-cosine", "beta-cosine", "dirichlet-exp", "wishart-exp",
         "vmf-spline", "categorical-d3pm", "gamma-exp", "von-mises-exp", "snr-matched", "custom"}
PARAMS = {"gaussian": ("mean", "var"), "beta": ("nu",), "dirichlet": ("nu",), "vmf": ("kappa",),
          "von-mises": ("kappa",), "wishart": ("df", "xi"), "categorical": ("bar_beta",), "gamma": ("shape", "xi")}
SHAPES = {"gaussian": (3,), "beta": (3,), "dirichlet": (3,), "vmf": (3,), "von-mises": (2,),
          "wishart": (2, 2), "categorical": (4, 27), "gamma": (3,)}


def cases():
    for name, info in sorted(SCHEDULES.items()):
        if name == "custom":
            continue
        for family in (info.applies_to or sorted(PARAMS)):
            yield name, family


def options(name, family):
    return {"family": family, "event_shape": SHAPES[family]}


def test_names_and_info():
    assert set(SCHEDULES) == NAMES
    for name, info in SCHEDULES.items():
        assert isinstance(info, ScheduleInfo) and info.name == name and info.summary
        assert set(info.families) >= set(info.applies_to or PARAMS)


@pytest.mark.parametrize("name,family", list(cases()))
@pytest.mark.parametrize("steps", [1, 8, 1000])
def test_builds_float64_arrays_of_length_t_plus_one(name, family, steps):
    out = SCHEDULES[name].build(steps, **options(name, family))
    assert tuple(out) == PARAMS[family]
    for value in out.values():
        assert value.dtype == torch.float64 and value.shape == (steps + 1,) and torch.isfinite(value).all()


@pytest.mark.parametrize("name,family", list(cases()))
def test_information_decreases_in_t(name, family):
    """Gaussian-equivalent SNR (SNR for Gaussian schedules, else the matched SNR or the KL-SNR)
    is non-increasing over t = 0..T; the only exception is ss-linear's last step (documented)."""
    for steps in (8, 1000):
        snr = gaussian_equivalent_snr(name, steps, **options(name, family)).numpy()
        assert snr.shape == (steps + 1,) and np.all(snr > 0)
        if name == "ss-linear" and steps == 1000:
            snr = snr[:-1]
        diffs = np.diff(snr)
        assert np.all(diffs <= 1e-12 * snr[1:]), (name, family, steps, np.flatnonzero(diffs > 0))


def test_the_built_schedules_construct_their_families():
    families = pytest.importorskip("mstar_engine.families")
    for name, family in cases():
        if family not in families.REGISTRY:
            continue
        cls = families.REGISTRY[family]
        assert tuple(cls.schedule_params) == PARAMS[family]
        fam = cls(SHAPES[family], **SCHEDULES[name].build(16, **options(name, family)))
        assert fam.steps == 16


def test_family_mismatch_and_unknown_options_are_errors():
    with pytest.raises(ValueError, match="does not apply to the beta family"):
        SCHEDULES["dirichlet-exp"].build(8, family="beta")
    with pytest.raises(ValueError, match="does not take option"):
        SCHEDULES["cosine"].build(8, reference="ss-cosine")
    assert SCHEDULES["cosine"].build(8, reference=None)["mean"].shape == (9,)  # None means unset
    with pytest.raises(KeyError, match="unknown schedule 'quadratic'"):
        build_schedule("quadratic", 8)


def test_gaussian_equivalent_snr_for_published_schedules_has_the_right_length():
    for name in ("dirichlet-exp", "wishart-exp", "vmf-spline", "gamma-exp", "von-mises-exp", "categorical-d3pm"):
        snr = gaussian_equivalent_snr(name, 64)
        assert snr.dtype == torch.float64 and snr.shape == (65,)


def test_build_for_spec_passes_only_the_relevant_fields():
    spec_defaults = {"reference": "ss-cosine", "values": None, "file": None}
    out = build_for_spec("cosine", 10, "gaussian", (3,), **spec_defaults)
    assert out["mean"].shape == (11,)
    out = build_for_spec("snr-matched", 10, "vmf", (3,), reference="ss-linear")
    assert out["kappa"].shape == (11,)
    out = build_for_spec("custom", 3, "beta", None, reference="ss-cosine", values=[3.0, 2.0, 1.0])
    assert out["nu"].tolist() == [5.0, 3.0, 2.0, 1.0]
