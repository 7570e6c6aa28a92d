"""The model kinds beside the exponential family through the CLI (issue #15): every kind passes
the checks the exponential-family models pass — validate errors, the plan, resume bit for bit
after SIGKILL, two processes equal to one, mstar sample / eval — and reflow distils a flow model
resumably."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.util.interrupt import TEST_SIGNALS

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "specs" / "gaussian.toml")
KINDS = ["flow-matching", "energy-score"]
TINY = ["train.steps=24", "train.log_every=8", "train.checkpoint_every=8", "sample.num_samples=60",
        "eval.num_samples=60", "process.steps=16", "sample.steps=4", "data.num_examples=1000", "network.mlp.hidden=32",
        "network.mlp.blocks=1", "sample.batch_size=20", "eval.batch_size=20", "train.batch_size=32",
        "process.energy.draws=4", 'eval.metrics=["energy"]', "sample.coupling=model"]


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def train_checkpoint(run: Path, step: int, folder: str = "train") -> dict:
    return torch.load(run / "checkpoints" / folder / f"step-{step:08d}.pt", weights_only=True)


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.parametrize("kind", KINDS)
def test_a_kind_outside_r_d_is_refused_with_the_fix(kind):
    result = invoke("validate", str(ROOT / "specs" / "beta.toml"), "--set", f"process.kind={kind}")
    assert result.exit_code == 2
    assert f'process.kind = "{kind}" works in R^d' in result.output and 'set process.family = "gaussian"' in result.output


@pytest.mark.parametrize("kind, method, fix", [("flow-matching", "consistency", "reflow"),
                                               ("energy-score", "reflow", "remove [distill]"),
                                               ("exponential-family", "reflow", "progressive")])
def test_a_distillation_method_of_another_kind_is_refused(kind, method, fix):
    result = invoke("validate", SPEC, "--set", f"process.kind={kind}", "--set", f"distill.method={method}",
                    "--set", "distill.to=2")
    assert result.exit_code == 2
    assert f'distill.method = "{method}"' in result.output and fix in result.output


def test_consistency_needs_a_state_reading_teacher_and_one_student():
    result = invoke("validate", str(ROOT / "specs" / "dirichlet.toml"), "--set", "distill.method=consistency",
                    "--set", "distill.stages=[32]")
    assert result.exit_code == 2
    assert "function of the state alone" in result.output and "one student" in result.output


def test_consistency_weights_by_noise_steps_need_the_gaussian_family_and_show_in_the_plan():
    result = invoke("validate", str(ROOT / "specs" / "dirichlet.toml"), "--set", "distill.method=consistency",
                    "--set", "distill.consistency_weight=inverse-step", "--set", "process.inputs=state",
                    "--set", "distill.to=8")
    assert result.exit_code == 2
    assert "distill.consistency_weight" in result.output and "not affine in x0" in result.output
    assert 'use consistency_weight = "uniform"' in result.output
    result = invoke("plan", SPEC, "process.inputs=state", "distill.method=consistency", "distill.to=8",
                    "distill.consistency_weight=inverse-sqrt-step")
    assert result.exit_code == 0, result.output
    assert "inverse-sqrt-step loss weights" in result.output


@pytest.mark.parametrize("kind, says", [("flow-matching", "flow matching (uniform times, euler sampler)"),
                                        ("energy-score", "energy-score denoiser (energy score, beta 0.1")])
def test_the_plan_names_the_kind(kind, says):
    result = invoke("plan", SPEC, f"process.kind={kind}")
    assert result.exit_code == 0, result.output
    assert says in result.output


def _command(out: Path, kind: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mstar_cli.main", "run", SPEC, f"experiment.output_dir={out}",
            f"process.kind={kind}", *TINY, "train.steps=40", "train.checkpoint_every=10", *extra]


@pytest.mark.slow  # 20 s per kind: CI resumes both kinds after a crash in process, bit for bit (test_kinds_resume.py)
@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, kind):
    """The subprocess path once in CI (flow matching); every kind's resume in process:
    test_kinds_resume.py."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TEST_SIGNALS, None)
    subprocess.run(_command(tmp_path / "ref", kind), check=True, capture_output=True, env=env, cwd=ROOT)
    killed = subprocess.run(_command(tmp_path / "kill", kind), capture_output=True, text=True, cwd=ROOT,
                            env={**env, TEST_SIGNALS: "25:KILL"}, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = subprocess.run(_command(tmp_path / "kill", kind), capture_output=True, text=True, env=env, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 20" in resumed.stderr
    ref, got = (train_checkpoint(tmp_path / n / "gaussian", 40) for n in ("ref", "kill"))
    for key in ("model", "ema"):
        for name, tensor in ref[key].items():
            assert torch.equal(tensor, got[key][name]), f"{key}.{name} differs after resume"


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_train_the_single_process_model_and_sample_alike(tmp_path, kind):
    runs = {}
    for name, extra in (("one", []), ("two", ["--nproc-per-node", "2"])):
        result = invoke("run", SPEC, f"process.kind={kind}", *TINY, f"experiment.output_dir={tmp_path / name}", *extra)
        assert result.exit_code == 0, result.output
        runs[name] = tmp_path / name / "gaussian"
    one, two = train_checkpoint(runs["one"], 24), train_checkpoint(runs["two"], 24)
    assert max_difference(one["model"], two["model"]) < 1e-5
    assert max_difference(one["ema"], two["ema"]) < 1e-5
    rows = [json.loads((runs[n] / "results.json").read_text())["results"] for n in ("one", "two")]
    assert [r["value"] for r in rows[1]] == pytest.approx([r["value"] for r in rows[0]], rel=1e-3)
    # mstar sample and mstar eval on the kind's run: any number of evaluations
    out = tmp_path / "s.npz"
    result = invoke("sample", runs["one"], "--num-samples", 30, "--steps", 3, "--out", out)
    assert result.exit_code == 0, result.output
    import numpy as np
    x = np.load(out)["samples"]
    assert x.shape[0] == 30 and np.isfinite(x).all()
    result = invoke("eval", runs["one"], "--steps", "1,2,8")
    assert result.exit_code == 0, result.output
    printed = [line.split("|")[2].strip() for line in result.output.splitlines() if line.startswith("| energy")]
    assert printed == ["8", "2", "1"]


REFLOW = ["distill.method=reflow", "distill.to=1", "distill.steps_per_stage=24", "distill.pairs=200",
          "distill.teacher_steps=8", "distill.lr=1e-3"]


def test_reflow_resumes_exactly_and_its_student_serves_one_step(tmp_path):
    """mstar distill --to 1 with method reflow on a trained flow model: interrupted in the round
    (Ctrl-C at its 14th step, which writes that step's checkpoint), resumed, it ends with the uninterrupted
    student, and the results table holds the 1-step student beside its teacher."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TEST_SIGNALS, None)
    distil = [sys.executable, "-m", "mstar_cli.main", "distill", "--to", "1", *REFLOW]
    subprocess.run(_command(tmp_path / "ref", "flow-matching"), check=True, capture_output=True, env=env, cwd=ROOT)
    shutil.copytree(tmp_path / "ref", tmp_path / "stop")  # the same teacher, trained once
    subprocess.run([*distil[:4], str(tmp_path / "ref" / "gaussian"), *distil[4:]], check=True, capture_output=True,
                   env=env, cwd=ROOT)
    command = [*distil[:4], str(tmp_path / "stop" / "gaussian"), *distil[4:]]
    stopped = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**env, TEST_SIGNALS: "14:INT"},
                             start_new_session=True)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "reflow round 1" in stopped.stderr
    at_stop = train_checkpoint(tmp_path / "stop" / "gaussian", 14, "reflow-1")
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert "reflow round 1: resumed from" in resumed.stderr and "at step 14" in resumed.stderr, resumed.stderr
    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)  # a finished round
    assert again.returncode == 0, again.stderr
    assert "the teacher's ODE from 200 noise draws" in resumed.stderr
    assert "the teacher's ODE" not in again.stderr  # is not made again
    ref, got = (train_checkpoint(tmp_path / n / "gaussian", 24, "reflow-1") for n in ("ref", "stop"))
    assert ref["complete"] and ref["evaluations"] == 1
    for key in ("model", "ema"):
        for name, tensor in ref[key].items():
            assert torch.equal(tensor, got[key][name]), f"{key}.{name} differs after resume"
    results = json.loads((tmp_path / "stop" / "gaussian" / "results.json").read_text())["results"]
    assert {(r.get("model"), r["steps"]) for r in results} >= {("student", 1), ("teacher", 1)}
    # the round's seconds count over the resumption: those before the stop are kept
    done = train_checkpoint(tmp_path / "stop" / "gaussian", 24, "reflow-1")
    assert 0 < at_stop["seconds"] < done["seconds"]
    timed = [r["seconds"] for r in results if r.get("model") == "student" and "seconds" in r]  # at its own count
    assert timed and all(t >= done["seconds"] - 0.05 for t in timed)   # rounded to 0.1 s


@pytest.mark.slow  # 40 s on 2 cores: CI runs the reflow round's resume above
def test_reflow_over_two_processes_equals_one(tmp_path):
    """The pairs are integrated in batches shared out over the processes and the round trains on
    shards of each batch: two processes make the single-process student."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TEST_SIGNALS, None)
    subprocess.run(_command(tmp_path / "one", "flow-matching"), check=True, capture_output=True, env=env, cwd=ROOT)
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    for name, extra in (("one", []), ("two", ["--nproc-per-node", "2"])):
        done = subprocess.run([sys.executable, "-m", "mstar_cli.main", "distill", str(tmp_path / name / "gaussian"),
                               "--to", "1", *REFLOW, *extra], capture_output=True, text=True, env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (train_checkpoint(tmp_path / n / "gaussian", 24, "reflow-1") for n in ("one", "two"))
    for key in ("model", "ema"):
        assert max_difference(one[key], two[key]) < 1e-5
    rows = {n: json.loads((tmp_path / n / "gaussian" / "results.json").read_text())["results"] for n in ("one", "two")}
    assert [r["value"] for r in rows["one"]] == pytest.approx([r["value"] for r in rows["two"]], rel=1e-3, abs=1e-4)


CONSISTENCY = ["distill.method=consistency", "distill.steps_per_stage=24", "distill.teacher_steps=8", "distill.lr=1e-3"]


@pytest.mark.slow  # 60 s on 2 cores: CI runs the stage's resume in process (tests/distill/test_consistency.py)
def test_consistency_distillation_resumes_exactly_and_over_two_processes_equals_one(tmp_path):
    """A Gaussian DDPM teacher (state input) distilled by consistency to a 2-step student: over two
    processes it makes the single-process student; interrupted by Ctrl-C at its 14th step and
    resumed, it ends with the uninterrupted one; the table holds the student beside the teacher."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TEST_SIGNALS, None)
    teacher = [sys.executable, "-m", "mstar_cli.main", "run", SPEC, *TINY, "train.steps=40", "sample.steps=16"]
    runs = {name: tmp_path / name / "gaussian" for name in ("one", "two", "stop")}
    subprocess.run([*teacher, f"experiment.output_dir={tmp_path / 'one'}"], check=True, capture_output=True,
                   env=env, cwd=ROOT)
    for name in ("two", "stop"):  # the same teacher, trained once
        shutil.copytree(tmp_path / "one", tmp_path / name)

    def distil(name, *extra, **kw):
        return subprocess.run([sys.executable, "-m", "mstar_cli.main", "distill", str(runs[name]), "--to", "2",
                               *CONSISTENCY, *extra], capture_output=True, text=True, cwd=ROOT, **kw)
    assert distil("one", env=env).returncode == 0
    assert distil("two", "--nproc-per-node", "2", env=env).returncode == 0
    stopped = distil("stop", env={**env, TEST_SIGNALS: "14:INT"}, start_new_session=True)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    resumed = distil("stop", env=env)
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-3000:]
    final = {n: train_checkpoint(runs[n], 24, "consistency-2") for n in runs}
    assert final["one"]["complete"] and final["one"]["consistency"] and final["one"]["evaluations"] == 2
    for key in ("model", "target"):
        assert max_difference(final["one"][key], final["two"][key]) < 1e-5
        for name, tensor in final["one"][key].items():
            assert torch.equal(tensor, final["stop"][key][name]), f"{key}.{name} differs after resume"
    rows = json.loads((runs["one"] / "results.json").read_text())["results"]
    assert {(r.get("model"), r["steps"]) for r in rows} >= {("student", 2), ("teacher", 2), ("teacher", 16)}
    result = invoke("sample", runs["one"], "--checkpoint", runs["one"] / "checkpoints" / "consistency-2",
                    "--num-samples", 10, "--out", tmp_path / "c.npz")
    assert result.exit_code == 0, result.output


IMAGES = ["process.steps=10", "network.unet.channels=8", "network.unet.channel_mult=[1, 2]", "network.unet.res_blocks=1",
          "network.unet.attention_resolutions=[4]", "network.unet.head_channels=8", "train.steps=4", "train.batch_size=8",
          "train.log_every=2", "sample.num_samples=8", "sample.batch_size=8", "process.energy.draws=2",
          "network.class_conditional=true", "sample.steps=3", "sample.guidance=2.0", "sample.class_label=3"]


@pytest.mark.slow  # about 30 s per kind on 2 cores; CI runs the U-Net with labels and guidance through tests/cli/test_images_e2e.py
@pytest.mark.parametrize("kind", KINDS)
def test_class_conditional_images_with_guidance(tmp_path, kind):
    """The U-Net, class labels and classifier-free guidance work for every kind: a run on the
    built-in digits writes its sample grid and trajectories, and guidance changes the samples."""
    result = invoke("run", ROOT / "specs" / "digits.toml", f"process.kind={kind}", *IMAGES,
                    f"experiment.output_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    run = tmp_path / "digits"
    assert (run / "samples" / "grid.png").is_file() and (run / "samples" / "trajectories.png").is_file()
    from mstar_engine import load_run
    loaded = load_run(run)
    torch.manual_seed(0)
    with torch.no_grad():  # 4 steps leave the zero-initialised label embedding near zero: move every weight
        for p in loaded.model.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    plain, guided = (loaded.sample(8, 3, seed=1, label=3, guidance=w) for w in (1.0, 3.0))
    assert plain.shape == (8, 1, 8, 8) and torch.isfinite(guided).all()
    assert not torch.allclose(plain, guided)
