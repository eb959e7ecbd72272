"""Parallel-distill-refine and sequential refinement on the fake engine: the workspace stays
within its bound, every refinement sees only it, and both token counts are recorded."""

from __future__ import annotations

import pytest

from ttscale.backends.fake import FakeEngine, _split_prompt
from ttscale.strategies.refine import ParallelDistillRefine
from tests.helpers import make_ctx
from tests.search_helpers import MarkerPRM, assert_valid_result, solve
from ttscale.budget import Budget


def drafts(user: str):
    """Round 0: long drafts whose tails hold a marker; a refinement (the notes are in the
    prompt) answers 7; a summary request gets a long summary (cut at the bound)."""
    if "Summarize them" in user:
        return [("SUMMARY " + "s" * 500, 1.0)]
    if "Notes from earlier attempts" in user:
        return [("refined \\boxed{7}", 1.0)]
    return [(f"draft {i} " + "x" * 80 + f" TAIL{i} \\boxed{{{i}}}", 0.25) for i in range(4)]


def refine_requests(engine):
    out = []
    for r in engine.requests:
        user, _ = _split_prompt(engine.tokenizer.decode(r.prompt_token_ids))
        if "Notes from earlier attempts" in user:
            out.append(user.split("Notes from earlier attempts at this problem:\n\n", 1)[1])
    return out


@pytest.mark.parametrize("distill", ["summary", "top_k", "random_k"])
def test_the_workspace_is_bounded_and_is_all_a_round_sees(distill):
    for bound in (20, 60, 150):
        engine = FakeEngine(drafts)
        ctx = make_ctx(engine, verifier=MarkerPRM({"draft 2": 0.9, "draft 1": 0.6}, default=0.1), seed=bound)
        s = ParallelDistillRefine(M=4, rounds=2, workspace_tokens=bound, distill=distill, k=2, max_tokens=200)
        result = solve(s, ctx)
        assert_valid_result(result)
        rounds = result.stats["per_round"]
        assert len(rounds) == 3 and result.answer == "7"
        sizes = result.stats["workspace_tokens_per_round"]
        assert len(sizes) == 2 and all(0 < n <= bound for n in sizes)
        seen = refine_requests(engine)
        assert len(seen) == 2  # one request of M=4 drafts per refinement round
        for info, prompt_part in zip(rounds, seen):
            ws = info["workspace"]
            assert len(engine.tokenizer.encode(ws)) == info["workspace_tokens"] <= bound
            assert prompt_part.startswith(ws)  # the workspace, and nothing of a draft beyond it
            rest = prompt_part[len(ws):]
            assert "draft" not in rest and "TAIL" not in rest and "refined" not in rest
        if distill != "summary":  # 80+ token drafts, bounds below 2 drafts: the tails are cut
            assert all(f"TAIL{i}" not in seen[0] for i in range(4)) or bound == 150
        if distill == "top_k":  # the best-scored draft first
            assert seen[0].startswith("Attempt 1:\ndraft 2")
        if distill == "summary":
            assert rounds[0]["distill_tokens"] == bound  # the summary is cut at the bound
        # both costs: everything generated, and the longest chain (longest draft + summary per round)
        assert result.stats["total_tokens"] == ctx.ledger.usage.generated_tokens
        chain = sum(i["longest_draft"] + i.get("distill_tokens", 0) for i in rounds)
        assert result.stats["sequential_tokens"] == chain < result.stats["total_tokens"]


def test_sequential_refinement_sees_only_the_previous_draft():
    engine = FakeEngine(drafts)
    ctx = make_ctx(engine, seed=0)
    s = ParallelDistillRefine(M=1, rounds=3, workspace_tokens=200, distill="random_k", k=1, max_tokens=200)
    result = solve(s, ctx)
    seen = refine_requests(engine)
    assert len(seen) == 3 and all(r.n == 1 for r in engine.requests)
    assert seen[0].startswith("Attempt 1:\ndraft ") and all(p.startswith("Attempt 1:\nrefined") for p in seen[1:])
    # one chain: the sequential tokens are all the tokens
    assert result.stats["sequential_tokens"] == result.stats["total_tokens"] == ctx.ledger.usage.generated_tokens
    assert result.answer == "7" and not s.requires_verifier


def test_budget_stops_the_rounds_and_cuts_no_draft():
    done = {}
    for tokens in (150, 500, 1400):
        engine = FakeEngine(drafts)
        ctx = make_ctx(engine, budget=Budget(max_tokens=tokens))
        s = ParallelDistillRefine(M=4, rounds=3, workspace_tokens=50, max_tokens=120)
        result = solve(s, ctx)
        assert ctx.ledger.usage.generated_tokens <= tokens
        assert result.candidates and all(c.finish_reason == "stop" for c in result.candidates)
        assert result.stats["budget_exhausted"] == (len(result.stats["per_round"]) < 4)
        done[tokens] = len(result.stats["per_round"])
    assert done[150] == 1 and done[500] < 4 and done[1400] == 4  # 150: one wave of one draft only


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="strategy.distill"):
        ParallelDistillRefine(distill="abstract")
    with pytest.raises(ValueError, match="strategy.refine_prompt"):
        ParallelDistillRefine(refine_prompt="no slot")
    assert ParallelDistillRefine(distill="top_k").requires_verifier
