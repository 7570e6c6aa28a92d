"""Results tables: one run's metrics (:func:`results_table`), several models side by side
(:func:`models_table`, used for ``[compare]`` specs and ``mstar results``), in the formats people
paste elsewhere: GitHub Markdown, LaTeX (booktabs) and TSV.

A results dict is what ``results.json`` holds: ``experiment``, ``family``, ``data``, ``coupling``,
``inputs`` and ``results``, a list of rows ``{metric, steps, value, std, noise_floor, samples}``
(``model`` = teacher/student in a distilled run), and ``compare`` (variant name → results dict)
for a spec with variants.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from tabulate import tabulate

from mstar_engine.metrics.catalog import METRICS
from mstar_engine.rundir.records import RecordError, read_json, read_jsonl

FORMATS = ("github", "latex", "tsv")


class ResultsError(ValueError):
    """A results file that is missing or not one mstar wrote."""


def results_table(results: dict, fmt: str = "github") -> str:
    """One row per metric and step count, beside its noise floor (↑ marks higher-is-better metrics)."""
    if not results["results"]:
        return f"{results['experiment']}: no metrics computed (set eval.metrics, see mstar list metrics)"
    distilled = any("model" in r for r in results["results"])
    rows = [((r.get("model", "teacher"),) if distilled else ()) +
            (_metric(r["metric"]), r["steps"], _value(r), f"{r['noise_floor']:.4f}", r["samples"])
            for r in results["results"]]
    headers = (["model"] if distilled else []) + ["metric", "steps", "value", "noise floor", "samples"]
    title = f"{results['experiment']}: {model_words(results)} on {results['data']}"
    return _titled(title, _tabulate(rows, headers, fmt), fmt)


def model_words(results: dict) -> str:
    """The model of a results or bench record in a few words: "beta (ddpm coupling)", or the kind's
    own description (flow matching, the energy score)."""
    if results.get("kind", "exponential-family") != "exponential-family":
        return results["coupling"]
    return f"{results['family']} ({results['coupling']} coupling)"


def comparison_table(results: dict, fmt: str = "github") -> str:
    """The spec's model and each of its ``[compare]`` variants."""
    models = [(f"{results['experiment']} (the spec)", results), *results.get("compare", {}).items()]
    return models_table(models, f"{results['experiment']} on {results['data']}", fmt)


def models_table(models: list[tuple[str, dict]], title: str, fmt: str = "github") -> str:
    """One row per model, one column per (metric, step count; the counts ascending), then one
    noise-floor row per dataset and sample count (the first model's floor where several have one),
    labelled with that count (FID and its kin depend on it). A distilled model's student gets a row
    of its own under its teacher (``name → student``), in the same columns, so the table stays
    narrow."""
    entries = list(_roles(models))
    seen = list(dict.fromkeys((r["metric"], r["steps"]) for _, _, rows in entries for r in rows))
    metrics = list(dict.fromkeys(m for m, _ in seen))
    columns = sorted(seen, key=lambda c: (metrics.index(c[0]), c[1]))  # each metric's step counts ascending
    datasets = list(dict.fromkeys(res["data"] for _, res in models))
    several = len(datasets) > 1
    table, floors = [], {}  # (data, samples) -> column -> floor: floors depend on both
    for name, res, rows in entries:
        values = {(r["metric"], r["steps"]): r for r in rows}
        for key, r in values.items():
            floors.setdefault((res["data"], r["samples"]), {}).setdefault(key, r["noise_floor"])
        table.append([name, *([res["data"]] if several else []), res["family"], res["coupling"], res.get("inputs", ""),
                      *(_value(values[c]) if c in values else "-" for c in columns)])
    for (data, n), floor in floors.items():  # the sample count: every value beside the floor is at it
        label = ", ".join([*([data] if several else []), f"{n} samples"])
        table.append([f"noise floor ({label})", *([data] if several else []), "", "", "",
                      *(f"{floor[c]:.4f}" if c in floor else "-" for c in columns)])
    headers = ["model", *(["data"] if several else []), "family", "coupling", "inputs",
               *(f"{_metric(m)} ({s} steps)" for m, s in columns)]
    every = [r for _, res in models for r in res["results"]]
    return _titled(title + _direction(every), _tabulate(table, headers, fmt), fmt)


def _roles(models: list[tuple[str, dict]]):
    """(row name, results, its rows): each model's teacher rows, then its student's, if any."""
    for name, res in models:
        teacher = [r for r in res["results"] if r.get("model", "teacher") != "student"]
        student = [r for r in res["results"] if r.get("model") == "student"]
        yield name, res, teacher
        if student:
            yield f"{name} → student", res, student


def curve_table(curves: list[tuple[str, list[dict]]], title: str, fmt: str = "github") -> str:
    """Evaluations during training (``eval.jsonl`` rows) of one or more runs: one row per run and
    optimiser step, one column per metric and step count."""
    columns = list(dict.fromkeys((r["metric"], r["steps"]) for _, rows in curves for r in rows))
    table = []
    for name, rows in curves:
        by_step: dict[int, dict] = {}
        for r in rows:
            by_step.setdefault(r["step"], {})[(r["metric"], r["steps"])] = r
        for step, values in sorted(by_step.items()):
            table.append([*([name] if len(curves) > 1 else []), step,
                          *(_value(values[c]) if c in values else "-" for c in columns)])
    headers = [*(["model"] if len(curves) > 1 else []), "optimiser step",
               *(f"{_metric(m)} ({k} steps)" for m, k in columns)]
    every = [r for _, rows in curves for r in rows]
    return _titled(title + _direction(every), _tabulate(table, headers, fmt), fmt)


def read_curves(paths: list[str | Path], warn: Callable[[str], None] | None = None) -> list[tuple[str, list[dict]]]:
    """(name, rows of ``eval.jsonl``) of each run directory. A torn last line (a run killed while
    appending it) is dropped with a warning through ``warn``; any other unreadable line is a
    :class:`ResultsError` naming the file and line."""
    out = []
    for path in map(Path, paths):
        file = path / "eval.jsonl"
        if not file.is_file():
            raise ResultsError(f"{path} has no eval.jsonl: runs write one when train.eval_every is set (the "
                               "evaluations during training)")
        try:
            rows = read_jsonl(file, warn)
        except RecordError as exc:
            raise ResultsError(str(exc)) from None
        out.append((path.name if len(paths) == len({Path(p).name for p in paths}) else str(path), rows))
    return out


def read_results(paths: list[str | Path]) -> list[tuple[str, dict]]:
    """(name, results) of each run directory (its ``results.json``) or results file (``mstar eval
    --json`` output), followed by its ``[compare]`` variants as ``name/variant``. Names that occur
    twice are replaced by the path they came from."""
    loaded = [(Path(p), _read(Path(p))) for p in paths]
    names = [res["experiment"] for _, res in loaded]
    models = []
    for (path, res), name in zip(loaded, names):
        name = str(path) if names.count(name) > 1 else name
        models.append((name, res))
        models += [(f"{name}/{variant}", sub) for variant, sub in res.get("compare", {}).items()]
    return models


def _read(path: Path) -> dict:
    if not path.exists():
        raise ResultsError(f"{path} does not exist: give run directories (each with a results.json) or files "
                           "written by mstar eval RUN --json > FILE.json")
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise ResultsError(f"{path} has no results.json: a run writes it when it finishes (mstar run SPEC continues "
                           "an unfinished one); for other settings, mstar eval RUN --json > FILE.json writes a file "
                           "to give here")
    try:
        results = read_json(file)
    except RecordError as exc:
        raise ResultsError(f"cannot read {file.name} as JSON: {exc}; give a run directory or a file written by "
                           "mstar eval --json") from None
    required = {"experiment", "family", "data", "coupling", "results"}
    if not isinstance(results, dict) or not required <= results.keys() or not isinstance(results["results"], list):
        raise ResultsError(f"{file} is not an mstar results file (expected the keys {', '.join(sorted(required))}); "
                           "give a run directory or a file written by mstar eval --json")
    return results


def _value(row: dict) -> str:
    std = row.get("std", 0.0)
    return f"{row['value']:.4f}" + (f" ± {std:.4f}" if std else "")


def _metric(name: str) -> str:
    info = METRICS.get(name)
    return f"{name} ↑" if info is not None and info.higher_is_better else name


def _direction(rows: list[dict]) -> str:
    higher = any(_metric(r["metric"]) != r["metric"] for r in rows)
    return ": ↑ higher is better, otherwise lower" if higher else ": lower is better"


def _tabulate(rows: list, headers: list, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format '{fmt}': expected one of {', '.join(FORMATS)}")
    if fmt == "tsv":  # unpadded, for spreadsheets and scripts
        out = io.StringIO()
        csv.writer(out, delimiter="\t", lineterminator="\n").writerows([headers, *rows])
        return out.getvalue().rstrip("\n")
    text = tabulate(rows, headers=headers, tablefmt="latex_booktabs" if fmt == "latex" else fmt, disable_numparse=True)
    if fmt == "latex":  # tabulate escapes LaTeX's special characters but leaves these to the font
        text = text.replace("±", r"$\pm$").replace("↑", r"$\uparrow$")
    return text


def _titled(title: str, table: str, fmt: str) -> str:
    """The title as a line above the table; a LaTeX comment in LaTeX; none in TSV (a data file)."""
    return {"github": f"{title}\n{table}", "latex": f"% {title}\n{table}", "tsv": table}[fmt]
