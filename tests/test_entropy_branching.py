"""Entropy-aware branching (EAGer) on the fake engine: forks exactly where the top-k
entropy computed from the completion trie exceeds theta, never more than M sequences,
budget reallocation across concurrent problems, budgets."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.strategies.entropy_branching import BudgetPool, EntropyBranching
from tests.helpers import make_ctx
from ttscale.budget import Budget
from ttscale.engine import entropy_from_logprobs
from ttscale.types import Problem
from ttscale.verifier import Verifier

P = Problem(id="e1", question="branchy")
TOP_K = 5


def run(coro):
    return asyncio.run(coro)


def trie_entropy(engine: FakeEngine, user: str, generated: str, k: int = TOP_K) -> float:
    """H of the renormalised top-k next-token distribution after `generated`, from the trie."""
    dist = engine.next_token_distribution(user, generated)
    top = sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return entropy_from_logprobs({t: math.log(p) for t, p in top})


def own_positions(cand):
    start = cand.extra["fork_at"] or 0
    return range(start, cand.num_tokens)


# Divergence points: after "aa" {X .6, W .4} (H .673); after "aaXbb" {Y 2/3, Z 1/3} (H .637);
# after "aaWd" {d .5, e .5} (H .693). Everything else is certain (H = 0).
BRANCHY = [("aaXbbYcc\\boxed{1}", 0.4), ("aaXbbZcc\\boxed{2}", 0.2), ("aaWdd\\boxed{1}", 0.2),
           ("aaWde\\boxed{3}", 0.2)]


@pytest.mark.parametrize("fork", ["top2", "resample"])
@pytest.mark.parametrize("chunk", [1, 3, 64])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_forks_exactly_where_entropy_exceeds_theta(chunk, seed, fork):
    eng = FakeEngine(completions=BRANCHY)
    theta = 0.5
    strat = EntropyBranching(M=50, theta=theta, top_k=TOP_K, chunk_tokens=chunk, temperature=1.0, adapt=False,
                             fork=fork, dynamic_entropy=False)
    ctx = make_ctx(eng, seed=seed)
    res = run(strat.solve(P, ctx))
    cands = {c.extra["seq"]: c for c in res.candidates}
    forks = res.stats["forks"]
    # every fork is at a position whose trie entropy (given the parent's prefix) exceeds theta
    for f in forks:
        parent = cands[f["parent"]]
        h = trie_entropy(eng, P.question, parent.text[: f["pos"]])
        assert h > theta
        assert f["entropy"] == pytest.approx(h)
        child = cands[f["child"]]
        assert child.text[: f["pos"]] == parent.text[: f["pos"]]  # the prefix is shared
        assert child.extra["fork_at"] == f["pos"] and child.extra["parent"] == f["parent"]
    # every high-entropy position a sequence generated itself forked (the cap was never hit)
    forked = {(f["parent"], f["pos"]) for f in forks}
    for sid, c in cands.items():
        for p in own_positions(c):
            if p == c.extra["fork_at"]:
                continue
            if trie_entropy(eng, P.question, c.text[:p]) > theta:
                assert (sid, p) in forked, (c.text, p)
            else:
                assert (sid, p) not in forked
    assert res.stats["sequences"] == 1 + len(forks) == len(res.candidates)
    assert res.stats["denied_forks"] == 0 and not res.stats["hit_cap"]
    assert all(c.finish_reason == "stop" for c in res.candidates)


def test_one_fork_per_high_entropy_position_and_the_cap():
    # ten equiprobable answers after a shared prefix: H = ln 10 at one position only. The
    # root forks there once (one extra branch per high-entropy token); the branch does not
    # fork again at its own first token, so two sequences at most, whatever M.
    eng = FakeEngine(completions=[(f"x = \\boxed{{{i}}}", 0.1) for i in range(10)])
    for M, seqs, denied in ((1, 1, 1), (2, 2, 0), (5, 2, 0)):
        res = run(EntropyBranching(M=M, theta=1.0, top_k=10, chunk_tokens=4, temperature=1.0, adapt=False)
                  .solve(P, make_ctx(eng)))
        assert res.stats["sequences"] == len(res.candidates) == seqs
        assert res.stats["denied_forks"] == denied
        assert res.stats["hit_cap"] == (seqs == M)
        assert [f["pos"] for f in res.stats["forks"]] == [len("x = \\boxed{")] * (seqs - 1)
        assert res.stats["forks"][0]["entropy"] == pytest.approx(math.log(10)) if seqs > 1 else True


def test_many_high_entropy_positions_beyond_the_cap():
    text = "".join(f"{a}{b}" for a, b in zip("abcdefgh", "ABCDEFGH"))
    comps = [(text[:i] + alt + "\\boxed{1}", 1.0) for i in range(0, 16, 2) for alt in ("!", "?")]
    eng = FakeEngine(completions=comps + [(text + "\\boxed{2}", 1.0)])
    res = run(EntropyBranching(M=4, theta=0.3, top_k=TOP_K, chunk_tokens=5, temperature=1.0, adapt=False)
              .solve(P, make_ctx(eng)))
    assert res.stats["sequences"] == 4 and res.stats["hit_cap"]
    assert res.stats["denied_forks"] > 0
    for f in res.stats["forks"]:
        parent = next(c for c in res.candidates if c.extra["seq"] == f["parent"])
        assert trie_entropy(eng, P.question, parent.text[: f["pos"]]) > 0.3


def test_a_certain_model_generates_one_sequence_and_reports_the_saving():
    eng = FakeEngine(completions=[("12 + 7 = 19\\boxed{19}", 1.0)])
    strat = EntropyBranching(M=8, theta=0.1, top_k=TOP_K, chunk_tokens=8, temperature=1.0)
    ctx = make_ctx(eng)
    res = run(strat.solve(P, ctx))
    n = len("12 + 7 = 19\\boxed{19}")
    assert res.stats["sequences"] == 1 and res.stats["forks"] == []
    assert res.stats["generated_tokens"] == ctx.ledger.usage.generated_tokens == n
    assert res.stats["full_parallel_tokens"] == 8 * n
    assert res.stats["tokens_saved"] == 7 * n
    assert res.stats["pool_deposited"] == 7 and strat.pool.available == 7
    assert res.answer == "19"
    # chunks continue from the token IDs generated so far
    prompt = ctx.prompt_ids(P)
    assert [list(r.prompt_token_ids) for r in eng.requests] == [
        prompt + eng.tokenizer.encode("12 + 7 = 19\\boxed{19}"[:i]) for i in range(0, n, 8)]


def test_prefix_sharing_is_counted_exactly():
    eng = FakeEngine(completions=BRANCHY)
    res = run(EntropyBranching(M=50, theta=0.5, top_k=TOP_K, chunk_tokens=4, temperature=1.0, adapt=False)
              .solve(P, make_ctx(eng, seed=3)))
    own = sum(c.extra["own_tokens"] for c in res.candidates)
    assert own == res.stats["generated_tokens"]
    # every token of a sequence is shared with its parent, generated and kept, or forced (top2 fork)
    kept = own - res.stats["discarded_tokens"]
    assert res.stats["prefix_shared_tokens"] == sum(c.num_tokens for c in res.candidates) - kept - res.stats["forced_tokens"]
    assert res.stats["prefix_shared_tokens"] == sum(f["pos"] for f in res.stats["forks"])


def responder(question):
    if question.startswith("easy"):
        return [("7 + 1 = 8\\boxed{8}", 1.0)]
    return [(f"hmm {a}{b} \\boxed{{{a}}}", 1.0) for a in "0123456789" for b in "xyz"]


def test_budget_pool_moves_sequences_from_easy_to_hard_problems_concurrently():
    M = 4
    eng = FakeEngine(responder, delay=0.001)
    # a fixed threshold (dynamic_entropy=False) so that the hard problems fork at every split and hit M
    strat = EntropyBranching(M=M, theta=1.0, top_k=10, chunk_tokens=64, temperature=1.0, adapt_max_extra=5,
                             dynamic_entropy=False)
    problems = [Problem(id=f"easy{i}", question=f"easy{i}") for i in range(3)] + [
        Problem(id="hard0", question="hard0"), Problem(id="hard1", question="hard1")]
    ctxs = [make_ctx(eng, seed=i) for i in range(len(problems))]

    async def main():
        return await asyncio.gather(*(strat.solve(p, c) for p, c in zip(problems, ctxs)))

    results = run(main())
    easy, hard = results[:3], results[3:]
    assert all(r.stats["sequences"] == 1 and r.stats["pool_deposited"] == M - 1 for r in easy)
    assert all(r.stats["hit_cap"] for r in hard)
    # easy problems finish in one round, hard ones branch for several: the deposits are in
    # before the hard problems draw; the first draws 5 (its cap), the second the rest (4)
    assert [r.stats["pool_drawn"] for r in hard] == [5, 4]
    assert [r.stats["extra_sequences"] for r in hard] == [5, 4]
    assert [len(r.candidates) for r in hard] == [M + 5, M + 4]
    pool = strat.pool.snapshot()
    assert pool == {"available": 0, "deposited": 9, "drawn": 9, "donors": 3, "takers": 2}
    # never more sequences in total than full parallel sampling would have used
    assert sum(len(r.candidates) for r in results) <= M * len(problems)
    # each problem's ledger paid for its own sequences only
    for r, c in zip(results, ctxs):
        assert sum(x.extra["own_tokens"] for x in r.candidates) == c.ledger.usage.generated_tokens


def test_budget_pool_is_atomic_bookkeeping():
    pool = BudgetPool()
    pool.deposit(3)
    pool.deposit(0)
    assert pool.draw(5) == 3 and pool.draw(1) == 0
    assert pool.snapshot() == {"available": 0, "deposited": 3, "drawn": 3, "donors": 1, "takers": 1}


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 9, 23, 60])
def test_token_budget_is_never_exceeded(max_tokens):
    eng = FakeEngine(completions=BRANCHY)
    ctx = make_ctx(eng, budget=Budget(max_tokens=max_tokens), seed=1)
    strat = EntropyBranching(M=6, theta=0.5, top_k=TOP_K, chunk_tokens=3, temperature=1.0)
    res = run(strat.solve(P, ctx))
    assert ctx.ledger.usage.generated_tokens <= max_tokens
    assert len(res.candidates) == res.stats["sequences"] + res.stats["extra_sequences"] >= 1
    if res.stats["budget_exhausted"]:
        assert res.stats["pool_deposited"] == 0  # a problem cut by its budget donates nothing


class AnswerScore(Verifier):
    async def score(self, problem, candidates, ctx):
        ctx.ledger.charge_verifier(calls=len(candidates))
        return [{"1": 0.1, "2": 0.9, "3": 0.5}.get(c.answer, 0.0) for c in candidates]


def test_selection_by_verifier():
    eng = FakeEngine(completions=BRANCHY)
    strat = EntropyBranching(M=50, theta=0.5, top_k=TOP_K, temperature=1.0, adapt=False, selection="argmax")
    assert strat.requires_verifier
    for seed in range(6):
        ctx = make_ctx(eng, verifier=AnswerScore(), seed=seed)
        res = run(strat.solve(P, ctx))
        best = max(c.score for c in res.candidates)
        assert res.candidates[res.selected].score == best
        assert ctx.ledger.usage.verifier_calls == len(res.candidates)


def test_bad_hyperparameters_are_rejected():
    for kw in ({"M": 0}, {"top_k": 1}, {"chunk_tokens": 0}, {"selection": "vote"}, {"fork": "top3"},
               {"adapt_generation": "x"}, {"entropy_percentile": 101}, {"max_tokens_without_branch": 0}):
        with pytest.raises(ValueError):
            EntropyBranching(**kw)


def test_through_the_runner_problems_share_one_pool(tmp_path):
    """Hydra config -> runner -> records: the easy problems' unused sequences go to the hard ones."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from ttscale.results import iter_records
    from ttscale.runner import run as run_config

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=[
            "logger=none", f"run.root={tmp_path}", "run.progress=false", "run.summary=false",
            "strategy=entropy_branching", "strategy.M=4", "strategy.theta=1.0", "strategy.top_k=10",
            "strategy.chunk_tokens=64", "strategy.temperature=1.0", "strategy.dynamic_entropy=false"])
    with open_dict(cfg):
        cfg.task = OmegaConf.create({"_target_": "tests.helpers.ToyTask", "num_problems": 4, "modulo": 3})

    def by_question(prompt):  # q0, q2: certain (easy); q1, q3: ten-way splits at every answer (hard)
        i = int(prompt.strip()[1:])
        return responder("easy" if i % 2 == 0 else "hard")

    metrics = run_config(cfg, engine=FakeEngine(by_question, delay=0.001))
    recs = {r["problem_id"]: r for r in iter_records(next(p for p in (tmp_path / "default").iterdir() if p.is_dir()))}
    assert sorted(recs) == ["q0", "q1", "q2", "q3"] and metrics["problems"] == 4
    easy, hard = [recs["q0"], recs["q2"]], [recs["q1"], recs["q3"]]
    assert [r["stats"]["pool_deposited"] for r in easy] == [3, 3]
    assert all(r["stats"]["hit_cap"] for r in hard)
    assert sum(r["stats"]["pool_drawn"] for r in hard) == 6
    assert sum(len(r["candidates"]) for r in recs.values()) <= 4 * 4
    for r in recs.values():
        assert r["usage"]["generated_tokens"] == sum(c["extra"]["own_tokens"] for c in r["candidates"])


# ---- the reference's rules (Omega-Reasoning/EAGer eager/entropy_generator_vllm.py) ------------
THREE_WAY = [("abX\\boxed{1}", 0.5), ("abY\\boxed{2}", 0.3), ("abZ\\boxed{3}", 0.2)]


@pytest.mark.parametrize("chunk", [1, 64])
def test_top2_fork_gives_the_parent_the_top1_token_and_the_branch_the_top2(chunk):
    # after "ab" the model says X .5, Y .3, Z .2 (H = 1.03 > theta): whatever the parent
    # sampled there, it goes on with X and the branch with Y; Z never appears
    eng = FakeEngine(completions=THREE_WAY)
    cut_back = 0
    for seed in range(12):
        res = run(EntropyBranching(M=8, theta=0.5, top_k=TOP_K, chunk_tokens=chunk, temperature=1.0, adapt=False)
                  .solve(P, make_ctx(eng, seed=seed)))
        assert res.stats["fork_rule"] == "top2"
        (f,) = res.stats["forks"]
        cands = {c.extra["seq"]: c for c in res.candidates}
        assert f["pos"] == 2 and cands[f["parent"]].text == "abX\\boxed{1}"
        assert cands[f["child"]].text == "abY\\boxed{2}"
        assert sorted(c.answer for c in res.candidates) == ["1", "2"]
        cut_back += res.stats["discarded_tokens"] > 0
    assert cut_back > 0  # some seeds sampled Y or Z there and were cut back to X


def test_resample_fork_is_the_named_alternative():
    eng = FakeEngine(completions=THREE_WAY)
    answers = set()
    for seed in range(12):
        res = run(EntropyBranching(M=8, theta=0.5, top_k=TOP_K, chunk_tokens=64, temperature=1.0, adapt=False,
                                   fork="resample").solve(P, make_ctx(eng, seed=seed)))
        answers |= {c.answer for c in res.candidates}
        assert res.stats["forced_tokens"] == res.stats["discarded_tokens"] == 0
    assert "3" in answers  # the branch re-samples the position: Z is possible


# position 0: four equally likely letters (H = ln 4); position 2: two (H = ln 2) or eight
# (H = ln 5 over the renormalised top-5)
def two_splits(second: str):
    return [(f"{a}-{b}\\boxed{{{a}{b}}}", 1.0) for a in "abcd" for b in second]


@pytest.mark.parametrize("chunk", [1, 64])
def test_dynamic_threshold_is_max_of_theta_and_the_99th_percentile_so_far(chunk):
    theta = 0.5
    eng = FakeEngine(completions=two_splits("xy"))
    kw = {"M": 16, "theta": theta, "top_k": TOP_K, "chunk_tokens": chunk, "temperature": 1.0, "adapt": False}
    dyn = run(EntropyBranching(**kw).solve(P, make_ctx(eng, seed=0)))
    fixed = run(EntropyBranching(**kw, dynamic_entropy=False).solve(P, make_ctx(eng, seed=0)))
    # the first fork (nothing seen before it) uses theta itself
    assert dyn.stats["forks"][0]["pos"] == 0 and dyn.stats["forks"][0]["threshold"] == theta
    # ln 2 > theta, but below the 99th percentile of the entropies seen before (ln 4 twice, 0s)
    assert [f["pos"] for f in dyn.stats["forks"]] == [0] and dyn.stats["sequences"] == 2
    assert [f["pos"] for f in fixed.stats["forks"]] == [0, 2, 2] and fixed.stats["sequences"] == 4
    # an eight-way split at position 2 (ln 5 over the top-5) is above it: it forks, at threshold ln 4
    eng8 = FakeEngine(completions=two_splits("stuvwxyz"))
    res = run(EntropyBranching(**kw).solve(P, make_ctx(eng8, seed=0)))
    later = [f for f in res.stats["forks"] if f["pos"] == 2]
    assert later and all(f["threshold"] == pytest.approx(math.log(4)) for f in later)
    assert all(f["entropy"] == pytest.approx(math.log(TOP_K)) for f in later)  # top-5 of 8 equal


def test_adapt_draws_up_to_3M_and_generates_them_by_branching():
    M = 2
    strat = EntropyBranching(M=M, theta=1.0, top_k=10, chunk_tokens=64, temperature=1.0, dynamic_entropy=False)
    assert strat.adapt_max_extra == 3 * M and strat.adapt_generation == "branching"
    strat.pool.deposit(100)
    eng = FakeEngine(responder)
    ctx = make_ctx(eng, seed=0)
    res = run(strat.solve(Problem(id="hard0", question="hard0"), ctx))
    assert res.stats["hit_cap"] and res.stats["pool_drawn"] == 3 * M == res.stats["extra_sequences"]
    extra = [c for c in res.candidates if c.extra["seq"] >= res.stats["sequences"]]
    assert len(extra) == 3 * M and res.stats["extra_runs"] >= 1
    assert any(c.extra["parent"] is not None for c in extra)  # branches, not plain samples
    assert all(r.logprobs == 10 for r in eng.requests)  # every request read the top-K entropies
    assert sum(c.extra["own_tokens"] for c in res.candidates) == ctx.ledger.usage.generated_tokens
    # the earlier rule, one override away: plain samples, at most what is asked
    old = EntropyBranching(M=M, theta=1.0, top_k=10, chunk_tokens=64, temperature=1.0, dynamic_entropy=False,
                           adapt_generation="sampling", adapt_max_extra=M)
    old.pool.deposit(100)
    res = run(old.solve(Problem(id="hard0", question="hard0"), make_ctx(FakeEngine(responder), seed=0)))
    extra = [c for c in res.candidates if c.extra["seq"] >= res.stats["sequences"]]
    assert len(extra) == M and all(c.extra["parent"] is None for c in extra)


def test_config_defaults_are_the_references():
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=["strategy=entropy_branching", "logger=none"])
    s = instantiate(cfg.strategy)
    assert (s.fork, s.dynamic_entropy, s.entropy_percentile, s.theta, s.top_k) == ("top2", True, 99.0, 2.5, 20)
    assert s.adapt and s.adapt_generation == "branching" and s.adapt_max_extra == 3 * s.M


def test_dynamic_threshold_numbers():
    from ttscale.strategies.eager_rules import dynamic_threshold

    nan = float("nan")
    hist = [[0.1, 2.0, 0.3, 5.0], [nan, nan, 1.5]]  # the second: a branch forked at position 2
    assert dynamic_threshold(hist, 0, 0.7) == 0.7  # nothing seen yet: theta
    assert dynamic_threshold(hist, 2, 0.7) == pytest.approx(max(0.7, float(np.percentile([0.1, 2.0], 99))))
    assert dynamic_threshold(hist, 3, 0.7) == pytest.approx(float(np.percentile([0.1, 2.0, 0.3, 1.5], 99)))
    assert dynamic_threshold(hist, 3, 9.0) == 9.0  # never below theta


def test_branching_ends_after_max_tokens_without_branch():
    # ten certain tokens, then a two-way split at position 10
    eng = FakeEngine(completions=[("aaaaaaaaaaX\\boxed{1}", 0.5), ("aaaaaaaaaaY\\boxed{2}", 0.5)])
    kw = {"M": 8, "theta": 0.5, "top_k": TOP_K, "chunk_tokens": 4, "temperature": 1.0, "adapt": False}
    # as the reference: at position p, p tokens have passed since the start (or p - f - 1 since
    # a fork at f); branching ends when that reaches the gap
    for gap, forks in ((5, []), (10, []), (11, [10]), (None, [10])):
        res = run(EntropyBranching(**kw, max_tokens_without_branch=gap).solve(P, make_ctx(eng, seed=0)))
        assert [f["pos"] for f in res.stats["forks"]] == forks
        assert res.stats["branching_ended"] == (not forks)
    assert EntropyBranching().max_tokens_without_branch == 1000
