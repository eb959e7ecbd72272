"""Best-of-N, majority and weighted majority on the fake engine: exact behaviour."""

from __future__ import annotations

import asyncio
import math

import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.strategies.best_of_n import BestOfN
from ttscale.strategies.majority_vote import MajorityVote, WeightedMajorityVote
from tests.helpers import ToyTask, make_ctx
from ttscale.budget import Budget
from ttscale.types import Problem, Reference
from ttscale.verifier import Verifier
from ttscale.verifiers.oracle import OracleVerifier
from ttscale.verifiers.self_certainty import SelfCertainty

P = Problem(id="q1", question="q1")


class LengthVerifier(Verifier):
    """Scores a candidate by the length of its text (a stand-in with a known order)."""

    async def score(self, problem, candidates, ctx):
        ctx.ledger.charge_verifier(calls=len(candidates))
        return [float(len(c.text)) for c in candidates]


def run(coro):
    return asyncio.run(coro)


def test_best_of_n_selects_highest_score_and_pairs_scores_with_their_candidates():
    eng = FakeEngine(completions=[("\\boxed{1}", 0.5), ("so long \\boxed{2}", 0.3), ("mid \\boxed{3}", 0.2)])
    ctx = make_ctx(eng, verifier=LengthVerifier())
    res = run(BestOfN(n=16).solve(P, ctx))
    assert len(res.candidates) == 16
    for c in res.candidates:  # every score belongs to its own candidate
        assert c.score == float(len(c.text))
    best = max(c.score for c in res.candidates)
    assert res.candidates[res.selected].score == best
    assert res.answer == "2"  # the longest completion is sampled with 16 draws at p=0.3
    assert ctx.ledger.usage.verifier_calls == 16
    assert ctx.ledger.usage.generated_tokens == sum(c.num_tokens for c in res.candidates)


def test_majority_vote_uses_answer_equivalence_not_strings():
    # "007" and "7" are the same answer for ToyTask; together they outvote "5".
    eng = FakeEngine(completions=[("\\boxed{7}", 0.3), ("\\boxed{007}", 0.3), ("\\boxed{5}", 0.4)])
    res = run(MajorityVote(n=64, temperature=1.0).solve(P, make_ctx(eng)))
    counts = {}
    for c in res.candidates:
        counts[c.cluster] = counts.get(c.cluster, 0) + 1
    sevens = {c.cluster for c in res.candidates if c.answer in ("7", "007")}
    assert len(sevens) == 1  # one class
    seven = sevens.pop()
    expected = "7" if counts[seven] > max(v for k, v in counts.items() if k != seven) else "5"
    assert ToyTask().answer_key(res.answer) == ToyTask().answer_key(expected)


def test_majority_vote_tie_goes_to_first_seen_class():
    eng = FakeEngine(completions=[("\\boxed{1}", 0.5), ("\\boxed{2}", 0.5)])
    for seed in range(20):
        res = run(MajorityVote(n=2, temperature=1.0).solve(P, make_ctx(eng, seed=seed)))
        a, b = (c.answer for c in res.candidates)
        if a != b:
            assert res.answer == a


def test_weighted_majority_can_overrule_the_count():
    # Many short wrong answers vs a few long right ones; LengthVerifier weighs long ones heavily.
    eng = FakeEngine(completions=[("\\boxed{1}", 0.6), ("x" * 200 + "\\boxed{2}", 0.4)])
    ctx = make_ctx(eng, verifier=LengthVerifier())
    res = run(WeightedMajorityVote(n=10, temperature=1.0, max_tokens=400).solve(P, ctx))
    ones = sum(c.answer == "1" for c in res.candidates)
    twos = 10 - ones
    assert 0 < twos  # seeded: both appear
    expected = "2" if twos * 209 > ones * 9 else "1"
    assert res.answer == expected


def test_self_certainty_reads_mean_logprob_and_prefers_the_likely_completion():
    eng = FakeEngine(completions=[("\\boxed{1}", 0.9), ("\\boxed{2}", 0.1)])
    ctx = make_ctx(eng, verifier=SelfCertainty())
    res = run(BestOfN(n=8, temperature=1.0).solve(P, ctx))
    assert all(c.mean_logprob is not None and c.score == c.mean_logprob for c in res.candidates)
    # output "prob": exp(mean log-prob), in [0, 1], ranked as the raw mean
    prob = run(SelfCertainty(output="prob").score(P, res.candidates, ctx))
    assert prob == pytest.approx([math.exp(c.mean_logprob) for c in res.candidates])
    assert all(0.0 < p <= 1.0 for p in prob)
    assert eng.requests[0].logprobs == 1  # asked only because the verifier needs it
    if any(c.answer == "1" for c in res.candidates):
        assert res.answer == "1"


def test_plain_sampling_does_not_request_logprobs():
    eng = FakeEngine(completions=[("\\boxed{1}", 1.0)])
    run(MajorityVote(n=2).solve(P, make_ctx(eng)))
    assert eng.requests[0].logprobs is None


def test_oracle_scores_against_reference_only_when_given():
    eng = FakeEngine(completions=[("\\boxed{1}", 0.5), ("\\boxed{2}", 0.5)])
    ctx = make_ctx(eng, verifier=OracleVerifier(), reference=Reference(answer="2"))
    res = run(BestOfN(n=8, temperature=1.0).solve(P, ctx))
    for c in res.candidates:
        assert c.score == (1.0 if c.answer == "2" else 0.0)
    with pytest.raises(RuntimeError):
        run(BestOfN(n=2).solve(P, make_ctx(eng, verifier=OracleVerifier())))


def test_budget_draws_complete_samples_in_waves_and_caps_verifier_calls():
    # 59-token samples, max_tokens 60, budget 400: a wave of 400 // 60 = 6 complete samples
    # (354 tokens), then 46 left < 60: no further sample fits in full. None is cut.
    eng = FakeEngine(completions=[("x" * 50 + "\\boxed{1}", 1.0)])
    ctx = make_ctx(eng, verifier=LengthVerifier(), budget=Budget(max_tokens=400, max_verifier_calls=3))
    res = run(BestOfN(n=8, max_tokens=60).solve(P, ctx))
    assert ctx.ledger.usage.generated_tokens == 6 * 59 <= 400
    assert res.stats["samples"] == 6 and res.stats["sample_waves"] == [6] and res.stats["samples_budget_stopped"]
    assert all(c.num_tokens == 59 and c.finish_reason == "stop" for c in res.candidates)
    assert ctx.ledger.usage.verifier_calls == 3
    assert sum(c.score is not None for c in res.candidates) == 3
    assert res.selected is not None
    # 414 = 6 x 60 + 54: after the first wave (6 x 59 = 354) 60 are left: one more sample
    ctx = make_ctx(eng, budget=Budget(max_tokens=414))
    res = run(MajorityVote(n=8, max_tokens=60).solve(P, ctx))
    assert res.stats["sample_waves"] == [6, 1] and res.stats["samples"] == 7
    assert ctx.ledger.usage.generated_tokens == 7 * 59

def test_same_seed_same_samples_regardless_of_other_traffic():
    eng = FakeEngine(completions=[(f"\\boxed{{{i}}}", 0.1) for i in range(10)])
    a = run(MajorityVote(n=8, temperature=1.0).solve(P, make_ctx(eng, seed=3)))
    run(MajorityVote(n=8, temperature=1.0).solve(P, make_ctx(eng, seed=4)))  # other traffic
    b = run(MajorityVote(n=8, temperature=1.0).solve(P, make_ctx(eng, seed=3)))
    assert [c.text for c in a.candidates] == [c.text for c in b.candidates]
