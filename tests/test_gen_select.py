"""Generative selection on the fake engine: the tournament covers every candidate once,
the judge's choice is the answer, and the selection calls are charged."""

from __future__ import annotations

import re

import pytest

from ttscale.backends.fake import FakeEngine, _split_prompt
from ttscale.strategies.gen_select import GenSelect
from tests.helpers import make_ctx
from tests.search_helpers import assert_valid_result, solve
from ttscale.budget import Budget

CANDS = [(f"cand {i}: " + "w" * (10 + i) + f" \\boxed{{{7 if i == 5 else i}}}", 1 / 11) for i in range(11)]


def judge(user: str):
    """A judge that names the listed solution whose answer is 7 (else the last one)."""
    if "candidate solutions" not in user:
        return CANDS
    items = re.findall(r"Solution (\d+): cand \d+: w+ \\boxed\{(\d+)\}", user)
    pick = next((i for i, a in items if a == "7"), items[-1][0])
    return [(f"Solution {pick} looks right.\nJudgment: {pick}", 1.0)]


def selection_requests(engine):
    out = []
    for r in engine.requests:
        user, _ = _split_prompt(engine.tokenizer.decode(r.prompt_token_ids))
        if "candidate solutions" in user:
            out.append(re.findall(r"Solution \d+: (cand \d+)", user))
    return out


@pytest.mark.parametrize("n,window", [(11, 4), (11, 3), (8, 8), (5, 2)])
def test_the_tournament_covers_every_candidate_once(n, window):
    for seed in range(5):
        engine = FakeEngine(judge)
        ctx = make_ctx(engine, seed=seed)
        result = solve(GenSelect(n=n, window_size=window, temperature=1.0, max_tokens=60), ctx)
        assert_valid_result(result)
        groups = result.stats["groups"]
        first = sorted(i for g in groups[0] for i in g)
        assert first == list(range(len(result.candidates)))  # every candidate in exactly one group
        assert all(len(g) <= window for rnd in groups for g in rnd)
        # the calls read exactly the groups of more than one (in the tournament's order)
        calls = selection_requests(engine)
        sizes = sorted(len(g) for rnd in groups for g in rnd if len(g) > 1)
        assert sorted(len(c) for c in calls) == sizes
        listed = [c for rnd in calls[: sum(len(g) > 1 for g in groups[0])] for c in rnd]
        assert sorted(listed) == sorted([c.text.split(":")[0] for i, c in enumerate(result.candidates)
                                         if any(i in g and len(g) > 1 for g in groups[0])])
        for later, earlier in zip(groups[1:], groups):  # a round's field is the last round's winners
            assert len([i for g in later for i in g]) == len(earlier)
        # the judge names the 7 whenever it is in the field
        if any(c.answer == "7" for c in result.candidates):
            assert result.answer == "7"
        u = ctx.ledger.usage
        assert result.stats["selection_calls"] == len(calls)
        assert u.generated_tokens == result.stats["sample_tokens"] + result.stats["selection_tokens"]
        assert result.stats["selection_tokens"] > 0


def test_a_judgment_out_of_range_falls_back_and_is_counted():
    engine = FakeEngine(lambda user: [("Judgment: 9", 1.0)] if "candidate solutions" in user else CANDS[:3])
    ctx = make_ctx(engine, seed=0)
    result = solve(GenSelect(n=3, window_size=4, max_tokens=60), ctx)
    assert result.stats["judgments_unparsed"] == 1 and result.selected is not None


def test_the_budget_pays_for_samples_and_selection():
    for tokens in (40, 100, 300):
        engine = FakeEngine(judge)
        ctx = make_ctx(engine, budget=Budget(max_tokens=tokens))
        result = solve(GenSelect(n=11, window_size=4, max_tokens=30, selection_max_tokens=30), ctx)
        assert ctx.ledger.usage.generated_tokens <= tokens
        assert result.stats["calls_unpaid"] + result.stats["selection_calls"] == sum(
            len(g) > 1 for rnd in result.stats["groups"] for g in rnd)


def test_usc_and_bad_settings():
    assert GenSelect(prompt="usc").judgment("The most consistent response is Response 2", 3) == 2
    with pytest.raises(ValueError, match="strategy.prompt"):
        GenSelect(prompt="vote")
    with pytest.raises(ValueError, match="strategy.window_size"):
        GenSelect(window_size=1)
