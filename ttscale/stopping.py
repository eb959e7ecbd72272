"""Adaptive-consistency stopping rules (Aggarwal, Madaan, Yang, Mausam 2023, "Let's Sample
Step by Step: Adaptive-Consistency for Efficient Reasoning and Coding with LLMs",
arXiv:2305.11860): sample a problem's solutions in waves and stop once its majority is
settled.

The Beta rule (the paper's default, `BetaStoppingCriteria`): with a counts of the leading
answer class and b of the runner-up, and a uniform prior, the leader's share p among the two
has posterior Beta(a + 1, b + 1); stop when P(p > 1/2) >= `conf_thresh` (0.95 in the paper).
For integer counts that probability is exact in closed form:
P(Beta(a+1, b+1) > 1/2) = P(Binomial(a + b + 1, 1/2) <= a). Samples without an answer do
not vote. The rule is checked after each wave (`wave_sizes`): waves of `wave_size` after the
first `init_samples`, or (`schedule="doubling"`) a total that doubles each wave; `n` caps the
total. `stop_point` replays the rule over a pool in sample order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def beta_stop_probability(a: int, b: int) -> float:
    """P(X > 1/2) for X ~ Beta(a + 1, b + 1) (a: leader's count, b: runner-up's)."""
    m = a + b + 1
    return sum(math.comb(m, j) for j in range(a + 1)) / 2.0**m


def leader_counts(clusters: Sequence[int | None]) -> tuple[int, int]:
    top = Counter(c for c in clusters if c is not None).most_common(2)
    return (top[0][1] if top else 0, top[1][1] if len(top) > 1 else 0)


def settled(clusters: Sequence[int | None], conf_thresh: float) -> tuple[bool, float]:
    """(stop?, the posterior probability) for the samples so far; never with no answer."""
    a, b = leader_counts(clusters)
    if a == 0:
        return False, 0.0
    p = beta_stop_probability(a, b)
    return p >= conf_thresh, p


def wave_sizes(n: int, init_samples: int = 1, wave_size: int = 1, schedule: str = "fixed") -> list[int]:
    """The sizes of the successive waves, summing to n."""
    if schedule not in ("fixed", "doubling"):
        raise ValueError(f"strategy.schedule must be fixed or doubling, got {schedule!r}")
    sizes, total = [], 0
    while total < n:
        if not sizes:
            step = init_samples
        elif schedule == "doubling":
            step = total  # the total doubles
        else:
            step = wave_size
        step = min(step, n - total)
        sizes.append(step)
        total += step
    return sizes


def stop_point(
    clusters: Sequence[int | None], conf_thresh: float, init_samples: int = 1, wave_size: int = 1, schedule: str = "fixed"
) -> tuple[int, bool, float]:
    """Replay the rule over a pool in sample order: (samples drawn, stopped early?, probability)."""
    total, p = 0, 0.0
    for size in wave_sizes(len(clusters), init_samples, wave_size, schedule):
        total += size
        stop, p = settled(clusters[:total], conf_thresh)
        if stop:
            return total, total < len(clusters), p
    return total, False, p
