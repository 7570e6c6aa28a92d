"""Multi-process (torch.distributed, gloo on the CPU) runs: the collectives, the launcher's error
path, and training that does not depend on the number of processes."""
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
from mstar_engine.util import interrupt
from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.distributed.launch import _free_port, run_processes
from mstar_engine.util.interrupt import TEST_SIGNALS

sys.path.insert(0, str(Path(__file__).parent))  # spawned children import the probes by name
import probes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "specs" / "quickstart.toml")
TINY = ["train.steps=24", "train.log_every=8", "train.checkpoint_every=8", "train.eval_every=12",
        "sample.num_samples=50", "eval.num_samples=50", "process.steps=16", "compare={}", "data.num_examples=2000",
        "network.mlp.hidden=64", "network.mlp.blocks=1", "sample.batch_size=16", "eval.batch_size=16"]


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def checkpoint(run: Path, step: int) -> dict:
    return torch.load(run / "checkpoints" / "train" / f"step-{step:08d}.pt", weights_only=True)


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ the group itself
def test_single_process_group_is_a_no_op():
    x = torch.tensor([1.0, 2.0])
    assert SINGLE.sum_(x) is x and x.tolist() == [1.0, 2.0]
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    SINGLE.sum_gradients([p])
    assert p.grad.tolist() == [1.0, 1.0]
    assert SINGLE.gather("a") == ["a"] and SINGLE.main and SINGLE.shard(5) == slice(0, 5)


def test_shards_are_contiguous_and_cover_the_batch():
    shards = [Group(r, 4).shard(12) for r in range(4)]
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 6), (6, 9), (9, 12)]
    with pytest.raises(ValueError, match="do not split evenly over 4 processes"):
        Group(1, 4).shard(10)


def test_collectives_over_two_processes():
    out = run_processes(probes.collectives, 2, "gloo", 0.5)
    assert out["sum"] == [3.0, 1.0]                 # 1 + 2, and 0.5 + 0.5
    assert out["gathered"] == [0, 10]
    assert out["a"] == [[3.0] * 3] * 2              # float32 and float64 gradients both summed
    assert out["b"] == [0.0, 3.0, 6.0, 9.0]
    assert out["unused"] is None                    # a parameter without a gradient keeps none
    assert out["shard"] == (0, 4) and out["world"] == 2
    assert out["threads"] == max(1, (os.cpu_count() or 1) // 2)


def test_an_error_in_one_process_is_raised_with_its_type_and_message():
    from mstar_engine.data.offline import DataError
    with pytest.raises(DataError, match="process 1 could not read its data"):
        run_processes(probes.fail_on, 2, "gloo", 1)


def test_a_killed_process_stops_the_others_with_a_clear_error():
    from mstar_engine.distributed.launch import ProcessStopped
    with pytest.raises(ProcessStopped, match="SIGKILL.*one of 2 processes.*run the same command again to resume"):
        run_processes(probes.killed_on, 2, "gloo", 1)


def test_a_process_that_aborts_while_shutting_down_after_the_work_is_done_is_not_a_failure():
    assert run_processes(probes.aborts_at_exit, 2, "gloo", 1) == "finished"


# ------------------------------------------------------------------------------ training
RUNS = {"one": [], "two": ["--nproc-per-node", "2"],
        "two-accumulated": ["--nproc-per-node", "2", "train.accumulation=2"],
        "two-workers": ["--nproc-per-node", "2", "train.workers=1"]}


class Runs(dict):
    """The tiny quick start trained by one process, by two, by two with two micro-batches, and by
    two each reading its data through a DataLoader worker (spawned processes inside spawned ones);
    each trained when a test first asks for it."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def __missing__(self, name: str) -> Path:
        result = invoke("run", QUICKSTART, *TINY, f"experiment.output_dir={self.out / name}", *RUNS[name])
        assert result.exit_code == 0, result.output
        self[name] = self.out / name / "quickstart"
        (self[name] / "printed.txt").write_text(result.output)
        return self[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("processes"))


@pytest.mark.parametrize("other", ["two", "two-accumulated",
                                   pytest.param("two-workers", marks=pytest.mark.slow)])  # 13 s more: slow
def test_two_processes_train_the_single_process_model(runs, other):
    """Same data order and random numbers; only the gradient sum's order differs (float32)."""
    one, two = checkpoint(runs["one"], 24), checkpoint(runs[other], 24)
    assert max_difference(one["model"], two["model"]) < 1e-5
    assert max_difference(one["ema"], two["ema"]) < 1e-5
    assert losses(runs[other]) == pytest.approx(losses(runs["one"]), rel=1e-6)
    rows = [json.loads((runs[n] / "results.json").read_text())["results"] for n in ("one", other)]
    assert [(r["metric"], r["steps"]) for r in rows[0]] == [(r["metric"], r["steps"]) for r in rows[1]]
    assert [r["value"] for r in rows[1]] == pytest.approx([r["value"] for r in rows[0]], rel=1e-3)
    curves = [[json.loads(line) for line in (runs[n] / "eval.jsonl").read_text().splitlines()] for n in ("one", other)]
    assert [(r["step"], r["metric"]) for r in curves[1]] == [(r["step"], r["metric"]) for r in curves[0]]
    assert [r["step"] for r in curves[0]][0] == 12   # evaluated during training too, every process taking part
    assert [r["value"] for r in curves[1]] == pytest.approx([r["value"] for r in curves[0]], rel=1e-3)


def test_sampling_batches_shared_out_over_processes_are_the_single_process_samples(runs):
    """50 samples in batches of 16: batches 0 and 2 from process 0, 1 and 3 from process 1."""
    import numpy as np
    one, two = (np.load(runs[n] / "samples" / "samples.npz")["samples"] for n in ("one", "two"))
    assert one.shape == two.shape == (50, 3)
    np.testing.assert_allclose(two, one, atol=1e-5)
    assert np.abs(one[:16] - one[16:32]).max() > 1e-3  # batches are not copies of one another


def test_only_rank_0_writes_and_every_rank_state_is_checkpointed(runs):
    state = checkpoint(runs["two"], 24)
    assert len(state["torch_rng_ranks"]) == 2
    assert not torch.equal(state["torch_rng_ranks"][0], state["torch_rng_ranks"][1])
    assert len(losses(runs["two"])) == 3  # one line per logging interval, not one per process
    assert checkpoint(runs["one"], 24)["torch_rng_ranks"] == []


def test_resume_with_another_number_of_processes_continues_the_run(runs, tmp_path):
    """Two processes to step 8, then one process to step 24 = one process throughout."""
    out = tmp_path / "switch"
    steps8 = [a if not a.startswith("train.steps=") else "train.steps=8" for a in TINY]
    assert invoke("run", QUICKSTART, *steps8, f"experiment.output_dir={out}", "--nproc-per-node", "2").exit_code == 0
    result = invoke("run", QUICKSTART, *TINY, f"experiment.output_dir={out}")
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output
    run = out / "quickstart"
    assert max_difference(checkpoint(run, 24)["model"], checkpoint(runs["one"], 24)["model"]) < 1e-5
    assert losses(run) == pytest.approx(losses(runs["one"]), rel=1e-6)


def test_a_failing_process_gives_one_clear_error(runs, tmp_path):
    """A checkpoint of another spec in the run directory: every process refuses it."""
    out = tmp_path / "mismatch"
    shutil.copytree(runs["one"], out / "quickstart")
    result = invoke("run", QUICKSTART, *TINY, "train.lr=1e-3", f"experiment.output_dir={out}",
                    "--nproc-per-node", "2")
    assert result.exit_code == 1
    assert "error: " in result.output and "was written by a different spec" in result.output
    assert "train.lr" in result.output


def test_plan_shows_the_split_over_processes():
    result = invoke("plan", QUICKSTART, "devices.processes=2", "devices.accelerator=cpu", "--no-settings")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.lstrip().startswith("cpu"))
    assert row.split()[:4] == ["cpu", "2", "gloo", "16"]
    assert "not implemented" not in result.output


def test_nccl_on_the_cpu_is_refused_before_anything_runs(tmp_path):
    result = invoke("run", QUICKSTART, *TINY, "devices.accelerator=cpu", "devices.backend=nccl",
                    f"experiment.output_dir={tmp_path}", "--nproc-per-node", "2")
    assert result.exit_code == 1
    assert "nccl backend needs GPUs" in result.output and 'use backend = "gloo"' in result.output
    assert not (tmp_path / "quickstart").exists()


@pytest.mark.slow  # 13 s: CI runs the spawned launch; torchrun's join is the same fn on the same group
def test_torchrun_launch_equals_the_single_process_run(runs, tmp_path):
    """``torchrun --nproc-per-node 2 mstar run SPEC``: the processes join torchrun's group."""
    mstar = shutil.which("mstar")
    if mstar is None:
        pytest.skip("the mstar console script is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", str(_free_port()), mstar, "run", QUICKSTART, *TINY,
                           f"experiment.output_dir={tmp_path}"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.count("run directory:") == 1
    assert done.stdout.count("| knn-kl") == 1  # rank 0 prints the table, once
    run = tmp_path / "quickstart"
    assert max_difference(checkpoint(run, 24)["model"], checkpoint(runs["one"], 24)["model"]) < 1e-5


def mstar_in_own_group(*args, signals: str | None = None, script: str | None = None) -> subprocess.CompletedProcess:
    """``mstar ARGS`` in a session and process group of its own (a terminal's Ctrl-C goes to that
    group); ``signals``: MSTAR_TEST_SIGNAL_AT_STEP (see mstar_engine/util/interrupt.py). Checks that no
    process of the group outlives the command."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TEST_SIGNALS, None)
    if signals is not None:
        env[TEST_SIGNALS] = signals
    proc = subprocess.Popen([sys.executable, *([script] if script else ["-m", "mstar_cli.main"]), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        left = group_members(proc.pid)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes {left} of the launch were left running: {err[-3000:]}"
    assert "Traceback" not in err and "Aborted!" not in err, err[-3000:]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def group_members(pgid: int) -> dict[int, str]:
    """The live (not zombie) processes of process group ``pgid`` and their command lines, less
    Python's multiprocessing resource tracker (it ends by itself once its parent has ended) and
    processes already exiting (their command line is gone: the resource tracker on its way out)."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z" and command and "resource_tracker" not in command:
            members[int(stat.parent.name)] = command
    return members


def interrupted(done: subprocess.CompletedProcess) -> str:
    """The one ``interrupted:`` line of a command stopped by Ctrl-C with exit status 130."""
    assert done.returncode == 130, (done.returncode, done.stderr[-3000:])
    lines = [line for line in done.stderr.splitlines() if line.startswith("interrupted: ")]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table in /proc")


@needs_proc
def test_ctrl_c_stops_both_processes_after_one_step_and_the_run_resumes_on_one(runs, tmp_path):
    """SIGINT to the whole process group (a terminal's Ctrl-C) during step 12 of a two-process run:
    both processes finish that step, rank 0 checkpoints it, the command exits with 130, and one
    process resumes it to the uninterrupted single-process model."""
    command = ["run", QUICKSTART, *TINY, f"experiment.output_dir={tmp_path}"]
    done = mstar_in_own_group(*command, "--nproc-per-node", "2", signals="12:INT")
    run = tmp_path / "quickstart"
    assert interrupted(done) == (f"interrupted: stopped by Ctrl-C after training step 12 of 24; {run}/checkpoints/train/"
                                 "step-00000012.pt holds it: run the same command again to resume")
    assert done.stderr.count("Ctrl-C: stopping after this step") == 1
    assert sorted(p.name for p in (run / "checkpoints" / "train").glob("step-*.pt")) == \
        ["step-00000008.pt", "step-00000012.pt"]
    resumed = mstar_in_own_group(*command)
    assert resumed.returncode == 0 and "at step 12" in resumed.stderr, resumed.stderr[-3000:]
    assert max_difference(checkpoint(run, 24)["model"], checkpoint(runs["one"], 24)["model"]) < 1e-5
    assert losses(run) == pytest.approx(losses(runs["one"]), rel=1e-6)


@pytest.mark.slow  # 12 s: CI runs the first Ctrl-C over two processes and a second one in one process
@needs_proc
def test_a_second_ctrl_c_stops_both_processes_at_once_with_130(tmp_path):
    """Ctrl-C twice during step 12 of a two-process run: every process (the launcher too) stops at
    once, none is left running, the command exits 130 and step 8's checkpoint is the last."""
    done = mstar_in_own_group("run", QUICKSTART, *TINY, f"experiment.output_dir={tmp_path}", "--nproc-per-node", "2",
                              signals="12:INT,12:INT")
    assert interrupted(done) == ("interrupted: stopped at once by a second Ctrl-C; the last checkpoint written stays "
                                 "usable: run the same command again to resume")
    folder = tmp_path / "quickstart" / "checkpoints" / "train"
    assert sorted(p.name for p in folder.glob("step-*.pt")) == ["step-00000008.pt"]


@needs_proc
def test_ctrl_c_while_two_processes_sample_exits_130(runs, tmp_path):
    """mstar sample --nproc-per-node 2, Ctrl-C when process 0 starts sampling."""
    script = str(ROOT / "tests" / "cli" / "ctrl_c_in_sampling.py")
    done = mstar_in_own_group("sample", runs["one"], "-n", "40", "--out", tmp_path / "x.npz", "--nproc-per-node", "2",
                              script=script)
    assert interrupted(done) == ("interrupted: stopped by Ctrl-C before mstar sample finished; run the same command "
                                 "again to start it over")
    assert not (tmp_path / "x.npz").exists()


@needs_proc
def test_ctrl_c_in_the_launcher_alone_stops_the_processes(tmp_path, monkeypatch):
    """A KeyboardInterrupt in the launching process (a second Ctrl-C there, or a first one outside
    mstar's graceful stop) stops its processes before it reaches the caller."""
    monkeypatch.delenv(interrupt.SWITCH, raising=False)  # Python's own Ctrl-C: the first one raises
    with pytest.raises(KeyboardInterrupt):
        run_processes(probes.interrupts_parent, 2, "gloo", str(tmp_path))
    pids = [int((tmp_path / f"pid-{rank}").read_text()) for rank in range(2)]
    left = [pid for pid in pids if pid in group_members(os.getpgid(0))]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "the launcher left its processes running"


# ------------------------------------------------------------------------------ distillation
DISTILL = ["train.steps=16", "train.log_every=8", "train.checkpoint_every=8", "process.steps=16",
           "data.num_examples=1000", "network.mlp.hidden=32", "network.mlp.blocks=1", "distill.to=4",
           "distill.steps_per_stage=6", "train.batch_size=32", "sample.num_samples=40", "eval.num_samples=40"]


def distil_with_one_and_two_processes(out: Path, one: list[str], two: list[str], *extra: str) -> dict[str, Path]:
    """The shipped distill-beta spec (tiny), run with the launch options ``one`` and ``two``; checks
    that both make the same students at every stage."""
    runs = {}
    for name, launch in (("one", one), ("two", two)):
        result = invoke("run", ROOT / "specs" / "distill-beta.toml", *DISTILL, *extra,
                        f"experiment.output_dir={out / name}", *launch)
        assert result.exit_code == 0, result.output
        runs[name] = out / name / "distill-beta"
    for stage in (8, 4):
        students = [torch.load(runs[n] / "checkpoints" / f"distill-{stage}" / "step-00000006.pt", weights_only=True)
                    for n in ("one", "two")]
        assert max_difference(students[0]["model"], students[1]["model"]) < 1e-5
    return runs


def test_distillation_over_two_processes_equals_one(tmp_path):
    """Beta, state input, deterministic coupling, landing target (the shipped distill-beta spec):
    two processes (sharing the teacher's evaluations) make the single-process students."""
    runs = distil_with_one_and_two_processes(tmp_path, [], ["--nproc-per-node", "2"])
    logged = [[json.loads(line)["loss"] for line in (runs[n] / "distill.jsonl").read_text().splitlines()]
              for n in ("one", "two")]
    assert len(logged[1]) == len(logged[0]) > 0
    assert logged[1] == pytest.approx(logged[0], rel=1e-5)


@pytest.mark.slow  # 17 s: CI resumes training with another number of processes
def test_mstar_distill_over_two_processes_resumes_a_single_process_run(tmp_path):
    """A run trained by one process, distilled by two with mstar distill --nproc-per-node 2."""
    result = invoke("run", QUICKSTART, *TINY, f"experiment.output_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    run = tmp_path / "quickstart"
    result = invoke("distill", run, "--to", "8", "distill.steps_per_stage=6", "--nproc-per-node", "2")
    assert result.exit_code == 0, result.output
    assert "student" in result.output
    assert (run / "checkpoints" / "distill-8" / "step-00000006.pt").is_file()
    result = invoke("distill", run, "--to", "8", "distill.steps_per_stage=6", "distill.batch_size=33",
                    "--nproc-per-node", "2")
    assert result.exit_code == 1 and "does not split evenly over 2 processes" in result.output


@pytest.mark.slow  # 12 s: CI runs two processes on the MLP and labelled images in one process
def test_class_conditional_images_over_two_processes_equal_one(tmp_path):
    """Digits, U-Net, class labels with label dropout (drawn for the global batch, then sharded)."""
    pytest.importorskip("sklearn")
    tiny = ["process.steps=10", "network.unet.channels=8", "network.unet.channel_mult=[1, 2]",
            "network.unet.res_blocks=1", "network.unet.attention_resolutions=[4]", "network.unet.head_channels=8",
            "train.batch_size=16", "train.steps=6", "train.log_every=3", "train.checkpoint_every=6",
            "sample.num_samples=8", "sample.batch_size=8", "network.class_conditional=true",
            "network.label_dropout=0.5", "data.flip=true", "eval.metrics=[]"]
    runs = {}
    for name, extra in (("one", []), ("two", ["--nproc-per-node", "2"])):
        result = invoke("run", ROOT / "specs" / "digits.toml", *tiny, f"experiment.output_dir={tmp_path / name}",
                        *extra)
        assert result.exit_code == 0, result.output
        runs[name] = tmp_path / name / "digits"
    one, two = checkpoint(runs["one"], 6), checkpoint(runs["two"], 6)
    assert max_difference(one["model"], two["model"]) < 1e-5
    assert losses(runs["two"]) == pytest.approx(losses(runs["one"]), rel=1e-6)


def test_roll_out_streams_built_once_per_process_give_the_same_model(runs, tmp_path):
    """devices.processes = 2 fixes two roll-out streams: one process builds both, each of two
    processes builds its own; the models agree. Other streams give another (equally valid) run."""
    made = {}
    for name, extra in (("one", ["--nproc-per-node", "1"]), ("two", [])):
        result = invoke("run", QUICKSTART, *TINY, "devices.processes=2", f"experiment.output_dir={tmp_path / name}",
                        *extra)
        assert result.exit_code == 0, result.output
        assert "do not divide" not in result.output
        made[name] = tmp_path / name / "quickstart"
    one, two = checkpoint(made["one"], 24), checkpoint(made["two"], 24)
    assert max_difference(one["model"], two["model"]) < 1e-5
    assert losses(made["two"]) == pytest.approx(losses(made["one"]), rel=1e-6)
    assert max_difference(one["model"], checkpoint(runs["one"], 24)["model"]) > 1e-3


def test_a_process_count_that_does_not_divide_the_streams_is_warned_about(tmp_path):
    result = invoke("run", QUICKSTART, *TINY, "--dry-run", "--nproc-per-node", "2")
    assert result.exit_code == 0, result.output
    assert "2 processes do not divide the 1 roll-out streams" in result.output
    result = invoke("run", QUICKSTART, *TINY, "train.batch_size=30", "--dry-run", "--nproc-per-node", "4")
    assert "batch_size 30 does not split evenly over 4 processes" in result.output


def test_mstar_eval_over_two_processes_gives_the_single_process_table(runs):
    """The eval batches (16 samples) shared out over two processes: the same metric values."""
    tables = []
    for extra in ([], ["--nproc-per-node", "2"]):
        result = invoke("eval", runs["one"], "--steps", "8,16", "-n", "50", "--json", *extra)
        assert result.exit_code == 0, result.output
        tables.append(json.loads(result.output)["results"])
    assert [(r["metric"], r["steps"]) for r in tables[0]] == [(r["metric"], r["steps"]) for r in tables[1]]
    assert [r["value"] for r in tables[1]] == pytest.approx([r["value"] for r in tables[0]], rel=1e-12)


@pytest.mark.slow  # 11 s: CI runs distillation over two processes with shared streams
def test_distillation_with_own_streams_per_process_equals_one_process(tmp_path):
    """devices.processes = 2: each of two processes builds its own stream's inputs and targets
    (no gathered teacher); one process building both streams makes the same students."""
    distil_with_one_and_two_processes(tmp_path, ["--nproc-per-node", "1"], [], "devices.processes=2")


def test_mstar_sample_over_two_processes_writes_the_single_process_samples(runs, tmp_path):
    import numpy as np
    files = []
    for name, extra in (("one.npz", []), ("two.npz", ["--nproc-per-node", "2"])):
        result = invoke("sample", runs["one"], "-n", "40", "--steps", "8", "--out", tmp_path / name, *extra)
        assert result.exit_code == 0, result.output
        assert "40 samples of shape (3,)" in result.output
        files.append(np.load(tmp_path / name)["samples"])
    np.testing.assert_array_equal(files[1], files[0])  # same weights, same per-batch seeds
