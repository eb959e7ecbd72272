"""LLM-as-judge: score a candidate by P("Yes") that a model says it is correct.

Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena"
(arXiv:2306.05685). The judge reads one generated token's top-k log-probabilities and
returns P(Yes) / (P(Yes) + P(No)), summing the variants of each word ("Yes", " yes",
"YES", ...). The judge is the policy model on the shared engine unless `backend` gives
another engine. Each candidate is one verifier call; prompt tokens are charged with the
judge's parameter count. The prompt is the policy's own conversation (its prompt and the
candidate's tokens) with `question` as the next user turn (`layout: policy_prefix`, so the
prefix cache serves all but the question; `verifiers/judge_layout.py`), or the old
self-contained `template` (`layout: template`).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Sequence

from ttscale.context import SolveContext
from ttscale.engine import Engine, GenerationRequest
from ttscale.types import Candidate, Problem
from ttscale.verifier import Verifier
from ttscale.verifiers.judge_layout import check_layout, judge_prompt_ids

DEFAULT_TEMPLATE = (
    "Here is a problem and a proposed solution.\n\nProblem:\n{question}\n\n"
    "Proposed solution:\n{solution}\n\n"
    "Is the proposed solution correct? Answer with a single word, Yes or No."
)
DEFAULT_QUESTION = "Is the solution above correct? Answer with a single word, Yes or No."


def yes_probability(engine: Engine, top: dict[int, float]) -> float:
    """P(Yes) / (P(Yes) + P(No)) from one position's top-k {token_id: logprob}; 0.5 if neither shows."""
    yes = no = 0.0
    for tok, lp in top.items():
        word = engine.tokenizer.decode([tok]).strip().lower()
        if word == "yes":
            yes += math.exp(lp)
        elif word == "no":
            no += math.exp(lp)
    return 0.5 if yes + no == 0 else yes / (yes + no)


async def judge_yes(ctx: SolveContext, engine: Engine, prompt: str, top_k: int, parameters: float) -> float:
    """Ask `engine` the yes/no question `prompt`; charge one verifier call; return P(Yes)."""
    ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    return await judge_yes_ids(ctx, engine, ids, top_k, parameters)


async def judge_yes_ids(ctx: SolveContext, engine: Engine, ids: Sequence[int], top_k: int, parameters: float) -> float:
    """`judge_yes` with the prompt given as token IDs."""
    out = await engine.generate(
        GenerationRequest(prompt_token_ids=ids, n=1, temperature=0.0, max_tokens=1, logprobs=top_k, seed=0)
    )
    ctx.ledger.charge_verifier(
        calls=1, tokens=out.prompt_tokens + out.generated_tokens,
        cached_tokens=out.cached_prompt_tokens, parameters=parameters,
    )
    comp = out.completions[0]
    return yes_probability(engine, comp.top_logprobs[0]) if comp.top_logprobs else 0.5


class LLMJudge(Verifier):
    name = "llm_judge"
    score_range = (0.0, 1.0)  # P("Yes")

    def __init__(self, template: str = DEFAULT_TEMPLATE, top_k: int = 20, backend: Any = None,
                 layout: str = "policy_prefix", question: str = DEFAULT_QUESTION) -> None:
        if "{question}" not in template or "{solution}" not in template:
            raise ValueError("verifier.template must contain {question} and {solution}")
        self.template, self.top_k, self.backend = template, top_k, backend
        self.layout, self.question = check_layout(layout), question
        self.needs_policy_tokens = self.layout == "policy_prefix"

    async def _judge(self, ctx: SolveContext, engine: Engine, problem: Problem, c: Candidate, params: float) -> float:
        if self.layout == "template":
            prompt = self.template.format(question=problem.question, solution=c.text)
            return await judge_yes(ctx, engine, prompt, self.top_k, params)
        ids = judge_prompt_ids(ctx, engine, problem, c.text, self.question)
        return await judge_yes_ids(ctx, engine, ids, self.top_k, params)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: SolveContext) -> list[float]:
        engine = self.backend or ctx.engine
        params = float(getattr(engine, "num_parameters", 0) or 0)
        return list(await asyncio.gather(*(self._judge(ctx, engine, problem, c, params) for c in candidates)))
