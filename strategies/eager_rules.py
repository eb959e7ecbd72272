"""EAGer's bookkeeping (the run-wide `BudgetPool`, one `Seq` per sequence) and its
threshold rule, apart from the decoding loop (`strategies/entropy_branching.py`).

Scalena et al. 2025, "EAGer" (arXiv:2510.11170); the threshold follows the reference
code, Omega-Reasoning/EAGer `eager/entropy_generator_vllm.py`,
`VLLMGenerator.entropy_aware_generation(dynamic_entropy=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def dynamic_threshold(histories: Sequence[Sequence[float]], p: int, theta: float, percentile: float = 99.0) -> float:
    """The fork threshold at position p: max(theta, the `percentile`-th percentile of the
    entropies at positions before p), over every sequence's history (one entry per
    position, nan where the sequence did not generate the token itself). theta alone when
    nothing was seen yet, as in the reference."""
    vals = np.concatenate([np.asarray(h[:p], dtype=float) for h in histories]) if histories else np.array([])
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return theta
    return max(theta, float(np.percentile(vals, percentile)))


class BudgetPool:
    """Sequences returned by problems that did not need them, for problems that look hard.

    Shared by every problem a strategy instance solves. `deposit` and `draw` are plain
    synchronous methods (no `await` inside), so each runs atomically under asyncio."""

    def __init__(self) -> None:
        self.available = 0
        self.deposited = 0
        self.drawn = 0
        self.donors = 0
        self.takers = 0

    def deposit(self, sequences: int) -> None:
        if sequences > 0:
            self.available += sequences
            self.deposited += sequences
            self.donors += 1

    def draw(self, wanted: int) -> int:
        got = max(0, min(wanted, self.available))
        self.available -= got
        self.drawn += got
        if got:
            self.takers += 1
        return got

    def snapshot(self) -> dict[str, int]:
        return {"available": self.available, "deposited": self.deposited, "drawn": self.drawn,
                "donors": self.donors, "takers": self.takers}


@dataclass
class Seq:
    """One EAGer sequence: every token (shared prefix included), where it forked."""

    id: int
    ids: list[int]  # every token of the sequence, shared prefix included
    lps: list[float]  # log-probability of each token (parallel to ids)
    hs: list[float] = field(default_factory=list)  # entropy at each position it generated (nan: inherited/forced)
    parent: int | None = None
    fork_at: int | None = None  # position of its first own token (exempt from forking)
    own: int = 0  # tokens this sequence generated itself
    finished: bool = False
    finish_reason: str | None = None
