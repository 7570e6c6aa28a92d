"""Pictures of a run without a plotting dependency: the loss curve (from ``metrics.jsonl``) and
the evaluations during training (from ``eval.jsonl``) as SVG line charts, and denoising
trajectories as a PNG grid (torchvision's ``save_image``)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from mstar_engine.app.runs import save_grid
from mstar_engine.rundir.files import write_text
from mstar_engine.rundir.records import read_jsonl

WIDTH, HEIGHT, PAD = 640, 360, 48


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def loss_curve_svg(metrics: str | Path, out: str | Path) -> Path | None:
    """Write the training loss against the optimiser step (log-scale loss when it spans more than
    a decade) as an SVG line chart; None when there is nothing to plot. A torn last line of the log
    is left out; any other unreadable line is a :class:`~mstar_engine.rundir.records.RecordError`
    naming the file and line."""
    points = [(r["step"], r["loss"]) for r in read_jsonl(metrics) if math.isfinite(r.get("loss", math.nan))]
    if len(points) < 2:
        return None
    return _write(out, line_chart_svg([("loss", points)], "loss"))


def eval_curve_svgs(evaluations: str | Path, folder: str | Path) -> list[Path]:
    """One chart per metric of ``eval.jsonl`` (``train.eval_every``): its value against the
    optimiser step, one line per number of network evaluations; ``eval-<metric>.svg``. Lines are
    read as :func:`loss_curve_svg` reads them."""
    rows = read_jsonl(evaluations)
    written = []
    for metric in dict.fromkeys(r["metric"] for r in rows):
        series = {}
        for r in rows:
            if r["metric"] == metric and math.isfinite(r["value"]):
                series.setdefault(f"{r['steps']} steps", []).append((r["step"], r["value"]))
        if max((len(p) for p in series.values()), default=0) >= 2:
            written.append(_write(Path(folder) / f"eval-{metric}.svg", line_chart_svg(list(series.items()), metric)))
    return written


def line_chart_svg(series: list[tuple[str, list[tuple[float, float]]]], label: str) -> str:
    """SVG of one polyline per (name, points) over shared axes: log10 values when all are positive
    and span more than a decade; a legend when there are several lines."""
    values = [v for _, points in series for _, v in points]
    log = min(values) > 0 and max(values) / min(values) > 10
    steps = [s for _, points in series for s, _ in points]
    x0, x1 = min(steps), max(steps)
    ys = [math.log10(v) for v in values] if log else values
    y0, y1 = min(ys), max(ys)
    y1 = y1 if y1 > y0 else y0 + 1

    def px(s: float, v: float) -> tuple[float, float]:
        v = math.log10(v) if log else v
        return (PAD + (s - x0) / max(x1 - x0, 1) * (WIDTH - 2 * PAD),
                HEIGHT - PAD - (v - y0) / (y1 - y0) * (HEIGHT - 2 * PAD))

    lines = []
    for i, (name, points) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{a:.1f},{b:.1f}" for a, b in (px(s, v) for s, v in points))
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>\n')
        if len(series) > 1:
            lines.append(f'<text x="{WIDTH - PAD}" y="{PAD + 14 * i}" text-anchor="end" fill="{colour}">{name}</text>\n')
    axis = f"log10 {label}" if log else label
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
            f'font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n' + "".join(lines) +
            f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="black"/>\n'
            f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="black"/>\n'
            f'<text x="{WIDTH / 2}" y="{HEIGHT - 12}" text-anchor="middle">optimiser step ({x0}–{x1})</text>\n'
            f'<text x="14" y="{HEIGHT / 2}" transform="rotate(-90 14 {HEIGHT / 2})" text-anchor="middle">'
            f'{axis} ({y0:.3g} – {y1:.3g})</text>\n</svg>\n')


def _write(out: str | Path, svg: str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, svg)  # atomically, like every file of a run directory
    return out


def trajectory_grid(model, n: int, path: str | Path, data_range: str, *, columns: int = 8, seed: int = 0) -> Path:
    """``n`` samples, one per row, with the model's picture of them (x̂0, or a flow's ODE state) at
    ``columns`` evenly spaced network evaluations, first to last (left to right): how each image
    forms during sampling."""
    kind = model.process
    recorded: list[torch.Tensor] = []
    with torch.no_grad():
        device = next(model.denoiser.parameters()).device
        kind.sample_batch(lambda *inputs: model.denoiser(*inputs), n, model.steps or kind.family.steps,
                          model.sampling_rho(), torch.Generator(device=device).manual_seed(seed), device, "x0",
                          frames=lambda x: recorded.append(x.detach().clone()))
    last = len(recorded) - 1
    picked = sorted({int(round(i * last / max(columns - 1, 1))) for i in range(min(columns, last + 1))})
    ordered = [recorded[i].cpu() for i in picked]
    grid = torch.stack(ordered, dim=1).flatten(0, 1)  # row = one sample, columns = evaluations
    return save_grid(path, grid, data_range, nrow=len(ordered), limit=grid.shape[0])
