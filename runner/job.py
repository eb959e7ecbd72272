"""One run, end to end, as the list of its steps: plan (everything built and checked
before the engine), the engine, the run directory's files, the tracker, the solve loop,
the metrics, the merge of a sharded run, the summary."""

from __future__ import annotations

import time
from typing import Any

from omegaconf import DictConfig

from ttscale.engine import Engine
from ttscale.retry import with_retry
from ttscale.runner.console import describe, progress_bar, say, summary_text
from ttscale.runner.engines import get_engine
from ttscale.runner.estimate import ESTIMATES, compared, estimate
from ttscale.runner.merge import merge_if_complete
from ttscale.runner.outputs import finalize, log_to_tracker, start_tracker, write_run_files
from ttscale.runner.plan import Plan, prepare
from ttscale.runner.quiet import verbose
from ttscale.runner.solve import solve_all


def run(cfg: DictConfig, engine: Engine | None = None) -> dict[str, Any]:
    """Run one configuration end to end; returns its metrics. Raises ConfigError on bad input."""
    plan = prepare(cfg)
    est = estimate(plan)  # from the stored figures of earlier runs (runner/estimate.py)
    if cfg.run.get("dry_run"):
        ESTIMATES.append(est)
        print("\n".join([describe(plan), *est.lines()]))
        return {}
    t0 = time.perf_counter()
    if plan.todo and engine is None:
        engine = get_engine(cfg.backend, None if verbose(cfg) else plan.run_dir / "engine.log")
    engine = with_retry(engine, cfg.run.get("retry"))  # a failing request is retried, then its problem fails
    info = engine.info() if engine is not None else None
    write_run_files(plan, info)
    tracker = start_tracker(plan, info)
    finished = solve_all(plan, engine, progress_bar(plan))
    metrics = finalize(plan, time.perf_counter() - t0, partial=not finished, extra=lambda m: compared(est, m))
    if finished:
        merge_shards(plan)
    log_to_tracker(plan, tracker, metrics)
    if cfg.run.get("summary", True):
        print(summary_text(plan, metrics))
    if not finished:
        raise KeyboardInterrupt
    return metrics


def merge_shards(plan: Plan) -> None:
    """The last shard of a sharded run to finish merges them all."""
    k = int(plan.cfg.run.num_shards)
    if k > 1 and merge_if_complete(plan.run_dir, k) is not None:
        say(f"all {k} shards done; merged into {plan.run_dir}/records.jsonl, metrics.json")
