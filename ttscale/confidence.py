"""Confidence signals of one trace from the top-k log-probabilities the engine returned.

DeepConf (Fu et al. 2025, "Deep Think with Confidence", arXiv:2508.15260; reference code
facebookresearch/deepconf, `deepconf/utils.py`):

* **token confidence** C_i = -(1/k) * sum_j log P_i(j) over the top-k tokens at position i
  (high = a peaked distribution, the model is sure);
* **group confidence** over a sliding window of `window_size` tokens: C_G = mean of C_i over
  the window ending at each position (a trace shorter than the window has one group, its
  mean);
* the **trace scores** (the reference code's names): `mean` (all tokens), `tail` (the last
  `tail_tokens` tokens), `bottom_window` (mean of the lowest `bottom_percent` of the groups,
  at least one), `min_window` (the lowest group, the paper's "lowest group confidence");
* **top-k entropy** per token (nats, of the renormalised top-k distribution), its mean over
  the trace (inverse-entropy voting weights a trace by 1 / that mean).

What a candidate stores (`summarize`, in `Candidate.extra["confidence"]`) is small: the four
scores, the mean entropy, the token count, the settings, and the group series downsampled to
at most `points` values (each the minimum of its chunk, so the series' minimum is kept).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SCORES = ("mean", "tail", "bottom_window", "min_window")


def token_confidence(top_logprobs: Sequence[Mapping[int, float]]) -> np.ndarray:
    """C_i = -mean of the top-k log-probabilities at each position (an empty position: 0)."""
    out = np.empty(len(top_logprobs))
    for i, top in enumerate(top_logprobs):
        vals = [v for v in top.values() if math.isfinite(v)]
        out[i] = -float(np.mean(vals)) if vals else 0.0
    return out


def token_entropy(top_logprobs: Sequence[Mapping[int, float]]) -> np.ndarray:
    """Shannon entropy (nats) of each position's renormalised top-k distribution."""
    out = np.zeros(len(top_logprobs))
    for i, top in enumerate(top_logprobs):
        vals = np.array([v for v in top.values() if math.isfinite(v)], dtype=np.float64)
        if vals.size:
            p = np.exp(vals - vals.max())
            p /= p.sum()
            out[i] = float(-(p * np.log(np.where(p > 0, p, 1.0))).sum())
    return out


def group_confidence(conf: np.ndarray, window_size: int) -> np.ndarray:
    """Sliding-window means of the token confidences: one value per window ending at
    positions window_size-1 .. n-1; a trace shorter than the window has one group (its
    mean); an empty trace none."""
    conf = np.asarray(conf, dtype=np.float64)
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    n = conf.size
    if n == 0:
        return np.zeros(0)
    if n < window_size:
        return np.array([conf.mean()])
    c = np.concatenate([[0.0], np.cumsum(conf)])
    return (c[window_size:] - c[:-window_size]) / window_size


def first_window_below(conf: Sequence[float], window_size: int, threshold: float) -> int | None:
    """Online stopping point: the first position i (0-based) at which a *full* window ending
    at i has mean confidence below `threshold`, or None. The trace generated positions
    0..i-1; position i is where the engine ends it (as DeepConf's logits processor does)."""
    conf = np.asarray(conf, dtype=np.float64)
    if conf.size < window_size:
        return None
    g = group_confidence(conf, window_size)
    below = np.flatnonzero(g < threshold)
    return int(below[0]) + window_size - 1 if below.size else None


def trace_scores(
    conf: np.ndarray, window_size: int = 2048, tail_tokens: int = 2048, bottom_percent: float = 0.1
) -> dict[str, float]:
    """The four DeepConf trace scores of one trace (see module doc); all 0 for an empty trace."""
    conf = np.asarray(conf, dtype=np.float64)
    if conf.size == 0:
        return {s: 0.0 for s in SCORES}
    groups = group_confidence(conf, window_size)
    m = max(1, int(groups.size * bottom_percent))
    return {
        "mean": float(conf.mean()),
        "tail": float(conf[-tail_tokens:].mean()),
        "bottom_window": float(np.sort(groups)[:m].mean()),
        "min_window": float(groups.min()),
    }


def downsample_min(series: np.ndarray, points: int) -> list[float]:
    """At most `points` values: the series cut into equal chunks, each chunk's minimum."""
    series = np.asarray(series, dtype=np.float64)
    if series.size <= points:
        return [round(float(v), 4) for v in series]
    return [round(float(chunk.min()), 4) for chunk in np.array_split(series, points)]


def summarize(
    top_logprobs: Sequence[Mapping[int, float]],
    window_size: int = 2048,
    tail_tokens: int = 2048,
    bottom_percent: float = 0.1,
    points: int = 32,
) -> dict[str, Any]:
    """What a candidate stores about its confidence (see module doc)."""
    conf = token_confidence(top_logprobs)
    ent = token_entropy(top_logprobs)
    scores = trace_scores(conf, window_size, tail_tokens, bottom_percent)
    return {
        "scores": scores,  # full precision: online DeepConf's threshold is computed from them
        "entropy": float(ent.mean()) if ent.size else 0.0,
        "tokens": int(conf.size),
        "topk": max((len(t) for t in top_logprobs), default=0),
        "window_size": int(window_size),
        "groups": downsample_min(group_confidence(conf, window_size), points),
    }


def candidate_weight(extra: Mapping[str, Any] | None, weighting: str, score: str) -> float | None:
    """A stored candidate's voting weight: its trace score (`weighting="confidence"`), 1 / its
    mean entropy (`"inverse_entropy"`), 1 (`"none"`); None when it stored no confidence."""
    info = (extra or {}).get("confidence")
    if weighting == "none":
        return 1.0
    if not info:
        return None
    if weighting == "confidence":
        return float(info["scores"][score])
    if weighting == "inverse_entropy":
        return 1.0 / max(float(info["entropy"]), 1e-6)
    raise ValueError(f"unknown weighting {weighting!r}: choose confidence, inverse_entropy or none")


def top_eta_mask(values: np.ndarray, eta: float) -> np.ndarray:
    """Boolean mask of the top `eta` percent of `values` (along the last axis): the
    m = ceil(eta/100 * n) highest (at least 1), ties at the boundary all kept. DeepConf's
    filter keeps traces at or above the (100 - eta)th percentile; with n * eta / 100 an
    integer and distinct values that is exactly these m."""
    values = np.asarray(values, dtype=np.float64)
    if not 0 < eta <= 100:
        raise ValueError(f"eta must be in (0, 100], got {eta}")
    n = values.shape[-1]
    if n == 0:
        return np.zeros(values.shape, dtype=bool)
    m = max(1, math.ceil(eta / 100.0 * n - 1e-9))
    kth = -np.sort(-values, axis=-1)[..., m - 1 : m]
    return values >= kth
