"""Paired comparison of two runs on the problems they share: the mean difference with a
paired bootstrap CI (the same problems resampled for both), and who got which problem right."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ttscale.bootstrap import bootstrap_ci
from ttscale.metrics import CURVE_METRICS, problem_entry, problem_metrics


# ---------------------------------------------------------------------------
# paired comparison
# ---------------------------------------------------------------------------
def paired_comparison(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Compare two runs' per-problem values on the problem ids they share.

    Returns the means, the mean difference a - b with a paired percentile
    bootstrap CI (the same problems resampled for both), and how many problems
    a scored higher on, b scored higher on, or tied (with 0/1 correctness these
    are "a right, b wrong", "a wrong, b right", "same").
    """
    ids = sorted(set(a) & set(b))
    out: dict[str, Any] = {"problems": len(ids), "only_a": len(set(a) - set(b)), "only_b": len(set(b) - set(a))}
    if not ids:
        return out | {"mean_a": None, "mean_b": None, "mean_diff": None, "diff_ci": None, "a_better": 0, "b_better": 0, "equal": 0}
    x = np.array([float(a[i]) for i in ids])
    y = np.array([float(b[i]) for i in ids])
    d = x - y
    lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed, level=level)
    return out | {
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "mean_diff": float(d.mean()),
        "diff_ci": [float(lo), float(hi)],
        "a_better": int((d > 0).sum()),
        "b_better": int((d < 0).sum()),
        "equal": int((d == 0).sum()),
    }


def per_problem_values(records: Iterable[Mapping[str, Any]], metric: str = "accuracy", *, seed: int = 0, **kwargs: Any) -> dict[str, float]:
    """``{problem_id: value}`` of ``"accuracy"`` (final answer, failed = 0) or a curve metric ``"maj@4"``."""
    name, k = (metric, None) if metric == "accuracy" else _parse_metric(metric)
    out: dict[str, float] = {}
    for rec in records:
        e = problem_entry(rec)
        if k is None:
            out[e.problem_id] = float(e.correct)
            continue
        if e.independent is False:
            raise ValueError(f"{metric} is not defined for problem {e.problem_id}: its candidates are not independent "
                             "samples (a search's pool); compare accuracy instead")
        v = float(problem_metrics(e, [k], [name], seed=seed, **kwargs).values[name][0])
        if math.isnan(v):
            raise ValueError(f"{metric} is undefined for problem {e.problem_id} (pool of {e.pool.n}, scores: {e.pool.has_scores})")
        out[e.problem_id] = v
    return out


def _parse_metric(metric: str) -> tuple[str, int]:
    name, _, k = metric.partition("@")
    if name not in CURVE_METRICS or not k.isdigit():
        raise ValueError(f"metric must be 'accuracy' or '<name>@<k>' with name in {CURVE_METRICS}, got {metric!r}")
    return name, int(k)


def compare_runs(
    records_a: Iterable[Mapping[str, Any]],
    records_b: Iterable[Mapping[str, Any]],
    metric: str = "accuracy",
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired comparison of two runs on their shared problem ids (see `paired_comparison`).

    For ``"accuracy"`` it also counts ``a_right_b_wrong``, ``a_wrong_b_right``,
    ``both_right`` and ``both_wrong``.
    """
    a = per_problem_values(records_a, metric, seed=seed)
    b = per_problem_values(records_b, metric, seed=seed)
    out = {"metric": metric} | paired_comparison(a, b, n_boot=n_boot, seed=seed, level=level)
    if metric == "accuracy":
        ids = set(a) & set(b)
        out["a_right_b_wrong"] = out["a_better"]
        out["a_wrong_b_right"] = out["b_better"]
        out["both_right"] = sum(1 for i in ids if a[i] and b[i])
        out["both_wrong"] = sum(1 for i in ids if not a[i] and not b[i])
    return out
