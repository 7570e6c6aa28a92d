"""``mstar sample`` and ``mstar eval`` on a trained run, and the Python API behind them
(``mstar_engine.load_run`` / ``save_samples``).

One tiny quick-start run (Dirichlet on the 3-simplex, T = 16, 20 optimiser steps) is trained once
per module; every test reads it (tests that write samples use their own file names).
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

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "specs" / "quickstart.toml")
T = 16
TINY = ["train.steps=20", "train.log_every=10", "train.checkpoint_every=10", "sample.num_samples=50",
        "eval.num_samples=50", f"process.steps={T}", "compare={}", "data.num_examples=2000",
        "network.mlp.hidden=64", "network.mlp.blocks=1"]


def invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    # an exception that escaped the command would be caught by CliRunner and not printed at all
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = invoke("run", QUICKSTART, *TINY, f"experiment.output_dir={out}")
    assert result.exit_code == 0, result.output
    path = out / "quickstart"
    assert (path / "checkpoints" / "train" / "latest").is_file()
    return path


def _npz(path: Path) -> np.ndarray:
    with np.load(path) as archive:
        assert list(archive.keys()) == ["samples"]
        return archive["samples"]


def _assert_on_simplex(x: np.ndarray, n: int) -> None:
    assert x.shape == (n, 3)
    assert x.dtype == np.float64
    assert np.isfinite(x).all()
    assert (x >= 0).all()
    np.testing.assert_allclose(x.sum(axis=1), 1.0, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------ mstar sample

def test_sample_npz(run_dir, tmp_path):
    out = tmp_path / "x.npz"
    result = invoke("sample", run_dir, "-n", "30", "--steps", "4", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"written to {out}" in result.output
    assert "30 samples of shape (3,) (4 network evaluations, step 20)" in result.output
    _assert_on_simplex(_npz(out), 30)


def test_sample_pt_and_npy_hold_the_same_samples(run_dir, tmp_path):
    paths = {suffix: tmp_path / f"x{suffix}" for suffix in (".npz", ".pt", ".npy")}
    for path in paths.values():
        result = invoke("sample", run_dir, "-n", "12", "--steps", "4", "--seed", "3", "--out", path)
        assert result.exit_code == 0, result.output
    pt = torch.load(paths[".pt"], weights_only=True)
    assert isinstance(pt, torch.Tensor) and pt.dtype == torch.float64
    npy = np.load(paths[".npy"], allow_pickle=False)
    _assert_on_simplex(npy, 12)
    _assert_on_simplex(pt.numpy(), 12)
    np.testing.assert_array_equal(pt.numpy(), npy)
    np.testing.assert_array_equal(_npz(paths[".npz"]), npy)


def test_sample_default_output_path(run_dir):
    result = invoke("sample", run_dir, "-n", "7", "--steps", "4")
    assert result.exit_code == 0, result.output
    path = run_dir / "samples" / "samples-7-4.npz"
    assert path.is_file()
    assert f"written to {path}" in result.output
    _assert_on_simplex(_npz(path), 7)
    # without --steps: the run's sample.steps, which defaults to T
    result = invoke("sample", run_dir, "-n", "6")
    assert result.exit_code == 0, result.output
    assert f"({T} network evaluations, step 20)" in result.output
    _assert_on_simplex(_npz(run_dir / "samples" / f"samples-6-{T}.npz"), 6)


def test_sample_seeds(run_dir, tmp_path):
    def draw(seed: int, name: str) -> np.ndarray:
        result = invoke("sample", run_dir, "-n", "25", "--steps", "4", "--seed", str(seed),
                        "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        return _npz(tmp_path / name)

    a, b, c = draw(5, "a.npz"), draw(5, "b.npz"), draw(6, "c.npz")
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_sample_from_an_older_checkpoint(run_dir, tmp_path):
    older = run_dir / "checkpoints" / "train" / "step-00000010.pt"
    assert older.is_file()
    result = invoke("sample", run_dir, "-n", "10", "--steps", "4", "--checkpoint", older, "--out", tmp_path / "o.npz")
    assert result.exit_code == 0, result.output
    assert "step 10)" in result.output
    latest = invoke("sample", run_dir, "-n", "10", "--steps", "4", "--out", tmp_path / "l.npz")
    assert "step 20)" in latest.output
    assert not np.allclose(_npz(tmp_path / "o.npz"), _npz(tmp_path / "l.npz"))


def test_sample_steps_larger_than_T(run_dir, tmp_path):
    out = tmp_path / "never.npz"
    result = invoke("sample", run_dir, "-n", "5", "--steps", str(T + 1), "--out", out)
    assert result.exit_code == 2, result.output
    assert f"T = {T}" in result.output
    assert "--steps" in result.output
    assert not out.exists()


@pytest.mark.parametrize("name", ["a.txt", "samples", "x.npz.bak"])
def test_sample_bad_output_suffix(run_dir, tmp_path, name):
    result = invoke("sample", run_dir, "-n", "5", "--steps", "2", "--out", tmp_path / name)
    assert result.exit_code == 2, result.output
    assert "--out" in result.output and ".npz" in result.output
    assert not (tmp_path / name).exists()


def test_sample_not_a_run_directory(tmp_path):
    result = invoke("sample", tmp_path, "-n", "5")
    assert result.exit_code == 1, result.output
    assert "is not a run directory" in result.output
    assert result.output.startswith("error: ")


def test_sample_zero_samples_is_a_usage_error(run_dir):
    result = invoke("sample", run_dir, "-n", "0")
    assert result.exit_code == 2
    assert "Usage: " in result.output


# ------------------------------------------------------------------------------------ mstar eval

def _table_rows(output: str) -> list[list[str]]:
    """Body rows of the github-style table printed by ``mstar eval``."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["metric", "steps", "value", "noise floor", "samples"]
    assert set(lines[1]) <= set("|-: ")
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_eval_table(run_dir):
    result = invoke("eval", run_dir, "--steps", "2,16", "--metrics", "energy,mmd", "-n", "50")
    assert result.exit_code == 0, result.output
    assert "quickstart: dirichlet (ddpm coupling) on dirichlet-mixture" in result.output
    rows = _table_rows(result.output)
    assert len(rows) == 4
    assert sorted((r[0], int(r[1])) for r in rows) == [("energy", 2), ("energy", 16), ("mmd", 2), ("mmd", 16)]
    for metric, _, value, floor, samples in rows:
        assert math.isfinite(float(value)) and math.isfinite(float(floor))
        assert samples == "50"
    # the noise floor depends on the metric only
    for metric in ("energy", "mmd"):
        assert len({r[3] for r in rows if r[0] == metric}) == 1, rows


def test_eval_json(run_dir):
    result = invoke("eval", run_dir, "--steps", "2,16", "--metrics", "energy,mmd", "-n", "50", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["family"] == "dirichlet" and data["step"] == 20
    assert Path(data["checkpoint"]).name == "step-00000020.pt"
    rows = data["results"]
    assert len(rows) == 4
    for row in rows:
        assert {"metric", "steps", "value", "noise_floor"} <= set(row)
        assert math.isfinite(row["value"]) and math.isfinite(row["noise_floor"])
        assert row["samples"] == 50
    assert sorted((r["metric"], r["steps"]) for r in rows) == [("energy", 2), ("energy", 16), ("mmd", 2),
                                                               ("mmd", 16)]
    # the energy distance is non-negative (its noise floor too); mmd's unbiased estimate may dip below 0
    assert all(r["value"] >= 0 and r["noise_floor"] >= 0 for r in rows if r["metric"] == "energy")


def test_eval_with_the_spec_defaults_reproduces_the_run_results(run_dir):
    """Same checkpoint, data split and seeds as the end of ``mstar run``: the same numbers."""
    result = invoke("eval", run_dir, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["results"] == json.loads((run_dir / "results.json").read_text())["results"]


def test_eval_text_and_json_agree(run_dir):
    text = invoke("eval", run_dir, "--steps", "4", "--metrics", "energy", "-n", "40")
    data = invoke("eval", run_dir, "--steps", "4", "--metrics", "energy", "-n", "40", "--json")
    assert text.exit_code == 0 and data.exit_code == 0
    (row,) = _table_rows(text.output)
    (jrow,) = json.loads(data.output)["results"]
    assert row[:2] == ["energy", "4"]
    assert row[2] == f"{jrow['value']:.4f}" and row[3] == f"{jrow['noise_floor']:.4f}"


def test_results_puts_a_run_and_an_eval_file_side_by_side(run_dir, tmp_path):
    data = invoke("eval", run_dir, "--steps", "4", "--metrics", "energy", "-n", "40", "--json")
    (tmp_path / "eval.json").write_text(data.output)
    result = invoke("results", run_dir, tmp_path / "eval.json")
    assert result.exit_code == 0, result.output
    stored = json.loads((run_dir / "results.json").read_text())["results"]
    (evaluated,) = json.loads(data.output)["results"]
    lines = result.output.splitlines()
    assert lines[0] == "2 models on dirichlet-mixture: lower is better"
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[3:]}
    assert list(rows) == [str(run_dir), str(tmp_path / "eval.json"), "noise floor (50 samples)",
                          "noise floor (40 samples)"]   # the same experiment twice: named by path
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    for r in stored:
        assert rows[str(run_dir)][header.index(f"{r['metric']} ({r['steps']} steps)")] == f"{r['value']:.4f}"
    assert rows[str(tmp_path / "eval.json")][header.index("energy (4 steps)")] == f"{evaluated['value']:.4f}"


def test_sampling_precision_runs_the_network_under_autocast(run_dir, tmp_path):
    """bf16 sampling: float64 samples in the domain, near the fp32 ones but not equal (the network
    ran in bf16); mstar sample and mstar eval take --precision."""
    from mstar_engine import load_run
    run = load_run(run_dir)
    full, half = (run.sample(64, 8, seed=5, precision=p) for p in ("fp32", "bf16"))
    assert half.dtype == torch.float64 and bool((half > 0).all())
    assert torch.allclose(half.sum(-1), torch.ones(64, dtype=torch.float64), atol=1e-12)
    difference = float((full - half).abs().max())
    assert 0 < difference < 0.05
    out = tmp_path / "half.npz"
    result = invoke("sample", run_dir, "-n", "64", "--steps", "8", "--seed", "5", "--precision", "bf16", "--out", out)
    assert result.exit_code == 0, result.output
    assert torch.equal(torch.from_numpy(np.load(out)["samples"]), run.sample(64, 8, seed=5, precision="bf16"))
    rows = [json.loads(invoke("eval", run_dir, "--steps", "4", "--metrics", "energy", "-n", "40", "--json",
                              *extra).output)["results"][0]["value"] for extra in ([], ["--precision", "bf16"])]
    assert rows[0] != rows[1] and all(math.isfinite(v) for v in rows)


@pytest.mark.parametrize("args", [["--metrics", "fid"], ["--fid"], ["--metrics", "energy,is"]])
def test_eval_image_metrics_are_refused_on_vectors(run_dir, args):
    result = invoke("eval", run_dir, "--steps", "2", "-n", "20", *args)
    assert result.exit_code != 0, result.output
    assert result.output.startswith("error: ")
    assert "measures images" in result.output and "is not an image dataset" in result.output
    assert "|" not in result.output  # no table


def test_eval_unknown_metric(run_dir):
    result = invoke("eval", run_dir, "--metrics", "energy,fidd")
    assert result.exit_code == 2, result.output
    assert "fidd" in result.output and "--metrics" in result.output


@pytest.mark.parametrize("steps", ["0", "a,b", "2,-1", "2,,4"])
def test_eval_bad_step_lists_are_usage_errors(run_dir, steps):
    result = invoke("eval", run_dir, "--steps", steps)
    assert result.exit_code == 2, result.output
    assert "Usage: " in result.output and "--steps" in result.output


def test_eval_steps_beyond_T(run_dir):
    result = invoke("eval", run_dir, "--steps", f"2,{T + 1}", "-n", "20")
    assert result.exit_code != 0, result.output
    assert f"T = {T}" in result.output


def test_eval_not_a_run_directory(tmp_path):
    result = invoke("eval", tmp_path, "--steps", "2")
    assert result.exit_code == 1, result.output
    assert "is not a run directory" in result.output


# ------------------------------------------------------------------------------------ Python API

def test_load_run_sample_equals_the_cli(run_dir, tmp_path):
    from mstar_engine import load_run, save_samples

    out = tmp_path / "cli.npz"
    result = invoke("sample", run_dir, "-n", "20", "--steps", "4", "--seed", "1", "--out", out)
    assert result.exit_code == 0, result.output
    run = load_run(run_dir)
    assert run.step == 20 and run.checkpoint.name == "step-00000020.pt"
    x = run.sample(20, 4, seed=1)
    assert x.dtype == torch.float64 and tuple(x.shape) == (20, 3)
    cli_x = torch.from_numpy(_npz(out))
    assert cli_x.dtype == torch.float64
    assert torch.equal(x, cli_x)
    # save_samples round-trips bit for bit
    again = save_samples(tmp_path / "api.npz", x)
    assert torch.equal(torch.from_numpy(_npz(again)), x)
    with pytest.raises(ValueError, match=r"\.npz"):
        save_samples(tmp_path / "x.csv", x)


def test_load_run_uses_the_ema_weights_of_the_latest_checkpoint(run_dir):
    from mstar_engine import load_run
    from mstar_engine.app.model import build_denoiser

    run = load_run(run_dir)
    latest = run_dir / "checkpoints" / "train" / (run_dir / "checkpoints" / "train" / "latest").read_text().strip()
    state = torch.load(latest, map_location="cpu", weights_only=True)
    assert int(state["step"]) == 20

    def rebuilt(weights):
        net = build_denoiser(run.spec, run.model.process)
        net.load_state_dict(weights)
        return net.eval()

    ema, raw = rebuilt(state["ema"]), rebuilt(state["model"])
    family = run.model.process.family
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in (T, T // 2, 1):
            x = family.prior_sample(16, gen, dtype=torch.float64)
            s = family.stat(x, t)
            got = run.model.denoiser(s, x, t)
            assert got.shape == (16, 3)
            assert torch.equal(got, ema(s, x, t))
            assert not torch.allclose(got, raw(s, x, t))  # the EMA, not the raw weights
    loaded = run.model.denoiser.state_dict()
    assert loaded.keys() == state["ema"].keys()
    assert all(torch.equal(loaded[k], state["ema"][k]) for k in loaded)


def test_load_run_errors(tmp_path, run_dir):
    from mstar_engine import load_run
    from mstar_engine.app.runs import RunError

    with pytest.raises(RunError, match="is not a run directory"):
        load_run(tmp_path)
    (tmp_path / "spec.resolved.toml").write_text((run_dir / "spec.resolved.toml").read_text())
    with pytest.raises(RunError, match="no training checkpoint"):
        load_run(tmp_path)


def test_api_with_the_cli_batch_size_equals_the_cli_beyond_one_batch(run_dir, tmp_path):
    """More samples than sample.batch_size (256): the CLI draws in batches of that size."""
    from mstar_engine import load_run

    run = load_run(run_dir)
    n = run.spec.sample.batch_size + 44
    out = tmp_path / "big.npz"
    result = invoke("sample", run_dir, "-n", str(n), "--steps", "4", "--seed", "1", "--out", out)
    assert result.exit_code == 0, result.output
    x = run.sample(n, 4, seed=1, batch_size=run.spec.sample.batch_size)
    assert torch.equal(x, torch.from_numpy(_npz(out)))


def test_api_default_batch_size_is_the_runs(run_dir, tmp_path):
    """Samples are a function of (checkpoint, seed, batch size); the API's default batch size is the
    run's sample.batch_size, as for mstar sample, so both give the same samples."""
    from mstar_engine import load_run

    run = load_run(run_dir)
    n = run.spec.sample.batch_size + 44
    a = run.sample(n, 4, seed=1)
    b = run.sample(n, 4, seed=1, batch_size=run.spec.sample.batch_size)
    c = run.sample(n, 4, seed=1, batch_size=run.spec.sample.batch_size // 2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
