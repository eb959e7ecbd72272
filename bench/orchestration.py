"""The framework's own cost, on the fake engine: per problem, per request, and memory.

A run of `num_problems` synthetic arithmetic problems goes through `ttscale.runner.run`
exactly as a real run does (Hydra config, task generation, strategy, verifier, ledger,
grading, one JSON line per problem, metrics), on a `FakeEngine` whose responder writes
one short solution per problem ("a + b = c", blank line, "\\boxed{c}"). The fake engine
times its own work (`compute_seconds`: decoding prompts, producing completions, its prefix
cache), which is subtracted: what is left is the framework.

Each size runs in a fresh process (`python -m ttscale.bench.orchestration ...`), so its
peak RSS (`ru_maxrss`) is its own. Within a run, the time and RSS are sampled as records
are appended; the per-problem cost of the first 1000 problems is compared with the last
1000, and the RSS after 1000 records with the RSS at the end of the solve loop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

NUM = re.compile(r"\d+")
STRATEGIES = {  # strategy -> extra overrides
    "best_of_n": ["strategy=best_of_n", "strategy.n=8", "verifier=arithmetic_checker"],
    "particle_filter": ["strategy=particle_filter", "strategy.n=8", "verifier=arithmetic_checker"],
    "majority_vote": ["strategy=majority_vote", "strategy.n=8"],
}


def responder(prompt: str) -> list[tuple[str, float]]:
    """One deterministic two-step solution per problem (so the fake engine's fast path runs)."""
    nums = [int(x) for x in NUM.findall(prompt.split("\n\n", 1)[0])][:2] or [1, 2]
    a, b = (nums + [0])[:2]
    return [(f"{a} + {b} = {a + b}\n\nThe answer is \\boxed{{{a + b}}}", 1.0)]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(num_problems: int, strategy: str, root: str, window: int = 1000, fsync: bool = False) -> dict[str, Any]:
    """Run and measure in this process (call it in a fresh one for a clean peak RSS)."""
    from ttscale.backends.fake import FakeEngine
    from ttscale.bench.report import compose
    from ttscale.runner import plan as runner_plan
    from ttscale.runner import run
    from ttscale.runner.identity import run_dir_for
    from ttscale.results import ResultsStore

    engine = FakeEngine(responder, num_parameters=134_515_008, block_size=16, cache_blocks=10_000,
                        keep_requests=False)
    times, engine_s, requests = array("d"), array("d"), array("q")
    rss: dict[int, float] = {}
    w = max(1, min(window, num_problems // 2))
    marks = {1, w, num_problems}  # RSS at these records, and every 100th

    class TimedStore(ResultsStore):
        def append(self, record: dict[str, Any]) -> None:
            super().append(record)
            times.append(time.perf_counter())
            engine_s.append(engine.compute_seconds)
            requests.append(engine.num_requests)
            k = len(times)
            if k % 100 == 0 or k in marks:
                rss[k] = _rss_mb()

    cfg = compose(["logger=none", f"run.root={root}", "run.progress=false", "run.summary=false",
                   f"run.fsync={str(fsync).lower()}", f"task.num_problems={num_problems}", *STRATEGIES[strategy]])
    saved = runner_plan.ResultsStore
    runner_plan.ResultsStore = TimedStore  # the runner's store, timed
    try:
        rss_start = _rss_mb()
        t0 = time.perf_counter()
        metrics = run(cfg, engine=engine)
        t1 = time.perf_counter()
    finally:
        runner_plan.ResultsStore = saved
    n = len(times)
    record_bytes = sum(f.stat().st_size for f in run_dir_for(cfg)[0].glob("records*.jsonl"))

    def cost(lo: int, hi: int) -> dict[str, float]:
        """Mean per problem over records lo..hi-1 (wall, engine, framework), per request."""
        t_lo = t0 if lo == 0 else times[lo - 1]
        e_lo = 0.0 if lo == 0 else engine_s[lo - 1]
        r_lo = 0 if lo == 0 else requests[lo - 1]
        wall, eng, reqs = times[hi - 1] - t_lo, engine_s[hi - 1] - e_lo, requests[hi - 1] - r_lo
        return {"wall_ms": 1e3 * wall / (hi - lo), "engine_ms": 1e3 * eng / (hi - lo),
                "framework_ms": 1e3 * (wall - eng) / (hi - lo), "requests": reqs / (hi - lo),
                "framework_ms_per_request": 1e3 * (wall - eng) / max(1, reqs)}

    solve = times[-1] - t0
    return {
        "problems": n, "strategy": strategy, "fsync": fsync,
        "total_s": t1 - t0, "solve_s": solve, "finalize_s": t1 - times[-1],
        "engine_s": engine_s[-1], "requests": requests[-1],
        "framework_ms_per_problem": 1e3 * (solve - engine_s[-1]) / n,
        "framework_ms_per_request": 1e3 * (solve - engine_s[-1]) / max(1, requests[-1]),
        "first": cost(0, w), "last": cost(n - w, n), "window": w,
        "rss_mb_start": rss_start, "rss_mb_samples": {str(k): round(v, 1) for k, v in sorted(rss.items())},
        "rss_mb_at_window": rss[w],
        "rss_mb_end_of_solve": rss[max(rss)],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "metrics_problems": metrics.get("problems"),
        "record_bytes_per_problem": record_bytes / max(1, n),
    }


def run_fresh(num_problems: int, strategy: str, fsync: bool = False, timeout: float = 1800) -> dict[str, Any]:
    """`measure` in a fresh Python process (its own peak RSS); returns its JSON."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="ttscale-bench-") as root:
        out = Path(root) / "out.json"
        cmd = [sys.executable, "-m", "ttscale.bench.orchestration", "--problems", str(num_problems),
               "--strategy", strategy, "--root", str(Path(root) / "runs"), "--json", str(out)]
        if fsync:
            cmd.append("--fsync")
        env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        subprocess.run(cmd, check=True, cwd=repo, env=env, timeout=timeout)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="one orchestration measurement (used by scripts/bench.py)")
    ap.add_argument("--problems", type=int, required=True)
    ap.add_argument("--strategy", choices=sorted(STRATEGIES), default="best_of_n")
    ap.add_argument("--root", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--fsync", action="store_true")
    a = ap.parse_args(argv)
    res = measure(a.problems, a.strategy, a.root, fsync=a.fsync)
    Path(a.json).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
