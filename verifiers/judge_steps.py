"""LLM-as-judge step scorer: P("Yes") that the latest step of a partial solution is correct.

A process verifier built on the outcome judge (`verifiers/judge.py`, after Zheng et al.
2023, arXiv:2306.05685): the judge model is shown the problem, the steps so far and the
latest step, and asked whether the latest step is correct; the score is
P(Yes) / (P(Yes) + P(No)) read from the top-k log-probabilities of one generated token
(greedy, `max_tokens=1`), summing the variants of each word ("Yes", " yes", "YES", ...).
A step is scored once per problem (the prefix-score cache), so a search that revisits a
prefix pays nothing; each computed prefix is one verifier call, charged with the judge's
prompt tokens and parameter count.

The prompt (`layout`, `verifiers/judge_layout.py`): by default the policy's own
conversation, its prompt and the path up to the latest step as the token IDs it generated,
then `question` (about the last step of it) as the next user turn, so the policy
engine's prefix cache serves everything but the question; `layout: template` is the old
self-contained prompt (`template`: problem, previous steps, latest step).

The judge is the policy model on the shared engine unless `backend` gives another engine
(a bigger judge). It works with the embedded CPU model, whose signal is weak (it says
"No" to almost everything with little conviction); on the synthetic task the arithmetic
checker is the verifier that really checks.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from ttscale.context import SolveContext
from ttscale.segment import STEP_DELIMITER
from ttscale.types import Problem
from ttscale.verifiers.judge import judge_yes, judge_yes_ids
from ttscale.verifiers.judge_layout import check_layout, judge_prompt_ids
from ttscale.verifiers.prefix_cache import CachedProcessVerifier

DEFAULT_TEMPLATE = (
    "Here is a problem and the beginning of a step-by-step solution.\n\n"
    "Problem:\n{question}\n\n"
    "Previous steps:\n{previous}\n\n"
    "Latest step:\n{step}\n\n"
    "Is the latest step correct? Answer with a single word, Yes or No."
)
# After the path, the one part of the prompt not in the cache; `{step}` (optional) restates
# the latest step, at the cost of computing its tokens again.
DEFAULT_QUESTION = "Is the last step of the solution above correct? Answer with a single word, Yes or No."


class JudgeSteps(CachedProcessVerifier):
    name = "judge_steps"
    granularity = "step"
    score_range = (0.0, 1.0)  # P("Yes")

    def __init__(
        self,
        template: str = DEFAULT_TEMPLATE,
        top_k: int = 20,
        backend: Any = None,
        no_previous: str = "(none)",
        aggregation: str = "min",
        use_cache: bool = True,
        step_delimiter: str = STEP_DELIMITER,
        layout: str = "policy_prefix",
        question: str = DEFAULT_QUESTION,
    ) -> None:
        super().__init__(aggregation=aggregation, use_cache=use_cache, step_delimiter=step_delimiter)
        self.layout, self.question = check_layout(layout), question
        try:
            question.format(step="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"verifier.question may only use the field {{step}}: {e}") from None
        self.needs_policy_tokens = self.layout == "policy_prefix"
        for field in ("{question}", "{previous}", "{step}"):
            if field not in template:
                raise ValueError(f"verifier.template must contain {field}")
        if top_k < 1:
            raise ValueError(f"verifier.top_k must be >= 1, got {top_k}")
        self.template, self.top_k, self.backend, self.no_previous = template, top_k, backend, no_previous

    def prompt(self, problem: Problem, prefix: Sequence[str]) -> str:
        previous = "".join(prefix[:-1]).strip() or self.no_previous
        return self.template.format(question=problem.question, previous=previous, step=prefix[-1].strip())

    def prompt_ids(self, ctx: SolveContext, engine: Any, problem: Problem, prefix: Sequence[str]) -> list[int]:
        """The `policy_prefix` prompt: the policy's conversation up to the latest step, then the question."""
        return judge_prompt_ids(ctx, engine, problem, "".join(prefix), self.question.format(step=prefix[-1].strip()))

    async def _judge(self, ctx: SolveContext, engine: Any, problem: Problem, prefix: Sequence[str], params: float) -> float:
        if self.layout == "template":
            return await judge_yes(ctx, engine, self.prompt(problem, prefix), self.top_k, params)
        return await judge_yes_ids(ctx, engine, self.prompt_ids(ctx, engine, problem, prefix), self.top_k, params)

    async def _score_prefixes(
        self, problem: Problem, prefixes: Sequence[Sequence[str]], ctx: SolveContext
    ) -> list[float]:
        engine = self.backend or ctx.engine
        params = float(getattr(engine, "num_parameters", 0) or 0)
        return list(await asyncio.gather(*(self._judge(ctx, engine, problem, p, params) for p in prefixes)))
