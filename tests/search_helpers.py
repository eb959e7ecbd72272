"""Helpers for the step-level search tests: a process verifier that scores a step by
the marker it contains, an engine that records what it answered and how many requests
were in flight together, and the checks every step-level strategy must pass."""

from __future__ import annotations

import asyncio
from typing import Any, Mapping, Sequence

import numpy as np

from ttscale.backends.fake import FakeEngine
from tests.helpers import ToyTask, make_ctx
from ttscale.budget import Budget
from ttscale.context import SolveContext
from ttscale.engine import GenerationOutput, GenerationRequest
from ttscale.types import Problem, Result
from ttscale.verifier import ProcessVerifier

PROBLEM = Problem(id="p0", question="What is 3 + 4?")


class MarkerPRM(ProcessVerifier):
    """Scores each step by the first marker (substring) it contains; `default` otherwise.
    With `sticky`, an unmarked step keeps the score of the last marked step before it
    (a PRM that remembers an early mistake). Charges one verifier call per scored
    prefix, like a real PRM."""

    def __init__(
        self, markers: Mapping[str, float], default: float = 0.5, sticky: bool = False, aggregation: str = "last"
    ) -> None:
        super().__init__(aggregation)
        self.markers = dict(markers)
        self.default = default
        self.sticky = sticky

    def step_score(self, step: str) -> float | None:
        for marker, score in self.markers.items():
            if marker in step:
                return score
        return None

    def path_scores(self, path: Sequence[str]) -> list[float]:
        out, last = [], self.default
        for step in path:
            s = self.step_score(step)
            if s is not None and self.sticky:
                last = s
            out.append(s if s is not None else last)
        return out

    async def score_steps(self, problem, steps: Sequence[Sequence[str]], ctx) -> list[list[float]]:
        ctx.ledger.charge_verifier(calls=len(steps), tokens=sum(len("".join(s)) for s in steps))
        return [self.path_scores(path) for path in steps]


class RecordingEngine(FakeEngine):
    """A FakeEngine that keeps each request's output and the largest number of
    requests that were in flight together while it was in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("delay", 0.001)
        super().__init__(*args, **kwargs)
        self.log: list[tuple[GenerationRequest, GenerationOutput]] = []
        self.peak: list[int] = []
        self._live: set[int] = set()

    async def generate(self, request: GenerationRequest) -> GenerationOutput:
        k = len(self.peak)
        self.peak.append(0)
        self._live.add(k)
        for j in self._live:
            self.peak[j] = max(self.peak[j], len(self._live))
        try:
            out = await super().generate(request)
        finally:
            self._live.discard(k)
        self.log.append((request, out))
        return out


def solve(strategy, ctx: SolveContext, problem: Problem = PROBLEM) -> Result:
    return asyncio.run(strategy.solve(problem, ctx))


def prompt_ids(ctx: SolveContext, problem: Problem = PROBLEM) -> list[int]:
    return ctx.prompt_ids(problem)


def generated_text(engine: FakeEngine, request: GenerationRequest, base: Sequence[int]) -> str:
    """What the request's prompt holds beyond the problem's prompt."""
    ids = list(request.prompt_token_ids)
    assert ids[: len(base)] == list(base)
    return engine.tokenizer.decode(ids[len(base) :])


def assert_valid_result(result: Result) -> None:
    assert isinstance(result, Result)
    if result.selected is None:
        assert result.answer is None
    else:
        assert 0 <= result.selected < len(result.candidates)
        assert result.answer == result.candidates[result.selected].answer
    for c in result.candidates:
        assert isinstance(c.text, str)


def assert_waves_in_flight_together(engine: RecordingEngine, waves: Sequence[int]) -> None:
    """Requests arrive wave by wave; every request of a wave saw the whole wave in flight."""
    assert sum(waves) == len(engine.peak)
    i = 0
    for size in waves:
        assert engine.peak[i : i + size] == [size] * size, (waves, engine.peak)
        i += size


def assert_continuations_reuse_prefix(engine: RecordingEngine, base: Sequence[int]) -> int:
    """Every request after the first continues an earlier one: its prompt is that
    request's prompt plus one of its completions (token IDs, not re-tokenised text).
    Returns the number of continuation requests."""
    made: list[list[int]] = []
    continuations = 0
    for req, out in engine.log:
        ids = list(req.prompt_token_ids)
        assert ids[: len(base)] == list(base)
        if len(ids) > len(base):
            assert ids in made, "a continuation must extend an earlier prompt by a generated step"
            continuations += 1
            # the whole prefix was seen before: the fake engine serves all its full blocks
            assert out.cached_prompt_tokens == len(ids) // engine.block_size * engine.block_size
        for c in out.completions:
            made.append(ids + list(c.token_ids))
    return continuations


# ---- checks every step-level strategy must pass ----------------------------------------
# The right first step ("good", 20%) leads to 7; the others to wrong answers. A PRM that
# prefers the right step (and remembers it) should find 7 far more often than 20%.
GUIDED = [
    ("good start\n\ncarry on\n\n\\boxed{7}", 0.2),
    ("bad start\n\ncarry on\n\n\\boxed{3}", 0.4),
    ("bad idea\n\nkeep going\n\n\\boxed{5}", 0.4),
]
GUIDED_PRM = {"good": 0.9, "bad": 0.2}
STEP = {"delimiter": "\n\n", "max_steps": 6, "max_step_tokens": 40, "max_total_tokens": 200}


def check_guided_search_beats_random_choice(make_strategy, n: int = 4, seeds: int = 40) -> None:
    guided = random_choice = 0
    for seed in range(seeds):
        engine = FakeEngine(completions=GUIDED)
        ctx = make_ctx(engine, verifier=MarkerPRM(GUIDED_PRM, sticky=True), seed=seed)
        result = solve(make_strategy(), ctx)
        assert_valid_result(result)
        guided += result.answer == "7"
        # best-of-N without a verifier: N samples, one picked at random
        out = asyncio.run(engine.generate(GenerationRequest(prompt_ids(ctx), n=n, max_tokens=200, seed=seed)))
        pick = out.completions[int(np.random.default_rng(seed).integers(n))]
        random_choice += ToyTask().extract_answer(pick.text) == "7"
    assert guided / seeds >= random_choice / seeds + 0.2, (guided, random_choice)


def check_budget_respected(make_strategy) -> None:
    """With a token or verifier budget the ledger never exceeds it and the result is valid."""
    for budget in (
        Budget(max_tokens=2),
        Budget(max_tokens=45),
        Budget(max_tokens=120),
        Budget(max_verifier_calls=1),
        Budget(max_verifier_calls=5),
        Budget(max_tokens=80, max_verifier_calls=6),
    ):
        for seed in range(3):
            engine = RecordingEngine(completions=GUIDED)
            ctx = make_ctx(engine, verifier=MarkerPRM(GUIDED_PRM, sticky=True), seed=seed, budget=budget)
            result = solve(make_strategy(), ctx)
            u = ctx.ledger.usage
            if budget.max_tokens is not None:
                assert u.generated_tokens <= budget.max_tokens
            if budget.max_verifier_calls is not None:
                assert u.verifier_calls <= budget.max_verifier_calls
            assert_valid_result(result)
            assert result.stats["budget_exhausted"]
            assert result.stats["generated_tokens"] == u.generated_tokens
            assert result.stats["verifier_calls"] == u.verifier_calls


def check_requests_in_flight_together_and_prefix_reuse(make_strategy) -> None:
    engine = RecordingEngine(completions=GUIDED, delay=0.005)
    ctx = make_ctx(engine, verifier=MarkerPRM(GUIDED_PRM, sticky=True), seed=1)
    result = solve(make_strategy(), ctx)
    assert_valid_result(result)
    waves = result.stats["requests_per_wave"]
    assert max(waves) > 1  # some step had several requests ...
    assert_waves_in_flight_together(engine, waves)  # ... and they were all in flight together
    assert assert_continuations_reuse_prefix(engine, prompt_ids(ctx)) > 0
    assert ctx.ledger.usage.cached_prompt_tokens > 0
    # every generated step was scored exactly once
    assert result.stats["verifier_calls"] == result.stats["expansions"] == ctx.ledger.usage.verifier_calls


def check_arithmetic_checker_guides_search(make_strategy, problems: int = 24) -> None:
    """On the real synthetic arithmetic task with the real arithmetic step checker: the
    policy writes a right first equation 25% of the time; guided by the checker, the
    search answers right far more often than a random pick among samples."""
    from ttscale.tasks.arithmetic import ArithmeticTask
    from ttscale.verifiers.arithmetic_checker import ArithmeticChecker

    task = ArithmeticTask(num_problems=problems, phrasing="plain", operators=("+",), seed=3)
    solutions: dict[str, list[tuple[str, float]]] = {}
    for problem, ref in task.load():
        a, b = ref.data["operands"]
        c = int(ref.answer)
        solutions[task.messages(problem)[-1]["content"]] = [
            (f"First, {a} + {b} = {v}.\n\nSo the total is {v}.\n\nThe answer is \\boxed{{{v}}}", p)
            for v, p in ((c, 0.25), (c + 1, 0.4), (c - 2, 0.35))
        ]
    engine = FakeEngine(lambda user: solutions[user])
    right = 0
    for i, (problem, ref) in enumerate(task.load()):
        ctx = make_ctx(engine, task=task, verifier=ArithmeticChecker(), seed=i)
        result = solve(make_strategy(), ctx, problem)
        assert_valid_result(result)
        right += task.grade_answer(result.answer, ref, problem)
    assert right / problems >= 0.25 + 0.2, right
