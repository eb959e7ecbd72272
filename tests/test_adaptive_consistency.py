"""Adaptive consistency stops where the Beta posterior first reaches its threshold."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.stopping import beta_stop_probability, stop_point, wave_sizes
from ttscale.strategies.adaptive_consistency import AdaptiveConsistency
from ttscale.types import Problem
from tests.helpers import make_ctx


def posterior_by_integration(a: int, b: int) -> float:
    """P(p > 1/2), p ~ Beta(a+1, b+1), by the trapezoid rule (as the paper's quad does)."""
    x = np.linspace(0.0, 1.0, 200_001)
    f = x**a * (1 - x) ** b
    half = x >= 0.5
    return float(np.trapezoid(f[half], x[half]) / np.trapezoid(f, x))


@pytest.mark.parametrize("a,b", [(1, 0), (4, 0), (3, 1), (6, 2), (10, 7), (0, 0)])
def test_closed_form_posterior_matches_integration(a, b):
    assert beta_stop_probability(a, b) == pytest.approx(posterior_by_integration(a, b), abs=1e-6)


def test_wave_schedules():
    assert wave_sizes(10, 1, 1) == [1] * 10
    assert wave_sizes(10, 2, 3) == [2, 3, 3, 2]
    assert wave_sizes(16, 1, 1, "doubling") == [1, 1, 2, 4, 8]
    assert wave_sizes(12, 2, 1, "doubling") == [2, 2, 4, 4]


def test_a_unanimous_problem_stops_at_four_samples():
    eng = FakeEngine(completions=[("x \\boxed{3}", 1.0)])
    ctx = make_ctx(eng)
    res = asyncio.run(AdaptiveConsistency(n=16).solve(Problem("q0", "q0"), ctx))
    # P(Beta(a+1, 1) > 1/2) = 1 - 2^-(a+1): 0.9375 at a = 3, 0.969 at a = 4
    assert res.stats["samples"] == 4 and res.stats["stopped_early"]
    assert ctx.ledger.usage.generated_tokens == 4 * len("x \\boxed{3}")
    assert res.answer == "3"


@pytest.mark.parametrize("seed", range(6))
def test_stops_at_the_first_sample_whose_posterior_reaches_the_threshold(seed):
    eng = FakeEngine(completions=[("a \\boxed{1}", 0.6), ("b \\boxed{2}", 0.3), ("c none", 0.1)])
    ctx = make_ctx(eng, seed=seed)
    strat = AdaptiveConsistency(n=24, conf_thresh=0.9)
    res = asyncio.run(strat.solve(Problem("q0", "q0"), ctx))
    drawn = [c.cluster for c in res.candidates]
    expected = None
    for t in range(1, len(drawn) + 1):
        top = Counter(c for c in drawn[:t] if c is not None).most_common(2)
        a = top[0][1] if top else 0
        b = top[1][1] if len(top) > 1 else 0
        if a and posterior_by_integration(a, b) >= 0.9:
            expected = t
            break
    assert res.stats["samples"] == (expected if expected is not None else 24)
    assert ctx.ledger.usage.generated_tokens == sum(c.num_tokens for c in res.candidates)
    assert stop_point(drawn, 0.9)[0] == res.stats["samples"]


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="strategy.conf_thresh"):
        AdaptiveConsistency(conf_thresh=0.4).check()
    with pytest.raises(ValueError, match="strategy.schedule"):
        AdaptiveConsistency(schedule="tripling").check()
