"""The compute ledger on the fake engine: what is counted, how FLOPs are charged, and that
budgets are enforced from the same numbers, per problem and per run."""

from __future__ import annotations

import asyncio
import json

import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.strategies.steps import Node, Sampling, SearchStats, StepConfig, expand_all
from tests.helpers import ToyTask, make_ctx
from ttscale.budget import Budget, BudgetExhausted, Ledger
from ttscale.engine import GenerationRequest
from ttscale.results import iter_records
from ttscale.types import Candidate, Problem, Usage
from ttscale.verifiers.judge import LLMJudge

P = 1_000  # policy parameters of the fake engine in these tests


def req(ids, n=1, max_tokens=64, **kw) -> GenerationRequest:
    return GenerationRequest(prompt_token_ids=list(ids), n=n, max_tokens=max_tokens, seed=1, **kw)


def run(coro):
    return asyncio.run(coro)


def test_one_request_is_charged_tokens_and_flops_of_the_documented_model():
    eng = FakeEngine(completions=[("abcdefghij", 1.0)], num_parameters=P, block_size=4)
    led = Ledger(eng)
    prompt = eng.tokenizer.apply_chat_template([{"role": "user", "content": "question"}])
    out = run(led.generate(req(prompt, n=3)))
    u = led.usage
    assert (u.requests, u.prompt_tokens, u.cached_prompt_tokens) == (1, len(prompt), 0)
    assert u.generated_tokens == out.generated_tokens == 30  # 3 samples x 10 tokens
    # the prompt is computed once for the n samples; every generated token is a decode pass
    assert u.prefill_flops == 2 * P * len(prompt)
    assert u.decode_flops == 2 * P * 30
    assert u.flops == u.prefill_flops + u.decode_flops and u.verifier_flops == 0


def test_prefix_cache_hits_are_reported_by_the_engine_and_not_charged():
    eng = FakeEngine(completions=[("abcdefghij", 1.0)], num_parameters=P, block_size=4)
    led = Ledger(eng)
    prompt = eng.tokenizer.apply_chat_template([{"role": "user", "content": "question"}])
    first = run(led.generate(req(prompt)))
    # the continuation (prompt + generated so far, as token IDs) is served from cache in whole blocks
    cont = prompt + first.completions[0].token_ids[:6]
    second = run(led.generate(req(cont)))
    cached = (len(cont) // 4) * 4
    assert second.cached_prompt_tokens == cached > len(prompt) - 4
    u = led.usage
    assert u.prompt_tokens == len(prompt) + len(cont)
    assert u.cached_prompt_tokens == cached
    assert u.computed_prompt_tokens == len(prompt) + len(cont) - cached
    assert u.prefill_flops == 2 * P * u.computed_prompt_tokens


def test_verifier_is_charged_with_its_own_parameter_count():
    led = Ledger(FakeEngine(num_parameters=P))
    led.charge_verifier(calls=2, tokens=100, cached_tokens=40, parameters=7e9)
    led.charge_verifier(calls=3)  # a checker: no model, no FLOPs
    u = led.usage
    assert (u.verifier_calls, u.verifier_tokens, u.verifier_cached_tokens) == (5, 100, 40)
    assert u.verifier_flops == 2 * 7e9 * 60
    assert u.flops == u.verifier_flops  # nothing generated


def test_a_judge_on_another_engine_charges_verifier_not_policy_compute():
    policy = FakeEngine(num_parameters=P)
    judge_engine = FakeEngine(completions=[("Y", 1.0)], num_parameters=5_000)
    judge = LLMJudge(top_k=2, backend=judge_engine)
    ctx = make_ctx(policy, verifier=judge)
    cands = [Candidate(text="\\boxed{1}"), Candidate(text="\\boxed{2}")]
    assert len(run(judge.score(Problem("q1", "q1"), cands, ctx))) == 2
    u = ctx.ledger.usage
    assert u.requests == 0 and u.prompt_tokens == 0 and u.generated_tokens == 0
    given = sum(len(r.prompt_token_ids) for r in judge_engine.requests) + 2  # + one generated token each
    assert u.verifier_calls == 2 and u.verifier_tokens == given
    assert u.verifier_flops == 2 * 5_000 * (given - u.verifier_cached_tokens)


def test_usage_adds_up_and_round_trips():
    a = Usage(requests=1, prompt_tokens=10, cached_prompt_tokens=4, generated_tokens=5, prefill_flops=12.0,
              decode_flops=10.0, verifier_calls=2, verifier_flops=3.0, wall_time=0.5)
    b = Usage(requests=2, prompt_tokens=1, generated_tokens=1, decode_flops=2.0, wall_time=0.25)
    s = a + b
    assert (s.requests, s.prompt_tokens, s.generated_tokens, s.wall_time) == (3, 11, 6, 0.75)
    assert s.flops == 12.0 + 12.0 + 3.0
    d = s.to_dict()
    assert d["computed_prompt_tokens"] == 7 and d["flops"] == s.flops
    assert Usage.from_dict(json.loads(json.dumps(d))) == s
    c = Usage()
    c += a
    assert c == a


# ---- budgets use the ledger's numbers ---------------------------------------------
def test_token_budget_clamps_a_request_and_refuses_one_with_nothing_left():
    eng = FakeEngine(completions=[("x" * 50, 1.0)], num_parameters=P)
    led = Ledger(eng, Budget(max_tokens=30))
    out = run(led.generate(req([1, 2, 3], n=2, max_tokens=40)))
    assert [len(c.token_ids) for c in out.completions] == [15, 15]  # 30 // 2 each
    assert led.usage.generated_tokens == 30 and led.remaining_tokens == 0 and led.exhausted
    with pytest.raises(BudgetExhausted):
        run(led.generate(req([1, 2, 3])))
    assert led.usage.requests == 1  # the refused request was not sent


@pytest.mark.parametrize("budget", [7, 20, 33])
def test_requests_in_flight_together_cannot_overrun_the_token_budget(budget):
    eng = FakeEngine(completions=[("y" * 40, 1.0)], num_parameters=P, delay=0.01)
    led = Ledger(eng, Budget(max_tokens=budget))

    async def together():
        return await asyncio.gather(*(led.generate(req([5, 6], max_tokens=16)) for _ in range(4)),
                                    return_exceptions=True)

    outs = run(together())
    got = [o for o in outs if not isinstance(o, BaseException)]
    assert eng.max_in_flight == len(got)  # every request the budget allowed was in flight at once
    assert all(isinstance(o, BudgetExhausted) for o in outs if isinstance(o, BaseException))
    assert led.usage.generated_tokens == sum(o.generated_tokens for o in got) == min(budget, 64)
    assert led.usage.requests == len(got)
    assert led.remaining_tokens == max(0, budget - 64)


def test_step_search_wave_respects_the_budget_and_charges_every_sequence():
    eng = FakeEngine(completions=[("one\n\ntwo\n\nthree", 1.0)], num_parameters=P, delay=0.005)
    ctx = make_ctx(eng, budget=Budget(max_tokens=12))
    prompt = ctx.prompt_ids(Problem("q0", "q0"))
    root = Node.root()
    stats = SearchStats()
    kids = run(expand_all(ctx, prompt, [(root, 3), (root, 2)], StepConfig(), Sampling(), stats))
    u = ctx.ledger.usage
    assert u.generated_tokens <= 12
    assert u.generated_tokens == sum(n.num_tokens for ks in kids for n in ks)
    # 12 // 5 = 2 tokens each in the first wave (2 requests), then the 2 tokens left go to
    # the first two cut steps (2 requests); no step reached its delimiter: all cut by the budget
    assert u.requests == len(eng.requests) == 4
    assert stats.waves == [2, 2] and stats.budget_exhausted
    assert [n.num_tokens for ks in kids for n in ks] == [3, 3, 2, 2, 2]
    assert all(n.finished and n.finish_reason == "budget" for ks in kids for n in ks)


def test_verifier_call_budget_is_taken_from_the_ledger():
    from ttscale.strategies.sampling import score_candidates
    from ttscale.verifiers.arithmetic_checker import ArithmeticChecker

    ctx = make_ctx(FakeEngine(), verifier=ArithmeticChecker(), budget=Budget(max_verifier_calls=3))
    cands = [Candidate(text=f"1 + 1 = {i}", steps=[f"1 + 1 = {i}"]) for i in range(5)]
    run(score_candidates(Problem("q0", "q0"), ctx, cands))
    assert ctx.ledger.usage.verifier_calls == 3
    assert [c.score is not None for c in cands] == [True] * 3 + [False] * 2
    assert ctx.ledger.verifier_exhausted and ctx.ledger.verifier_allowance(4) == 0


# ---- per problem and per run, through the runner ---------------------------------
def test_runner_records_usage_per_problem_and_totals_per_run(tmp_path):
    from tests.test_runner import make_cfg

    def responder(prompt):
        return [(f"a step\n\nanswer \\boxed{{{int(prompt[1:]) % 3}}}", 1.0)]

    eng = FakeEngine(responder, num_parameters=P, block_size=4, delay=0.001)
    cfg = make_cfg(tmp_path, "strategy=particle_filter", "strategy.n=3", "verifier=arithmetic_checker", problems=5)
    m = run_cfg(cfg, eng)
    recs = {r["problem_id"]: r for r in iter_records(next((tmp_path / "default").iterdir()))}
    assert len(recs) == 5
    # every engine request of a problem is in that problem's usage, and nowhere else
    by_problem: dict[str, list] = {}
    for r in eng.requests:
        user = eng.tokenizer.decode(r.prompt_token_ids).split("<|user|>\n")[1].split("\n")[0]
        by_problem.setdefault(user, []).append(r)
    for pid, rec in recs.items():
        u = rec["usage"]
        reqs = by_problem[pid]
        assert u["requests"] == len(reqs)
        assert u["prompt_tokens"] == sum(len(r.prompt_token_ids) for r in reqs)
        assert 0 < u["cached_prompt_tokens"] < u["prompt_tokens"]  # step continuations hit the cache
        gen = sum(c["num_tokens"] for c in rec["candidates"])
        assert u["generated_tokens"] >= rec["stats"]["generated_tokens"] > 0
        assert u["prefill_flops"] == 2 * P * (u["prompt_tokens"] - u["cached_prompt_tokens"])
        assert u["decode_flops"] == 2 * P * u["generated_tokens"]
        assert u["verifier_calls"] > 0 and u["verifier_flops"] == 0  # the checker has no model
        assert u["wall_time"] > 0 and gen > 0
    for key, stem in [("generated_tokens", "tokens/generated"), ("cached_prompt_tokens", "tokens/cached_prompt"),
                      ("prompt_tokens", "tokens/prompt"), ("verifier_calls", "verifier/calls"),
                      ("prefill_flops", "flops/prefill"), ("wall_time", "time/wall")]:
        assert m[f"{stem}_total"] == pytest.approx(sum(r["usage"][key] for r in recs.values()))
    assert m["flops/all_total"] == pytest.approx(sum(r["usage"]["flops"] for r in recs.values()))
    assert m["run/wall_time"] > 0


def test_runner_enforces_the_budget_per_problem(tmp_path):
    from tests.test_runner import make_cfg

    eng = FakeEngine(completions=[("z" * 40 + "\\boxed{1}", 1.0)], num_parameters=P)
    cfg = make_cfg(tmp_path, "strategy.n=4", "sampling.max_tokens=64", "budget=tokens", "budget.max_tokens=100",
                   problems=3)
    run_cfg(cfg, eng)
    recs = list(iter_records(next((tmp_path / "default").iterdir())))
    assert len(recs) == 3
    for r in recs:  # 4 samples of 49 tokens wanted; 100 // 64 = 1 fits in full, then 51 < 64 left
        assert r["usage"]["generated_tokens"] == 49
        assert r["stats"]["samples"] == 1 and r["stats"]["samples_budget_stopped"]
        assert [c["num_tokens"] for c in r["candidates"]] == [49]


def run_cfg(cfg, eng):
    from ttscale.runner import run as run_config

    return run_config(cfg, engine=eng)


def test_ledgers_are_per_problem():
    eng = FakeEngine(completions=[("abc", 1.0)], num_parameters=P)
    a, b = make_ctx(eng, task=ToyTask()), make_ctx(eng, task=ToyTask())
    run(a.generate(req([1, 2])))
    assert a.ledger.usage.generated_tokens == 3 and b.ledger.usage == Usage()
