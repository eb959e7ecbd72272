"""Run-level metrics from stored per-problem records: curves over k, bootstrap CIs, usage.

The math lives in `ttscale.estimators` (exact expectations over all k-subsets
of a problem's stored pool); this module reads records, aggregates over
problems and says how much to trust the result.

Rules (also stated in the README's metrics section)
---------------------------------------------------
* **Records** are `Result.to_dict()` dicts. From each we keep only small arrays:
  per candidate ``cluster`` (None = no answer, does not vote), ``correct``
  (None = ungraded, counts as wrong) and ``score`` (None = unscored), plus the
  final ``correct``, ``usage`` and ``error``. Records are read once, as a
  stream. A problem id seen twice keeps its last record (counted in
  ``duplicates``).
* **Failed problems** (``error`` set) count as *wrong*: 0 in ``accuracy`` and 0 at
  every k of every curve, whatever partial pool they left. They are counted in
  ``failed``, and ``accuracy_excluding_failed`` gives the accuracy over the rest.
  Their usage still counts in the totals (the compute was spent).
* **Curves** are evaluated at k = 1, 2, 4, ... up to the smallest pool size n_min
  among non-failed problems, plus n_min itself. A problem with a larger pool
  still uses its whole pool at each k (that is what makes the estimators
  unbiased). When pool sizes differ, ``notes`` says so. A non-failed problem
  with an empty pool scores 0.
* **best_of** and **weighted** need verifier scores: they are reported only if
  some pool has scores; a pool with no score at all is then left out of their
  means (counted in ``notes``). weighted@k is exact where possible, otherwise a
  seeded Monte Carlo estimate; ``curves["weighted"][k]["method"]`` says which
  ("exact", "monte_carlo", or "mixed" across problems).
* **Only pools of independent samples get curves.** A record says whether its
  candidates are independent samples (``independent_samples``, from the strategy's
  class attribute); when they are not (a search's final pool), no curve over k is
  computed, and ``search/*`` and ``pool/distinct_texts_mean`` describe the search
  instead (`ttscale.pools`). Records that do not say (older runs) get curves, with a note.
* **Finish reasons**: ``finish/<class>_share`` of all candidates for end of sequence,
  step cap, token cap, budget and other (`ttscale.finish`), with the raw counts.
* **Confidence intervals** are problem-level percentile bootstraps (seeded
  numpy Generator, ``n_boot`` resamples, 95% by default): problems are
  resampled with replacement, and every metric uses the same resamples.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttscale.bootstrap import _percentile_ci, bootstrap_means
from ttscale.entries import USAGE_INDEX, USAGE_KEYS, Pool, ProblemEntry, problem_entry
from ttscale.estimators import best_of_curve, maj_curve, pass_curve, weighted_curve
from ttscale.finish import finish_shares
from ttscale.pools import NEGATIVE_WEIGHTS_NOTE, independence, negative_scores, search_summary
from ttscale.unreported import apply_unreported

CURVE_METRICS = ("pass", "maj", "best_of", "weighted")
SCORED_METRICS = ("best_of", "weighted")


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... <= n, plus n itself when it is not a power of two."""
    if n < 1:
        return []
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    if ks[-1] != n:
        ks.append(n)
    return ks


def _mc_seed(seed: int, problem_id: str) -> np.random.SeedSequence:
    """Monte Carlo seed of one problem: depends on its id, not on the order of records."""
    digest = hashlib.sha256(problem_id.encode()).digest()
    return np.random.SeedSequence([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


# ---------------------------------------------------------------------------
# per-problem curves
# ---------------------------------------------------------------------------
@dataclass
class PoolMetrics:
    """Metric values of one pool at subset sizes ``ks`` (nan: undefined)."""

    ks: list[int]
    values: dict[str, np.ndarray]
    weighted_method: list[str | None]
    weighted_stderr: np.ndarray


def pool_metrics(
    pool: Pool,
    ks: Sequence[int],
    metrics: Sequence[str] = CURVE_METRICS,
    *,
    seed: int = 0,
    problem_id: str = "",
    weighted_exact_limit: int = 200_000,
    weighted_samples: int = 20_000,
) -> PoolMetrics:
    """Every requested metric of one pool at each k in ``ks``.

    k above the pool size, or a scored metric on a pool without scores, gives nan.
    """
    unknown = set(metrics) - set(CURVE_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {CURVE_METRICS}")
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"k must be >= 1, got {ks}")
    n = pool.n
    kk = np.array(ks, dtype=np.int64)
    inside = kk <= n
    values: dict[str, np.ndarray] = {}
    methods: list[str | None] = [None] * len(ks)
    stderr = np.full(len(ks), np.nan)
    for name in metrics:
        v = np.full(len(ks), np.nan)
        if name in SCORED_METRICS and not pool.has_scores:
            values[name] = v
            continue
        if name == "weighted":
            pos = np.flatnonzero(inside)
            ests = weighted_curve(
                pool.clusters, pool.scores, pool.correct, kk[pos].tolist(),
                exact_limit=weighted_exact_limit, samples=weighted_samples, seed=_mc_seed(seed, problem_id),
            )
            for i, est in zip(pos, ests, strict=True):
                v[i], methods[i], stderr[i] = est.value, est.method, est.stderr
        elif n > 0:
            curve = {
                "pass": lambda: pass_curve(pool.correct),
                "maj": lambda: maj_curve(pool.clusters, pool.correct),
                "best_of": lambda: best_of_curve(pool.scores, pool.correct),
            }[name]()
            v[inside] = curve[kk[inside] - 1]
        values[name] = v
    return PoolMetrics(ks, values, methods, stderr)


def problem_metrics(
    entry: ProblemEntry,
    ks: Sequence[int],
    metrics: Sequence[str] = CURVE_METRICS,
    *,
    seed: int = 0,
    weighted_exact_limit: int = 200_000,
    weighted_samples: int = 20_000,
) -> PoolMetrics:
    """`pool_metrics` of one problem, with the run-level rule: a failed problem or
    an empty pool scores 0 at every k of every metric."""
    if entry.failed or entry.pool.n == 0:
        ks = [int(k) for k in ks]
        return PoolMetrics(ks, {m: np.zeros(len(ks)) for m in metrics}, [None] * len(ks), np.full(len(ks), np.nan))
    return pool_metrics(
        entry.pool, ks, metrics, seed=seed, problem_id=entry.problem_id,
        weighted_exact_limit=weighted_exact_limit, weighted_samples=weighted_samples,
    )


def metrics_for_subset_sizes(
    pools: Iterable[Pool | Mapping[str, Any]],
    ks: Sequence[int],
    metrics: Sequence[str] = CURVE_METRICS,
    *,
    seed: int = 0,
    weighted_exact_limit: int = 200_000,
    weighted_samples: int = 20_000,
) -> dict[str, Any]:
    """Per-problem metric matrices for plotting: ``{name: array (problems, len(ks))}``.

    ``pools`` are `Pool`s or records; a failed record or an empty pool scores 0
    (as in `compute_metrics`). Also returns ``"ks"``, ``"problem_ids"`` (None for bare
    pools), ``"weighted_method"`` (problems x ks, str or None) and
    ``"weighted_stderr"``. Average a column with `np.nanmean`, or bootstrap it
    with `bootstrap_ci`.
    """
    ks = [int(k) for k in ks]
    rows: list[PoolMetrics] = []
    ids: list[str | None] = []
    for i, item in enumerate(pools):
        if isinstance(item, Pool):
            e = ProblemEntry(problem_id=str(i), pool=item, correct=False, failed=False, graded=False)
            ids.append(None)
        else:
            e = problem_entry(item)
            ids.append(e.problem_id)
        rows.append(problem_metrics(e, ks, metrics, seed=seed, weighted_exact_limit=weighted_exact_limit, weighted_samples=weighted_samples))
    out: dict[str, Any] = {"ks": ks, "problem_ids": ids}
    for m in metrics:
        out[m] = np.array([r.values[m] for r in rows]).reshape(len(rows), len(ks))
    out["weighted_method"] = [r.weighted_method for r in rows]
    out["weighted_stderr"] = np.array([r.weighted_stderr for r in rows]).reshape(len(rows), len(ks))
    return out


# ---------------------------------------------------------------------------
# the run summary
# ---------------------------------------------------------------------------
def _num(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def compute_metrics(
    records: Iterable[Mapping[str, Any]],
    *,
    ks: Sequence[int] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    weighted_exact_limit: int = 200_000,
    weighted_samples: int = 20_000,
) -> dict[str, Any]:
    """All metrics of a run from its records (read once, as a stream; `ProblemEntry` items,
    what is kept of a record, are taken as they are). JSON-serialisable.

    Flat keys (W&B summary): ``problems``, ``failed``, ``ungraded``,
    ``duplicates``, ``accuracy`` (+ ``_ci_low``/``_ci_high``),
    ``accuracy_excluding_failed``, ``<metric>@<k>`` (+ CI) for metric in pass,
    maj, best_of, weighted, ``pool_size_min``/``pool_size_max``,
    ``curves_max_k``, and usage as ``<stem>_total``/``<stem>_mean`` (per
    problem), e.g. ``tokens/generated_total``, ``flops/all_mean``,
    ``verifier/calls_total``, ``time/wall_total``; ``pool/independent_samples`` (True,
    False: no curves, or None: not recorded), ``pool/distinct_texts_mean``,
    ``search/<stat>_mean`` (`ttscale.pools`), ``finish/<class>_share`` and
    ``finish/candidates`` (`ttscale.finish`). Nested: ``finish_reasons``, ``curves`` ->
    metric -> str(k) -> {"mean", "ci"} (weighted also "method",
    "monte_carlo_problems", "monte_carlo_stderr"), ``bootstrap`` (its
    settings) and ``notes`` (plain-language caveats). Undefined values are None.
    """
    entries: dict[str, ProblemEntry] = {}
    duplicates = 0
    for rec in records:
        e = rec if isinstance(rec, ProblemEntry) else problem_entry(rec)
        duplicates += e.problem_id in entries
        entries[e.problem_id] = e
    items = list(entries.values())
    P = len(items)
    notes: list[str] = []
    out: dict[str, Any] = {
        "problems": P,
        "failed": sum(e.failed for e in items),
        "ungraded": sum(not e.graded and not e.failed for e in items),
        "duplicates": duplicates,
    }
    if duplicates:
        notes.append(f"{duplicates} duplicate record(s): the last record of each problem id was used")
    if out["failed"]:
        notes.append(f"{out['failed']} failed problem(s) count as wrong in accuracy and in every curve")
    if out["ungraded"]:
        notes.append(f"{out['ungraded']} problem(s) without a grade count as wrong")
    independent, pool_note = independence(e.independent for e in items)
    out["pool/independent_samples"] = independent
    if pool_note:
        notes.append(pool_note)
    out.update(finish_shares(e.finish for e in items))
    live = [e for e in items if not e.failed]
    out.update(search_summary([e.search for e in live], [e.distinct for e in live]))

    # usage
    for key, stem in USAGE_KEYS.items():
        j = USAGE_INDEX[key]
        vals = [float(e.usage[j]) for e in items if not math.isnan(e.usage[j])]
        if vals:
            total = float(sum(vals))
            out[f"{stem}_total"] = total
            out[f"{stem}_mean"] = total / P
    apply_unreported(items, out, notes)
    if P == 0:
        notes.append("no records")
        return out | {"accuracy": None, "accuracy_ci_low": None, "accuracy_ci_high": None, "curves": {}, "notes": notes}

    # per-problem columns: accuracy, accuracy excluding failed, then metric x k
    failed = np.array([e.failed for e in items])
    acc = np.array([float(e.correct) for e in items])
    columns: list[tuple[str, np.ndarray]] = [("accuracy", acc), ("accuracy_excluding_failed", np.where(failed, np.nan, acc))]

    sizes = [e.pool.n for e in items if not e.failed]
    positive = [s for s in sizes if s > 0]
    curves: dict[str, dict[str, Any]] = {}
    weighted_info: dict[int, tuple[list[str], list[float]]] = {}
    if positive:
        n_min, n_max = min(positive), max(positive)
        out["pool_size_min"], out["pool_size_max"] = n_min, n_max
    if positive and independent is False:
        out["curves_max_k"] = None  # not samples: no curves over k (see ttscale.pools)
    elif positive:
        if n_min != n_max:
            notes.append(f"pool sizes differ ({n_min}..{n_max}): curves stop at the smallest, k <= {n_min}")
        empty = sum(1 for s in sizes if s == 0)
        if empty:
            notes.append(f"{empty} problem(s) without failure have no candidates; they score 0 in the curves")
        if ks is None:
            use_ks = default_ks(n_min)
        else:
            use_ks = sorted({int(k) for k in ks if 1 <= int(k) <= n_min})
            dropped = sorted({int(k) for k in ks} - set(use_ks))
            if dropped:
                notes.append(f"k values {dropped} dropped: outside 1..{n_min}")
        out["curves_max_k"] = max(use_ks) if use_ks else None
        scored = any(e.pool.has_scores for e in items if not e.failed)
        names = [m for m in CURVE_METRICS if scored or m not in SCORED_METRICS]
        if not scored:
            notes.append("no verifier scores in any pool: best_of and weighted are not reported")
        else:
            unscored = sum(1 for e in items if not e.failed and e.pool.n > 0 and not e.pool.has_scores)
            if unscored:
                notes.append(f"{unscored} pool(s) without scores are left out of best_of and weighted")
            if negative_scores(e.pool.scores for e in items if not e.failed):
                names.remove("weighted")
                notes.append(NEGATIVE_WEIGHTS_NOTE)
        mats = {m: np.zeros((P, len(use_ks))) for m in names}
        methods: list[list[str]] = [[] for _ in use_ks]
        mc_se: list[list[float]] = [[] for _ in use_ks]
        for i, e in enumerate(items):
            pm = problem_metrics(e, use_ks, names, seed=seed, weighted_exact_limit=weighted_exact_limit, weighted_samples=weighted_samples)
            for m in names:
                mats[m][i] = pm.values[m]
            for j in range(len(use_ks)):
                if pm.weighted_method[j] is not None:
                    methods[j].append(pm.weighted_method[j])
                    if pm.weighted_method[j] == "monte_carlo":
                        mc_se[j].append(float(pm.weighted_stderr[j]))
        for m in names:
            for j, k in enumerate(use_ks):
                columns.append((f"{m}@{k}", mats[m][:, j]))
        for j, k in enumerate(use_ks):
            weighted_info[k] = (methods[j], mc_se[j])
    else:
        notes.append("no candidate pools: no curves")

    # one set of bootstrap resamples for every column
    matrix = np.column_stack([c for _, c in columns])
    boot = bootstrap_means(matrix, n_boot=n_boot, seed=seed)
    cis = _percentile_ci(boot, level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(matrix, axis=0)
    for (key, col), mean, (lo, hi) in zip(columns, means, cis, strict=True):
        out[key] = _num(mean)
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = _num(lo), _num(hi)
        name, _, k = key.partition("@")
        if k:
            point: dict[str, Any] = {"mean": _num(mean), "ci": [_num(lo), _num(hi)]}
            if name == "weighted":
                meth, se = weighted_info[int(k)]
                kinds = set(meth)
                point["method"] = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)
                point["monte_carlo_problems"] = len(se)
                # standard error of the mean over problems due to Monte Carlo alone
                defined = int(np.sum(~np.isnan(col)))
                point["monte_carlo_stderr"] = math.sqrt(sum(s * s for s in se)) / defined if se else 0.0
            curves.setdefault(name, {})[k] = point
    if "weighted" in curves:
        out["weighted_method"] = {k: v["method"] for k, v in curves["weighted"].items()}
        if any(v["method"] in ("monte_carlo", "mixed") for v in curves["weighted"].values()):
            notes.append(
                f"weighted@k uses a seeded Monte Carlo estimate ({weighted_samples} subsets per problem) where "
                f"C(n, k) > {weighted_exact_limit}; see curves.weighted.<k>.method"
            )
    out["curves"] = curves
    out["bootstrap"] = {"resamples": n_boot, "level": level, "seed": seed, "method": "percentile, problems resampled"}
    out["notes"] = notes
    return out
