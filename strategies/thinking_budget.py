"""Thinking budgets for reasoning models: s1's budget forcing.

Muennighoff et al. 2025, "s1: Simple test-time scaling" (arXiv:2501.19393), Sec. 3.1;
reference code simplescaling/s1 @77272c6 (`README.md`, "vLLM with budget forcing":
`MAX_TOKENS_THINKING`, `NUM_IGNORE`, `ignore_str = "Wait"`), read point by point; the
names kept in lower case.

One sample, as s1 makes it (strings concatenated to the prompt, as the reference does):

1. thinking: the prompt (plus `think_start` when `open_thinking`, as s1 appends
   "<|im_start|>think") is continued with `think_end` as the stop string, at most
   `max_tokens_thinking` tokens of thinking in all (the maximum budget);
2. at the maximum: thinking is cut there (exactly `max_tokens_thinking` generated
   thinking tokens) and `think_end` is appended: the end of thinking is forced;
3. an end of thinking the model writes itself is ignored, "Wait" (`ignore_str`) appended
   and thinking continued, while fewer than `min_tokens_thinking` thinking tokens were
   generated (the minimum budget) or it was ignored fewer than `num_ignore` times (s1's
   count), and the maximum is not reached;
4. answer: the prompt, the thinking, `think_end` (and `answer_prefix`, s1's optional
   "Final Answer:") are continued to the end of the sequence.

A model that ends the sequence without closing its thinking has answered inside it: its
text is the solution, with no answer phase. Thinking tokens and answer tokens are
counted apart (`Candidate.extra` `thinking_tokens`, `answer_tokens`, `waits`,
`forced_end`; totals in `Result.stats`). Thinking tokens are every token generated in the
thinking phase, an end-of-thinking marker the model wrote included (generated and
charged, even when it is then replaced by "Wait"); the inserted markers and "Wait"s are
prompt tokens, not generated ones. The candidate's text starts after the opening marker
(which is prompt).

The compute contract: a whole sample, thinking and answer, may use `max_tokens`
(`sampling.max_tokens`) generated tokens, so the answer gets what thinking left, and
the budget pays for a sample in full before it starts (waves of what it pays for, as
parallel sampling draws them). `n` samples (in flight together), the answer by majority
vote (`n = 1`: the one sample, s1's setting).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.sampling import plurality
from ttscale.task import cluster_answers
from ttscale.context import SolveContext
from ttscale.engine import GenerationRequest
from ttscale.types import Candidate, Problem, Result


class BudgetForcing(Strategy):
    """s1 budget forcing (see the module doc).

    max_tokens_thinking: the maximum thinking budget B (null: none but the allowance).
    min_tokens_thinking: the minimum (null: none). num_ignore: ends of thinking ignored
    anyway (s1's NUM_IGNORE). ignore_str: what replaces an ignored end ("Wait").
    think_start, think_end: the markers. open_thinking: append think_start to the prompt.
    answer_prefix: text after the forced or natural end of thinking ("" : none).
    n: samples, voted. max_tokens: a sample's whole allowance.
    """

    name = "thinking_budget"
    independent_samples = True
    count_params = ("n",)

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n, self.max_tokens, "max_tokens")

    def __init__(
        self,
        max_tokens_thinking: int | None = None,
        min_tokens_thinking: int | None = None,
        num_ignore: int = 0,
        ignore_str: str = "Wait",
        think_start: str = "<think>",
        think_end: str = "</think>",
        open_thinking: bool = True,
        answer_prefix: str = "",
        n: int = 1,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 256,
    ) -> None:
        for key, v in (("max_tokens_thinking", max_tokens_thinking), ("min_tokens_thinking", min_tokens_thinking)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"strategy.{key} must be null or an integer >= 1, got {v!r}")
        if max_tokens_thinking is not None and max_tokens_thinking > max_tokens:
            raise ValueError(f"strategy.max_tokens_thinking ({max_tokens_thinking}) must be <= strategy.max_tokens "
                             f"({max_tokens}): a sample's thinking and answer share sampling.max_tokens")
        if min_tokens_thinking is not None and max_tokens_thinking is not None and min_tokens_thinking > max_tokens_thinking:
            raise ValueError("strategy.min_tokens_thinking must be <= strategy.max_tokens_thinking")
        if not isinstance(num_ignore, int) or num_ignore < 0:
            raise ValueError(f"strategy.num_ignore must be an integer >= 0, got {num_ignore!r}")
        if not think_end or not ignore_str:
            raise ValueError("strategy.think_end and strategy.ignore_str must be non-empty strings")
        self.max_tokens_thinking, self.min_tokens_thinking = max_tokens_thinking, min_tokens_thinking
        self.num_ignore, self.ignore_str = num_ignore, ignore_str
        self.think_start, self.think_end, self.open_thinking = think_start, think_end, bool(open_thinking)
        self.answer_prefix = answer_prefix
        self.n = n
        self.temperature, self.top_p, self.max_tokens = float(temperature), float(top_p), int(max_tokens)

    def ignore_end(self, thought: int, ignored: int) -> bool:
        """Whether an end of thinking the model wrote after `thought` tokens is ignored."""
        if self.max_tokens_thinking is not None and thought >= self.max_tokens_thinking:
            return False
        below_min = self.min_tokens_thinking is not None and thought < self.min_tokens_thinking
        return below_min or ignored < self.num_ignore

    async def sample(self, ctx: SolveContext, base: list[int]) -> Candidate:
        tok = ctx.tokenizer
        head = self.think_start if self.open_thinking else ""
        limit = self.max_tokens_thinking if self.max_tokens_thinking is not None else self.max_tokens
        thinking, thought, waits, forced, ended_sequence = "", 0, 0, False, False

        def req(text: str, cap: int, stop: tuple[str, ...]) -> GenerationRequest:
            return GenerationRequest(prompt_token_ids=base + tok.encode(text), n=1, temperature=self.temperature,
                                     top_p=self.top_p, max_tokens=cap, stop=stop, include_stop_str_in_output=False)

        while True:
            c = (await ctx.generate(req(head + thinking, limit - thought, (self.think_end,)))).completions[0]
            thinking += c.text
            thought += len(c.token_ids)
            if c.finish_reason == "stop" and c.stop_reason == self.think_end:
                if self.ignore_end(thought, waits) and thought < limit:
                    thinking += self.ignore_str
                    waits += 1
                    continue
                break
            if c.finish_reason == "length" or thought >= limit:
                forced = self.max_tokens_thinking is not None  # the maximum budget ends it
                break
            ended_sequence = True  # end of sequence inside the thinking: it is the answer
            break
        answer, answered, finish = "", 0, "stop"
        if ended_sequence:
            text = thinking
        else:
            left = self.max_tokens - thought
            suffix = self.think_end + self.answer_prefix
            if left > 0:
                a = (await ctx.generate(req(head + thinking + suffix, left, ()))).completions[0]
                answer, answered, finish = a.text, len(a.token_ids), a.finish_reason
            else:
                finish = "length"
            text = thinking + suffix + answer
        found = (ctx.extract_answer(answer) if answer else None) or ctx.extract_answer(text)
        return Candidate(text=text, answer=found,
                         num_tokens=thought + answered, finish_reason=finish,
                         extra={"thinking_tokens": thought, "answer_tokens": answered, "waits": waits,
                                "forced_end": forced})

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        base = list(ctx.prompt_ids(problem))
        cands: list[Candidate] = []
        waves: list[int] = []
        while len(cands) < self.n:
            left = ctx.ledger.remaining_tokens
            k = self.n - len(cands) if left is None else min(self.n - len(cands), left // self.max_tokens)
            if k < 1:
                break
            cands.extend(await asyncio.gather(*(self.sample(ctx, base) for _ in range(k))))
            waves.append(k)
        cluster_answers(ctx.task, cands)
        sel = plurality(cands)
        if sel is None and cands:
            sel = 0
        stats: dict[str, Any] = {
            "samples": len(cands), "sample_waves": waves, "samples_budget_stopped": len(cands) < self.n,
            "thinking_tokens": sum(c.extra["thinking_tokens"] for c in cands),
            "answer_tokens": sum(c.extra["answer_tokens"] for c in cands),
            "waits": sum(c.extra["waits"] for c in cands), "forced_ends": sum(c.extra["forced_end"] for c in cands),
            "max_tokens_thinking": self.max_tokens_thinking, "min_tokens_thinking": self.min_tokens_thinking,
        }
        return Result(problem_id=problem.id, answer=cands[sel].answer if sel is not None else None, candidates=cands,
                      selected=sel, stats=stats)
