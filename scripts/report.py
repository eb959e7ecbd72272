"""HTML report of run directories: `python scripts/report.py RUN_DIRS... -o report.html`.

One self-contained file (inline CSS and script, figures as data URIs: nothing is fetched
when it is viewed): the scaling figures, the table of runs with accuracy and 95% CIs, paired
comparisons against the most accurate run on the problems they share, and a per-problem
browser with every candidate (answer, correctness, scores, finish reason) and, for the step
and tree searches, the search tree (node step texts, scores, what each resampling or
selection kept, the chosen path highlighted). A directory that is not a run directory (e.g.
`outputs/<experiment>`) is searched for runs. Nothing is generated again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttscale.report.html import MAX_PROBLEMS, build_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", help="run directories, or directories to search for them")
    ap.add_argument("-o", "--out", default="report.html", help="the HTML file to write (default: report.html)")
    ap.add_argument("--title", default=None)
    ap.add_argument("--max-problems", type=int, default=MAX_PROBLEMS,
                    help=f"problems in the per-problem browser, the first by index (default {MAX_PROBLEMS})")
    args = ap.parse_args(argv)
    out = Path(args.out)
    missing = [p for p in args.run_dirs if not Path(p).exists()]
    if missing:
        print(f"report: no such directory: {missing[0]}", file=sys.stderr)
        return 2
    if not out.parent.is_dir():
        print(f"report: -o {out}: directory {out.parent} does not exist", file=sys.stderr)
        return 2
    if args.max_problems < 0:
        print(f"report: --max-problems must be >= 0, got {args.max_problems}", file=sys.stderr)
        return 2
    try:
        path = build_report(args.run_dirs, out, title=args.title, max_problems=args.max_problems)
    except ValueError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
