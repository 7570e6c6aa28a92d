"""A user's family, written outside the package and named by import path, works in every command
and passes the importable contract suite unchanged (README "Adding a family")."""
from __future__ import annotations

import importlib
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.families import get
from mstar_engine.schedules import build_schedule
from mstar_engine.testing import family_contract

MODULE = "mstar_test_plugin_family"
PLUGIN = f'''
from mstar_engine.families import Family
from mstar_engine.families.gaussian import Gaussian


class MyGaussian(Gaussian):
    """The Gaussian family under its own name, with its own default schedule."""
    name = "my-gaussian"
    summary = "a user's Gaussian family (test plug-in)"

    @classmethod
    def default_schedule(cls, coupling):
        return "ss-linear"


class NotAFamily:
    pass
'''
SPEC = '''
[experiment]
name = "plug"
output_dir = "{out}"

[process]
family = "{family}"
steps = 8

[data]
name = "gaussian-mixture"
num_examples = 500

[network]
mlp = {{ hidden = 32, blocks = 1 }}

[train]
batch_size = 64
steps = 4
log_every = 2
checkpoint_every = 4

[sample]
num_samples = 16

[eval]
metrics = []
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))  # for any process a command spawns
    importlib.invalidate_caches()
    return f"{MODULE}:MyGaussian"


def _spec(tmp_path, family: str):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(out=tmp_path / "runs", family=family))
    return str(path)


def test_validate_plan_run_and_sample_a_plugin_family(plugin, tmp_path):
    spec, runner = _spec(tmp_path, plugin), CliRunner()
    for args in (["validate", spec], ["plan", spec]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    assert "ss-linear" in result.output  # the plug-in's own default schedule
    result = runner.invoke(cli, ["run", spec])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "plug"
    assert plugin in (run_dir / "spec.resolved.toml").read_text()
    out = tmp_path / "samples.npz"
    result = runner.invoke(cli, ["sample", str(run_dir), "-n", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out) as archive:
        assert archive["samples"].shape == (8, 2) and np.isfinite(archive["samples"]).all()
    result = runner.invoke(cli, ["eval", str(run_dir), "--metrics", "mmd", "-n", "16", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["distill", str(run_dir), "--to", "4", "distill.steps_per_stage=2",
                                 "distill.batch_size=16"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("family, problem", [
    ("no_such_module_xyz:Fam", "cannot import module 'no_such_module_xyz'"),
    (f"{MODULE}:Missing", "has no attribute 'Missing'"),
    (f"{MODULE}:NotAFamily", "is not a subclass of mstar_engine.families.Family"),
])
def test_a_bad_import_path_is_a_clear_spec_error(plugin, tmp_path, family, problem):
    result = CliRunner().invoke(cli, ["validate", _spec(tmp_path, family)])
    assert result.exit_code == 2, result.output
    assert problem in result.output and "process.family" in result.output
    assert "Traceback" not in result.output


def test_the_contract_suite_runs_on_the_plugin(plugin):
    cls = get(plugin)
    family = cls((2,), **build_schedule("ss-linear", 8, family=cls))
    family_contract.check_all(family, data=lambda n, g: torch.randn((n, 2), generator=g, dtype=torch.float64),
                              bad=torch.full((1, 2), float("nan"), dtype=torch.float64))


def test_list_families_shows_installed_plugins(plugin, tmp_path, monkeypatch):
    from importlib import metadata
    import mstar_engine.families as families

    point = metadata.EntryPoint("my-gaussian", plugin, families.ENTRY_POINTS)
    monkeypatch.setattr(families, "entry_points", lambda group: [point] if group == families.ENTRY_POINTS else [])
    result = CliRunner().invoke(cli, ["list", "families"])
    assert result.exit_code == 0, result.output
    assert "my-gaussian" in result.output and "a user's Gaussian family" in result.output
    assert get("my-gaussian").__name__ == "MyGaussian"
    spec = _spec(tmp_path, "my-gaussian")  # an entry point's name works in a spec
    assert CliRunner().invoke(cli, ["validate", spec]).exit_code == 0
