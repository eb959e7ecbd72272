"""What metrics keep of one stored record: its pool of candidates as three small arrays
(answer class, correctness, score) and its usage as one float array."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttscale.finish import count_reasons
from ttscale.pools import distinct_texts, search_stats

# usage field in the record -> summary key stem ("<stem>_total", "<stem>_mean")
USAGE_KEYS = {
    "requests": "engine/requests",
    "prompt_tokens": "tokens/prompt",
    "cached_prompt_tokens": "tokens/cached_prompt",
    "computed_prompt_tokens": "tokens/computed_prompt",
    "generated_tokens": "tokens/generated",
    "verifier_calls": "verifier/calls",
    "verifier_tokens": "verifier/tokens",
    "verifier_cached_tokens": "verifier/cached_tokens",
    "cache_unknown_prompt_tokens": "tokens/cache_unknown_prompt",
    "verifier_cache_unknown_tokens": "verifier/cache_unknown_tokens",
    "prefill_flops": "flops/prefill",
    "decode_flops": "flops/decode",
    "verifier_flops": "flops/verifier",
    "flops": "flops/all",
    "wall_time": "time/wall",
}


# ---------------------------------------------------------------------------
# per-problem data
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Pool:
    """One problem's candidates as three aligned arrays (see `ttscale.estimators`)."""

    clusters: np.ndarray  # int64, -1 = no answer
    correct: np.ndarray  # bool, ungraded = False
    scores: np.ndarray  # float64, nan = no score

    @classmethod
    def from_candidates(cls, candidates: Iterable[Mapping[str, Any]]) -> Pool:
        cl, ok, sc = [], [], []
        for c in candidates:
            cluster = c.get("cluster")
            score = c.get("score")
            cl.append(-1 if cluster is None else int(cluster))
            ok.append(bool(c.get("correct")))
            sc.append(math.nan if score is None else float(score))
        if any(x < -1 for x in cl):
            raise ValueError("cluster ids must be non-negative (None = no answer)")
        return cls(np.array(cl, dtype=np.int64), np.array(ok, dtype=bool), np.array(sc, dtype=np.float64))

    @classmethod
    def of(cls, clusters: Sequence[int | None], correct: Sequence[bool | None], scores: Sequence[float | None] | None = None) -> Pool:
        """Convenience constructor from plain lists (None allowed as in records)."""
        scores = [None] * len(clusters) if scores is None else scores
        return cls.from_candidates({"cluster": a, "correct": b, "score": s} for a, b, s in zip(clusters, correct, scores, strict=True))

    @property
    def n(self) -> int:
        return int(self.clusters.size)

    @property
    def has_scores(self) -> bool:
        return bool(np.any(~np.isnan(self.scores)))


USAGE_INDEX = {k: i for i, k in enumerate(USAGE_KEYS)}


def _no_usage() -> np.ndarray:
    return np.full(len(USAGE_KEYS), np.nan)


@dataclass(slots=True)
class ProblemEntry:
    """What metrics keep of one record: a few small arrays, so that holding one per problem
    of a 10,000-problem run costs about 1 KB each (a record with its texts is many times that)."""

    problem_id: str
    pool: Pool
    correct: bool  # final answer graded correct (False when failed or ungraded)
    failed: bool
    graded: bool
    usage: np.ndarray = field(default_factory=_no_usage)  # float64 per USAGE_KEYS, nan = absent
    independent: bool | None = None  # the record's `independent_samples` (None: not recorded)
    finish: dict[str, int] = field(default_factory=dict)  # raw finish_reason -> candidates (ttscale.finish)
    search: dict[str, float] = field(default_factory=dict)  # search statistics (ttscale.pools)
    distinct: int = 0  # distinct candidate texts


def problem_entry(record: Mapping[str, Any]) -> ProblemEntry:
    failed = record.get("error") is not None
    raw = record.get("usage") or {}
    usage = {k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and k in USAGE_KEYS}
    # older records have no computed count; one whose cached count is None (unknown) keeps it unknown
    if "computed_prompt_tokens" not in raw and "prompt_tokens" in usage and raw.get("cached_prompt_tokens", 0) is not None:
        usage["computed_prompt_tokens"] = usage["prompt_tokens"] - usage.get("cached_prompt_tokens", 0.0)
    if "flops" not in usage and any(k in usage for k in ("prefill_flops", "decode_flops", "verifier_flops")):
        usage["flops"] = sum(usage.get(k, 0.0) for k in ("prefill_flops", "decode_flops", "verifier_flops"))
    row = _no_usage()
    for k, v in usage.items():
        row[USAGE_INDEX[k]] = v
    cands = record.get("candidates") or []
    flag = record.get("independent_samples")
    return ProblemEntry(
        problem_id=str(record["problem_id"]),
        pool=Pool.from_candidates(cands),
        correct=bool(record.get("correct")) and not failed,
        failed=failed,
        graded=record.get("correct") is not None,
        usage=row,
        independent=flag if isinstance(flag, bool) else None,
        finish=count_reasons(cands),
        search=search_stats(record.get("stats")),
        distinct=distinct_texts(cands),
    )
