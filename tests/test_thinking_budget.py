"""s1 budget forcing on the fake engine: thinking ends at exactly B tokens, "Wait" replaces an
end of thinking below the minimum, thinking and answer tokens are counted apart."""

from __future__ import annotations

import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.strategies.thinking_budget import BudgetForcing
from tests.helpers import make_ctx
from tests.search_helpers import solve
from ttscale.budget import Budget

SHORT = "<think>" + "a" * 30 + "</think>The answer is \\boxed{3}"
WAITED = "<think>" + "a" * 30 + "Wait" + "b" * 40 + "</think>The answer is \\boxed{7}"
LONG = "<think>" + "c" * 300 + "</think>\\boxed{9}"


def engine(*options):
    return FakeEngine(completions=list(options))


def prompts(e):
    return [e.tokenizer.decode(r.prompt_token_ids).split("<|assistant|>\n", 1)[1] for r in e.requests]


@pytest.mark.parametrize("B", [1, 17, 100, 299])
def test_thinking_ends_at_exactly_the_maximum(B):
    forced = "<think>" + "c" * B + "</think>\\boxed{5}"  # what the model answers once its thinking is closed
    e = engine((LONG, 1.0), (forced, 1e-9))
    ctx = make_ctx(e)
    result = solve(BudgetForcing(max_tokens_thinking=B, max_tokens=400, temperature=0.0), ctx)
    c = result.candidates[0]
    assert c.extra["thinking_tokens"] == B and c.extra["forced_end"]
    # the answer request continues the thinking cut at B, with the end-of-thinking marker appended
    assert prompts(e)[-1] == "<think>" + "c" * B + "</think>"
    assert c.text == "c" * B + "</think>\\boxed{5}" and result.answer == "5"
    assert c.extra["answer_tokens"] == len("\\boxed{5}")
    assert ctx.ledger.usage.generated_tokens == c.num_tokens == B + c.extra["answer_tokens"]
    assert result.stats["thinking_tokens"] == B and result.stats["forced_ends"] == 1


def test_an_early_end_becomes_wait_below_the_minimum():
    # greedy: the model ends its thinking after 30 tokens and the 8 of "</think>" (SHORT has
    # the mass); the marker's tokens were generated, so they count as thinking tokens
    for minimum, waits, answer in ((None, 0, "3"), (38, 0, "3"), (39, 1, "7"), (60, 1, "7")):
        e = engine((SHORT, 0.9), (WAITED, 0.1))
        ctx = make_ctx(e)
        s = BudgetForcing(min_tokens_thinking=minimum, num_ignore=0, max_tokens=300, temperature=0.0)
        result = solve(s, ctx)
        c = result.candidates[0]
        assert c.extra["waits"] == waits and result.answer == answer, (minimum, c.text)
        if waits:  # the end of thinking was replaced by "Wait" and thinking went on from there
            assert prompts(e)[1] == "<think>" + "a" * 30 + "Wait"
            assert c.extra["thinking_tokens"] == 30 + len("</think>") + 40 + len("</think>")
        else:
            assert c.extra["thinking_tokens"] == 30 + len("</think>") and len(e.requests) == 2
        assert c.extra["thinking_tokens"] + c.extra["answer_tokens"] == c.num_tokens == ctx.ledger.usage.generated_tokens
        assert not c.extra["forced_end"]


def test_num_ignore_is_s1s_count_and_the_maximum_wins():
    e = engine((SHORT, 0.9), (WAITED, 0.1))
    result = solve(BudgetForcing(num_ignore=1, max_tokens=300, temperature=0.0), make_ctx(e))
    assert result.candidates[0].extra["waits"] == 1 and result.answer == "7"
    # a maximum below the minimum's reach: the maximum forces the end
    e = engine((SHORT, 0.9), (WAITED, 0.1))
    result = solve(BudgetForcing(min_tokens_thinking=50, max_tokens_thinking=50, max_tokens=300, temperature=0.0),
                   make_ctx(e))
    c = result.candidates[0]
    assert c.extra["thinking_tokens"] == 50 and c.extra["forced_end"] and c.extra["waits"] == 1


def test_budget_pays_for_whole_samples_only():
    for tokens in (100, 350, 1000):
        e = engine((LONG, 1.0))
        ctx = make_ctx(e, budget=Budget(max_tokens=tokens))
        result = solve(BudgetForcing(max_tokens_thinking=100, n=4, max_tokens=200), ctx)
        assert ctx.ledger.usage.generated_tokens <= tokens
        # waves of what the budget pays for in full (each sample holds its 200 tokens)
        left = tokens - ctx.ledger.usage.generated_tokens
        assert len(result.candidates) == 4 or left < 200
        assert len(result.candidates) == sum(result.stats["sample_waves"]) >= min(4, tokens // 200)
        assert all(c.extra["thinking_tokens"] == 100 for c in result.candidates)


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="strategy.max_tokens_thinking"):
        BudgetForcing(max_tokens_thinking=500, max_tokens=256)
    with pytest.raises(ValueError, match="strategy.min_tokens_thinking"):
        BudgetForcing(min_tokens_thinking=0)
