"""Freed host memory stays in the process: a CPU training step no longer faults its pages in anew
(each check runs in a fresh process, since malloc's settings are the process's)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

STEPS = textwrap.dedent("""
    import resource, sys, torch
    from mstar_engine.util.host_memory import keep_freed_host_memory
    if sys.argv[1] == "keep":
        assert keep_freed_host_memory()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.GroupNorm(8, 32), torch.nn.SiLU(),
                              torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(64, 1, 3, padding=1))
    x = torch.randn(64, 1, 8, 8)
    def step():
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
""")


def _faults_per_step(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_training_steps_stop_faulting_pages_in():
    default = _faults_per_step("default")
    if default < 50:
        pytest.skip(f"this malloc faults only {default:.0f} pages per step without the setting: nothing to show")
    kept = _faults_per_step("keep")
    assert kept < 0.05 * default, (kept, default)


def test_a_cpu_stage_keeps_freed_memory():
    """ResumableStage.run sets it when the model is on the CPU."""
    script = textwrap.dedent("""
        import tempfile, torch
        from pathlib import Path
        from mstar_engine.util import host_memory
        from mstar_engine.train.stage import ResumableStage
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        def losses():
            opt.zero_grad()
            loss = model(torch.ones(4, 2)).square().mean()
            loss.backward()
            return loss, None
        with tempfile.TemporaryDirectory() as tmp:
            stage = ResumableStage(model, opt, 2, Path(tmp) / "c", Path(tmp) / "m.jsonl", fingerprint={}, log_every=1,
                                   checkpoint_every=10, log=lambda s: None)
            assert host_memory._done is None
            stage.run(None, losses=losses, record=lambda loss: ({"step": stage.step}, ""))
        print(host_memory._done)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("True" if sys.platform.startswith("linux") else "False")
