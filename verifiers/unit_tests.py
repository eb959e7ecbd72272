"""A verifier that scores programs by the fraction of the problem's *public* tests they
pass, run in the sandbox by the unit-test harness (`ttscale.sandbox.harness`)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Mapping, Sequence

from ttscale.sandbox.harness import TestRun, assemble_programs, public_tests, run_tests
from ttscale.sandbox import Sandbox

from ttscale.context import SolveContext
from ttscale.types import Candidate, Problem
from ttscale.verifier import Verifier


class UnitTestVerifier(Verifier):
    """Score = fraction of the problem's *public* tests the candidate's program passes.

    Programs run in the sandbox; identical programs of one `score` call run once.
    Every program executed is one verifier call (`ctx.ledger.charge_verifier`). A
    candidate without a program, or a problem without public tests, scores 0.
    Per-candidate details go to `candidate.extra`: public_passed, public_total,
    public_reason.
    """

    name = "unit_tests"
    score_range = (0.0, 1.0)  # the fraction of public tests passed

    def __init__(self, sandbox: Sandbox | Mapping[str, Any] | None = None, timeout: float = 5.0) -> None:
        if timeout <= 0:
            raise ValueError(f"verifier.timeout must be > 0, got {timeout}")
        # None: the task's sandbox (same isolation and worker limit as grading).
        self.sandbox = Sandbox.from_config(sandbox) if sandbox is not None else None
        self.timeout = float(timeout)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: SolveContext) -> list[float]:
        assemble_programs(ctx.task, problem, candidates)
        tests, setup = public_tests(problem)
        programs = sorted({c.answer for c in candidates if c.answer})
        runs: dict[str, TestRun] = {}
        if tests and programs:
            sb = self.sandbox or ctx.task.sandbox or Sandbox()
            limits = dataclasses.replace(sb.limits, timeout=self.timeout)
            done = await asyncio.gather(*(run_tests(sb, p, tests, setup, limits=limits) for p in programs))
            runs = dict(zip(programs, done))
            ctx.ledger.charge_verifier(calls=len(programs))
        scores = []
        for c in candidates:
            run = runs.get(c.answer) if c.answer else None
            c.extra.update(public_passed=run.passed if run else 0, public_total=len(tests),
                           public_reason=run.reason if run else ("no program" if not c.answer else None))
            scores.append(run.fraction if run else 0.0)
        return scores
