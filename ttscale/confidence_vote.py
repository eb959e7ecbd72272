"""DeepConf's offline voters over one pool (Fu et al. 2025, "Deep Think with Confidence",
`compute_all_voting_results` in facebookresearch/deepconf): keep the answered traces, keep
the top `eta` percent of them by a trace score (eta = 100: all), then a majority weighted by
`weighting` (the trace score, 1 / mean entropy as in "The Sequential Edge" 2025, or 1).

Weights are given per candidate (None: the candidate stored no confidence; it weighs 0 and
is never kept by a filter). Ties between answer classes go to the class that appeared
first, as in `plurality`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ttscale.confidence import candidate_weight, top_eta_mask


def vote_index(
    clusters: Sequence[int | None],
    weights: Sequence[float | None],
    filter_scores: Sequence[float | None] | None = None,
    eta: float = 100.0,
) -> int | None:
    """Index of a representative of the winning class (None: no answered candidate)."""
    answered = [i for i, c in enumerate(clusters) if c is not None]
    if not answered:
        return None
    keep = answered
    if eta < 100.0:
        fs = filter_scores if filter_scores is not None else weights
        scored = [i for i in answered if fs[i] is not None]
        if scored:
            mask = top_eta_mask(np.array([fs[i] for i in scored], dtype=np.float64), eta)
            keep = [i for i, m in zip(scored, mask) if m]
    totals: dict[int, float] = {}
    first: dict[int, int] = {}
    for i in keep:
        w = weights[i]
        totals[clusters[i]] = totals.get(clusters[i], 0.0) + (0.0 if w is None else float(w))
        first.setdefault(clusters[i], i)
    best = max(totals, key=lambda k: (totals[k], -first[k]))
    return first[best]


def pool_vote(
    candidates: Sequence[Mapping[str, Any]], weighting: str = "confidence", confidence: str = "min_window", eta: float = 100.0
) -> int | None:
    """`vote_index` over stored candidates (dicts as in records): weights and the filter's
    score come from each candidate's `extra.confidence` (see `candidate_weight`)."""
    clusters = [c.get("cluster") for c in candidates]
    weights = [candidate_weight(c.get("extra"), weighting, confidence) for c in candidates]
    fscores = [candidate_weight(c.get("extra"), "confidence", confidence) for c in candidates]
    return vote_index(clusters, weights, fscores, eta)
