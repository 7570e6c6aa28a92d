"""Values that ``mstar validate`` accepted and ``mstar run`` then crashed on (issue #12, defect 11):
seeds, custom schedule values, names that become folder names, an output folder that is a file,
the MMD bandwidth, integer sizes and steps per roll-out. Each is now refused by validate with one
located paragraph (exit 2), or, for facts of this machine, reported as not ready and refused by run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.spec.schema import SEED_MAX
from tests.families.fixtures import toy, toy_data

BASE = """\
[experiment]
name = "t"

[process]
family = "gaussian"
steps = 4

[data]
name = "gaussian-mixture"
"""


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def errors(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error: ")]


@pytest.fixture
def validate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def run(text: str, *overrides: str, ready: bool = False):
        (tmp_path / "s.toml").write_text(text, encoding="utf-8")
        args = ["validate", *(["--ready"] if ready else []), "s.toml"]
        for o in overrides:
            args += ["--set", o]
        return invoke(*args)
    return run


# ------------------------------------------------------------------------------------ seed

@pytest.mark.parametrize("seed", [-1, 2**31, 2**40, 2**63 - 1, 2**63, 2**64])
def test_seed_out_of_range(validate, seed):
    result = validate(BASE, f"experiment.seed={seed}")
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert f"experiment.seed: " in line and "is out of range: expected a value ≥ 0 and ≤ 2147483647" in line
    assert "seeds are below 2^31" in line  # and why


def test_largest_seed_is_accepted(validate):
    assert validate(BASE, f"experiment.seed={SEED_MAX}").exit_code == 0


def test_seed_bound_is_what_the_training_streams_can_take():
    """The roll-out generators of train/inputs.py are seeded with stream_key(seed·1,000,003 + block,
    stream), unreduced on the CPU: the largest accepted seed works with several streams and a
    billion blocks; a seed of 2^32 (accepted before) overflows torch's seed."""
    from mstar_engine.data.stream import batches
    from mstar_engine.distributed.group import SINGLE
    from mstar_engine.families import REGISTRY
    from mstar_engine.kinds.exponential import ExponentialFamily
    from mstar_engine.process.build import build_process
    from mstar_engine.train.inputs import BlockInputs
    family = toy(REGISTRY["gaussian"], steps=4)
    x = toy_data(family, 64)
    family.matched_snr = None
    kind = ExponentialFamily.of(build_process(family, "independent", inputs="state", loss="kl",
                                              loss_weighting="none"))

    def block(seed):
        inputs = BlockInputs(kind, lambda start: batches(x, 8, 0, start), 8, 2, seed, torch.device("cpu"), SINGLE,
                             streams=4)
        return inputs(10**9, torch.zeros(5, dtype=torch.float64))

    assert len(block(SEED_MAX)) == 16
    with pytest.raises((RuntimeError, ValueError), match="[Oo]verflow"):
        block(2**32)


# ------------------------------------------------------------------------------------ custom schedules

def custom(values) -> str:
    return BASE + f'\n[process.schedule]\nname = "custom"\nvalues = {values}\n'


def test_custom_gaussian_value_outside_the_unit_interval(validate):
    result = validate(custom("[0.9, 0.5, 1.5, 0.1]"))  # values: line 13, elements at 11, 16, 21, 26
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert line.startswith("error: s.toml:13:21: process.schedule.values[2]: value 1.5 at index 2 (step t = 3) is "
                           "out of range for the gaussian family's schedule; every value (alpha_bar) must be in (0, 1)")


def test_custom_value_with_the_pseudo_step(validate):
    result = validate(custom("[0.999, 0.9, 0.5, 0.1, 0.0]"))  # 5 = steps + 1 values: index 0 is t = 0
    (line,) = errors(result)
    assert line.startswith("error: s.toml:13:33: process.schedule.values[4]: value 0 at index 4 (step t = 4)"), line
    assert "index i is step t = i" in line


def test_custom_values_follow_the_familys_rule(validate):
    beta = BASE.replace('"gaussian"', '"beta"').replace('"gaussian-mixture"', '"beta-mixture"')
    ok = validate(beta + '\n[process.schedule]\nname = "custom"\nvalues = [5000.0, 100.0, 2.0, 0.5]\n')
    assert ok.exit_code == 0, ok.output  # ν ≥ 0: values beyond 1 are right for the beta family
    bad = validate(beta + '\n[process.schedule]\nname = "custom"\nvalues = [5000.0, -1.0, 2.0, 0.5]\n')
    (line,) = errors(bad)
    assert "values[1]: value -1 at index 1 (step t = 2)" in line and "must be >= 0" in line


def test_custom_schedule_file_with_a_bad_value(validate, tmp_path):
    np.save(tmp_path / "s.npy", np.array([0.9, 0.5, 1.5, 0.1]))
    result = validate(BASE + '\n[process.schedule]\nname = "custom"\nfile = "s.npy"\n')
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert line.startswith("error: s.toml:13:1: process.schedule.file: 's.npy': alpha_bar must be in (0, 1)")
    assert "step 3 is 1.5" in line


# ------------------------------------------------------------------------------------ names and folders

def test_long_run_name(validate):
    long = validate(BASE.replace('name = "t"', f'name = "{"n" * 300}"'))
    assert long.exit_code == 2
    (line,) = errors(long)
    assert line.startswith("error: s.toml:2:1: experiment.name: this value has 300 characters; at most 100 are "
                           "allowed; the name is a folder name")
    assert validate(BASE.replace('name = "t"', f'name = "{"n" * 100}"')).exit_code == 0


def test_long_compare_name(validate):
    result = validate(BASE + f'\n[compare]\n{"v" * 101} = ["train.lr=1e-3"]\n')
    assert result.exit_code == 2
    (line,) = errors(result)
    assert line.startswith(f"error: s.toml:12:1: compare.{'v' * 101}: this name has 101 characters; at most 100")


def test_output_dir_that_is_a_file(validate, tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    plain = validate(BASE)  # output_dir is not written: located at experiment.name
    assert plain.exit_code == 0
    assert ("s.toml:2:1: not ready: experiment.output_dir: the run directory 'runs/t' cannot be created: 'runs' is "
            "a file, not a folder") in plain.output
    assert validate(BASE, ready=True).exit_code == 2
    run = invoke("run", "s.toml")
    assert run.exit_code == 2, run.output
    assert "error: s.toml:2:1: experiment.output_dir: the run directory 'runs/t' cannot be created" in run.output


def test_run_directory_that_is_a_file(validate, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "t").write_text("")
    result = validate(BASE.replace('name = "t"', 'name = "t"\noutput_dir = "out"'))
    assert "s.toml:2:1: not ready: experiment.name: the run directory 'out/t' cannot be created: 'out/t' is a file" \
        in result.output


# ------------------------------------------------------------------------------------ MMD bandwidth

@pytest.mark.parametrize("bandwidth", ["1e-300", "1e-7", "1e300"])
def test_mmd_bandwidth_out_of_range(validate, bandwidth):
    result = validate(BASE + f'\n[eval]\nmetrics = ["mmd"]\nmmd_bandwidth = {bandwidth}\n')
    assert result.exit_code == 2
    (line,) = errors(result)
    assert line.startswith("error: s.toml:13:1: eval.mmd_bandwidth: ")
    assert "expected a value ≥ 1e-06 and ≤ 1e+06" in line


@pytest.mark.parametrize("bandwidth", [1e-300, 1e-160, 1e300])
def test_mmd_metric_refuses_a_degenerate_bandwidth(bandwidth):
    from mstar_engine.metrics.distances import mmd2
    a, b = np.random.default_rng(0).normal(size=(2, 20, 2))
    with pytest.raises(ValueError, match="bandwidth .* is out of range"):
        mmd2(a, b, bandwidth=bandwidth)
    assert np.isfinite(mmd2(a, b, bandwidth=1e-6)) and np.isfinite(mmd2(a, b, bandwidth=1e6))


# ------------------------------------------------------------------------------------ integers and roll-outs

@pytest.mark.parametrize("override", ["train.batch_size=1000000000000", "network.mlp.hidden=2147483648",
                                      "data.dim=2147483648", "sample.num_samples=9223372036854775807"])
def test_integers_at_or_beyond_2_to_the_31_are_refused(validate, override):
    result = validate(BASE, override)
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert "is out of range: expected a value ≥ 1 and ≤ 2147483647; sizes and counts in a spec are below " \
           "2^31" in line


def test_more_steps_per_rollout_than_steps(validate):
    result = validate(BASE, "train.t_per_rollout=5")
    assert result.exit_code == 2
    (line,) = errors(result)
    assert line.startswith("error: override 'train.t_per_rollout=5': train.t_per_rollout: 5 steps drawn from one "
                           "roll-out exceed its process.steps = 4 steps")
    assert line.endswith("use at most 4")
    assert validate(BASE, "train.t_per_rollout=4").exit_code == 0


# ------------------------------------------------------------------------------- U-Net shapes
DIGITS = str(Path(__file__).resolve().parents[2] / "specs" / "digits.toml")


@pytest.mark.parametrize("overrides, where, message", [
    (["network.unet.head_channels=24"], "network.unet.head_channels",
     "attention over 64 channels does not split into heads of head_channels = 24"),
    (["data.image_size=10", "network.unet.channel_mult=[1, 2, 2]"], "network.unet.channel_mult",
     "the U-Net's 3 levels halve the resolution 2 times, so the 10×10 images would need a size that is a multiple "
     "of 4"),
])
def test_unet_shapes_the_network_would_refuse(overrides, where, message):
    """validate refuses what the U-Net's constructor raises on at the start of mstar run."""
    import attrs
    from mstar_engine.networks.unet import build_unet
    from mstar_engine.spec import load_spec
    result = invoke("validate", DIGITS, *[a for o in overrides for a in ("--set", o)])
    assert result.exit_code == 2 and f"{where}: {message}" in result.output
    spec = load_spec(DIGITS).spec  # the same settings given to the network itself fail too
    unet = attrs.asdict(spec.network.unet)
    for o in overrides:
        key, value = o.split("=")
        if key.startswith("network.unet."):
            unet[key.rsplit(".", 1)[1]] = eval(value)  # noqa: S307 - literal test values
    size = 10 if any("image_size" in o for o in overrides) else 8
    with pytest.raises(ValueError):
        build_unet(1, 1, size, unet)
