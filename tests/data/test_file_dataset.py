"""The ``file`` dataset: a user's examples, one per row, from ``data.root`` (.npy, .npz, .csv).

Loading (``load_file`` / ``load_dataset``) and the errors a user meets through ``mstar run`` and
``mstar validate``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.data.catalog import DATASETS
from mstar_engine.data.load import DataError, load_dataset, load_file
from mstar_engine.spec.schema import Data

TINY = ["train.steps=4", "train.log_every=2", "train.checkpoint_every=4", "sample.num_samples=20",
        "eval.num_samples=20", "eval.repeats=1", "process.steps=8", "network.mlp.hidden=32",
        "network.mlp.blocks=1"]


def _rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


# ------------------------------------------------------------------------------------ load_file

def test_npy(tmp_path):
    x = _rows(50, 3)
    np.save(tmp_path / "x.npy", x)
    got = load_file(tmp_path / "x.npy")
    assert got.dtype == torch.float64 and tuple(got.shape) == (50, 3)
    np.testing.assert_array_equal(got.numpy(), x)


def test_npy_keeps_higher_rank_examples(tmp_path):
    x = _rows(40, 4).reshape(40, 2, 2)
    np.save(tmp_path / "m.npy", x)
    assert tuple(load_file(tmp_path / "m.npy").shape) == (40, 2, 2)


def test_integers_become_float64(tmp_path):
    np.save(tmp_path / "i.npy", np.arange(12, dtype=np.int32).reshape(6, 2))
    got = load_file(tmp_path / "i.npy")
    assert got.dtype == torch.float64
    assert got.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]


def test_npz_key_x_wins_over_other_arrays(tmp_path):
    x, other = _rows(30, 2), _rows(7, 5, seed=1)
    np.savez(tmp_path / "d.npz", labels=other, x=x)
    got = load_file(tmp_path / "d.npz")
    assert tuple(got.shape) == (30, 2)
    np.testing.assert_array_equal(got.numpy(), x)


def test_npz_single_array_under_any_name(tmp_path):
    x = _rows(20, 4)
    np.savez_compressed(tmp_path / "d.npz", examples=x)
    np.testing.assert_array_equal(load_file(tmp_path / "d.npz").numpy(), x)


def test_npz_with_two_arrays_and_no_x(tmp_path):
    np.savez(tmp_path / "d.npz", a=_rows(5, 2), b=_rows(5, 2))
    with pytest.raises(DataError) as info:
        load_file(tmp_path / "d.npz")
    message = str(info.value)
    assert "'a'" in message and "'b'" in message
    assert "x=examples" in message and "single array" in message


def test_csv(tmp_path):
    x = _rows(25, 3)
    np.savetxt(tmp_path / "d.csv", x, delimiter=",", fmt="%.17g")
    got = load_file(tmp_path / "d.csv")
    assert tuple(got.shape) == (25, 3)
    np.testing.assert_array_equal(got.numpy(), x)


def test_csv_single_column_and_single_row_csv(tmp_path):
    (tmp_path / "col.csv").write_text("1.5\n2.5\n-3\n")
    assert load_file(tmp_path / "col.csv").tolist() == [[1.5], [2.5], [-3.0]]
    (tmp_path / "row.csv").write_text("1,2,3\n")
    with pytest.raises(DataError, match="at least 2"):
        load_file(tmp_path / "row.csv")


def test_csv_with_a_header_is_refused(tmp_path):
    (tmp_path / "h.csv").write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match="cannot read .* as numbers"):
        load_file(tmp_path / "h.csv")


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_one_dimensional_arrays_become_one_column(tmp_path, suffix):
    x = np.linspace(-1, 1, 9)
    path = tmp_path / f"v{suffix}"
    np.save(path, x) if suffix == ".npy" else np.savez(path, x=x)
    got = load_file(path)
    assert tuple(got.shape) == (9, 1)
    np.testing.assert_array_equal(got[:, 0].numpy(), x)


def test_non_numeric_and_unknown_suffix(tmp_path):
    np.save(tmp_path / "s.npy", np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match="expected numbers"):
        load_file(tmp_path / "s.npy")
    (tmp_path / "d.txt").write_text("1\n2\n")
    with pytest.raises(DataError, match=r"\.npy, \.npz or \.csv"):
        load_file(tmp_path / "d.txt")


# ------------------------------------------------------------------------------------ load_dataset

def test_load_dataset_splits_the_file(tmp_path):
    x = _rows(100, 2)
    np.save(tmp_path / "x.npy", x)
    loaded = load_dataset(Data(name="file", root=str(tmp_path / "x.npy"), holdout=0.2), seed=0)
    assert loaded.event_shape == (2,)
    assert loaded.train.shape == (80, 2) and loaded.held_out.shape == (20, 2)
    # every row exactly once
    both = torch.cat([loaded.train, loaded.held_out]).numpy()
    np.testing.assert_array_equal(both[np.lexsort(both.T)], x[np.lexsort(x.T)])


def test_nan_rows_name_the_row_count(tmp_path):
    x = _rows(60, 3)
    x[4, 1] = np.nan
    x[17, 0] = np.nan
    x[17, 2] = np.inf
    x[33, 2] = -np.inf
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(DataError) as info:
        load_dataset(Data(name="file", root=str(tmp_path / "bad.npy")), seed=0)
    message = str(info.value)
    assert "3 of 60 rows" in message
    assert "NaN" in message and "first at row 4" in message
    assert str(tmp_path / "bad.npy") in message


# ------------------------------------------------------------------------------------ through the CLI

def invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def _spec(tmp_path: Path, family: str, root: Path) -> Path:
    path = tmp_path / "f.toml"
    path.write_text(f'[experiment]\nname = "f"\n\n[process]\nfamily = "{family}"\nsteps = 8\n\n'
                    f'[data]\nname = "file"\nroot = {json.dumps(str(root))}\n', encoding="utf-8")
    return path


def test_run_on_a_csv_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.dirichlet([2.0, 3.0, 4.0], size=300)
    np.savetxt(tmp_path / "p.csv", x, delimiter=",", fmt="%.17g")
    spec = _spec(tmp_path, "dirichlet", tmp_path / "p.csv")
    result = invoke("run", spec, *TINY, f"experiment.output_dir={tmp_path / 'out'}", "--json")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert results["data"] == "file" and results["family"] == "dirichlet"
    assert all(math.isfinite(r["value"]) and r["samples"] == 20 for r in results["results"])
    with np.load(tmp_path / "out" / "f" / "samples" / "samples.npz") as archive:
        samples = archive["samples"]
    assert samples.shape == (20, 3)
    np.testing.assert_allclose(samples.sum(1), 1.0, atol=1e-6)


def test_run_on_a_file_with_nan_fails(tmp_path):
    x = _rows(200, 2)
    x[[3, 10], 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    result = invoke("run", _spec(tmp_path, "gaussian", tmp_path / "nan.npy"), *TINY,
                    f"experiment.output_dir={tmp_path / 'out'}")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert "NaN" in errors[0] and "2 of 200 rows" in errors[0]
    assert not (tmp_path / "out" / "f" / "results.json").exists()


def test_run_dirichlet_on_data_off_the_simplex_fails(tmp_path):
    np.save(tmp_path / "off.npy", np.random.default_rng(0).uniform(0.1, 1.0, size=(200, 3)))
    result = invoke("run", _spec(tmp_path, "dirichlet", tmp_path / "off.npy"), *TINY,
                    f"experiment.output_dir={tmp_path / 'out'}")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert "domain" in errors[0] and "dirichlet" in errors[0]
    assert "sum to 1" in errors[0]
    assert not (tmp_path / "out" / "f" / "checkpoints").exists()


def test_a_missing_file_is_a_spec_error_naming_the_layout(tmp_path):
    missing = tmp_path / "nope.npy"
    spec = _spec(tmp_path, "gaussian", missing)
    run = invoke("run", spec, *TINY, f"experiment.output_dir={tmp_path / 'out'}")
    assert run.exit_code == 2, run.output
    assert f"data.root file {str(missing)!r} does not exist" in run.output
    assert DATASETS["file"].layout in run.output
    assert "1 error in the spec" in run.output
    assert not (tmp_path / "out").exists()
    # validate: a "not ready" note (exit 0); with --ready an error (exit 2)
    plain = invoke("validate", spec)
    assert plain.exit_code == 0, plain.output
    assert "not ready: data.root" in plain.output
    ready = invoke("validate", "--ready", spec)
    assert ready.exit_code == 2, ready.output
    assert "error: " in ready.output and DATASETS["file"].layout in ready.output


def test_file_with_a_wrong_suffix_is_a_spec_error(tmp_path):
    (tmp_path / "d.txt").write_text("1,2\n3,4\n")
    result = invoke("validate", "--ready", _spec(tmp_path, "gaussian", tmp_path / "d.txt"))
    assert result.exit_code == 2, result.output
    assert "data.root" in result.output and DATASETS["file"].layout in result.output


def test_file_dataset_needs_a_root(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text('[experiment]\nname = "f"\n\n[process]\nfamily = "gaussian"\n\n[data]\nname = "file"\n',
                    encoding="utf-8")
    result = invoke("validate", "--ready", path)
    assert result.exit_code == 2, result.output
    assert "set data.root" in result.output


def test_a_file_too_small_to_evaluate_is_refused_clearly(tmp_path):
    np.save(tmp_path / "five.npy", _rows(5, 2))
    result = invoke("run", _spec(tmp_path, "gaussian", tmp_path / "five.npy"), *TINY, 'eval.metrics=["energy"]',
                    f"experiment.output_dir={tmp_path / 'out'}")
    assert result.exit_code in (1, 2), result.output
    assert "ValueError" not in result.output
    assert "holdout" in result.output
    assert not list((tmp_path / "out").rglob("step-*.pt")), "refused only after training"


def test_categorical_data_given_as_class_labels_is_refused_with_how_to_make_it_one_hot(tmp_path):
    """Integer class indices (n, L) instead of one-hot (n, L, K): one clear error, no internal one;
    the conversion it gives makes data that trains."""
    labels = np.random.default_rng(0).integers(0, 4, size=(200, 3))
    np.save(tmp_path / "labels.npy", labels)
    result = invoke("run", _spec(tmp_path, "categorical", tmp_path / "labels.npy"), *TINY,
                    f"experiment.output_dir={tmp_path / 'out'}")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert "ValueError" not in errors[0] and "--debug" not in result.output
    assert "categorical data must be one-hot: shape (n, L, K)" in errors[0]
    assert "summing to 1" in errors[0] and "shape (3,) (integer class labels?" in errors[0]
    assert "x = np.eye(K)[labels] turns labels of shape (n, L) into (n, L, K)" in errors[0]
    assert not (tmp_path / "out" / "f" / "checkpoints").exists()

    np.save(tmp_path / "one-hot.npy", np.eye(4)[labels])
    result = invoke("run", _spec(tmp_path, "categorical", tmp_path / "one-hot.npy"), *TINY, 'eval.metrics=["mmd"]',
                    f"experiment.output_dir={tmp_path / 'out'}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["family"] == "categorical"
