"""custom schedules: accepted forms, pseudo steps and clear errors."""
import numpy as np
import pytest
import torch

from mstar_engine.schedules import SCHEDULES

custom = SCHEDULES["custom"]


def test_t_values_get_the_family_pseudo_step():
    out = custom.build(4, family="vmf", values=[50.0, 10.0, 1.0, 0.1])
    assert out["kappa"].dtype == torch.float64
    np.testing.assert_allclose(out["kappa"].numpy(), [55.0, 50.0, 10.0, 1.0, 0.1])
    out = custom.build(3, family="categorical", values=[0.5, 0.8, 0.99])
    np.testing.assert_allclose(out["bar_beta"].numpy(), [0.0, 0.5, 0.8, 0.99])


def test_t_plus_one_values_are_taken_as_given():
    out = custom.build(3, family="beta", values=[9.0, 5.0, 1.0, 0.0])
    np.testing.assert_allclose(out["nu"].numpy(), [9.0, 5.0, 1.0, 0.0])


def test_gaussian_values_are_alpha_bar():
    out = custom.build(2, family="gaussian", values=[0.9, 0.1])
    np.testing.assert_allclose(out["mean"].numpy() ** 2, [0.95, 0.9, 0.1])
    np.testing.assert_allclose(out["var"].numpy(), [0.05, 0.1, 0.9])


def test_multi_parameter_families_take_a_mapping_or_fill_xi():
    out = custom.build(3, family="wishart", event_shape=(2, 2), values={"df": [50, 10, 5], "xi": [1, 0.5, 0.1]})
    np.testing.assert_allclose(out["df"].numpy(), [50, 50, 10, 5])
    out = custom.build(64, family="wishart", values=list(np.linspace(100, 5, 64)))
    np.testing.assert_allclose(out["xi"].numpy(), SCHEDULES["wishart-exp"].build(64)["xi"].numpy())
    out = custom.build(64, family="gamma", values=list(np.linspace(100, 1, 64)))
    np.testing.assert_allclose(out["xi"].numpy(), SCHEDULES["gamma-exp"].build(64)["xi"].numpy())


def test_npy_files_one_and_two_dimensional(tmp_path):
    one = tmp_path / "nu.npy"
    np.save(one, np.array([4.0, 2.0, 1.0]))
    np.testing.assert_allclose(custom.build(3, family="dirichlet", file=str(one))["nu"].numpy(), [4, 4, 2, 1])
    two = tmp_path / "gauss.npy"
    np.save(two, np.array([[0.99, 0.9, 0.5], [0.02, 0.19, 0.75]]))
    out = custom.build(2, family="gaussian", file=two)
    np.testing.assert_allclose(out["var"].numpy(), [0.02, 0.19, 0.75])


def test_tensor_values_are_accepted():
    out = custom.build(2, family="beta", values=torch.tensor([3.0, 1.0]))
    np.testing.assert_allclose(out["nu"].numpy(), [5.0, 3.0, 1.0])


@pytest.mark.parametrize("family,values,match", [
    ("beta", [1.0, 2.0], "needs 3 values .* or 4"),
    ("beta", [1.0, float("nan"), 2.0], "finite; index 1"),
    ("beta", [1.0, float("inf"), 2.0], "finite"),
    ("beta", [1.0, -0.5, 2.0], "nu must be >= 0; step 2"),
    ("dirichlet", [[1.0, 2.0, 3.0]], "one-dimensional"),
    ("vmf", [3.0, 0.0, 1.0], "kappa must be > 0; step 2"),
    ("von-mises", [3.0, 1.0, -1.0], "kappa must be > 0"),
    ("categorical", [0.5, 1.2, 0.9], r"bar_beta must be in \[0, 1\]"),
    ("categorical", [0.0, 0.5, 0.9], "> 0 for steps t >= 1"),
    ("gaussian", [0.5, 1.0, 0.2], r"alpha_bar must be in \(0, 1\)"),
    ("gaussian", [1.0, 0.5, 0.2, 0.1], r"alpha_bar must be in \(0, 1\)"),
    ("wishart", [40.0, 3.0, 0.5], "df must be > p − 1 = 1"),
    ("gamma", [4.0, 0.0, 1.0], "shape must be > 0"),
    ("beta", ["a", "b", "c"], "must be numbers"),
])
def test_bad_values_are_clear_errors(family, values, match):
    with pytest.raises(ValueError, match=match):
        custom.build(3, family=family, values=values)


def test_mapping_errors():
    with pytest.raises(ValueError, match=r"missing \['xi'\]"):
        custom.build(3, family="gamma", values={"shape": [1, 2, 3]})
    with pytest.raises(ValueError, match="xi must be in"):
        custom.build(3, family="gamma", values={"shape": [3, 2, 1], "xi": [0, 0.5, 1.5]})
    with pytest.raises(ValueError, match="differ in length"):
        custom.build(3, family="wishart", values={"df": [9, 8, 7], "xi": [1, 0.5, 0.2, 0.1]})


def test_source_and_file_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one of values"):
        custom.build(3, family="beta")
    with pytest.raises(ValueError, match="exactly one of values"):
        custom.build(3, family="beta", values=[1, 2, 3], file="x.npy")
    with pytest.raises(ValueError, match="not a .npy file"):
        custom.build(3, family="beta", file=str(tmp_path / "nu.txt"))
    with pytest.raises(ValueError, match="not found"):
        custom.build(3, family="beta", file=str(tmp_path / "missing.npy"))
    bad = tmp_path / "rows.npy"
    np.save(bad, np.ones((3, 4)))
    with pytest.raises(ValueError, match="one row per schedule parameter"):
        custom.build(3, family="gaussian", file=str(bad))
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="could not be read"):
        custom.build(3, family="beta", file=str(junk))


def test_custom_needs_a_family_and_rejects_unknown_options():
    with pytest.raises(ValueError, match="needs the family"):
        custom.build(3, values=[1, 2, 3])
    with pytest.raises(ValueError, match="does not take option"):
        custom.build(3, family="beta", values=[1, 2, 3], rho=0.5)
