"""Cache hits an engine did not report: the run's totals say "unknown", not a partial sum.

An OpenAI-compatible server started without prompt-token details (`vllm serve` without
`--enable-prompt-tokens-details`) answers without `usage.prompt_tokens_details`; the
ledger then counts those prompt tokens in `cache_unknown_prompt_tokens` (verifier:
`verifier_cache_unknown_tokens`) and charges them as computed, so FLOPs are an upper
bound, and a record writes its cached counts as None. Over a run, a cached-token total
that would leave such problems out is None, the problems are counted, and FLOPs are
marked as an upper bound (`flops/upper_bound`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ttscale.entries import USAGE_INDEX, USAGE_KEYS, ProblemEntry

# usage field -> the count that makes it unknown
UNKNOWN_WHEN = {
    "cached_prompt_tokens": "cache_unknown_prompt_tokens",
    "computed_prompt_tokens": "cache_unknown_prompt_tokens",
    "verifier_cached_tokens": "verifier_cache_unknown_tokens",
}


def _unknown(e: ProblemEntry, count: str) -> bool:
    v = e.usage[USAGE_INDEX[count]]
    return not math.isnan(v) and v > 0


def apply_unreported(items: Sequence[ProblemEntry], out: dict[str, Any], notes: list[str]) -> None:
    """Overwrite `out`'s totals of cache-dependent usage with None where some problem's cache
    hits were not reported; add `usage/cache_unknown_problems` and `flops/upper_bound`."""
    flagged: set[str] = set()
    for key, count in UNKNOWN_WHEN.items():
        bad = [e.problem_id for e in items if _unknown(e, count)]
        if bad:
            stem = USAGE_KEYS[key]
            out[f"{stem}_total"] = out[f"{stem}_mean"] = None
            flagged.update(bad)
    out["usage/cache_unknown_problems"] = len(flagged)
    out["flops/upper_bound"] = bool(flagged)
    if flagged:
        notes.append(
            f"{len(flagged)} problem(s) ran on an engine that did not report prefix-cache hits: "
            "cached-token totals are unknown (None) and FLOPs count those tokens as computed (an upper bound)"
        )
