"""The compute contract (DESIGN §3b, issue 12): every strategy's trajectory may use a
best-of-N sample's token allowance, step caps do not bind before it by default, budgets
(tokens and verifier calls) hold exactly, and under a token budget no sample of a
parallel strategy is cut by the budget. Strategies are built from the shipped configs
(`conf/strategy/*.yaml`), so a default that starves a strategy fails here."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ttscale.backends.fake import FakeEngine
from ttscale.strategies.steps import Node, StepConfig, split_steps
from tests.conftest import shared_dataset
from tests.helpers import make_ctx
from tests.search_helpers import PROBLEM, MarkerPRM
from ttscale.budget import Budget
from ttscale.types import FINISH_REASONS, Candidate

CONF = str(Path(__file__).resolve().parents[1] / "conf")
STRATEGIES = sorted(p.stem for p in Path(CONF, "strategy").glob("*.yaml"))
PARALLEL = {"best_of_n", "majority_vote", "weighted_majority", "best_of_majority", "behavior_vote", "gen_select",
            "thinking_budget"}
STEP_SEARCH = {"particle_filter", "entropic_particle_filter", "beam_search", "dvts", "a_star", "mcts"}


@functools.lru_cache(maxsize=None)
def _strategy_cfg(name: str, overrides: tuple[str, ...]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[f"strategy={name}", "verifier=arithmetic_checker", *overrides])
    return OmegaConf.to_container(cfg.strategy, resolve=True)


def from_conf(name: str, *overrides: str):
    """A fresh strategy instance from the shipped config (plus overrides)."""
    return instantiate(OmegaConf.create(_strategy_cfg(name, tuple(overrides))))


def solve(strategy, ctx, problem=PROBLEM):
    return asyncio.run(strategy.solve(problem, ctx))


# ---- a long solution is answered by every strategy under the default caps --------------
# 14 paragraphs: several longer than one request's 96 tokens (continued), one whose
# delimiter falls across a request boundary (95 characters + "\n\n": the first request
# ends on the first "\n"), 1,400-odd tokens in all: more than the old 12 x 96 cap.
PARAGRAPHS = [
    f"Step {i}: " + ("we add the next term to the running total and check it " * 4)[: 70 + 19 * (i % 5)]
    for i in range(1, 14)
]
PARAGRAPHS[2] = "Step 3: " + "x" * (95 - len("Step 3: "))
STEPS = [p + "\n\n" for p in PARAGRAPHS] + ["So the answer is \\boxed{42}"]
LONG = "".join(STEPS)
MATH500 = ("sampling.max_tokens=2048",)  # the allowance of conf/experiment/math500_scaling.yaml


def progress_prm() -> MarkerPRM:
    """A PRM that likes each step a little more than the one before (as a PRM does along a
    sound solution), so A*'s best-first order goes deeper instead of breadth-first."""
    return MarkerPRM({**{f"Step {i}:": 0.5 + 0.03 * i for i in range(1, 14)}, "answer": 0.99})


def test_the_long_solution_is_what_the_test_says():
    assert len(STEPS) == 14 and len(split_steps(LONG, "\n\n")) == 14
    assert 12 * 96 < len(LONG) < 2048
    assert sum(len(s) > 96 for s in STEPS) >= 3 and len(STEPS[2]) == 97


@pytest.mark.parametrize("name", ["best_of_n", "particle_filter", "entropic_particle_filter", "beam_search",
                                  "dvts", "a_star", "mcts", "ab_mcts_a", "pdr", "sequential_refinement",
                                  "gen_select"])
def test_a_14_step_solution_is_answered_under_default_caps(name):
    engine = FakeEngine(completions=[(LONG, 1.0)])
    ctx = make_ctx(engine, verifier=progress_prm())
    result = solve(from_conf(name, *MATH500), ctx)
    assert result.answer == "42", (name, result.stats)
    chosen = result.candidates[result.selected]
    assert chosen.text == LONG and chosen.finish_reason == "stop" and chosen.num_tokens == len(LONG)
    if name in STEP_SEARCH:  # one step per paragraph: a cut request is a continuation, not a step
        assert chosen.steps == STEPS


def test_the_last_iteration_runs_to_the_end():
    engine = FakeEngine(completions=[(LONG, 1.0)])
    ctx = make_ctx(engine, verifier=progress_prm())
    result = solve(from_conf("particle_filter", *MATH500, "strategy.step.max_steps=5"), ctx)
    assert result.answer == "42" and result.stats["steps"] == 5
    chosen = result.candidates[result.selected]
    assert chosen.finish_reason == "stop" and chosen.steps == STEPS  # the last step split on the delimiter


def test_the_older_caps_are_named_options_and_starve_the_search():
    engine = FakeEngine(completions=[(LONG, 1.0)])
    ctx = make_ctx(engine, verifier=progress_prm())
    old = ("strategy.step.max_steps=12", "strategy.step.on_cut=new_step", "strategy.step.last_step=capped")
    result = solve(from_conf("particle_filter", *MATH500, *old), ctx)
    assert result.answer is None
    assert all(c.finish_reason == "step_cap" and c.num_tokens <= 12 * 96 for c in result.candidates)


def test_bad_step_options_are_rejected():
    with pytest.raises(ValueError, match="strategy.step.on_cut"):
        StepConfig(on_cut="split")
    with pytest.raises(ValueError, match="strategy.step.last_step"):
        StepConfig(last_step="never")


def test_finish_reasons_are_one_vocabulary_and_old_records_are_mapped():
    old = {"eos": "stop", "max_steps": "step_cap", "max_tokens": "length", "unfinished": "budget", "budget": "budget"}
    for before, after in old.items():
        assert Candidate.from_dict({"text": "", "finish_reason": before}).finish_reason == after
    assert set(old.values()) <= set(FINISH_REASONS)


# ---- every budget holds, over a grid, for every shipped strategy ------------------------
def arithmetic_engine(task):
    """Three three-step solutions per problem, one right (as in the search tests)."""
    solutions = {}
    for problem, ref in task.load():
        a, b = ref.data["operands"]
        c = int(ref.answer)
        solutions[task.messages(problem)[-1]["content"]] = [
            (f"First, {a} + {b} = {v}.\n\nSo the total is {v}.\n\nThe answer is \\boxed{{{v}}}", p)
            for v, p in ((c, 0.25), (c + 1, 0.4), (c - 2, 0.35))
        ]
    # a prompt that holds the question (a refinement's notes after it, a selection prompt
    # around it) is answered alike
    return FakeEngine(lambda user: solutions[max((q for q in solutions if q in user), key=len)])


TOKEN_BUDGETS = (None, 30, 64, 150, 400, 1000)
CALL_BUDGETS = (None, 1, 2, 5, 13)
ALLOWANCE = 64  # sampling.max_tokens of the grid: a sample is 55-60 tokens


def check_usage(name, result, ctx, budget, allowance):
    u = ctx.ledger.usage
    where = (name, budget)
    if budget.max_tokens is not None:
        assert u.generated_tokens <= budget.max_tokens, where
    if budget.max_verifier_calls is not None:
        assert u.verifier_calls <= budget.max_verifier_calls, where
    for c in result.candidates:
        assert c.finish_reason in FINISH_REASONS, (where, c.finish_reason)
    if name in PARALLEL:  # complete samples only, however tight the token budget
        assert result.stats["samples"] == len(result.candidates)
        for c in result.candidates:
            assert c.finish_reason == "stop" or (c.finish_reason == "length" and c.num_tokens == allowance), where


@pytest.mark.parametrize("name", [s for s in STRATEGIES if s != "behavior_vote"] + ["entropy_branching:weighted"])
def test_every_budget_holds_over_a_grid(name):
    from ttscale.tasks.arithmetic import ArithmeticTask
    from ttscale.verifiers.arithmetic_checker import ArithmeticChecker

    task = ArithmeticTask(num_problems=4, phrasing="plain", operators=("+",), seed=3)
    engine = arithmetic_engine(task)
    strategy, _, variant = name.partition(":")
    extra = ("strategy.selection=weighted_vote",) if variant else ()
    tight = 0
    for tokens in TOKEN_BUDGETS:
        for calls in CALL_BUDGETS:
            budget = Budget(max_tokens=tokens, max_verifier_calls=calls)
            for seed, (problem, _) in enumerate(task.load()):
                ctx = make_ctx(engine, task=task, verifier=ArithmeticChecker(), budget=budget, seed=seed)
                result = solve(from_conf(strategy, f"sampling.max_tokens={ALLOWANCE}", *extra), ctx, problem)
                check_usage(name, result, ctx, budget, ALLOWANCE)
                u = ctx.ledger.usage
                tight += (tokens is not None and u.generated_tokens > tokens - ALLOWANCE) or \
                         (calls is not None and u.verifier_calls == calls)
    assert tight > 0  # the grid reaches the budgets, so the bounds are tested


def test_behavior_vote_budgets_hold():
    from ttscale.tasks.code import HumanEval

    task = HumanEval(path=str(shared_dataset("humaneval.jsonl")), limit=1, sandbox={"workers": 2})
    (problem, _), = task.load()
    name = problem.meta["entry_point"]
    programs = [f"```python\ndef {name}(numbers, threshold):\n    return {body}\n```"
                for body in ("False", "True", "threshold > 1", "len(numbers) > 2")]
    engine = FakeEngine(lambda user: [(p, 0.25) for p in programs])
    for tokens, calls in ((None, 2), (200, None), (500, 3), (1300, 1)):
        budget = Budget(max_tokens=tokens, max_verifier_calls=calls)
        ctx = make_ctx(engine, task=task, budget=budget)
        result = solve(from_conf("behavior_vote", "sampling.max_tokens=120"), ctx, problem)
        check_usage("behavior_vote", result, ctx, budget, 120)


# ---- under budget=tokens no best-of-N sample is cut by the budget ------------------------
def test_best_of_n_under_budget_tokens_draws_complete_samples():
    # The case: natural solutions of 43-160 tokens; best-of-16 used to get 300 // 16
    # = 18 tokens a sample, none reaching its answer. Now each sample may use
    # sampling.max_tokens and the budget decides how many are drawn.
    texts = [("w" * (n - len("\\boxed{7}"))) + "\\boxed{7}" for n in (43, 80, 120, 160)]
    engine = FakeEngine(completions=[(t, 0.25) for t in texts])
    for budget_tokens in (300, 2048):
        ctx = make_ctx(engine, verifier=MarkerPRM({}, default=0.5),
                       budget=Budget(max_tokens=budget_tokens), seed=budget_tokens)
        result = solve(from_conf("best_of_n", "budget=tokens", f"budget.max_tokens={budget_tokens}",
                                 "sampling.max_tokens=200", "strategy.n=16"), ctx)
        assert result.candidates and all(c.text in texts and c.finish_reason == "stop" for c in result.candidates)
        assert result.answer == "7"
        assert ctx.ledger.usage.generated_tokens <= budget_tokens
        assert result.stats["samples"] == len(result.candidates) == sum(result.stats["sample_waves"])
        # it drew until one more complete sample no longer fit (or n was reached)
        left = budget_tokens - ctx.ledger.usage.generated_tokens
        assert len(result.candidates) == 16 or left < 200
        if budget_tokens == 2048:
            assert len(result.candidates) >= 2048 // 200
    # the older behaviour would have cut every sample at 18 tokens: nothing answered
    assert 300 // 16 < min(len(t) for t in texts)


def test_the_older_split_rule_is_an_option_and_says_what_it_cut():
    texts = [("w" * 60) + "\\boxed{7}"]
    ctx = make_ctx(FakeEngine(completions=[(texts[0], 1.0)]), verifier=MarkerPRM({}, default=0.5),
                   budget=Budget(max_tokens=300, samples="split"))
    result = solve(from_conf("best_of_n", "sampling.max_tokens=200", "strategy.n=16"), ctx)
    assert len(result.candidates) == 16 and result.answer is None  # 300 // 16 = 18 tokens each
    assert all(c.finish_reason == "budget" and c.num_tokens == 18 for c in result.candidates)
    with pytest.raises(ValueError, match="budget.samples"):
        Budget(samples="some")


# ---- the verifier-call cap holds when an ancestor was never scored ----------------------
def test_scoring_pays_for_unscored_ancestors_within_the_allowance():
    from ttscale.strategies.steps import score_nodes
    from ttscale.engine import Completion
    from ttscale.verifiers.arithmetic_checker import ArithmeticChecker

    ctx = make_ctx(FakeEngine(completions=[("x", 1.0)]), verifier=ArithmeticChecker(),
                   budget=Budget(max_verifier_calls=3))
    cfg = StepConfig()

    def step(node, text):
        return node.child(Completion(token_ids=[1], text=text, finish_reason="stop", stop_reason="\n\n"), cfg)

    parents = [step(Node.root(), f"1 + 1 = {i}\n\n") for i in range(2)]
    kids = [step(p, f"2 + 2 = {i}\n\n") for i, p in enumerate(parents)]  # parents never scored
    asyncio.run(score_nodes(ctx, PROBLEM, kids))  # each kid costs 2 calls: only the first fits
    assert ctx.ledger.usage.verifier_calls == 2 <= 3
    assert [k.score is not None for k in kids] == [True, False]
    assert ctx.ledger.verifier_exhausted  # the rest could not be paid for: the search stops
