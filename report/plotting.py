"""Scaling figures from run directories (`report.runs` reads them): `plot_scaling` draws
accuracy against generated tokens, FLOPs and samples per problem (x = the mean per-problem
cost of each run), with 95% CI bands; `plot_k_curves` draws the accuracy-vs-k curves of
parallel strategies (maj@k, pass@k, best_of@k, weighted@k) from the sample pools stored in
each run (metrics.json "curves"; a run whose pool is not independent samples, a search,
has none); `make_scaling_plot` writes both and their numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ttscale.pools import sample_curves
from ttscale.report.runs import (
    X_AXES,
    Point,
    RunData,
    find_run_dirs,
    k_curve_runs,
    load_run,
    scaling_points,
)

CURVE_STYLES = {"maj": "-", "weighted": "-.", "best_of": "--", "pass": ":"}


# --------------------------------------------------------------------------- drawing
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scaling(lines: dict[str, list[Point]], title: str | None = None):
    """Figure with accuracy against tokens, FLOPs and samples; one line (+ CI band) per label.

    Each Line2D is labelled with its line's label and carries the plotted points as
    its data; the CI band is the PolyCollection drawn just before it.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(X_AXES), figsize=(5.2 * len(X_AXES), 4.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, xlabel, _) in zip(axes[0], X_AXES):
        drawn = 0
        for j, (label, pts) in enumerate(lines.items()):
            pts = [p for p in pts if p.x[key] is not None and p.x[key] > 0 and not math.isnan(p.accuracy)]
            if not pts:
                continue
            pts = sorted(pts, key=lambda p: p.x[key])
            xs = np.array([p.x[key] for p in pts], dtype=float)
            ys = np.array([p.accuracy for p in pts]) * 100
            lo = np.array([p.ci[0] for p in pts]) * 100
            hi = np.array([p.ci[1] for p in pts]) * 100
            color = colors[j % len(colors)]
            ax.fill_between(xs, lo, hi, color=color, alpha=0.18, linewidth=0)
            ax.plot(xs, ys, marker="o", color=color, label=label)
            for p, xv, yv in zip(pts, xs, ys):
                if p.n is not None:
                    ax.annotate(f"n={p.n}", (xv, yv), textcoords="offset points", xytext=(3, 4), fontsize=7, color=color)
            drawn += 1
        if drawn:
            ax.set_xscale("log", base=2 if key == "samples" else 10)
            _human_ticks(ax)
        else:
            ax.text(0.5, 0.5, f"no {key} recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.suptitle(title or "accuracy vs compute (95% bootstrap CI bands)")
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    return fig


def _si(v: float) -> str:
    """1234 -> 1.2k, 3.4e12 -> 3.4T; small numbers as they are."""
    if v <= 0 or not math.isfinite(v):
        return ""
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def _human_ticks(ax) -> None:
    """Plain labels on a log axis (1k, 2M, 4), minor ticks labelled when the data span under a decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v)))
    few_decades = hi / max(lo, 1e-300) < 10
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: _si(v)) if few_decades else NullFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)


def plot_k_curves(runs: dict[str, RunData], metrics: Sequence[str] = ("maj", "weighted", "best_of", "pass"), title: str | None = None):
    """Accuracy at k of n stored samples (exact k-subset estimators), one color per label,
    one line style per metric; no generation happens."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (label, run) in enumerate(runs.items()):
        curves = sample_curves(run.metrics)
        color = colors[j % len(colors)]
        for m in metrics:
            c = curves.get(m)
            if not c:
                continue
            ks = sorted(int(k) for k in c)
            ys = np.array([c[str(k)]["mean"] for k in ks], dtype=float) * 100
            ci = [c[str(k)].get("ci") or [None, None] for k in ks]
            lo = np.array([math.nan if a is None else a for a, _ in ci], dtype=float) * 100
            hi = np.array([math.nan if b is None else b for _, b in ci], dtype=float) * 100
            if m in ("maj", "best_of"):  # bands for the selection curves only, or the plot is unreadable
                ax.fill_between(ks, lo, hi, color=color, alpha=0.08, linewidth=0)
            ax.plot(ks, ys, CURVE_STYLES.get(m, "-"), marker=".", color=color, label=f"{label}: {m}@k (n={run.n})")
    ax.set_xscale("log", base=2)
    _human_ticks(ax)
    ax.set_xlabel("k (samples drawn from the stored pool)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=7, frameon=False)
    else:
        ax.text(0.5, 0.5, "no stored pools with curves", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_title(title or "accuracy vs k from stored sample pools (pass@k: coverage)", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- all of it
@dataclass
class ScalingPlot:
    png: Path
    k_png: Path
    data: Path
    lines: dict[str, list[Point]]
    figure: Any
    k_figure: Any


def make_scaling_plot(
    run_dirs: Iterable[str | Path],
    out: str | Path,
    *,
    group_by: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 130,
) -> ScalingPlot:
    """Load runs, draw both figures, write `<out>.png`, `<out>_k.png` and `<out>.json` (the data)."""
    dirs = find_run_dirs(run_dirs)
    if not dirs:
        raise ValueError("no run directories found (a run directory holds config.yaml and records/metrics)")
    runs = [load_run(d) for d in dirs]
    lines = scaling_points(runs, group_by)
    out = Path(out)
    png = out if out.suffix == ".png" else out.with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    k_png = png.with_name(png.stem + "_k.png")
    data = png.with_suffix(".json")
    fig = plot_scaling(lines, title)
    fig.savefig(png, dpi=dpi)
    kruns = k_curve_runs(lines)
    kfig = plot_k_curves(kruns)
    kfig.savefig(k_png, dpi=dpi)
    payload = {
        "lines": {label: [p.to_dict() for p in pts] for label, pts in lines.items()},
        "k_curves": {label: {"run_dir": str(r.run_dir), "n": r.n, "curves": sample_curves(r.metrics)} for label, r in kruns.items()},
        "unmerged_runs": [str(r.run_dir) for r in runs if not r.merged],
    }
    data.write_text(json.dumps(payload, indent=2, default=str))
    return ScalingPlot(png, k_png, data, lines, fig, kfig)


def log_plot_to_wandb(plot: ScalingPlot, *, project: str = "ttscale", entity: str | None = None, mode: str = "auto",
                      group: str | None = None, name: str | None = None) -> str | None:
    """Log both figures and the points table to a W&B run (job_type "plot"); offline without a key.

    Returns the run's local directory, or None when W&B is unavailable.
    """
    import os

    try:
        import wandb
    except ImportError:
        return None
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    run = wandb.init(project=project, entity=entity, mode=mode, group=group, job_type="plot", name=name,
                     dir=str(plot.png.parent), reinit="finish_previous", settings=wandb.Settings(silent=True))
    cols = ["label", "n", "seeds", "accuracy", "ci_low", "ci_high", "tokens", "flops", "samples"]
    table = wandb.Table(columns=cols)
    for label, pts in plot.lines.items():
        for p in pts:
            table.add_data(label, p.n, str(p.seeds), p.accuracy, p.ci[0], p.ci[1], p.x["tokens"], p.x["flops"], p.x["samples"])
    run.log({"scaling/plot": wandb.Image(str(plot.png)), "scaling/k_curves": wandb.Image(str(plot.k_png)), "scaling/points": table})
    d = run.dir
    run.finish()
    return d
