"""A cost estimate before the compute (`run.dry_run=true`), from the stored figures of earlier runs.

For each run the estimate is per problem times the problems left to run: engine requests,
generated and prompt tokens, verifier calls and wall time. It comes from the finished runs
under `run.root` (any experiment) made with the same model and backend:

* **same setting**: runs whose strategy, verifier, sampling and budget are this run's (the
  task's size, the seed and the run keys may differ): their per-problem means, as measured;
* **scaled**: runs of the same strategy with other hyperparameters: their means scaled by the
  ratio of the sequences the first request asks for (`Strategy.request_shape()`, e.g. best-of-16
  from best-of-8 runs x 2), time by the same ratio;
* otherwise nothing is known: the dry run says so and suggests a short calibration run
  (`task.limit=3`), which is the engine's own measurement of this setting.

Every figure says which of these it is. A run that goes ahead records its estimate in
`metrics.json` (`estimate/*`) next to what it spent, with their ratios, so a user learns how far
the estimate can be trusted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.runner.identity import installed_target, run_identity
from ttscale.runner.plan import Plan

FIELDS = (  # (estimate name, metrics.json per-problem mean)
    ("requests", "engine/requests_mean"),
    ("generated_tokens", "tokens/generated_mean"),
    ("prompt_tokens", "tokens/prompt_mean"),
    ("verifier_calls", "verifier/calls_mean"),
    ("seconds", "time/wall_per_problem"),
)
SAME_KEYS = ("strategy", "verifier", "sampling", "budget")  # beside model and backend


@dataclass
class Estimate:
    problems: int
    per_problem: dict[str, float]  # empty when nothing is known
    source: str

    def total(self, name: str) -> float | None:
        v = self.per_problem.get(name)
        return None if v is None else v * self.problems

    def lines(self) -> list[str]:
        if not self.per_problem:
            return [f"estimate:  {self.problems} problems; {self.source}"]
        parts = [f"{self.total(n):,.0f} {label}" for n, label in (
            ("requests", "engine requests"), ("generated_tokens", "generated tokens"),
            ("prompt_tokens", "prompt tokens"), ("verifier_calls", "verifier calls")) if self.total(n) is not None]
        secs = self.total("seconds")
        return [f"estimate:  {self.problems} problems: " + ", ".join(parts)
                + (f"; about {_duration(secs)}" if secs is not None else ""), f"           ({self.source})"]

    def to_metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"estimate/source": self.source, "estimate/problems": self.problems}
        for name in self.per_problem:
            out[f"estimate/{name}"] = self.total(name)
        return out


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _history(root: Path, exclude: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(identity config, metrics) of every finished run under `root` but `exclude`."""
    out = []
    for ident_path in root.glob("*/*/identity.json"):
        if ident_path.parent.resolve() == exclude.resolve():
            continue
        metrics_path = ident_path.parent / "metrics.json"
        if not metrics_path.exists():
            continue
        try:
            ident = json.loads(ident_path.read_text())["config"]
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError, KeyError):
            continue
        if metrics.get("run/partial") or not metrics.get("problems"):
            continue
        metrics = dict(metrics)
        metrics["time/wall_per_problem"] = (metrics.get("run/wall_time") or 0.0) / metrics["problems"]
        out.append((ident, metrics))
    return out


def _engine_key(c: dict[str, Any]) -> str:
    backend = {k: v for k, v in (c.get("backend") or {}).items() if k != "seed"}
    return json.dumps([c.get("model"), backend], sort_keys=True, default=str)


def _means(runs: list[dict[str, Any]], scale: float) -> dict[str, float]:
    out = {}
    for name, key in FIELDS:
        vals = [float(m[key]) for m in runs if isinstance(m.get(key), (int, float))]
        if vals:
            out[name] = scale * sum(vals) / len(vals)
    return out


def estimate(plan: Plan) -> Estimate:
    """The estimate of `plan` (see the module doc) for the problems it has left to run."""
    mine, _ = run_identity(plan.cfg)
    shape = plan.strategy.request_shape()
    history = [(c, m) for c, m in _history(Path(plan.cfg.run.root), exclude=plan.run_dir)
               if _engine_key(c) == _engine_key(mine)]
    same = [m for c, m in history if all(c.get(k) == mine.get(k) for k in SAME_KEYS)]
    problems = len(plan.todo)
    if same:
        return Estimate(problems, _means(same, 1.0),
                        f"measured: {len(same)} earlier run(s) of this setting with this model and backend")
    target = str((mine.get("strategy") or {}).get("_target_"))
    kin = [(c, m) for c, m in history if str((c.get("strategy") or {}).get("_target_")) == target]
    if kin and shape is not None:
        seqs = [_sequences(c) for c, _ in kin]
        if all(seqs):
            ratio = shape.sequences / (sum(seqs) / len(seqs))
            return Estimate(problems, _means([m for _, m in kin], ratio),
                            f"scaled: {len(kin)} earlier run(s) of this strategy with this model and backend, "
                            f"x {ratio:.2f} for {shape.sequences} sequences per request instead of "
                            f"{sum(seqs) / len(seqs):.0f}")
    return Estimate(problems, {}, "no earlier run of this strategy with this model and backend under "
                                  f"run.root={plan.cfg.run.root}: calibrate with a short run first (task.limit=3)")


def _sequences(ident: dict[str, Any]) -> int | None:
    """Sequences of an earlier run's first request, from its recorded config."""
    from hydra.utils import instantiate

    node = dict(ident["strategy"])
    node["_target_"] = installed_target(str(node.get("_target_")))
    try:
        shape = instantiate(node).request_shape()
    except Exception:  # noqa: BLE001 - a strategy that no longer builds: not comparable
        return None
    return shape.sequences if shape is not None else None


# Estimates made before runs of this process (a dry-run sweep prints their total at its end).
ESTIMATES: list[Estimate] = []


def compared(est: Estimate, metrics: dict[str, Any]) -> dict[str, Any]:
    """The estimate beside what the run spent: `estimate/<name>` (for the problems it had left),
    and `estimate/<name>_ratio` = spent / estimated, per problem."""
    out = est.to_metrics()
    problems = metrics.get("problems") or 0
    spent = {name: metrics.get(key) for name, key in FIELDS}
    spent["seconds"] = (metrics.get("run/wall_time") or 0.0) / est.problems if est.problems else None
    for name, value in spent.items():
        guess = est.per_problem.get(name)
        if guess and isinstance(value, (int, float)) and problems:
            out[f"estimate/{name}_ratio"] = float(value) / guess
    return out


def sweep_total(estimates: list[Estimate]) -> list[str]:
    """The lines a dry-run sweep ends with: every run's estimate added up."""
    known = [e for e in estimates if e.per_problem]
    lines = [f"ttscale: {len(estimates)} runs, {sum(e.problems for e in estimates)} problems to run"]
    if known:
        tot = {n: sum(e.total(n) or 0.0 for e in known) for n, _ in FIELDS}
        lines.append(f"  estimated ({len(known)} of {len(estimates)} runs known): {tot['requests']:,.0f} engine requests, "
                     f"{tot['generated_tokens']:,.0f} generated and {tot['prompt_tokens']:,.0f} prompt tokens, "
                     f"{tot['verifier_calls']:,.0f} verifier calls, about {_duration(tot['seconds'])}")
    return lines


def merged_estimate(shard_metrics: list[dict[str, Any]], merged: dict[str, Any]) -> dict[str, Any]:
    """The estimate of a sharded run: its shards' estimates added up and compared with the merged
    metrics as a run's own is (the same `estimate/*` keys)."""
    parts = [m for m in shard_metrics if "estimate/source" in m]
    if not parts:
        return {}
    problems = sum(int(m.get("estimate/problems") or 0) for m in parts)
    per: dict[str, float] = {}
    for name, _ in FIELDS:
        totals = [m.get(f"estimate/{name}") for m in parts]
        if totals and all(isinstance(t, (int, float)) for t in totals) and problems:
            per[name] = sum(totals) / problems
    est = Estimate(problems, per, str(parts[0]["estimate/source"]))
    walls = [m.get("run/wall_time") for m in parts if isinstance(m.get("run/wall_time"), (int, float))]
    return compared(est, {**merged, "run/wall_time": sum(walls) if walls else merged.get("run/wall_time")})
