"""Majority vote over program behaviour: sample n programs, run each on the problem's
public test inputs in the sandbox, group programs that produce the same outputs, and
return a program from the largest group.

Li et al. 2022, "Competition-Level Code Generation with AlphaCode", Science 378(6624)
(arXiv:2203.07814), Sec. 4.5-4.6: filter samples on the example tests, then cluster the
rest by their outputs on the same inputs and submit from the largest cluster. Choosing
the program whose execution results agree with the most others is execution-based
minimum Bayes risk decoding, Shi et al. 2022, "Natural Language to Code Translation
with Execution" (EMNLP, arXiv:2204.11454). Here the inputs are the problem's public
test inputs (`problem.meta["behavior_inputs"]`: the calls in HumanEval's docstring
examples, in MBPP's visible assert); the expected outputs are not used for the vote
unless `filter_public` (AlphaCode's filtering step) is on.

A program's behaviour is the tuple of its canonical output (or exception type) per
input. Programs that do not load, time out, or raise on every input abstain
(`cluster = None`). `candidate.cluster` is the behaviour class, so maj@k over the
stored pool is behaviour voting at every k. Problems without inputs fall back to
classes of identical (normalised) program text. Every program run is charged as one
verifier call.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Mapping

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.sampling import plurality, sample_candidates
from ttscale.task import cluster_answers
from ttscale.context import SolveContext
from ttscale.types import Candidate, Problem, Result
from ttscale.sandbox import Sandbox
from ttscale.sandbox.harness import TestCase, TestRun, assemble_programs, public_tests, run_tests


def behavior_tests(problem: Problem) -> tuple[list[TestCase], int, str]:
    """(tests, number of public tests among them, setup): the public tests, then an
    expression test for each behaviour input not already evaluated by them."""
    public, setup = public_tests(problem)
    evaluated = {t.expr for t in public if t.expr}
    extra = [TestCase(expr=x) for x in problem.meta.get("behavior_inputs", []) if x not in evaluated]
    return public + extra, len(public), setup


def signature(run: TestRun, tests: list[TestCase]) -> tuple[str, ...] | None:
    """The behaviour of one program: per expression test its canonical output, or the
    type of the exception it raised; None when it abstains (did not load, timed out,
    or raised on every input). Statement tests (asserts) are not part of it: their
    pass/fail depends on the expected outputs, which the vote does not use."""
    if not run.loaded or (run.sandbox is not None and run.sandbox.timed_out):
        return None
    by_index = {o.get("i"): o for o in run.outcomes}
    values = []
    for i, t in enumerate(tests):
        if t.expr is None:
            continue
        o = by_index.get(i, {})
        values.append(str(o["value"]) if "value" in o else "!" + str(o.get("error", "not run")))
    if not values or all(v.startswith("!") for v in values):
        return None
    return tuple(values)


class BehaviorVote(Strategy):
    name = "behavior_vote"
    independent_samples = True
    count_params = ("n",)

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n, self.max_tokens, "max_tokens")  # n whole samples

    def __init__(
        self,
        n: int = 8,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 512,
        filter_public: bool = False,
        timeout: float = 5.0,
        sandbox: Sandbox | Mapping[str, Any] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"strategy.n must be >= 1, got {n}")
        if timeout <= 0:
            raise ValueError(f"strategy.timeout must be > 0, got {timeout}")
        self.n, self.temperature, self.top_p, self.max_tokens = n, temperature, top_p, max_tokens
        self.filter_public = filter_public
        self.timeout = float(timeout)
        self.sandbox = Sandbox.from_config(sandbox) if sandbox is not None else None

    def _sandbox(self, ctx: SolveContext) -> Sandbox:
        return self.sandbox or ctx.task.sandbox or Sandbox()

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        if ctx.task.kind != "code":
            raise ValueError(f"strategy=behavior_vote needs a code task (task.kind == 'code'), got task={ctx.task.name}")
        draw: dict = {}
        cands = await sample_candidates(problem, ctx, self.n, self.temperature, self.top_p, self.max_tokens, stats=draw)
        assemble_programs(ctx.task, problem, cands)
        cluster_answers(ctx.task, cands)  # the fallback classes: same normalised program
        tests, n_public, setup = behavior_tests(problem)
        stats: dict[str, Any] = {**draw, "inputs": len(tests)}
        programs = sorted({c.answer for c in cands if c.answer})
        allowed = ctx.ledger.verifier_allowance(len(programs))
        runs: dict[str, TestRun] = {}
        if tests and programs and allowed > 0:
            sb = self._sandbox(ctx)
            limits = dataclasses.replace(sb.limits, timeout=self.timeout)
            todo = programs[:allowed]
            done = await asyncio.gather(*(run_tests(sb, p, tests, setup, limits=limits) for p in todo))
            ctx.ledger.charge_verifier(calls=len(todo))
            runs = dict(zip(todo, done))
        stats["executions"] = len(runs)
        if runs:
            assign_behavior_clusters(cands, runs, tests, n_public)
        else:
            stats["fallback"] = "program_text"  # classes from sample_candidates: same normalised program
        weights = None
        if self.filter_public and n_public:
            passing = [bool(c.extra.get("public_all_passed")) for c in cands]
            if any(passing):
                weights = [1.0 if p else 0.0 for p in passing]
                stats["public_passing"] = sum(passing)
        sel = plurality(cands, weights)
        if weights is not None and sel is not None and weights[sel] == 0.0:
            sel = next(i for i, w in enumerate(weights) if w)
        stats["behavior_classes"] = len({c.cluster for c in cands if c.cluster is not None})
        return Result(
            problem_id=problem.id,
            answer=cands[sel].answer if sel is not None else None,
            candidates=cands,
            selected=sel,
            stats=stats,
        )


def assign_behavior_clusters(cands: list[Candidate], runs: Mapping[str, TestRun], tests: list[TestCase],
                             n_public: int) -> None:
    """Set `cluster` (behaviour class, numbered by first appearance; None: abstains) and
    `extra` (public_passed / public_total / public_all_passed) on each candidate."""
    classes: dict[tuple[str, ...], int] = {}
    for c in cands:
        run = runs.get(c.answer) if c.answer else None
        sig = signature(run, tests) if run is not None else None
        c.cluster = None if sig is None else classes.setdefault(sig, len(classes))
        if run is not None:
            passed = sum(1 for o in run.outcomes if o.get("ok") is True and o.get("i", n_public) < n_public)
            c.extra.update(public_passed=passed, public_total=n_public,
                           public_all_passed=run.loaded and passed == n_public)
