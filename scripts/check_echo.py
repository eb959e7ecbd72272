"""The echo floor: the share of problems graded correct for a completion that only
restates the problem (see `tasks/echo.py` for the variants), with each task's default
grading, on the arithmetic task (default config, `--arithmetic-problems` generated
problems), GSM8K (../shared/datasets/gsm8k_test.jsonl) and the other math datasets there
(MATH-500, AIME 2024/2025, AMC 2023). Exits 1 when a variant's share is above
`--max-rate` (default 0.5%).

    python scripts/check_echo.py
    python scripts/check_echo.py --only gsm8k --override task.answer_fallback=last_number   # the opt-in
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

from ttscale.tasks.echo import VARIANTS, echo_floor  # noqa: E402

FILES = {  # task -> file in --data-dir (as scripts/check_graders.py reads them)
    "gsm8k": "gsm8k_test.jsonl",
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "amc23": "amc23.jsonl",
}
TASKS = ("arithmetic", *FILES)


def load_task(name: str, data_dir: Path, arithmetic_problems: int, overrides: list[str]):
    """The task as `task=<name>` builds it (GSM8K from the local file), plus `overrides`."""
    cfg = OmegaConf.load(ROOT / "conf" / "task" / f"{name}.yaml")
    if name == "arithmetic":
        cfg.num_problems = arithmetic_problems
    else:
        cfg.path = str(data_dir / FILES[name])
    for o in overrides:
        key, _, value = o.partition("=")
        OmegaConf.update(cfg, key.removeprefix("task."), OmegaConf.from_dotlist([f"v={value}"]).v)
    return instantiate(cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--only", nargs="*", choices=TASKS, default=list(TASKS))
    ap.add_argument("--arithmetic-problems", type=int, default=500)
    ap.add_argument("--override", nargs="*", default=[], help="task.KEY=VALUE, applied to every task")
    ap.add_argument("--max-rate", type=float, default=0.005)
    ap.add_argument("--examples", type=int, default=5, help="echoes graded correct listed per task")
    args = ap.parse_args(argv)

    worst = 0.0
    for name in args.only:
        task = load_task(name, args.data_dir, args.arithmetic_problems, args.override)
        items = task.load()
        t0 = time.perf_counter()
        rep = echo_floor(task, items, max_examples=args.examples)
        dt = time.perf_counter() - t0
        cells = " | ".join(f"{v}: {rep.correct[v]}/{rep.problems} = {rep.rate(v):.2%}" for v in VARIANTS)
        print(f"{name:10s} {cells} | any: {rep.any_correct}/{rep.problems} = {rep.any_rate:.2%} | {dt:.1f}s")
        answered = ", ".join(f"{v} {rep.answered[v]}" for v in VARIANTS)
        print(f"{'':10s} echoes that got an answer at all: {answered}")
        for ex in rep.examples:
            print(f"{'':10s} {ex['id']} [{ex['variant']}]: answer {ex['answer']!r} = reference {ex['reference']!r}")
        worst = max(worst, rep.worst_rate)
    if worst > args.max_rate:
        print(f"echo floor {worst:.2%} is above --max-rate {args.max_rate:.2%}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
