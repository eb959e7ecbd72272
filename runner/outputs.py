"""What a run writes: its directory's files (resolved config, identity, environment),
its metrics as it finishes, and the same to its tracker (W&B)."""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import OmegaConf

from ttscale.results import iter_records, write_json_atomic, write_text_atomic
from ttscale.run_metrics import run_metrics
from ttscale.runner.identity import NON_RESULT_KEYS, choice, run_identity, run_tags
from ttscale.runner.plan import Plan
from ttscale.runner.provenance import environment
from ttscale.runner.tracking import tracker_for


def shard_suffix(plan: Plan) -> str:
    k = int(plan.cfg.run.num_shards)
    return "" if k <= 1 else f"-s{int(plan.cfg.run.shard)}of{k}"


def metrics_filename(plan: Plan) -> str:
    k = int(plan.cfg.run.num_shards)
    return "metrics.json" if k <= 1 else f"metrics.shard-{int(plan.cfg.run.shard):03d}-of-{k:03d}.json"


def write_run_files(plan: Plan, engine_info: dict[str, Any] | None) -> None:
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(plan.run_dir / "config.yaml", OmegaConf.to_yaml(plan.cfg, resolve=True))
    ident, h = run_identity(plan.cfg)
    choices = {g: choice(plan.cfg, g) for g in ("task", "strategy", "verifier", "model", "backend") if g in plan.cfg}
    write_json_atomic(plan.run_dir / "identity.json",
                      {"hash": h, "excluded_keys": list(NON_RESULT_KEYS), "choices": choices, "config": ident})
    if engine_info is not None:
        write_json_atomic(plan.run_dir / "environment.json", environment(engine_info))


def start_tracker(plan: Plan, engine_info: dict[str, Any] | None) -> Any:
    """The run's W&B run: id = the run hash (per shard `<hash>-s<i>of<k>`), group = experiment."""
    cfg, suffix = plan.cfg, shard_suffix(plan)
    tracker = tracker_for(cfg)
    tracker.start(
        config={**OmegaConf.to_container(cfg, resolve=True), "environment": environment(engine_info) if engine_info else None},
        run_id=f"{plan.run_hash}{suffix}", name=f"{plan.run_dir.name}{suffix}", group=str(cfg.run.experiment),
        tags=run_tags(cfg) + (["shard"] if suffix else []), run_dir=str(plan.run_dir),
    )
    return tracker


def finalize(plan: Plan, wall_time: float, partial: bool = False,
             extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Metrics from the stored records of this shard's problems (plus `extra(metrics)`, e.g. the
    estimate beside what was spent), written atomically."""
    ids = plan.ids
    metrics = run_metrics(r for r in iter_records(plan.run_dir) if r["problem_id"] in ids)
    metrics["run/skipped_rows"] = len(plan.task.skipped_rows)  # task.on_bad_row=skip
    metrics["run/wall_time"] = wall_time
    metrics["run/problems_expected"] = len(plan.items)
    metrics["run/partial"] = partial
    metrics["run/hash"] = plan.run_hash
    if plan.verifier is not None and plan.verifier.is_oracle:
        metrics["verifier_is_oracle"] = True
    if extra is not None:
        metrics.update(extra(metrics))
    write_json_atomic(plan.run_dir / metrics_filename(plan), metrics)
    return metrics


def log_to_tracker(plan: Plan, tracker: Any, metrics: dict[str, Any]) -> None:
    ids = plan.ids
    tracker.log_results(metrics, (r for r in iter_records(plan.run_dir) if r["problem_id"] in ids))
    tracker.finish()
