"""Scaling plot from run directories: `python scripts/plot_scaling.py RUN_DIRS... [-o scaling.png]`.

Draws accuracy against generated tokens, FLOPs and samples per problem -- one line
per strategy (plus verifier; plus model/task when they vary), one point per run
(x = the run's mean per-problem cost), runs that differ only in their seed pooled
into one point -- with 95% bootstrap CI bands, to a PNG. A second PNG (`<out>_k.png`)
shows accuracy against k for the parallel strategies, from the sample pools the runs
stored (maj@k, weighted@k, best_of@k, pass@k); nothing is generated again. The
plotted numbers go to `<out>.json`. A directory that is not a run directory (e.g.
`outputs/<experiment>`) is searched for runs.

With `--wandb` (or `--wandb auto`: when the runs were logged to W&B) both figures
and a table of the points are logged to a W&B run (job type "plot", group = the
experiment); offline without an API key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttscale.report.plotting import log_plot_to_wandb, make_scaling_plot  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", help="run directories, or directories to search for them")
    ap.add_argument("-o", "--out", default=None, help="output PNG (default: scaling.png in the first directory given)")
    ap.add_argument("--group-by", default=None,
                    help="comma-separated dims that tell lines apart, e.g. strategy,verifier,sampling.temperature "
                         "(default: strategy,verifier, plus model/task when they vary)")
    ap.add_argument("--title", default=None)
    ap.add_argument("--wandb", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                    help="log the figures to W&B: on, off, or auto (when the runs' config has a W&B logger)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "scaling.png"
    try:
        plot = make_scaling_plot(args.run_dirs, out, group_by=args.group_by.split(",") if args.group_by else None,
                                 title=args.title)
    except ValueError as e:
        print(f"plot_scaling: {e}", file=sys.stderr)
        return 2
    for label, pts in plot.lines.items():
        desc = ", ".join(
            f"n={p.n}: {100 * p.accuracy:.1f}% [{100 * p.ci[0]:.1f}, {100 * p.ci[1]:.1f}] @ {p.x['tokens'] or 0:.0f} tok"
            for p in pts
        )
        print(f"{label}: {desc}")
    print(f"wrote {plot.png}, {plot.k_png}, {plot.data}")
    logger = _logger_settings(plot)
    if args.wandb == "on" or (args.wandb == "auto" and logger is not None):
        logger = logger or {}
        d = log_plot_to_wandb(plot, project=logger.get("project") or "ttscale", entity=logger.get("entity"),
                              mode=logger.get("mode") or "auto", group=_experiment(plot), name=f"scaling-{_experiment(plot)}")
        if d:
            print(f"logged to W&B ({d})")
    return 0


def _logger_settings(plot) -> dict | None:
    for pts in plot.lines.values():
        for p in pts:
            lg = p.runs[0].config.get("logger")
            if isinstance(lg, dict) and "WandbTracker" in str(lg.get("_target_", "")):
                return lg
    return None


def _experiment(plot) -> str:
    exps = {str((p.runs[0].config.get("run") or {}).get("experiment")) for pts in plot.lines.values() for p in pts}
    return exps.pop() if len(exps) == 1 else "mixed"


if __name__ == "__main__":
    sys.exit(main())
