"""The loss curve and evaluation curve SVGs written from metrics.jsonl and eval.jsonl."""
from __future__ import annotations

import json
import re

from mstar_engine.app.plots import HEIGHT, PAD, WIDTH, eval_curve_svgs, loss_curve_svg


def _write(path, losses):
    path.write_text("".join(json.dumps({"step": 10 * (i + 1), "loss": v}) + "\n" for i, v in enumerate(losses)))


def test_points_span_the_plot_and_follow_the_loss(tmp_path):
    _write(tmp_path / "m.jsonl", [4.0, 3.0, 2.0, 1.0])
    svg = loss_curve_svg(tmp_path / "m.jsonl", tmp_path / "loss.svg").read_text()
    points = [tuple(map(float, p.split(","))) for p in re.search(r'points="([^"]+)"', svg).group(1).split()]
    assert len(points) == 4
    assert points[0] == (PAD, PAD) and points[-1] == (WIDTH - PAD, HEIGHT - PAD)   # highest loss at the top
    ys = [y for _, y in points]
    assert ys == sorted(ys) and abs((ys[1] - ys[0]) - (ys[2] - ys[1])) < 1e-6     # linear scale: even steps
    assert "log10" not in svg


def test_wide_ranges_use_a_log_scale_and_short_logs_write_nothing(tmp_path):
    _write(tmp_path / "m.jsonl", [100.0, 10.0, 1.0])
    svg = loss_curve_svg(tmp_path / "m.jsonl", tmp_path / "loss.svg").read_text()
    ys = [float(p.split(",")[1]) for p in re.search(r'points="([^"]+)"', svg).group(1).split()]
    assert "log10 loss" in svg and abs((ys[1] - ys[0]) - (ys[2] - ys[1])) < 1e-6   # even in log10
    _write(tmp_path / "one.jsonl", [1.0])
    assert loss_curve_svg(tmp_path / "one.jsonl", tmp_path / "x.svg") is None


def test_eval_curves_one_chart_per_metric_one_line_per_step_count(tmp_path):
    rows = [{"step": step, "metric": m, "steps": k, "value": v}
            for step, scale in ((10, 3.0), (20, 2.0), (30, 1.0)) for k in (8, 4)
            for m, v in (("mmd", scale * k / 8), ("knn-kl", scale - 2.5))]
    rows.append({"step": 30, "metric": "energy", "steps": 8, "value": 0.5})   # one point: no chart
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = eval_curve_svgs(tmp_path / "eval.jsonl", tmp_path)
    assert [p.name for p in written] == ["eval-mmd.svg", "eval-knn-kl.svg"]
    mmd = written[0].read_text()
    lines = [[tuple(map(float, p.split(","))) for p in m.split()] for m in re.findall(r'points="([^"]+)"', mmd)]
    assert len(lines) == 2 and all(len(points) == 3 for points in lines)
    assert ">8 steps</text>" in mmd and ">4 steps</text>" in mmd
    assert lines[0][0] == (PAD, PAD) and lines[1][-1] == (WIDTH - PAD, HEIGHT - PAD)   # 3.0 at the top, 0.5 at the bottom
    assert "log10" not in written[1].read_text()   # negative values: a linear axis
    assert eval_curve_svgs(tmp_path / "missing.jsonl", tmp_path) == []
