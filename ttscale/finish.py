"""How every candidate ended, as shares of all candidates of a run.

Each candidate records its engine's or its search's `finish_reason`. The values differ
by producer (vLLM says "stop" / "length", the step search "eos" / "max_steps" /
"max_tokens", a search stopped by the budget "unfinished"), so they are read into four
classes, and anything else (an engine's "abort", a value a newer strategy writes, None)
is counted as "other" rather than guessed:

- ``eos``: the model ended the solution (end of sequence or a stop string);
- ``step_cap``: a step search reached `strategy.step.max_steps`;
- ``token_cap``: the per-solution token allowance cut it (`max_tokens`, a step's cap);
- ``budget``: the run's budget stopped it before it finished.

`metrics.json` (and so the W&B summary) gets ``finish/<class>_share`` for each class and
``other``, ``finish/candidates``, and ``finish_reasons``: the raw values with counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

FINISH_CLASSES = ("eos", "step_cap", "token_cap", "budget", "other")

# raw `finish_reason` -> class; a value not listed is "other"
FINISH_ALIASES = {
    "stop": "eos", "eos": "eos", "end": "eos", "end_of_sequence": "eos",
    "max_steps": "step_cap", "step_cap": "step_cap",
    "length": "token_cap", "max_tokens": "token_cap", "token_cap": "token_cap",
    "budget": "budget", "unfinished": "budget", "budget_exhausted": "budget",
}


def finish_class(reason: Any) -> str:
    """The class of one raw `finish_reason` (see the module doc)."""
    return FINISH_ALIASES.get(str(reason).strip().lower(), "other") if reason is not None else "other"


def count_reasons(candidates: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """{raw finish_reason (None as "none"): count} of one record's candidates."""
    c = Counter("none" if x.get("finish_reason") is None else str(x.get("finish_reason")) for x in candidates)
    return dict(c)


def finish_shares(per_problem: Iterable[Mapping[str, int]]) -> dict[str, Any]:
    """Run-level shares from each problem's `count_reasons` (flat keys plus the raw counts)."""
    raw: Counter[str] = Counter()
    for counts in per_problem:
        raw.update(counts)
    total = sum(raw.values())
    by_class: Counter[str] = Counter()
    for reason, n in raw.items():
        by_class[finish_class(None if reason == "none" else reason)] += n
    out: dict[str, Any] = {"finish/candidates": total}
    for cls in FINISH_CLASSES:
        out[f"finish/{cls}_share"] = by_class[cls] / total if total else None
    out["finish_reasons"] = dict(sorted(raw.items()))
    return out


def summary_line(metrics: Mapping[str, Any]) -> str | None:
    """One console line: how the candidates ended, in percent (None without candidates)."""
    if not metrics.get("finish/candidates"):
        return None
    parts = [f"{cls} {100 * metrics[f'finish/{cls}_share']:.1f}%" for cls in FINISH_CLASSES
             if metrics.get(f"finish/{cls}_share")]
    return f"candidates ended ({metrics['finish/candidates']}): " + ", ".join(parts)
