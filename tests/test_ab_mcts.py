"""AB-MCTS-A on the fake engine: closed-form posteriors, choices that follow them, refinement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.strategies.ab_mcts import REFINE_PROMPT, ABMCTSA, Posterior
from tests.helpers import make_ctx
from tests.search_helpers import (
    MarkerPRM,
    assert_valid_result,
    solve,
)
from ttscale.budget import Budget

GAUSS = {"m": 0.0, "kappa": 1.0, "nu": 1.0, "tau_square": 0.1}


def t_pdf(x, df, loc, scale):
    z = (x - loc) / scale
    c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi) - math.log(scale)
    return np.exp(c - (df + 1) / 2 * np.log1p(z * z / df))


def beta_pdf(x, a, b):
    c = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return np.exp(c + (a - 1) * np.log(x) + (b - 1) * np.log1p(-x))


def p_greater(pdf_x, pdf_y, grid):
    """P(X > Y) for independent X, Y from their densities on a grid."""
    dx = grid[1] - grid[0]
    fx, fy = pdf_x(grid) * dx, pdf_y(grid) * dx
    cdf_x = np.cumsum(fx) / fx.sum()
    return float(np.sum(fy / fy.sum() * (1 - cdf_x)))


def marginal(post: Posterior):
    """The posterior of the mean: Student-t (NIG) or the Beta itself."""
    p = post.params
    if post.dist_type == "beta":
        return lambda x: beta_pdf(x, p["a"], p["b"])
    return lambda x: t_pdf(x, p["nu"], p["m"], math.sqrt(p["tau_square"] / p["kappa"]))


def test_the_gaussian_posterior_is_the_conjugate_update():
    post = Posterior("gaussian", GAUSS)
    for x in (0.9, 0.7, 0.8):
        post.tell(x)
    n, ave, ss = 3, 0.8, sum((x - 0.8) ** 2 for x in (0.9, 0.7, 0.8))
    assert post.params["kappa"] == 4 and post.params["nu"] == 4
    assert post.params["m"] == pytest.approx(n * ave / 4)
    assert post.params["tau_square"] == pytest.approx((0.1 + ss + n * ave * ave / 4) / 4)
    draws = np.array([post.draw(np.random.default_rng(s)) for s in range(4000)])
    assert abs(draws.mean() - post.params["m"]) < 0.02  # the t's mean
    beta = Posterior("beta", {"a": 0.5, "b": 0.5})
    beta.tell(1.0)
    beta.tell(0.25)
    assert beta.params == {"a": 1.75, "b": 1.25}


@pytest.mark.parametrize("dist_type", ["gaussian", "beta"])
def test_gen_or_cont_follows_the_posteriors(dist_type):
    """At the second generation the root has one child scored s: GEN's posterior has seen s,
    CONT's nothing. Over seeds the share of GEN is P(draw GEN > draw CONT) of those
    posteriors (computed here from their densities), not a fixed rate."""
    for marker_score in (0.9, 0.2):
        strategy = ABMCTSA(generation_budget=2, dist_type=dist_type, max_tokens=60)
        gen = strategy.posterior()
        gen.tell(marker_score)
        grid = np.linspace(-3, 4, 20001) if dist_type == "gaussian" else np.linspace(1e-6, 1 - 1e-6, 20001)
        expect = p_greater(marginal(gen), marginal(strategy.posterior()), grid)
        seeds = 1500
        gens = 0
        for seed in range(seeds):
            ctx = make_ctx(FakeEngine(completions=[("x [m] \\boxed{1}", 1.0)]),
                           verifier=MarkerPRM({"[m]": marker_score}), seed=seed)
            result = solve(strategy, ctx)
            assert result.stats["choices"] and len(result.stats["choices"]) == 1
            gens += result.stats["choices"][0] == "GEN"
            assert result.stats["root_children"] == 1 + (result.stats["choices"][0] == "GEN")
        sd = math.sqrt(expect * (1 - expect) / seeds)
        assert abs(gens / seeds - expect) < 4 * sd + 0.002, (dist_type, marker_score, gens / seeds, expect)


def test_a_refinement_continues_the_parents_answer_and_is_scored_alone():
    bad, good = "1 + 1 = 3 so \\boxed{3}", "1 + 1 = 2 so \\boxed{2}"
    engine = FakeEngine(completions=[(bad, 1.0), (bad + REFINE_PROMPT + good, 1e-9)])
    # the refined text exists only after the cue: the fake model writes it with certainty there
    ctx = make_ctx(engine, verifier=MarkerPRM({"= 3": 0.1, "= 2": 0.95}), seed=1)
    result = solve(ABMCTSA(generation_budget=6, max_tokens=80, temperature=1.0), ctx)
    assert_valid_result(result)
    refined = [c for c in result.candidates if c.extra["depth"] > 1]
    assert refined, result.stats["choices"]
    assert all(c.text == good and c.score == 0.95 for c in refined)
    assert result.answer == "2"
    prompts = [engine.tokenizer.decode(r.prompt_token_ids) for r in engine.requests]
    assert sum(p.endswith(bad + REFINE_PROMPT) for p in prompts) == len(refined)


def test_budgets_hold_and_no_answer_is_cut():
    for budget in (Budget(max_tokens=59), Budget(max_tokens=130), Budget(max_verifier_calls=3),
                   Budget(max_tokens=400, max_verifier_calls=5)):
        engine = FakeEngine(completions=[("w" * 40 + " [m] \\boxed{1}", 1.0)])
        ctx = make_ctx(engine, verifier=MarkerPRM({"[m]": 0.5}), budget=budget)
        result = solve(ABMCTSA(generation_budget=50, max_tokens=60, batch_size=3), ctx)
        u = ctx.ledger.usage
        assert u.generated_tokens <= (budget.max_tokens or math.inf)
        assert u.verifier_calls <= (budget.max_verifier_calls or math.inf)
        assert result.stats["budget_exhausted"] and result.stats["stopped"] == "budget"
        assert all(c.finish_reason == "stop" for c in result.candidates if c.extra["depth"] == 1)
        if budget.max_tokens is not None:
            assert len(result.candidates) == budget.max_tokens // 60 or budget.max_verifier_calls


def test_arithmetic_checker_guides_search_and_refinement():
    """The real arithmetic task and checker; the fake policy writes a right first equation
    25% of the time, and after the refine cue rewrites any answer into a right one 50% of
    the time. Guided by the checker the search answers right far more often than one
    sample does (25%), and some answers come from refinements."""
    from ttscale.tasks.arithmetic import ArithmeticTask
    from ttscale.verifiers.arithmetic_checker import ArithmeticChecker

    task = ArithmeticTask(num_problems=24, phrasing="plain", operators=("+",), seed=3)
    options = {}
    for problem, ref in task.load():
        a, b = ref.data["operands"]
        c = int(ref.answer)
        sol = {v: f"First, {a} + {b} = {v}.\n\nSo the total is {v}.\n\nThe answer is \\boxed{{{v}}}"
               for v in (c, c + 1, c - 2)}
        first = [(sol[v], p) for v, p in ((c, 0.25), (c + 1, 0.4), (c - 2, 0.35))]
        refined = [(t + REFINE_PROMPT + sol[v], 1e-9 * q) for t, _ in first for v, q in ((c, 0.5), (c + 1, 0.5))]
        options[task.messages(problem)[-1]["content"]] = first + refined
    engine = FakeEngine(lambda user: options[user])
    right = from_refinement = 0
    for i, (problem, ref) in enumerate(task.load()):
        ctx = make_ctx(engine, task=task, verifier=ArithmeticChecker(), seed=i)
        result = solve(ABMCTSA(generation_budget=6, max_tokens=120, temperature=1.0), ctx, problem)
        assert_valid_result(result)
        ok = task.grade_answer(result.answer, ref, problem)
        right += ok
        from_refinement += ok and result.candidates[result.selected].extra["depth"] > 1
    assert right / 24 >= 0.25 + 0.3, right
    assert from_refinement > 0


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="strategy.dist_type"):
        ABMCTSA(dist_type="poisson")
    with pytest.raises(ValueError, match="strategy.prior"):
        ABMCTSA(prior={"alpha": 1.0})
    s = ABMCTSA(batch_size=2)
    assert s.independent_samples is False and s.count_params == ("generation_budget", "batch_size")
