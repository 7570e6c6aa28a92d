"""The generated reference documents (docs/cli.md, docs/spec-reference.toml) match the code and
say what the schema says."""
from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import attrs
import click
from click.testing import CliRunner

from mstar_cli import docs
from mstar_engine.spec import load_spec, load_spec_text
from mstar_engine.spec.convert import strip_optional
from mstar_engine.spec.schema import Distill, Spec

DOCS = Path(__file__).resolve().parents[2] / "docs"   # the checkout's, wherever mstar is installed
REQUIRED_ONLY = """
[experiment]
name = "reference"
[process]
family = "gaussian"
[data]
name = "gaussian-mixture"
"""


def test_checked_in_documents_are_current():
    stale = docs.stale(DOCS)
    written_with = re.search(r"\(click (\S+)\)\.", (DOCS / "cli.md").read_text()).group(1)
    if written_with != docs.click_version():  # another click lays help out differently: content is checked below
        stale = [path for path in stale if path.name != "cli.md"]
    assert stale == [], "regenerate them: python -m mstar_cli.docs"


def test_reference_values_are_the_schema_defaults():
    written = load_spec(DOCS / "spec-reference.toml", semantic=False).spec
    assert written == load_spec_text(REQUIRED_ONLY, semantic=False).spec


def test_reference_commented_distill_keys_are_its_defaults():
    lines, inside = [], False
    for line in (DOCS / "spec-reference.toml").read_text().splitlines():
        if line.startswith("# ["):
            inside = line == "# [distill]"
        if inside and re.match(r"# (\[distill\]|\w+ = )", line) and not line.endswith("= ..."):
            line = line[2:]
        lines.append(line)
    spec = load_spec_text("\n".join(lines), semantic=False).spec
    assert spec.distill == Distill(to=8)


def _leaf_paths(cls: type, path: tuple = ()) -> set[tuple]:
    out = set()
    for field in attrs.fields(cls):
        tp = strip_optional(typing.get_type_hints(cls)[field.name])
        if attrs.has(tp):
            out |= _leaf_paths(tp, path + (field.name,))
        elif typing.get_origin(tp) is not dict:
            out.add(path + (field.name,))
    return out


def test_reference_names_every_key_of_the_schema_in_its_table():
    found, table = set(), ()
    for line in (DOCS / "spec-reference.toml").read_text().splitlines():
        header = re.fullmatch(r"(?:# )?\[([\w.]+)\]", line)
        if header:
            table = tuple(header.group(1).split("."))
        key = re.match(r"(?:# )?(\w+) = ", line)
        if key and table != ("compare",):
            found.add(table + (key.group(1),))
    assert found == _leaf_paths(Spec)


def test_cli_document_has_every_command_option_and_help_text():
    text = (DOCS / "cli.md").read_text()
    for name, command in docs.cli.commands.items():
        section = text.split(f"## mstar {name}\n")[1].split("\n## ")[0]
        flat = " ".join(section.split())
        assert " ".join(command.help.split("\n\n")[0].split()) in flat, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert all(opt in section for opt in param.opts), (name, param.opts)
            if getattr(param, "help", None):
                assert " ".join(param.help.split()) in flat, (name, param.name)


def test_check_reports_stale_documents_and_writing_fixes_them(tmp_path):
    runner = CliRunner()
    where = ["--folder", str(tmp_path / "docs")]
    result = runner.invoke(docs.main, ["--check", *where])
    assert result.exit_code == 1
    assert "stale:" in result.output and "spec-reference.toml" in result.output
    assert runner.invoke(docs.main, where).exit_code == 0
    assert runner.invoke(docs.main, ["--check", *where]).exit_code == 0
    (tmp_path / "docs" / "cli.md").write_text("edited by hand\n")
    result = runner.invoke(docs.main, ["--check", *where])
    assert result.exit_code == 1 and "cli.md" in result.output and "spec-reference" not in result.output


def test_list_keys_prints_the_reference_and_json_rows():
    from mstar_cli.main import cli
    from mstar_engine.spec.reference import reference_toml
    runner = CliRunner()
    result = runner.invoke(cli, ["list", "keys"])
    assert result.exit_code == 0 and result.output == reference_toml()
    rows = {r["key"]: r for r in json.loads(runner.invoke(cli, ["list", "keys", "--json"]).output)}
    assert set(rows) == {".".join(p) for p in _leaf_paths(Spec)}
    assert rows["train.lr"]["default"] == 2e-4 and rows["train.betas"]["default"] == [0.9, 0.999]
    assert rows["process.family"]["default"] == "required" and rows["sample.steps"]["default"] is None
    assert '"gaussian"' in rows["process.family"]["accepts"]


def test_the_readme_layout_map_names_every_package():
    root = DOCS.parent
    text = (root / "README.md").read_text()
    packages = [p.parent for pkg in ("mstar_cli", "mstar_engine") for p in (root / pkg).glob("*/__init__.py")]
    assert packages and all(f"  {p.name}/ " in text for p in packages)
    assert docs.layout_map(root) in text
