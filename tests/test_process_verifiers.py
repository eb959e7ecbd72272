"""Process scorers: the arithmetic checker, the prefix-score cache, the step judge and the
PRM input building / output parsing (vLLM pooling and HF transformers) on stand-ins."""

from __future__ import annotations

import asyncio
import builtins
import math
import os

import pytest

from backends.fake import FakeEngine
from tests.helpers import make_ctx
from ttscale.budget import Budget
from ttscale.types import Candidate, Problem
from verifiers import prefix_cache
from verifiers.arithmetic_checker import ArithmeticChecker, find_equations

P = Problem(id="p1", question="What is 12 + 7?")


def run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------- arithmetic checker
@pytest.mark.parametrize(
    "step",
    [
        "12 + 7 = 19",
        "First, 12 + 7 = 19 apples.",
        "3 x 4 = 12",
        "3 X 4 = 12",
        "3 * 4 = 12",
        "3 × 4 = 12",
        "We get $3 \\times 4 = 12$.",
        "(2.5 + 0.5) * 2 = 6",
        "10 - 2 - 3 = 5",
        "2 + 3 * 4 = 14",
        "(2 + 3) * 4 = 20",
        "12 / 4 = 3",
        "10 / 3 = 3.33",
        "5 - 8 = -3",
        "-3 + 5 = 2",
        "1,000 + 2 = 1,002",
        "1) 5 + 3 = 8",
        "2 + 2 = 4 = 4",
        "0.1 + 0.2 = 0.3",
        "Step 1 12 + 7 = 19",
    ],
)
def test_right_equations_score_high(step):
    assert ArithmeticChecker().check_step(step) == 1.0


@pytest.mark.parametrize(
    "step",
    [
        "12 + 7 = 20",
        "So 12 + 7 = 18 apples.",
        "3 x 4 = 13",
        "2 + 3 * 4 = 20",  # precedence
        "10 / 3 = 3",  # integers must be exact
        "2 + 2 = 4 = 5",  # a chain is checked link by link
        "5 / 0 = 0",  # undefined is not equal to anything
        "12 + 7 = 19 and 5 - 1 = 3",  # one wrong equation is enough
        "0.1 + 0.2 = 0.4",
    ],
)
def test_wrong_equations_score_low(step):
    assert ArithmeticChecker().check_step(step) == 0.0


@pytest.mark.parametrize(
    "step",
    [
        "Let's think about the apples.",
        "x = 5",  # a variable, not arithmetic
        "a - 3 = 5",
        "2 * y + 3 = 7",
        "3 + 4 = 7 + x",
        "The list is 1, 2, 3.",
        "5 = 5",  # no operator: not a claim
        "",
        "))((==++--**//",
        "\\frac{1}{2} = 0.5",
        "9" * 200 + " + 1 = 2",  # over-long literal: not checked
    ],
)
def test_steps_without_checkable_equations_are_neutral(step):
    assert ArithmeticChecker().check_step(step) == 0.5
    assert ArithmeticChecker(neutral_score=0.3).check_step(step) == 0.3


def test_the_checker_never_evaluates_code(monkeypatch):
    called = []

    def boom(*a, **k):
        called.append(a)
        raise AssertionError("evaluated code")

    monkeypatch.setattr(os, "system", boom)
    for name in ("eval", "exec", "compile", "__import__"):
        monkeypatch.setattr(builtins, name, boom)
    nasty = [
        "__import__('os').system('x') = 0",
        "__import__('os').system('echo pwned') + 1 = 1",
        "eval('1+1') = 2",
        "(lambda: 0)() = 0",
        "1 + 1 = 2; import os; os.system('x') = 0",
        "2 ** 1000000 = 0",
        "9 ^ 9 ^ 9 ^ 9 = 1",
        "(" * 5000 + "1" + ")" * 5000 + " + 1 = 2",
        "-" * 5000 + "1 + 1 = 0",
        "1e308 * 1e308 = 1",
        "\x00\x01\ufffd = \u202e 1 + 1",
    ]
    checker = ArithmeticChecker()
    scores = [checker.check_step(s) for s in nasty]
    monkeypatch.undo()
    assert not called
    assert scores[0] == scores[1] == scores[2] == scores[3] == 0.5
    assert scores[4] == 1.0  # only "1 + 1 = 2" is arithmetic there
    assert all(s in (0.0, 0.5, 1.0) for s in scores)


def test_deep_nesting_and_long_inputs_are_bounded():
    import time

    t0 = time.perf_counter()
    ArithmeticChecker().check_step(("(" * 3000 + "1" + ")" * 3000 + " = 1 ") * 20)
    ArithmeticChecker().check_step("1 + " * 20000 + "1 = 20001")
    assert time.perf_counter() - t0 < 5


def test_boxed_answer_is_checked_against_the_last_equation_of_the_path():
    c = ArithmeticChecker()
    assert c.check_step("The answer is \\boxed{19}", ["12 + 7 = 19"]) == 1.0
    assert c.check_step("The answer is \\boxed{18}", ["12 + 7 = 19"]) == 0.25
    assert c.check_step("12 + 7 = 19, so \\boxed{19}") == 1.0
    assert c.check_step("12 + 7 = 19, so \\boxed{20}") == 0.25
    assert c.check_step("\\boxed{7}") == 0.5  # nothing to compare with
    assert ArithmeticChecker(boxed_mismatch_score=None).check_step("\\boxed{18}", ["12 + 7 = 19"]) == 0.5
    # a wrong equation dominates
    assert c.check_step("12 + 7 = 20, so \\boxed{20}") == 0.0


def test_find_equations_reports_sides_and_values():
    eqs = find_equations("First 3 x 4 = 12, then 12 - 5 = 8.")
    assert [(e.sides, e.ok) for e in eqs] == [(["3 * 4", "12"], True), (["12 - 5", "8"], False)]


def test_checker_scores_paths_counts_calls_and_caches_prefixes():
    ctx = make_ctx(FakeEngine())
    c = ArithmeticChecker()
    paths = [["12 + 7 = 19\n\n", "19 - 1 = 17\n\n"], ["12 + 7 = 19\n\n", "\\boxed{19}"]]
    scores = run(c.score_steps(P, paths, ctx))
    assert scores == [[1.0, 0.0], [1.0, 1.0]]
    # three distinct prefixes were computed; the shared first step once
    assert ctx.ledger.usage.verifier_calls == 3
    assert ctx.ledger.usage.verifier_flops == 0.0
    assert prefix_cache.stats(ctx) == {"verifier_cache_hits": 0, "verifier_cache_misses": 4}
    # the same prefixes again: served from the cache, nothing charged
    again = run(c.score_steps(P, [paths[0][:1], paths[1]], ctx))
    assert again == [[1.0], [1.0, 1.0]]
    assert ctx.ledger.usage.verifier_calls == 3
    assert prefix_cache.stats(ctx)["verifier_cache_hits"] == 3
    # aggregation for outcome scoring (min by default)
    cands = [Candidate(text="".join(p), steps=list(p)) for p in paths]
    assert run(c.score(P, cands, ctx)) == [0.0, 1.0]
    assert cands[0].step_scores == [1.0, 0.0]


def test_prefix_cache_is_per_problem_and_per_solve():
    c = ArithmeticChecker()
    ctx1, ctx2 = make_ctx(FakeEngine()), make_ctx(FakeEngine())
    run(c.score_steps(P, [["1 + 1 = 2"]], ctx1))
    run(c.score_steps(P, [["1 + 1 = 2"]], ctx2))  # another solve: computed again
    assert ctx1.ledger.usage.verifier_calls == ctx2.ledger.usage.verifier_calls == 1
    other = Problem(id="p2", question="?")
    run(c.score_steps(other, [["1 + 1 = 2"]], ctx1))  # another problem id: computed again
    assert ctx1.ledger.usage.verifier_calls == 2
    nocache = ArithmeticChecker(use_cache=False)
    run(nocache.score_steps(P, [["1 + 1 = 2"]], ctx1))
    run(nocache.score_steps(P, [["1 + 1 = 2"]], ctx1))
    assert ctx1.ledger.usage.verifier_calls == 4


def test_score_nodes_respects_the_verifier_budget_with_the_checker():
    from strategies.steps import Node, score_nodes

    ctx = make_ctx(FakeEngine(), verifier=ArithmeticChecker(), budget=Budget(max_verifier_calls=2))
    root = Node.root()
    nodes = []
    for text in ("1 + 1 = 2\n\n", "1 + 1 = 3\n\n", "no math\n\n"):
        n = Node(parent=root, step_text=text, depth=1)
        nodes.append(n)
    scores = run(score_nodes(ctx, P, nodes))
    assert scores == [1.0, 0.0, 0.0]  # the third is not covered by the budget
    assert nodes[2].score is None
    assert ctx.ledger.usage.verifier_calls == 2
