"""Run directories as data for the scaling figures: `load_run` reads what a run left on
disk (config.yaml, identity.json, metrics.json, records); nothing is generated again.
`scaling_points` groups runs into points: runs that differ only in their seed become one
point (x = mean cost, y = mean accuracy, CI = problem-level bootstrap of the per-problem
accuracy averaged over seeds); a single run keeps the CI of its metrics.json. Points with
the same *label* (the strategy, plus the verifier, and the model or task when those vary
across the runs) form one line."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ttscale.pools import sample_curves

# x axes of the scaling figure: (key, axis label, metrics key of the per-problem mean)
X_AXES = (
    ("tokens", "generated tokens per problem", "tokens/generated_mean"),
    ("flops", "FLOPs per problem", "flops/all_mean"),
    ("samples", "samples per problem", None),
)


NONE_NAMES = {"none", "None", "null", ""}


@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any]
    choices: dict[str, str]
    metrics: dict[str, Any]
    per_problem: dict[str, float]  # problem id -> 1.0 correct / 0.0 wrong (failed = wrong)
    samples: float  # mean number of candidates per problem
    merged: bool = True  # False: metrics computed here from shard records not yet merged

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def n(self) -> Any:
        return (self.config.get("strategy") or {}).get("n")


@dataclass
class Point:
    label: str
    runs: list[RunData]
    x: dict[str, float | None]
    accuracy: float
    ci: tuple[float, float]
    n: Any = None
    seeds: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "n": self.n, "seeds": self.seeds, "accuracy": self.accuracy,
            "ci": list(self.ci), "x": self.x, "problems": len(self.runs[0].per_problem),
            "run_dirs": [str(r.run_dir) for r in self.runs],
        }


# --------------------------------------------------------------------------- loading
def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").exists() and (
        (path / "metrics.json").exists() or any(path.glob("records*.jsonl"))
    )


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories among `paths`; a directory that is not a run is searched (recursively)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if is_run_dir(p):
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(d.parent for d in p.rglob("config.yaml") if is_run_dir(d.parent) and "wandb" not in d.parts))
    seen: set[Path] = set()
    return [d for d in out if not (d.resolve() in seen or seen.add(d.resolve()))]  # type: ignore[func-returns-value]


def _choice_from_target(node: Any) -> str:
    if isinstance(node, dict) and "_target_" in node:
        return str(node["_target_"]).rsplit(".", 1)[-1].lower()
    return "none" if node is None else str(node)


def load_run(run_dir: str | Path) -> RunData:
    from omegaconf import OmegaConf

    from ttscale.metrics import compute_metrics
    from ttscale.results import iter_records

    run_dir = Path(run_dir)
    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)
    assert isinstance(cfg, dict)
    ident = json.loads((run_dir / "identity.json").read_text()) if (run_dir / "identity.json").exists() else {}
    choices = {g: _choice_from_target(cfg.get(g)) for g in ("task", "strategy", "verifier", "model", "backend")}
    choices.update({k: str(v) for k, v in (ident.get("choices") or {}).items()})
    records = sorted(iter_records(run_dir), key=lambda r: (r.get("index", 0), str(r["problem_id"])))
    per_problem = {str(r["problem_id"]): float(bool(r.get("correct")) and r.get("error") is None) for r in records}
    sizes = [len(r.get("candidates") or []) for r in records if r.get("error") is None]
    samples = float(np.mean(sizes)) if sizes else float((cfg.get("strategy") or {}).get("n") or 0)
    merged = True
    if (run_dir / "metrics.json").exists():
        metrics = json.loads((run_dir / "metrics.json").read_text())
    else:  # unmerged shards: compute from the records that exist (nothing is written)
        metrics = compute_metrics(records)
        merged = False
    return RunData(run_dir, cfg, choices, metrics, per_problem, samples, merged)


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _dim_value(run: RunData, dim: str) -> str | None:
    if dim in run.choices:
        v = run.choices[dim]
        return None if v in NONE_NAMES else v
    v = _get(run.config, dim)
    return None if v is None else f"{dim.rsplit('.', 1)[-1]}={v}"


def label_dims(runs: Sequence[RunData], group_by: Sequence[str] | None = None) -> list[str]:
    """What tells lines apart: strategy and verifier, plus model/task when they vary."""
    if group_by:
        return list(group_by)
    dims = ["strategy", "verifier"]
    for d in ("model", "task"):
        if len({r.choices.get(d) for r in runs}) > 1:
            dims.append(d)
    return dims


def run_label(run: RunData, dims: Sequence[str]) -> str:
    parts = [_dim_value(run, d) for d in dims]
    head, rest = (parts[0] or "?"), [p for p in parts[1:] if p]
    return head + (f" ({', '.join(rest)})" if rest else "")


def _config_without_seed(run: RunData) -> str:
    ident_path = run.run_dir / "identity.json"
    cfg = json.loads(ident_path.read_text())["config"] if ident_path.exists() else dict(run.config)
    cfg = json.loads(json.dumps(cfg, default=str))
    cfg.pop("seed", None)
    for k in ("run", "logger", "hydra"):
        cfg.pop(k, None)
    # engine seeds follow the run seed (`backend.seed: ${seed}`) and are not a setting of their own;
    # task.seed (which problems) is
    for k in ("backend", "verifier"):
        _drop_key(cfg.get(k), "seed")
    return json.dumps(cfg, sort_keys=True, default=str)


def _drop_key(node: Any, key: str) -> None:
    if isinstance(node, dict):
        node.pop(key, None)
        for v in node.values():
            _drop_key(v, key)


def _x_of(run: RunData) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, _, mkey in X_AXES:
        if key == "samples":
            out[key] = run.samples
        else:
            v = run.metrics.get(mkey)
            out[key] = float(v) if isinstance(v, (int, float)) else None
    return out


def scaling_points(runs: Sequence[RunData], group_by: Sequence[str] | None = None, n_boot: int = 1000) -> dict[str, list[Point]]:
    """{label: points sorted by tokens (else samples)}; runs differing only by seed are pooled."""
    from ttscale.bootstrap import bootstrap_ci

    dims = label_dims(runs, group_by)
    groups: dict[tuple[str, str], list[RunData]] = defaultdict(list)
    for r in runs:
        groups[(run_label(r, dims), _config_without_seed(r))].append(r)
    lines: dict[str, list[Point]] = defaultdict(list)
    for (label, _), rs in groups.items():
        rs = sorted(rs, key=lambda r: str(r.seed))
        xs = [_x_of(r) for r in rs]
        x = {k: (float(np.mean([d[k] for d in xs])) if all(d[k] is not None for d in xs) else None) for k, _, _ in X_AXES}
        if len(rs) == 1 and isinstance(rs[0].metrics.get("accuracy"), (int, float)):
            m = rs[0].metrics
            acc = float(m["accuracy"])
            lo, hi = m.get("accuracy_ci_low"), m.get("accuracy_ci_high")
            ci = (float(lo), float(hi)) if lo is not None and hi is not None else (acc, acc)
        else:  # several seeds: per-problem accuracy averaged over seeds, bootstrapped over problems
            ids = sorted(set().union(*(r.per_problem for r in rs)))
            vals = np.array([np.mean([r.per_problem[i] for r in rs if i in r.per_problem]) for i in ids])
            acc = float(vals.mean()) if vals.size else math.nan
            ci = tuple(float(v) for v in bootstrap_ci(vals, n_boot=n_boot)) if vals.size else (math.nan, math.nan)
        lines[label].append(Point(label, rs, x, acc, ci, n=rs[0].n, seeds=[r.seed for r in rs]))  # type: ignore[arg-type]
    for label, pts in lines.items():
        pts.sort(key=lambda p: (p.x["tokens"] if p.x["tokens"] is not None else -1, p.x["samples"] or 0))
    return dict(sorted(lines.items()))


def k_curve_runs(lines: dict[str, list[Point]]) -> dict[str, RunData]:
    """Per label, the run with the largest stored pool that has curves over k (first seed);
    only runs whose pools are independent samples (`ttscale.pools.sample_curves`)."""
    out: dict[str, RunData] = {}
    for label, pts in lines.items():
        cands = [r for p in pts for r in p.runs if sample_curves(r.metrics).get("maj") or sample_curves(r.metrics).get("pass")]
        if cands:
            out[label] = max(cands, key=lambda r: (r.metrics.get("curves_max_k") or 0, -len(str(r.seed))))
    return out
