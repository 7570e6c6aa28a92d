"""``devices.jobs``: the models of a ``[compare]`` spec trained side by side in processes of their
own (mstar_engine/app/side_by_side.py) stop cleanly on Ctrl-C and resume to the results they give
one after the other; a failure in one model reaches the caller. (That they give the same results
is tests/cli/test_compare.py's.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from mstar_engine.app.side_by_side import AUTO_MIN_STEPS, jobs_for, run_side_by_side
from mstar_engine.distributed.launch import ProcessStopped
from mstar_engine.util.interrupt import TEST_SIGNALS, Interrupted

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "specs" / "quickstart.toml"
TINY = ["train.steps=24", "train.log_every=8", "train.checkpoint_every=8", "process.steps=8", "sample.num_samples=40",
        "eval.num_samples=40", "network.mlp.hidden=32", "network.mlp.blocks=1", "data.num_examples=1000"]


def plan(steps=AUTO_MIN_STEPS, accelerator="cpu", processes=1):
    return SimpleNamespace(devices=SimpleNamespace(processes=processes),
                           spec=SimpleNamespace(devices=SimpleNamespace(accelerator=accelerator)),
                           stages=[SimpleNamespace(optimizer_steps=steps)])


def test_auto_runs_long_cpu_models_side_by_side_up_to_the_thread_count():
    assert jobs_for([plan(), plan(), plan()], 0, threads=2) == 2
    assert jobs_for([plan(), plan()], 0, threads=16) == 2
    assert jobs_for([plan(), plan(steps=AUTO_MIN_STEPS - 1)], 0, threads=4) == 1   # short: one after the other
    assert jobs_for([plan(), plan(steps=10)], 2, threads=4) == 2                    # unless asked for
    assert jobs_for([plan(), plan(processes=2)], 2, threads=4) == 1                 # several processes each
    assert jobs_for([plan()], 4, threads=4) == 1
    assert jobs_for([plan(), plan()], 1, threads=4) == 1


def mstar(*args, signals: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    env.pop(TEST_SIGNALS, None)
    if signals is not None:
        env[TEST_SIGNALS] = signals
    done = subprocess.run([sys.executable, "-m", "mstar_cli.main", *map(str, args)], capture_output=True, text=True,
                          env=env, start_new_session=True, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def values(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    return {(name, r["metric"]): r["value"]  # flat: pytest ≥ 9.2 does not approx nested structures
            for name, res in [("spec", results), *results["compare"].items()] for r in res["results"]}


@pytest.mark.slow  # 45 s on 2 cores: CI runs the Ctrl-C path with a stand-in model (below)
def test_ctrl_c_stops_the_models_and_the_rerun_finishes_them(tmp_path):
    reference = mstar("run", QUICKSTART, *TINY, f"experiment.output_dir={tmp_path / 'one'}", "devices.jobs=1")
    assert reference.returncode == 0, reference.stderr[-3000:]
    args = ("run", QUICKSTART, *TINY, f"experiment.output_dir={tmp_path}", "devices.jobs=2")
    done = mstar(*args, signals="12:INT")   # Ctrl-C in the 12th step of the first model to get there
    assert done.returncode == 130, done.stderr[-3000:]
    assert [line for line in done.stderr.splitlines() if line.startswith("interrupted: ")], done.stderr[-3000:]
    run_dir = tmp_path / "quickstart"
    assert not (run_dir / "results.json").exists()
    assert not (run_dir / "compare" / "gaussian-ddpm" / "spec.toml").exists()  # never started
    assert "[gaussian-ddpm] started" not in done.stderr
    # the model that got to step 12 stopped after it with a checkpoint; the other stopped after a step
    # or, if still loading, at once (which of the two ran faster depends on the machine)
    written = [p for folder in (run_dir, run_dir / "compare" / "star-shaped")
               for p in (folder / "checkpoints" / "train").glob("step-*.pt")]
    assert written, done.stderr[-3000:]
    again = mstar(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert values(run_dir) == pytest.approx(values(tmp_path / "one" / "quickstart"))
    assert "[star-shaped] step 24/24" in again.stderr


@pytest.fixture
def tasks(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned processes get this sys.path
    import side_by_side_tasks
    return side_by_side_tasks


def test_results_come_in_order_and_a_failure_or_ctrl_c_reaches_the_caller(tasks):
    lines = []
    assert run_side_by_side([("a", tasks.works, (1,), {}), ("b", tasks.works, (2,), {})], 2, lines.append) == [2, 4]
    assert [line.split(" (")[0] for line in lines] == ["[a] started", "[b] started"]
    lines.clear()   # after a failure or a Ctrl-C no other model starts
    with pytest.raises(ValueError, match="fix its spec"):
        run_side_by_side([("a", tasks.fails, (), {}), ("b", tasks.works, (2,), {})], 1, lines.append)
    with pytest.raises(Interrupted, match="training step 3"):
        run_side_by_side([("c", tasks.stops, (), {}), ("d", tasks.works, (2,), {})], 1, lines.append)
    with pytest.raises(ProcessStopped, match=r"the run of e ended without a result \(exit code 3"):
        run_side_by_side([("e", tasks.exits, (), {})], 1, lines.append)
    assert [line.split(" (")[0] for line in lines] == ["[a] started", "[c] started", "[e] started"]
