"""Messages that pointed to the wrong place or said the wrong thing (issue #12, defect 16): an
unknown table named only by a dotted header, the hint for a missing process.family (it always said
"beta"), and the data errors of ``data.name = "file"`` (they said "dataset 'file'")."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.data.dataset import check_for_family
from mstar_engine.data.load import DataError, load_dataset
from mstar_engine.families import REGISTRY, DomainError
from mstar_engine.spec import SpecError, load_spec_text
from mstar_engine.spec.schema import Data, family_names
from tests.families.fixtures import toy

BASE = """\
[experiment]
name = "t"

[process]
family = "dirichlet"
steps = 64

[data]
name = "dirichlet-mixture"
"""


def errors_of(text: str, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.toml", overrides)
    return [str(i) for i in info.value.issues]


# ------------------------------------------------------------------------------------ locations

def test_unknown_table_of_a_dotted_header_is_located_at_the_header():
    text = BASE + "\n[a.b]\nx = 1\n\n  [network . mlpp.q]\ny = 2\n"
    assert errors_of(text) == [
        "s.toml:11:2: a: unknown key 'a' in the top level (expected tables such as [experiment]); known keys: "
        "experiment, process, data, network, train, sample, distill, eval, devices, compare",
        "s.toml:14:14: network.mlpp: unknown key 'mlpp' in [network]; did you mean 'mlp'?",
    ]


def test_a_table_defined_earlier_keeps_its_own_location():
    text = BASE + "\n[train]\nlr = 1e-3\n\n[train.foo]\ny = 2\n"
    (line,) = errors_of(text)
    assert line.startswith("s.toml:14:1: train.foo: unknown key 'foo' in [train]")


# ------------------------------------------------------------------------------------ hints

NO_FAMILY = '[experiment]\nname = "t"\n\n[process]\nsteps = 64\n\n[data]\nname = "{data}"\n{extra}'


@pytest.mark.parametrize("data, extra, family, others", [
    ("beta-mixture", "", "beta", "gaussian also fits"),
    ("sphere-mixture", "", "vmf", "gaussian also fits"),
    ("token-mixture", "", "categorical", None),
    ("gaussian-mixture", "", "gaussian", None),
    ("cifar10", 'root = "data"\nrange = "unit"\n', "beta", "gaussian also fits"),
])
def test_missing_family_suggests_the_family_of_the_data(data, extra, family, others):
    (line,) = errors_of(NO_FAMILY.format(data=data, extra=extra))
    assert f'add family = "{family}" under [process] (dataset \'{data}\' gives ' in line, line
    assert (others in line) if others else "also fit" not in line


def test_missing_family_without_known_data_lists_every_family():
    for data in ("file", "nope"):
        text = NO_FAMILY.format(data=data, extra='root = "x.npy"\n' if data == "file" else "")
        line = next(e for e in errors_of(text) if "process.family" in e)
        assert line.endswith('add family = "..." under [process] (one of ' + ", ".join(family_names()) + ")"), line


def test_missing_data_name_suggests_a_dataset_of_the_family():
    (line,) = errors_of('[experiment]\nname = "t"\n\n[process]\nfamily = "wishart"\n\n[data]\n')
    assert 'add name = "wishart-mixture" under [data] (built-in symmetric positive-definite matrices for the ' \
           'wishart family; mstar list datasets)' in line


# ------------------------------------------------------------------------------------ your own file

def test_domain_error_of_a_file_names_the_file(tmp_path):
    path = tmp_path / "off.npy"
    np.save(path, np.random.default_rng(0).uniform(0.1, 1.0, size=(50, 3)))
    loaded = load_dataset(Data(name="file", root=str(path)), seed=0)
    with pytest.raises(DomainError) as info:
        check_for_family(loaded, toy(REGISTRY["dirichlet"]))
    message = str(info.value)
    assert message.startswith(f"the file {str(path)!r} (data.root) is outside the dirichlet family's domain")
    assert "dataset 'file'" not in message


def test_nan_in_a_file_names_the_file(tmp_path):
    x = np.ones((20, 2))
    x[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(DataError) as info:
        load_dataset(Data(name="file", root=str(tmp_path / "nan.npy")), seed=0)
    assert str(info.value).startswith(f"the file {str(tmp_path / 'nan.npy')!r} (data.root): 1 of 20 rows contain NaN")


def test_domain_error_of_a_file_through_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "off.npy", np.random.default_rng(0).uniform(0.1, 1.0, size=(200, 3)))
    (tmp_path / "f.toml").write_text('[experiment]\nname = "f"\n\n[process]\nfamily = "dirichlet"\nsteps = 8\n\n'
                                     '[data]\nname = "file"\nroot = "off.npy"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", "f.toml", "train.steps=2", "network.mlp.hidden=8"])
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: the file 'off.npy' (data.root) is outside the dirichlet family's domain"), line
