"""``mstar list``, ``mstar results`` and ``mstar runs``: what a spec can name, stored results
and run directories, read and tabulated; nothing is computed."""
from __future__ import annotations

import json

import click

from mstar_cli import listing
from mstar_cli.errors import Failure, handle_errors
from mstar_engine.app.report import FORMATS


@click.command(name="list")
@click.argument("what", type=click.Choice(list(listing.TABLES)))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def list_(what: str, as_json: bool) -> None:
    """What a spec can name: families, datasets, schedules or metrics; keys prints every spec key
    with its default as an annotated TOML file (docs/spec-reference.toml); weights, the Inception
    weights files found (format, sha256, the metrics each supports)."""
    headers, rows = listing.TABLES[what]()
    if as_json:
        click.echo(json.dumps([dict(zip(headers, row)) for row in rows], indent=2))
    elif what == "keys":
        from mstar_engine.spec.reference import reference_toml
        click.echo(reference_toml(), nl=False)
    else:
        from tabulate import tabulate
        click.echo(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="RUN_OR_FILE...")
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "json"]), default="github",
              show_default=True, help="Markdown table, LaTeX (booktabs), tab-separated, or the results as JSON.")
@click.option("--title", help="Table title (default: the models and their data).")
@click.option("--during-training", is_flag=True,
              help="The evaluations during training instead (eval.jsonl of runs with train.eval_every): one row "
                   "per run and optimiser step.")
@handle_errors
def results(paths: tuple[str, ...], fmt: str, title: str | None, during_training: bool) -> None:
    """One table of the stored results of several runs, computing nothing: each RUN's results.json
    (with its [compare] variants) or a FILE written by mstar eval --json."""
    from mstar_engine.app.report import ResultsError, curve_table, models_table, read_curves, read_results
    try:
        if during_training:
            curves = read_curves(list(paths), warn=lambda line: click.echo(line, err=True))
            if fmt == "json":
                click.echo(json.dumps([{"model": name, "evaluations": rows} for name, rows in curves], indent=2))
            else:
                names = ", ".join(name for name, _ in curves)
                click.echo(curve_table(curves, title or f"{names}: evaluations during training", fmt))
            return
        models = read_results(list(paths))
    except ResultsError as exc:
        raise Failure(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps([{"model": name, **{k: v for k, v in res.items() if k != "compare"}} for name, res in models], indent=2))
        return
    datasets = list(dict.fromkeys(res["data"] for _, res in models))
    default = f"{len(models)} model{'s' if len(models) > 1 else ''} on {', '.join(datasets)}"
    click.echo(models_table(models, title or default, fmt))


@click.command()
@click.argument("folder", default="runs", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the overview as JSON.")
@handle_errors
def runs(folder: str, as_json: bool) -> None:
    """The run directories in FOLDER (default: runs) and their [compare] variants: what each
    trains, how far it got, its distillation stages, its first results."""
    from pathlib import Path
    from mstar_engine.app.overview import ago, overview
    if not Path(folder).is_dir():
        raise Failure(f"{folder} is not a folder: give the experiment.output_dir of your specs (default: runs)")
    entries = overview(folder)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        click.echo(f"no run directories in {folder} (each holds spec.resolved.toml; mstar run SPEC writes one)")
        return
    from tabulate import tabulate
    rows = []
    for e in entries:
        if "family" not in e:
            rows.append((e["run"], "", "", "", "", e["status"], "", "", ""))
            continue
        total = e["steps"] if e["steps"] is not None else "?"
        results = "; ".join(f"{r['metric']} {r['value']:.4f} ({r['steps']} steps)" for r in e["results"])
        rows.append((e["run"], e["family"], e["data"], e["coupling"], f"{e['step']}/{total}", e["status"],
                     ", ".join(map(str, e["distilled"])) or "-", results or "-", ago(e["updated"])))
    click.echo(tabulate(rows, headers=["run", "family", "data", "coupling", "trained", "status", "distilled to",
                                       "results", "updated"], tablefmt="simple", disable_numparse=True))
