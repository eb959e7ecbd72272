"""Grader agreement on the reference solutions.

For every math dataset, extract the final answer from each *reference solution*
(MATH-500: the solution's last \\boxed; AIME 2024: the solution's last box or
\\framebox; GSM8K: what follows "####") with the task's own extraction, and grade
it against the reference answer with the task's own grader; also grade every
reference answer against itself, and (to show the grader is not simply lenient)
every reference answer against the next problem's, different, reference answer. Prints the agreement rate per dataset and lists
every disagreement.

    python scripts/check_graders.py                      # the files in ../shared/datasets
    python scripts/check_graders.py --data-dir DIR --only math500 gsm8k
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from ttscale.tasks.math_tasks import reference_agreement  # noqa: E402

FILES = {
    "math500": "math500.jsonl",
    "gsm8k": "gsm8k_test.jsonl",
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "amc23": "amc23.jsonl",
}


def load_task(name: str, data_dir: Path):
    """The task exactly as `task=<name> task.path=<file>` builds it."""
    cfg = OmegaConf.load(ROOT / "conf" / "task" / f"{name}.yaml")
    cfg.path = str(data_dir / FILES[name])
    return instantiate(cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--only", nargs="*", choices=sorted(FILES), default=sorted(FILES))
    ap.add_argument("--max-list", type=int, default=50, help="disagreements listed per dataset")
    args = ap.parse_args(argv)
    import datasets

    datasets.disable_progress_bars()

    rows = []
    for name in args.only:
        task = load_task(name, args.data_dir)
        items = task.load()
        t0 = time.perf_counter()
        rep = reference_agreement(task, items)
        dt = time.perf_counter() - t0
        rows.append(rep)
        sol = f"{rep.solution_agree}/{rep.with_solution} = {rep.solution_rate:.2%}" if rep.with_solution else "n/a"
        print(f"{name:8s} problems {rep.problems:5d} | solution vs answer: {sol:22s} | "
              f"answer vs itself: {rep.self_agree}/{rep.problems} = {rep.self_rate:.2%} | "
              f"accepted a different answer: {rep.cross_accepted}/{rep.cross_pairs} | {dt:.1f}s")
        for d in rep.disagreements[: args.max_list]:
            if d["kind"] == "self":
                print(f"    {d['id']}: reference {d['reference']!r} not equal to itself")
            elif d["kind"] == "cross":
                print(f"    {d['id']}: reference {d['reference']!r} accepted {d['other_id']}'s {d['other']!r}")
            else:
                print(f"    {d['id']}: reference {d['reference']!r}  extracted {d['extracted']!r}")
        if len(rep.disagreements) > args.max_list:
            print(f"    ... and {len(rep.disagreements) - args.max_list} more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
