"""Best-of-Majority: the frequency threshold, top-k by reward, fallbacks and budgets."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.strategies.best_of_majority import BestOfMajority
from tests.helpers import make_ctx
from ttscale.budget import Budget
from ttscale.types import Candidate, Problem
from ttscale.verifier import Verifier

P = Problem(id="b1", question="q")


def pool(spec):
    """Candidates from [(cluster, score), ...]; the answer is the cluster's letter."""
    return [Candidate(text=f"{c}{i}", answer=c, cluster="ABCDE".index(c), score=s) for i, (c, s) in enumerate(spec)]


SPEC = [("A", 0.2), ("B", 0.9), ("A", 0.3), ("C", 0.99), ("A", 0.1), ("B", 0.5),
        ("D", 1.0), ("A", 0.2), ("B", 0.4), ("C", 0.1)]  # A 40%, B 30%, C 20%, D 10%


def answers(top):
    return [t["answer"] for t in top]


def test_threshold_then_top_k_by_reward():
    cands = pool(SPEC)
    top, classes = BestOfMajority(k=2, alpha=0.2).rank(cands)
    assert answers(top) == ["C", "B"]  # D has the best reward but only 10% of the samples
    assert [t["frequency"] for t in top] == [0.2, 0.3]
    assert [t["reward"] for t in top] == [0.99, 0.9]
    assert [t["index"] for t in top] == [3, 1]  # each class is represented by its best sample
    assert {c["answer"]: c["frequency"] for c in classes} == {"A": 0.4, "B": 0.3, "C": 0.2, "D": 0.1}
    assert answers(BestOfMajority(k=3, alpha=0.2).rank(cands)[0]) == ["C", "B", "A"]
    assert answers(BestOfMajority(k=10, alpha=0.0).rank(cands)[0]) == ["D", "C", "B", "A"]  # alpha=0: best-of-N
    assert answers(BestOfMajority(k=2, alpha=0.35).rank(cands)[0]) == ["A"]  # only A clears 35%


def test_mean_class_reward():
    top, _ = BestOfMajority(k=2, alpha=0.2, class_reward="mean").rank(pool(SPEC))
    assert answers(top) == ["B", "C"]
    assert top[0]["reward"] == pytest.approx((0.9 + 0.5 + 0.4) / 3)


def test_no_class_clears_alpha_falls_back_to_the_majority():
    top, _ = BestOfMajority(k=2, alpha=0.5).rank(pool(SPEC))
    assert answers(top) == ["A"]
    tie = pool([("A", 0.1), ("B", 0.7), ("C", 0.9), ("C", 0.2), ("B", 0.3)])
    assert answers(BestOfMajority(k=1, alpha=0.9).rank(tie)[0]) == ["C"]  # B and C tie on count: reward


def test_ties_unscored_and_answerless_samples():
    cands = pool([("A", 0.5), ("B", 0.5), ("B", None), ("A", None), ("C", None)])
    cands.append(Candidate(text="no answer", answer=None, cluster=None, score=1.0))
    top, classes = BestOfMajority(k=3, alpha=0.1).rank(cands)
    assert answers(top) == ["A", "B", "C"]  # equal reward and count: first seen first; unscored last
    assert top[2]["reward"] is None
    assert all(c["frequency"] == pytest.approx(n / 6) for c, n in zip(classes, (2, 2, 1)))


class AnswerReward(Verifier):
    def __init__(self, rewards):
        self.rewards = rewards

    async def score(self, problem, candidates, ctx):
        ctx.ledger.charge_verifier(calls=len(candidates))
        return [self.rewards.get(c.answer, 0.0) for c in candidates]


COMPLETIONS = [("\\boxed{1}", 0.45), ("\\boxed{2}", 0.3), ("\\boxed{3}", 0.2), ("oops \\boxed{4}", 0.05)]
REWARDS = {"1": 0.1, "2": 0.6, "3": 0.8, "4": 0.99}


@pytest.mark.parametrize("seed", range(5))
def test_end_to_end_matches_a_recount_of_the_samples(seed):
    ctx = make_ctx(FakeEngine(completions=COMPLETIONS), verifier=AnswerReward(REWARDS), seed=seed)
    res = asyncio.run(BestOfMajority(n=40, k=2, alpha=0.15, temperature=1.0).solve(P, ctx))
    assert len(res.candidates) == 40
    counts = Counter(c.answer for c in res.candidates)
    kept = [a for a in counts if counts[a] / 40 >= 0.15]
    want = sorted(kept, key=lambda a: (-REWARDS[a], -counts[a]))[:2]
    assert answers(res.stats["top_k"]) == want
    assert res.answer == want[0]
    assert res.candidates[res.selected].answer == res.answer
    assert all(c.score == REWARDS[c.answer] for c in res.candidates)
    assert ctx.ledger.usage.verifier_calls == 40


def test_budgets_are_respected():
    ctx = make_ctx(FakeEngine(completions=COMPLETIONS), verifier=AnswerReward(REWARDS),
                   budget=Budget(max_tokens=150, max_verifier_calls=5))
    res = asyncio.run(BestOfMajority(n=8, k=2, alpha=0.1, temperature=1.0, max_tokens=15).solve(P, ctx))
    assert ctx.ledger.usage.generated_tokens <= 150 and res.stats["samples"] == 8
    assert ctx.ledger.usage.verifier_calls <= 5
    assert sum(c.score is not None for c in res.candidates) == 5
    ctx = make_ctx(FakeEngine(completions=COMPLETIONS), verifier=AnswerReward(REWARDS), budget=Budget(max_tokens=3))
    res = asyncio.run(BestOfMajority(n=8).solve(P, ctx))  # fewer tokens than samples: nothing generated
    assert res.candidates == [] and res.answer is None and res.stats["top_k"] == []


def test_bad_hyperparameters_are_rejected():
    for kw in ({"n": 0}, {"k": 0}, {"alpha": 1.5}, {"class_reward": "median"}):
        with pytest.raises(ValueError):
            BestOfMajority(**kw)


# ---- Pass@k grading (Di et al. 2025 define BoM's success as any of its k answers being right)
PASS_K = [("\\boxed{1}", 0.5), ("\\boxed{2}", 0.25), ("\\boxed{3}", 0.25)]
PASS_K_REWARDS = {"1": 0.1, "2": 0.6, "3": 0.8}  # top-2 by reward: 3 then 2


@pytest.mark.parametrize("k, reference, correct", [(2, "2", True), (2, "3", True), (2, "1", False),
                                                   (1, "2", False), (1, "3", True)])
def test_k_answers_are_graded_as_pass_at_k(k, reference, correct):
    from ttscale.task import grade_submitted
    from tests.helpers import ToyTask
    from ttscale.types import Reference

    ctx = make_ctx(FakeEngine(completions=PASS_K), verifier=AnswerReward(PASS_K_REWARDS), seed=0)
    res = asyncio.run(BestOfMajority(n=40, k=k, alpha=0.05, temperature=1.0).solve(P, ctx))
    assert answers(res.stats["top_k"]) == ["3", "2"][:k] and res.answer == "3"
    assert [res.candidates[i].answer for i in res.stats["submitted"]] == ["3", "2"][:k]
    ToyTask().grade(P, Reference(answer=reference), res)
    grade_submitted(res)
    assert res.correct is correct
    if k > 1:  # the first answer's own grade is kept beside the Pass@k grade
        assert res.grading == {"first_answer_correct": reference == "3", "pass_at_k": k}
    else:
        assert res.grading == {}
    # pass_at_k=false: the first answer only, whatever k
    ctx = make_ctx(FakeEngine(completions=PASS_K), verifier=AnswerReward(PASS_K_REWARDS), seed=0)
    res = asyncio.run(BestOfMajority(n=40, k=k, alpha=0.05, temperature=1.0, pass_at_k=False).solve(P, ctx))
    ToyTask().grade(P, Reference(answer=reference), res)
    grade_submitted(res)
    assert res.correct is (reference == "3") and res.grading == {}


def test_pass_at_k_through_the_runner(tmp_path):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from ttscale.results import iter_records
    from ttscale.runner import run as run_config

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=[
            "logger=none", f"run.root={tmp_path}", "run.progress=false", "run.summary=false",
            "strategy=best_of_majority", "strategy.n=40", "strategy.k=2", "strategy.alpha=0.05",
            "strategy.temperature=1.0"])
    with open_dict(cfg):  # references q0..q3 -> "0", "1", "2", "3"
        cfg.task = OmegaConf.create({"_target_": "tests.helpers.ToyTask", "num_problems": 4, "modulo": 4})
        cfg.verifier = OmegaConf.create({"_target_": "tests.test_best_of_majority.AnswerReward",
                                         "rewards": PASS_K_REWARDS})
    metrics = run_config(cfg, engine=FakeEngine(completions=PASS_K))
    recs = {r["problem_id"]: r for r in iter_records(next(p for p in (tmp_path / "default").iterdir() if p.is_dir()))}
    assert {q: r["correct"] for q, r in recs.items()} == {"q0": False, "q1": False, "q2": True, "q3": True}
    assert recs["q2"]["grading"]["first_answer_correct"] is False  # its first answer, 3, is wrong
    assert metrics["accuracy"] == 0.5
