"""Results tables (mstar_engine.app.report) and ``mstar results``: stored results of several runs side
by side, in Markdown, LaTeX and TSV."""
from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.app.plots import eval_curve_svgs, loss_curve_svg
from mstar_engine.app.report import ResultsError, models_table, read_curves, read_results, results_table
from mstar_engine.rundir.records import RecordError


def res(name, data, rows, family="beta", coupling="ddpm", inputs="tail+state", **extra):
    return {"experiment": name, "family": family, "data": data, "coupling": coupling, "inputs": inputs,
            "results": [{"metric": m, "steps": s, "value": v, "std": sd, "noise_floor": f, "samples": n}
                        for m, s, v, sd, f, n in rows], **extra}


def markdown(text: str) -> tuple[str, list[str], list[list[str]]]:
    title, header, _, *rows = text.splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in (header, *rows)]
    return title, cells[0], cells[1:]


def test_models_on_two_datasets_get_a_data_column_and_a_floor_row_each():
    a = res("a", "cifar10", [("fid", 8, 12.3456, 0.0, 2.5, 1000), ("is", 8, 7.5, 0.25, 9.0, 1000)])
    b = res("b", "mnist", [("fid", 8, 4.0, 0.0, 1.0, 1000)], family="gaussian", inputs="state")
    title, header, rows = markdown(models_table([("a", a), ("b", b)], "Table 1"))
    assert title == "Table 1: ↑ higher is better, otherwise lower"
    assert header == ["model", "data", "family", "coupling", "inputs", "fid (8 steps)", "is ↑ (8 steps)"]
    assert rows == [["a", "cifar10", "beta", "ddpm", "tail+state", "12.3456", "7.5000 ± 0.2500"],
                    ["b", "mnist", "gaussian", "ddpm", "state", "4.0000", "-"],
                    ["noise floor (cifar10, 1000 samples)", "cifar10", "", "", "", "2.5000", "9.0000"],
                    ["noise floor (mnist, 1000 samples)", "mnist", "", "", "", "1.0000", "-"]]


def test_floors_of_different_sample_counts_are_not_merged():
    a = res("a", "toy", [("mmd", 4, 0.5, 0.0, 0.01, 2000)])
    b = res("b", "toy", [("mmd", 4, 0.25, 0.0, 0.04, 200)])
    title, header, rows = markdown(models_table([("a", a), ("b", b)], "t"))
    assert title == "t: lower is better" and "data" not in header
    assert rows[2:] == [["noise floor (2000 samples)", "", "", "", "0.0100"],
                        ["noise floor (200 samples)", "", "", "", "0.0400"]]


def test_a_distilled_model_gets_a_student_row_in_the_same_columns():
    """Students do not widen the table: one column per (metric, steps), the student on its own row."""
    a = res("a", "toy", [("energy", 64, 0.01, 0.0, 0.002, 500), ("energy", 8, 0.05, 0.0, 0.002, 500),
                         ("energy", 8, 0.02, 0.0, 0.002, 500), ("energy", 1, 0.03, 0.0, 0.002, 500)])
    for row, who in zip(a["results"], ["teacher", "teacher", "student", "student"]):
        row["model"] = who
    b = res("b", "toy", [("energy", 8, 0.04, 0.0, 0.002, 500)], family="gaussian")
    title, header, rows = markdown(models_table([("a", a), ("b", b)], "t"))
    assert header == ["model", "family", "coupling", "inputs", "energy (1 steps)", "energy (8 steps)",
                      "energy (64 steps)"]
    assert rows == [["a", "beta", "ddpm", "tail+state", "-", "0.0500", "0.0100"],
                    ["a → student", "beta", "ddpm", "tail+state", "0.0300", "0.0200", "-"],
                    ["b", "gaussian", "ddpm", "tail+state", "-", "0.0400", "-"],
                    ["noise floor (500 samples)", "", "", "", "0.0020", "0.0020", "0.0020"]]


def test_latex_is_booktabs_with_escapes_and_math_symbols():
    a = res("my_run", "toy", [("auprc", 2, 0.9, 0.01, 0.5, 100)])
    text = models_table([("my_run", a)], "50% of 10_000", "latex")
    lines = text.splitlines()
    assert lines[0] == "% 50% of 10_000: ↑ higher is better, otherwise lower"   # a comment: not typeset
    assert lines[1].startswith(r"\begin{tabular}") and r"\toprule" in text and r"\bottomrule" in text
    assert r"my\_run" in text and r"auprc $\uparrow$ (2 steps)" in text and r"0.9000 $\pm$ 0.0100" in text
    assert "±" not in text.split("\n", 1)[1] and "↑" not in text.split("\n", 1)[1]


def test_tsv_is_unpadded_and_parses_back():
    a = res("a", "toy", [("energy", 4, 0.125, 0.0, 0.001, 50), ("energy", 8, 0.0625, 0.0, 0.001, 50)])
    parsed = list(csv.reader(io.StringIO(models_table([("a", a)], "ignored", "tsv")), delimiter="\t"))
    assert parsed == [["model", "family", "coupling", "inputs", "energy (4 steps)", "energy (8 steps)"],
                      ["a", "beta", "ddpm", "tail+state", "0.1250", "0.0625"],
                      ["noise floor (50 samples)", "", "", "", "0.0010", "0.0010"]]


def test_one_run_table_marks_higher_is_better_metrics():
    a = res("a", "digits", [("fid", 4, 30.0, 0.0, 3.0, 500), ("is", 4, 2.0, 0.0, 2.5, 500)])
    title, header, rows = markdown(results_table(a))
    assert title == "a: beta (ddpm coupling) on digits"
    assert [r[0] for r in rows] == ["fid", "is ↑"] and header[0] == "metric"


def write(path, results):
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(results))
    return path


def test_read_results_from_directories_and_files_with_variants(tmp_path):
    main = res("q", "toy", [("mmd", 4, 0.5, 0.0, 0.01, 100)],
               compare={"star": res("star", "toy", [("mmd", 4, 0.75, 0.0, 0.01, 100)])})
    write(tmp_path / "one" / "q", main)
    other = res("q", "toy", [("mmd", 4, 0.25, 0.0, 0.01, 100)])
    (tmp_path / "eval.json").write_text(json.dumps(other))
    models = read_results([tmp_path / "one" / "q", tmp_path / "eval.json"])
    names = [name for name, _ in models]   # the same experiment twice: named by path instead
    assert names == [str(tmp_path / "one" / "q"), f"{tmp_path / 'one' / 'q'}/star", str(tmp_path / "eval.json")]
    assert [m["results"][0]["value"] for _, m in models] == [0.5, 0.75, 0.25]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist: give run directories"),
    (lambda p: (p / "run").mkdir() or p / "run", "has no results.json: a run writes it when it finishes"),
    (lambda p: (p / "x.json").write_text("{oops") and p / "x.json", "cannot read .* as JSON"),
    (lambda p: (p / "y.json").write_text('{"a": 1}') and p / "y.json", "is not an mstar results file"),
])
def test_unreadable_results_are_clear_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ResultsError, match=message):
        read_results([path])
    result = CliRunner().invoke(cli, ["results", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: ")


def test_mstar_results_command_formats(tmp_path):
    write(tmp_path / "a", res("a", "toy", [("knn-kl", 16, 0.5, 0.0, 0.01, 100)]))
    write(tmp_path / "b", res("b", "toy", [("knn-kl", 16, 0.25, 0.0, 0.01, 100)], family="gaussian"))
    runner = CliRunner()
    out = runner.invoke(cli, ["results", str(tmp_path / "a"), str(tmp_path / "b")])
    assert out.exit_code == 0
    title, header, rows = markdown(out.output)
    assert title == "2 models on toy: lower is better"
    assert [r[0] for r in rows] == ["a", "b", "noise floor (100 samples)"] and rows[1][1] == "gaussian"
    out = runner.invoke(cli, ["results", str(tmp_path / "a"), "--format", "json"])
    assert json.loads(out.output)[0]["model"] == "a"
    out = runner.invoke(cli, ["results", str(tmp_path / "a"), "--format", "latex", "--title", "Table 2"])
    assert out.output.startswith("% Table 2: lower is better\n\\begin{tabular}")
    assert runner.invoke(cli, ["results"]).exit_code == 2


def test_a_malformed_results_file_is_named_with_its_line_and_column(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text('{"experiment": "q",\n "results": [oops]}\n')
    with pytest.raises(ResultsError, match=rf"{tmp_path / 'run' / 'results.json'}:2:14: not valid JSON"):
        read_results([tmp_path / "run"])
    result = CliRunner().invoke(cli, ["results", str(tmp_path / "run")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"results.json:2:14: not valid JSON" in result.output


def curve(step, value, metric="mmd", steps=4):
    return json.dumps({"step": step, "metric": metric, "steps": steps, "value": value, "std": 0.0,
                       "noise_floor": 0.01, "samples": 100}) + "\n"


def test_a_torn_last_line_of_eval_jsonl_is_dropped_and_a_bad_line_named(tmp_path):
    """A run killed while appending to eval.jsonl leaves a torn last line: left out, with a
    warning; a bad line before the last is an error naming the file and line."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.jsonl").write_text(curve(10, 0.5) + curve(20, 0.25) + '{"step": 30, "metric": "mm')
    warnings = []
    (name, rows), = read_curves([run], warn=warnings.append)
    assert name == "run" and [r["step"] for r in rows] == [10, 20]
    assert len(warnings) == 1 and f"{run / 'eval.jsonl'}:3: dropped a torn last line" in warnings[0]
    result = CliRunner().invoke(cli, ["results", str(run), "--during-training"])
    assert result.exit_code == 0, result.output
    assert "eval.jsonl:3: dropped a torn last line" in result.output and "Traceback" not in result.output
    (run / "eval.jsonl").write_text(curve(10, 0.5) + "{oops\n" + curve(30, 0.125))
    with pytest.raises(ResultsError, match=rf"{run / 'eval.jsonl'}:2: not a JSON record"):
        read_curves([run])
    result = CliRunner().invoke(cli, ["results", str(run), "--during-training"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: ") and "eval.jsonl:2: not a JSON record" in result.output


def test_charts_leave_out_a_torn_last_line_and_name_a_bad_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 0.5}\n{"step": 30, "lo')
    assert loss_curve_svg(metrics, tmp_path / "loss.svg") == tmp_path / "loss.svg"
    assert "<svg" in (tmp_path / "loss.svg").read_text()
    evaluations = tmp_path / "eval.jsonl"
    evaluations.write_text(curve(10, 0.5) + curve(20, 0.25) + curve(30, 0.2)[:-9])
    assert eval_curve_svgs(evaluations, tmp_path) == [tmp_path / "eval-mmd.svg"]
    metrics.write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "lo\n{"step": 30, "loss": 0.25}\n')
    with pytest.raises(RecordError, match=rf"{metrics}:2: not a JSON record"):
        loss_curve_svg(metrics, tmp_path / "loss.svg")
    evaluations.write_text("[1, 2]\n" + curve(20, 0.25))
    with pytest.raises(RecordError, match=rf"{evaluations}:1: not a JSON record"):
        eval_curve_svgs(evaluations, tmp_path)
