"""The loss curve SVG written from metrics.jsonl."""
from __future__ import annotations

import json
import re

from mstar_engine.plots import HEIGHT, PAD, WIDTH, loss_curve_svg


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
