"""Randomised fault test of the run directory (issue #12): random sequences of run, resume,
SIGKILL at a random point (mid-step, mid-checkpoint, mid-log-line), Ctrl-C (once or twice), a
random file truncated, two runs started at once, ``--resume never`` and ``--overwrite``, on a tiny
spec. After every operation the newest checkpoint our code wrote loads and is finite, and at the
end one more ``mstar run`` gives weights equal, bit for bit, to a run never disturbed.

Each operation is the ``mstar`` command run in a forked child of this process (no interpreter
start-up), with the fault placed deterministically by patching the child's own functions: the
kill is a real SIGKILL and the Ctrl-C a real SIGINT, sent by the child to itself at a chosen event,
so nothing depends on timing or machine load.

CI runs :data:`CI_SEQUENCES` sequences; ``pytest -m slow`` runs :data:`SOAK_SEQUENCES`.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
import torch

import mstar_engine.app.compare  # noqa: F401 - imported once here, so that each forked child starts at once
import mstar_engine.app.distill  # noqa: F401
import mstar_engine.app.evaluate  # noqa: F401
import mstar_engine.metrics.distances  # noqa: F401
from mstar_cli.main import cli
from mstar_engine.rundir.files import MARKER
from mstar_engine.train.checkpoint import checkpoint_files, find_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "specs" / "gaussian.toml")
STEPS = 24
TINY = [f"train.steps={STEPS}", "train.checkpoint_every=4", "train.log_every=2", "train.keep_checkpoints=2",
        "train.warmup_steps=0", "train.batch_size=16", "process.steps=8", "data.num_examples=300",
        "network.mlp.hidden=16", "network.mlp.blocks=1", "sample.num_samples=20", "eval.num_samples=20",
        "sample.batch_size=20", "eval.batch_size=20", 'eval.metrics=["energy"]', "compare={}"]
CI_SEQUENCES = int(os.environ.get("MSTAR_FAULT_SEQUENCES", 40))  # about 30 s on 2 cores
SOAK_SEQUENCES = 1000
OPERATIONS = ("run", "kill", "kill", "kill", "sigint", "truncate", "truncate", "concurrent", "never", "overwrite")


# ----------------------------------------------------------------------------- children with faults
def _events(kind: str, at: int) -> None:
    """Patch this (child) process so that ``kind`` happens at its ``at``-th event:
    ``kill-step`` SIGKILL after an optimiser step begins, ``kill-replace`` SIGKILL just before an
    atomic write renames its complete temporary file, ``kill-append`` SIGKILL half-way through a
    log line, ``sigint`` / ``sigint2`` one or two real SIGINTs at a training step."""
    import mstar_engine.util.atomic as atomic
    import mstar_engine.train.loop as loop
    import mstar_engine.train.stage as stage
    count = [0]

    def due() -> bool:
        count[0] += 1
        return count[0] == at

    if kind in ("kill-step", "sigint", "sigint2"):
        rate = loop.learning_rate

        def learning_rate(*args, **kwargs):
            if due():
                if kind == "kill-step":
                    os.kill(os.getpid(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGINT)
                if kind == "sigint2":
                    os.kill(os.getpid(), signal.SIGINT)
            return rate(*args, **kwargs)
        loop.learning_rate = learning_rate
    elif kind == "kill-replace":
        replace = os.replace

        class _Os:
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(src, dst):
                if due():
                    os.kill(os.getpid(), signal.SIGKILL)
                return replace(src, dst)
        atomic.os = _Os()
    elif kind == "kill-append":
        append = stage.append_jsonl

        def append_jsonl(path, records):
            if due():
                text = "".join(json.dumps(r) + "\n" for r in records)
                with open(path, "a") as fh:
                    fh.write(text[: max(1, len(text) // 2)])
                    fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return append(path, records)
        stage.append_jsonl = append_jsonl


def start(args: list[str], log: Path, fault: tuple[str, int] | None = None) -> int:
    """Fork a child that runs ``mstar ARGS`` (with ``fault``); its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 99
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)  # pytest's capture is not fd 2
        signal.signal(signal.SIGINT, signal.default_int_handler)
        torch.set_num_threads(1)
        if fault is not None:
            _events(*fault)
        try:
            cli.main(args=args, prog_name="mstar")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported through the exit code
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def wait(pid: int) -> int:
    """The exit code of a child, or -N when signal N ended it."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def mstar(args: list[str], log: Path, fault: tuple[str, int] | None = None) -> int:
    return wait(start(args, log, fault))


# ------------------------------------------------------------------------------------- the checks
def command(out: Path, *extra: str) -> list[str]:
    return ["run", SPEC, *TINY, f"experiment.output_dir={out}", *extra]


def newest_is_good(ckpt: Path, why: str) -> None:
    """The newest checkpoint file in ``ckpt`` (if any) is complete, finite, and named by latest."""
    files = checkpoint_files(ckpt)
    if not files:
        return
    state = load_checkpoint(files[0])  # raises CheckpointError when torn or not finite
    assert 0 < int(state["step"]) <= STEPS, why
    latest = ckpt / "latest"
    if latest.is_file():
        assert (ckpt / latest.read_text().strip()).is_file(), f"{why}: latest names a missing file"


def sequence(seed: int, out: Path, reference: dict, log: Path) -> list[str]:
    """One random sequence in ``out``; the operations it made (for the failure message)."""
    rng = random.Random(seed)
    run = out / "gaussian"
    ckpt = run / "checkpoints" / "train"
    done = []
    for _ in range(rng.randint(2, 5)):
        op = rng.choice(OPERATIONS)
        why = f"sequence {seed}: {' → '.join(done + [op])}"
        if op == "truncate":
            files = [p for p in run.rglob("*") if p.is_file()] if run.is_dir() else []
            if files:
                victim = rng.choice(files)
                size = victim.stat().st_size
                with open(victim, "r+b") as fh:
                    fh.truncate(rng.randint(0, max(0, size - 1)))
                op = f"truncate {victim.relative_to(run)}"
            done.append(op)
            continue
        if op == "run":
            code = mstar(command(out), log)
            assert code == 0, f"{why}: exit {code} (log {log})"
        elif op == "kill":
            kind = rng.choice(("kill-step", "kill-replace", "kill-append"))
            at = rng.randint(1, {"kill-step": STEPS, "kill-replace": 16, "kill-append": STEPS // 2}[kind])
            op = f"{kind}@{at}"
            code = mstar(command(out), log, (kind, at))
            assert code in (0, -signal.SIGKILL), f"{why}: exit {code} (log {log})"
        elif op == "sigint":
            kind, at = rng.choice(("sigint", "sigint2")), rng.randint(1, STEPS)
            op = f"{kind}@{at}"
            code = mstar(command(out), log, (kind, at))
            assert code in (0, 130), f"{why}: exit {code} (log {log})"
        elif op == "concurrent":
            codes = sorted(wait(p) for p in [start(command(out), log) for _ in range(2)])
            assert codes[0] == 0 and codes[1] in (0, 1), f"{why}: exits {codes} (log {log})"
        elif op == "never":
            existed = (run / MARKER).is_file() or any(checkpoint_files(d) for d in (run / "checkpoints").glob("*"))
            code = mstar(command(out, "--resume", "never"), log)
            assert code == (1 if existed else 0), f"{why}: exit {code} (log {log})"
        elif op == "overwrite":
            code = mstar(command(out, "--overwrite"), log)
            assert code == 0, f"{why}: exit {code} (log {log})"
        done.append(op)
        if op != "never" or code == 0:  # every command that ran left a good newest checkpoint
            newest_is_good(ckpt, why)
        if op.startswith(("run", "sigint", "concurrent", "overwrite")):  # a run that started cleans up
            assert not list(run.rglob(".*.tmp")), f"{why}: temporary files left"
    code = mstar(command(out), log)
    why = f"sequence {seed}: {' → '.join(done)} → run"
    assert code == 0, f"{why}: exit {code} (log {log})"
    found = find_checkpoint(ckpt)
    assert found is not None and int(found[1]["step"]) == STEPS, why
    for key in ("model", "ema"):
        for name, tensor in reference[key].items():
            assert torch.equal(tensor, found[1][key][name]), f"{why}: {key}.{name} differs from the undisturbed run"
    for aside in out.glob("gaussian.replaced-*"):  # runs moved aside by --overwrite stay loadable
        if checkpoint_files(aside / "checkpoints" / "train"):
            assert find_checkpoint(aside / "checkpoints" / "train") is not None, why
    return done


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The undisturbed run, made in this process: it also imports and warms up everything the
    forked children use, so that each of them starts at once (one thread, as the children)."""
    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main(args=command(out), prog_name="mstar")
        assert exit_.value.code in (0, None)
        yield load_checkpoint(out / "gaussian" / "checkpoints" / "train" / f"step-{STEPS:08d}.pt")
    finally:
        torch.set_num_threads(threads)


def run_sequences(seeds: range, tmp_path: Path, reference: dict) -> None:
    for seed in seeds:
        out = tmp_path / f"s{seed}"
        sequence(seed, out, reference, tmp_path / f"log-{seed}.txt")


def test_random_fault_sequences_lose_nothing_and_resume_exactly(tmp_path, reference):
    run_sequences(range(CI_SEQUENCES), tmp_path, reference)


@pytest.mark.slow
def test_random_fault_soak(tmp_path, reference):
    run_sequences(range(CI_SEQUENCES, CI_SEQUENCES + SOAK_SEQUENCES), tmp_path, reference)
