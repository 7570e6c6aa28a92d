"""Generate the checked-in reference documents, so they cannot drift from the code.

``python -m mstar_cli.docs`` (from the repository root) rewrites ``docs/cli.md`` (the ``--help``
of every command) and ``docs/spec-reference.toml`` (every spec key from the attrs schema);
``--check`` only reports stale files (exit 1). A test runs the check on the checkout's docs/.
"""
from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import click

from mstar_cli.main import cli

WIDTH = 100


def cli_markdown() -> str:
    """Every command's help text, in the order ``mstar --help`` lists them."""
    root = click.Context(cli, info_name="mstar", terminal_width=WIDTH, max_content_width=WIDTH,
                         **cli.context_settings)
    parts = ["# mstar commands", "",
             "Generated from the click commands by `python -m mstar_cli.docs`; do not edit by hand "
             f"(click {click_version()}).", "",
             _block(cli.get_help(root))]
    for name in cli.list_commands(root):
        command = cli.get_command(root, name)
        ctx = click.Context(command, info_name=name, parent=root, terminal_width=WIDTH, max_content_width=WIDTH)
        parts += [f"## mstar {name}", "", _block(command.get_help(ctx))]
    return "\n".join(parts)


def click_version() -> str:
    """The help layout is click's: the exact text is compared only under the version that wrote it."""
    return importlib.metadata.version("click")


def documents(folder: Path) -> dict[Path, str]:
    from mstar_engine.spec.reference import reference_toml
    return {folder / "cli.md": cli_markdown(), folder / "spec-reference.toml": reference_toml()}


def stale(folder: Path) -> list[Path]:
    """The documents in ``folder`` whose text differs from what the code generates."""
    return [path for path, text in documents(folder).items() if not path.is_file() or path.read_text() != text]


def _block(text: str) -> str:
    return f"```text\n{text.rstrip()}\n```\n"


@click.command()
@click.option("--check", is_flag=True, help="Only report stale documents (exit 1 when any is).")
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True,
              help="Where the documents are (the repository's docs/).")
def main(check: bool, folder: Path) -> None:
    """Rewrite docs/cli.md and docs/spec-reference.toml from the code."""
    if check:
        paths = stale(folder)
        for path in paths:
            click.echo(f"stale: {path} (run python -m mstar_cli.docs)", err=True)
        sys.exit(1 if paths else 0)
    folder.mkdir(exist_ok=True)
    for path, text in documents(folder).items():
        path.write_text(text)
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
