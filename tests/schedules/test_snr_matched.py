"""snr-matched: per-step bisection on the KL-SNR, and its on-disk cache."""

import numpy as np
import pytest

from mstar_engine.schedules import SCHEDULES, gaussian_equivalent_snr
from mstar_engine.util import cache as schedule_cache
from mstar_engine.schedules.gaussian import gaussian_snr
from mstar_engine.families import REGISTRY
from mstar_engine.families.beta import Beta
from mstar_engine.schedules.kl_snr import kl_snr
from mstar_engine.schedules.matching import bisect

SHAPES = {"gaussian": (4,), "beta": (3, 8, 8), "dirichlet": (5,), "vmf": (3,), "von-mises": (2,),
          "categorical": (16, 27), "wishart": (3, 3), "gamma": (6,)}


@pytest.mark.parametrize("family", sorted(REGISTRY))
@pytest.mark.parametrize("reference", ["ss-cosine", "linear"])
def test_matched_measure_equals_the_reference(family, reference):
    steps = 50
    params = SCHEDULES["snr-matched"].build_numpy(steps, family=family, event_shape=SHAPES[family],
                                                  reference=reference)
    target = gaussian_snr(reference, steps)[1:]
    got = kl_snr(family, {k: v[1:] for k, v in params.items()}, SHAPES[family])
    reachable = target <= 30.0 if family == "categorical" else np.ones_like(target, dtype=bool)
    np.testing.assert_allclose(got[reachable], target[reachable], rtol=1e-9)
    if family == "categorical":  # beyond log(1 + K 1e12) ≈ 31 the bisection stops at β̄ = 1e-12
        assert np.all(params["bar_beta"][1:][~reachable] == pytest.approx(1e-12))
        assert params["bar_beta"][0] == 0.0


def test_gaussian_family_matched_to_cosine_is_cosine():
    matched = SCHEDULES["snr-matched"].build(64, family="gaussian", reference="cosine")
    cosine = SCHEDULES["cosine"].build(64)
    for key in ("mean", "var"):
        np.testing.assert_allclose(matched[key].numpy(), cosine[key].numpy(), rtol=1e-10)


def test_snr_matched_beta_is_close_to_the_mi_matched_one():
    """Two different information measures, same reference: same ballpark (within a factor 1.5)."""
    kl = SCHEDULES["snr-matched"].build(1000, family="beta")["nu"].numpy()
    mi = SCHEDULES["beta-cosine"].build(1000)["nu"].numpy()  # cached by test_beta_cosine
    assert np.all(np.abs(np.log(kl[1:] / mi[1:])) < np.log(1.5))


def test_gaussian_equivalent_snr_of_snr_matched_is_the_reference():
    snr = gaussian_equivalent_snr("snr-matched", 40, family="vmf", reference="ss-linear").numpy()
    np.testing.assert_allclose(snr[1:], gaussian_snr("ss-linear", 40)[1:], rtol=1e-9)


def test_second_call_is_a_cache_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("MSTAR_CACHE_DIR", str(tmp_path))
    before = dict(schedule_cache.STATS)
    first = SCHEDULES["snr-matched"].build(33, family="dirichlet", event_shape=(4,))
    files = list((tmp_path / "schedules").glob("*.npz"))
    assert len(files) == 1 and schedule_cache.STATS["misses"] == before.get("misses", 0) + 1
    mtime = files[0].stat().st_mtime_ns
    second = SCHEDULES["snr-matched"].build(33, family="dirichlet", event_shape=(4,))
    assert schedule_cache.STATS["hits"] == before.get("hits", 0) + 1
    assert schedule_cache.STATS["writes"] == before.get("writes", 0) + 1
    assert files[0].stat().st_mtime_ns == mtime
    assert np.array_equal(first["nu"].numpy(), second["nu"].numpy())
    assert not list((tmp_path / "schedules").glob("*.tmp*"))  # atomic write left no temporary file


def test_cache_key_separates_family_steps_shape_and_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("MSTAR_CACHE_DIR", str(tmp_path))
    SCHEDULES["snr-matched"].build(20, family="dirichlet", event_shape=(4,))
    SCHEDULES["snr-matched"].build(20, family="dirichlet", event_shape=(5,))
    SCHEDULES["snr-matched"].build(21, family="dirichlet", event_shape=(5,))
    SCHEDULES["snr-matched"].build(21, family="dirichlet", event_shape=(5,), reference="ss-linear")
    SCHEDULES["snr-matched"].build(21, family="beta", event_shape=(5,), reference="ss-linear")
    assert len(list((tmp_path / "schedules").glob("*.npz"))) == 5


def test_corrupt_cache_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("MSTAR_CACHE_DIR", str(tmp_path))
    good = SCHEDULES["snr-matched"].build(12, family="vmf")["kappa"].numpy()
    (path,) = (tmp_path / "schedules").glob("*.npz")
    path.write_bytes(b"not an npz")
    again = SCHEDULES["snr-matched"].build(12, family="vmf")["kappa"].numpy()
    np.testing.assert_array_equal(good, again)


def test_cache_location_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("MSTAR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert schedule_cache.cache_dir() == tmp_path / "xdg" / "mstar" / "schedules"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert schedule_cache.cache_dir() == tmp_path / "home" / ".cache" / "mstar" / "schedules"


def test_cache_can_be_bypassed(tmp_path, monkeypatch):
    monkeypatch.setenv("MSTAR_CACHE_DIR", str(tmp_path))
    SCHEDULES["snr-matched"].build(9, family="beta", cache=False)
    assert not (tmp_path / "schedules").exists()


def test_unwritable_cache_does_not_fail_the_build(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MSTAR_CACHE_DIR", str(blocker))  # a file, not a folder
    assert SCHEDULES["snr-matched"].build(9, family="beta")["nu"].shape == (10,)


def test_bisection_accuracy_and_clipping():
    target = np.array([1e-20, 1e-3, 1.0, 1e5, 1e30])
    lam = bisect(lambda x: x ** 2, target, (1e-6, 1e6))
    np.testing.assert_allclose(lam[1:4], np.sqrt(target[1:4]), rtol=1e-11)
    assert lam[0] == 1e-6 and lam[-1] == 1e6


def test_unknown_reference_and_missing_family():
    with pytest.raises(ValueError, match="reference"):
        SCHEDULES["snr-matched"].build(10, family="beta", reference="quadratic")
    with pytest.raises(ValueError, match="family"):
        SCHEDULES["snr-matched"].build(10)


def test_protocol_fallback_agrees_with_the_closed_form_measure():
    """A family without a closed-form measure: the base class's KL-SNR from the family's own torch
    ``kl`` on pairs of prior draws. Checked on a Beta family without its measure (the prior differs
    from the closed-form reference, so only the order of magnitude and the monotone match are compared)."""
    from mstar_engine.families import Family

    class PlainBeta(Beta):
        kl_snr = classmethod(Family.kl_snr.__func__)

    target = gaussian_snr("ss-cosine", 12)[1:]
    lam = bisect(lambda x: PlainBeta.kl_snr(PlainBeta.kl_snr_path(x, (1,)), (1,)), target, (1e-8, 1e8))
    got = PlainBeta.kl_snr(PlainBeta.kl_snr_path(lam, (1,)), (1,))
    np.testing.assert_allclose(got, target, rtol=1e-6)
    closed = Beta.kl_snr({"nu": lam}, (1,))
    assert np.all((closed / target > 0.2) & (closed / target < 5))
