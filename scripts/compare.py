"""Paired comparison of two runs: `python scripts/compare.py RUN_A RUN_B [--metric accuracy]`.

On the problems both runs hold: each run's mean, the mean difference A - B with a
paired percentile bootstrap CI (the same problems resampled for both runs, so the
problem-to-problem variance that makes two separate CIs overlap cancels), and how many
problems A got right and B wrong and the other way round. `--metric` is `accuracy` (the
strategies' final answers) or a curve metric of the stored pools (`best_of@4`, `maj@8`,
`pass@1`, `weighted@4`). `--json` prints the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttscale.paired import compare_runs  # noqa: E402
from ttscale.results import iter_records, record_files  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--metric", default="accuracy", help="accuracy | <pass|maj|best_of|weighted>@<k>")
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    recs = []
    for d in (a.run_a, a.run_b):
        if not record_files(d):
            print(f"compare: {d}: no records (not a run directory)", file=sys.stderr)
            return 2
        recs.append(list(iter_records(d)))
    try:
        out = compare_runs(recs[0], recs[1], a.metric, n_boot=a.n_boot, seed=a.seed)
    except ValueError as e:
        print(f"compare: --metric: {e}", file=sys.stderr)
        return 2
    if out["problems"] == 0:
        print("compare: the runs share no problem id", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    lo, hi = out["diff_ci"]
    print(f"{a.metric} on {out['problems']} shared problems (only A: {out['only_a']}, only B: {out['only_b']})")
    print(f"  A {100 * out['mean_a']:.1f}%   B {100 * out['mean_b']:.1f}%")
    print(f"  A - B {100 * out['mean_diff']:+.1f} points, 95% paired bootstrap CI [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    print(f"  A better on {out['a_better']}, B better on {out['b_better']}, equal on {out['equal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
