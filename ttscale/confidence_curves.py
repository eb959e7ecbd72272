"""@k curves of DeepConf's offline voters from a stored pool, and the run-level metrics that
use them.

For a voter (weights per candidate, a filter score, `eta`) and a subset size k, the value is
the expected correctness of the voter's answer over all k-subsets of the pool, ties between
classes split evenly (the convention of `weighted@k`). Without filtering (eta = 100) it is
`weighted_curve` (exact closed forms, exact enumeration, or seeded Monte Carlo). With
filtering: k = 1 and k = n exactly; otherwise exact enumeration of all C(n, k) subsets when
that is at most `exact_limit`, else a seeded Monte Carlo mean over `samples` random subsets,
labelled `"monte_carlo"` with its standard error.

Run metrics (`confidence_metrics`): over the problems whose candidates all stored a
confidence summary, `<voter>@k` with 95% bootstrap CIs for the voters in `VOTERS`
(`conf_<score>`: weighted by the score; `conf_top10_<score>` / `conf_top90_<score>`: the
top 10% / 90% by the score, weighted by it; `inv_entropy`: weighted by 1 / mean entropy),
and `voter_methods` saying exact or Monte Carlo.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ttscale.bootstrap import _percentile_ci, bootstrap_means
from ttscale.confidence import candidate_weight
from ttscale.estimators import WeightedEstimate, weighted_curve

# name -> (weighting, score, eta)
VOTERS: dict[str, tuple[str, str, float]] = {
    **{f"conf_{s}": ("confidence", s, 100.0) for s in ("mean", "tail", "bottom_window", "min_window")},
    **{f"conf_top10_{s}": ("confidence", s, 10.0) for s in ("tail", "bottom_window", "min_window")},
    **{f"conf_top90_{s}": ("confidence", s, 90.0) for s in ("tail", "bottom_window", "min_window")},
    "inv_entropy": ("inverse_entropy", "mean", 100.0),
}


def _filtered_outcome(idx: np.ndarray, slot: np.ndarray, L: int, w: np.ndarray, fs: np.ndarray, ok: np.ndarray, eta: float) -> np.ndarray:
    """Voter outcome per subset (row of `idx`): top-eta% filter on `fs`, weighted tally."""
    S, k = idx.shape
    answered = slot[idx] < L
    valid = answered & ~np.isnan(fs[idx])
    n_row = valid.sum(axis=1)
    vals = np.where(valid, fs[idx], -np.inf)
    m = np.maximum(1, np.ceil(eta / 100.0 * n_row - 1e-9).astype(np.int64))
    kth = -np.sort(-vals, axis=1)[np.arange(S), np.minimum(m, k) - 1]
    keep = np.where((n_row > 0)[:, None], valid & (vals >= kth[:, None]), answered)
    flat = (slot[idx] + (L + 1) * np.arange(S)[:, None]).ravel()
    size = S * (L + 1)
    W = np.bincount(flat, weights=np.where(keep, np.nan_to_num(w[idx]), 0.0).ravel(), minlength=size).reshape(S, L + 1)[:, :L]
    N = np.bincount(flat, weights=keep.ravel().astype(float), minlength=size).reshape(S, L + 1)[:, :L]
    C = np.bincount(flat, weights=(keep & ok[idx]).ravel().astype(float), minlength=size).reshape(S, L + 1)[:, :L]
    Wp = np.where(N > 0, W, -np.inf)
    wmax = Wp.max(axis=1, keepdims=True)
    tie = (N > 0) & (Wp >= wmax - 1e-9 * np.abs(np.where(np.isfinite(wmax), wmax, 0.0)))
    t = tie.sum(axis=1)
    frac = np.where(tie, C / np.maximum(N, 1), 0.0).sum(axis=1)
    return np.where(t > 0, frac / np.maximum(t, 1), 0.0)


def voter_curve(
    clusters: np.ndarray,
    weights: np.ndarray,
    filter_scores: np.ndarray,
    correct: np.ndarray,
    ks: Sequence[int],
    eta: float = 100.0,
    *,
    exact_limit: int = 200_000,
    samples: int = 4_000,
    seed: int | np.random.SeedSequence | None = 0,
) -> list[WeightedEstimate]:
    """The voter's value at each k (see module doc). nan weights / scores: no confidence."""
    clusters = np.asarray(clusters, dtype=np.int64)
    ok = np.asarray(correct, dtype=bool)
    w = np.asarray(weights, dtype=np.float64)
    fs = np.asarray(filter_scores, dtype=np.float64)
    n = clusters.size
    if eta >= 100.0:
        return weighted_curve(clusters, w, ok, list(ks), exact_limit=exact_limit, samples=samples, seed=seed)
    answered = clusters >= 0
    if not answered.any():
        return [WeightedEstimate(0.0, "exact") for _ in ks]
    _, dense = np.unique(clusters[answered], return_inverse=True)
    L = int(dense.max()) + 1
    slot = np.full(n, L, dtype=np.int64)
    slot[answered] = dense

    def values(idx: np.ndarray) -> np.ndarray:
        return _filtered_outcome(idx, slot, L, w, fs, ok, eta)

    out = []
    for k in ks:
        k = int(k)
        if not 1 <= k <= n:
            raise ValueError(f"k must be in 1..{n}, got {k}")
        if k == 1:
            out.append(WeightedEstimate(float((answered & ok).sum() / n), "exact"))
        elif (total := math.comb(n, k)) <= exact_limit:
            acc = 0.0
            combos = itertools.combinations(range(n), k)
            for done in range(0, total, 20_000):
                b = min(20_000, total - done)
                idx = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, b)), dtype=np.int64, count=b * k)
                acc += float(values(idx.reshape(b, k)).sum())
            out.append(WeightedEstimate(acc / total, "exact", subsets=total))
        else:
            rng = np.random.default_rng(seed)
            idx = rng.random((samples, n)).argsort(axis=1)[:, :k]
            v = values(idx)
            out.append(WeightedEstimate(float(v.mean()), "monte_carlo", float(v.std(ddof=1) / math.sqrt(v.size)), samples))
    return out


def _seed(seed: int, problem_id: str) -> np.random.SeedSequence:
    digest = hashlib.sha256(problem_id.encode()).digest()
    return np.random.SeedSequence([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def confidence_entry(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the confidence metrics keep of a record: None unless its candidates are
    independent samples (`independent_samples`, as for the other curves), every candidate
    stored a confidence summary, and the problem did not fail."""
    cands = record.get("candidates") or []
    if record.get("independent_samples") is not True:  # curves over k need independent samples
        return None
    if record.get("error") is not None or not cands or not all((c.get("extra") or {}).get("confidence") for c in cands):
        return None
    cols: dict[str, Any] = {
        "id": str(record["problem_id"]),
        "clusters": np.array([-1 if c.get("cluster") is None else int(c["cluster"]) for c in cands], dtype=np.int64),
        "correct": np.array([bool(c.get("correct")) for c in cands]),
    }
    for name in ("confidence", "inverse_entropy"):
        for s in ("mean", "tail", "bottom_window", "min_window"):
            cols[(name, s)] = np.array([candidate_weight(c.get("extra"), name, s) for c in cands], dtype=np.float64)
    return cols


def _ks(n: int) -> list[int]:
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    return ks + ([n] if ks[-1] != n else [])


def confidence_metrics(entries: Iterable[dict[str, Any] | None], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """`<voter>@k` (mean and CI) over the problems with confidence (see module doc); {} if none."""
    items = [e for e in entries if e is not None]
    if not items:
        return {}
    n_min = min(e["clusters"].size for e in items)
    ks = _ks(n_min)
    cols: list[tuple[str, np.ndarray]] = []
    methods: dict[str, set[str]] = {}
    for name, (weighting, score, eta) in VOTERS.items():
        mat = np.zeros((len(items), len(ks)))
        for i, e in enumerate(items):
            ests = voter_curve(e["clusters"], e[(weighting, score)], e[("confidence", score)], e["correct"], ks, eta, seed=_seed(seed, e["id"]))
            mat[i] = [x.value for x in ests]
            for k, x in zip(ks, ests):
                methods.setdefault(f"{name}@{k}", set()).add(x.method)
        cols += [(f"{name}@{k}", mat[:, j]) for j, k in enumerate(ks)]
    boot = bootstrap_means(np.column_stack([c for _, c in cols]), n_boot=n_boot, seed=seed)
    cis = _percentile_ci(boot, level)
    out: dict[str, Any] = {"confidence_problems": len(items)}
    meth = {k: (v.pop() if len(v) == 1 else "mixed") for k, v in methods.items()}
    curves: dict[str, dict[str, Any]] = {}
    for (key, col), (lo, hi) in zip(cols, cis):
        out[key] = float(col.mean())
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = float(lo), float(hi)
        name, _, k = key.partition("@")
        curves.setdefault(name, {})[k] = {"mean": out[key], "ci": [float(lo), float(hi)], "method": meth[key]}
    out["voter_methods"] = meth
    out["curves"] = curves  # merged into the run's `curves` (W&B curve panels)
    return out
