"""Judges that ride the policy's cache (verifiers/judge_layout.py): the judge's prompt starts
with the policy's prompt and path token for token, the question comes after it, and the old
self-contained layout is one option away."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import make_ctx
from ttscale.backends.fake import ASSISTANT_TAG, USER_TAG, CharTokenizer, FakeEngine
from ttscale.policy_tokens import covering, remember
from ttscale.types import Candidate, Problem
from ttscale.verifiers.judge import LLMJudge
from ttscale.verifiers.judge_layout import judge_prompt_ids, turn_suffix
from ttscale.verifiers.judge_steps import JudgeSteps

P = Problem(id="p1", question="What is 12 + 7 - 1?")
STEPS = ["12 + 7 = 19\n\n", "19 - 1 = 18\n\n", "The answer is \\boxed{18}"]
TWO = 5000  # a token the policy may sample that the tokenizer's own split never gives: "19"


class TwoCharTokenizer(CharTokenizer):
    def decode(self, token_ids):
        return "".join("19" if t == TWO else super(TwoCharTokenizer, self).decode([t]) for t in token_ids)


def run(coro):
    return asyncio.run(coro)


def policy_ids(tok, text):
    """The path as a policy could have sampled it: "19" as the one token TWO."""
    parts = text.split("19")
    ids = tok.encode(parts[0])
    for p in parts[1:]:
        ids += [TWO] + tok.encode(p)
    return ids


def test_the_judge_prompt_starts_with_the_policy_prompt_and_path_token_for_token():
    eng = FakeEngine()
    eng.tokenizer = TwoCharTokenizer()
    v = JudgeSteps()
    ctx = make_ctx(eng, verifier=v)
    text = "".join(STEPS[:2])
    ids = policy_ids(eng.tokenizer, text)
    assert ids != eng.tokenizer.encode(text)  # re-tokenising would not give the policy's tokens
    remember(ctx, text, ids)
    prompt = ctx.prompt_ids(P)
    got = v.prompt_ids(ctx, eng, P, STEPS[:2])
    assert got[: len(prompt) + len(ids)] == prompt + ids
    question = v.question.format(step=STEPS[1].strip())
    assert got[len(prompt) + len(ids):] == turn_suffix(eng.tokenizer, ctx.task.messages(P), question)
    # the question is the next user turn, after the path
    tail = eng.tokenizer.decode(got[len(prompt) + len(ids):])
    assert tail == USER_TAG + question + ASSISTANT_TAG and "last step" in tail
    restated = JudgeSteps(question="Is this step correct: {step}?")
    assert eng.tokenizer.decode(restated.prompt_ids(ctx, eng, P, STEPS[:2])).endswith(
        USER_TAG + "Is this step correct: 19 - 1 = 18?" + ASSISTANT_TAG)
    # a judged prefix of a recorded path: the policy's tokens as far as they go
    got1 = v.prompt_ids(ctx, eng, P, STEPS[:1])
    assert got1[: len(prompt) + len(policy_ids(eng.tokenizer, STEPS[0]))] == prompt + policy_ids(eng.tokenizer, STEPS[0])
    # ... and where a prefix ends inside a policy token, the rest is tokenized
    assert covering(ctx, "12 + 7 = 1")[0] == text
    cut = judge_prompt_ids(ctx, eng, P, "12 + 7 = 1", "Q?")
    assert cut[len(prompt):][:10] == eng.tokenizer.encode("12 + 7 = 1")
    # nothing recorded (no strategy): the text tokenized, after the same prompt
    other = make_ctx(eng, verifier=v)
    assert v.prompt_ids(other, eng, P, STEPS[:1])[: len(prompt)] == prompt


def test_the_store_keeps_tokens_only_for_a_verifier_that_reads_them():
    ctx = make_ctx(FakeEngine(), verifier=JudgeSteps(layout="template"))
    remember(ctx, "a", [1])
    assert covering(ctx, "a") is None
    with pytest.raises(ValueError):
        JudgeSteps(layout="nope")
    with pytest.raises(ValueError):
        JudgeSteps(question="{problem} is not a field")


LONG = ["We add the apples of both baskets together first: 12 + 7 = 19 apples in all.\n\n",
        "Then one apple is eaten, so we take it away: 19 - 1 = 18 apples are left.\n\n",
        "So the number of apples left is 18. The answer is \\boxed{18}"]


def _search(layout: str):
    from ttscale.strategies.beam_search import BeamSearch

    other = [s.replace("19", "20").replace("18", "19") for s in LONG]
    eng = FakeEngine(lambda u: [("".join(LONG), 0.6), ("".join(other), 0.4)])
    v = JudgeSteps(top_k=3, layout=layout)
    ctx = make_ctx(eng, verifier=v)
    run(BeamSearch(n=4, beam_width=2).solve(P, ctx))
    judge = [r for r in eng.requests if r.max_tokens == 1 and r.logprobs == 3]
    return eng, ctx, judge


def test_a_search_judged_over_the_policy_tokens_is_served_from_the_policy_cache():
    eng, ctx, judge = _search("policy_prefix")
    assert len(judge) >= 3
    prompt = ctx.prompt_ids(P)
    tok = eng.tokenizer
    question = 0  # judge tokens after the policy's prompt and path
    for r in judge:
        ids = list(r.prompt_token_ids)
        assert ids[: len(prompt)] == prompt
        text = tok.decode(ids)
        path = text[len(tok.decode(prompt)): text.rindex(USER_TAG)]
        hit = covering(ctx, path)
        assert hit is not None and hit[0] == path  # a path the policy generated, judged as it stands
        assert ids[: len(prompt) + len(hit[1])] == prompt + list(hit[1])
        question += len(ids) - len(prompt) - len(hit[1])
    # the judge computes its question (and at most a part block), never the prompt and path again
    new = ctx.ledger.usage
    computed = new.verifier_tokens - new.verifier_cached_tokens
    assert computed <= question + len(judge) * (eng.block_size + 1)
    _, old_ctx, old_judge = _search("template")
    old = old_ctx.ledger.usage
    assert len(old_judge) == len(judge) and old.verifier_calls == new.verifier_calls
    assert new.verifier_cached_tokens / new.verifier_tokens > old.verifier_cached_tokens / old.verifier_tokens
    assert computed < old.verifier_tokens - old.verifier_cached_tokens


def test_the_outcome_judge_lays_out_over_the_sample_tokens():
    eng = FakeEngine(completions=[("12 + 7 = 19\n\nThe answer is \\boxed{19}", 1.0)])
    v = LLMJudge(top_k=2)
    ctx = make_ctx(eng, verifier=v)
    from ttscale.strategies.sampling import sample_candidates

    cands = run(sample_candidates(P, ctx, 2, 1.0, 1.0, 64))
    run(v.score(P, cands, ctx))
    judge = eng.requests[-2:]
    prompt = ctx.prompt_ids(P)
    for r in judge:
        assert list(r.prompt_token_ids[: len(prompt)]) == prompt
        assert eng.tokenizer.decode(r.prompt_token_ids).endswith(USER_TAG + v.question + ASSISTANT_TAG)
    old = LLMJudge(top_k=2, layout="template")
    run(old.score(P, [Candidate(text="x")], make_ctx(eng, verifier=old)))
    assert "Proposed solution:\nx" in eng.tokenizer.decode(eng.requests[-1].prompt_token_ids)
