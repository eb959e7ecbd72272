"""Merge the shards of sharded runs: `python scripts/merge.py RUN_DIR [RUN_DIR ...]`.

Each RUN_DIR's `records.shard-XXX-of-YYY.jsonl` files become one `records.jsonl`
(every problem exactly once, in problem order) and `metrics.json` is recomputed from
it -- the same metrics the unsharded run gives. A directory holding run directories
(e.g. `outputs/<experiment>`) merges every sharded run inside it. The runner already
merges when the last shard of a run finishes; this script is for shards that were
relaunched, or to merge what exists of an unfinished run (`--allow-incomplete`).
`--wandb` logs each merged run to W&B (run id = the run's hash, group = experiment),
next to the per-shard runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttscale.runner.merge import MergeError, is_sharded, log_merged_run, merge_run  # noqa: E402


def run_dirs(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            print(f"merge: {p}: not a directory", file=sys.stderr)
            continue
        if is_sharded(p):
            out.append(p)
        else:
            inner = sorted(d for d in p.iterdir() if d.is_dir() and is_sharded(d))
            if not inner:
                print(f"merge: {p}: no sharded runs here", file=sys.stderr)
            out.extend(inner)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", help="run directories, or directories of run directories")
    ap.add_argument("--num-shards", type=int, default=None, help="which split to merge when a run has several")
    ap.add_argument("--allow-incomplete", action="store_true", help="merge what exists; metrics get run/partial")
    ap.add_argument("--remove-shards", action="store_true", help="delete the shard files after merging")
    ap.add_argument("--wandb", action="store_true", help="log each merged run to W&B (offline without a key)")
    args = ap.parse_args(argv)
    dirs = run_dirs(args.run_dirs)
    failed = 0
    for d in dirs:
        try:
            rep = merge_run(d, num_shards=args.num_shards, allow_incomplete=args.allow_incomplete,
                            remove_shards=args.remove_shards)
        except MergeError as e:
            failed += 1
            print(f"merge: {e}", file=sys.stderr)
            continue
        print(rep.line())
        if args.wandb and rep.metrics is not None:
            log_merged_run(d, rep.metrics)
    return 1 if failed or not dirs else 0


if __name__ == "__main__":
    sys.exit(main())
