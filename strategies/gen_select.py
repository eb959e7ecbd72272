"""Generative selection: the model reads the candidates and names the best.

Toshniwal et al. 2025, "GenSelect: A Generative Approach to Best-of-N" (arXiv:2507.17797);
Chen et al. 2023, "Universal Self-Consistency for Large Language Model Generation" (USC,
arXiv:2311.17311). Reference code NVIDIA-NeMo/Skills @8b18f39
(`nemo_skills/inference/model/parallel_thinking.py` `ParallelThinkingConfig`,
`nemo_skills/prompt/config/generic/genselect.yaml`), read point by point; its names kept.

1. `n` candidates are sampled as best-of-N samples them (complete, never cut by the budget);
2. incomplete ones are left out of the selection when any complete one exists
   (`filter_incomplete_solutions`), and the rest are shuffled (seeded), as the reference;
3. a knockout tournament: the candidates are cut into groups of at most `window_size`
   (every candidate in exactly one group); the model reads each group in one request
   (`prompt: genselect`, the reference's template, or `usc`, Chen et al.'s) and its
   judgment (the last match of `regex`) names the group's winner; a group of one goes
   through without a call; the winners form the next round's groups, until one is left.
   When N fits one window this is plain GenSelect / USC: one call.
   A judgment that names no index in range, or a call the budget cannot pay for in full,
   picks a member at random (seeded), as the reference's fallback; both are counted.

Selection calls are generations of the policy, charged to the ledger like the samples
(`selection_tokens` in `Result.stats`, with the calls and the rounds); each may use
`selection_max_tokens` (`sampling.max_tokens` in the config; the reference's
`tokens_to_generate`) at `selection_temperature` (0.6, the reference's). The candidates
are independent samples, so curves over k are meaningful for them; the selected one is
the tournament's winner.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.sampling import draw_complete, sample_candidates
from ttscale.context import SolveContext
from ttscale.engine import GenerationRequest
from ttscale.types import Candidate, Problem, Result

PROMPTS = {
    "genselect": (
        "You will be given a problem followed by an enumerated list of {num_solutions} candidate solutions. "
        "Your task is to systematically analyze these solutions to identify the best solution among them.\n\n"
        "Problem: {problem}\n\nSolutions:\n{solutions}\n\nEnd your evaluation with exactly:\nJudgment: [IDX]\n"
        "where IDX is the index 0-{max_idx} of the best solution.\n\n"
        "Example: If Solution 2 (index 2) is best, write: \"Judgment: 2\" at the end.\n\n"
        "Important: Use only the format \"Judgment: 2\" with no special formatting, quotes, or additional characters.",
        "Solution {i}: {text}",
        r"Judg[e]?ment: (\d+)",
    ),
    "usc": (
        "I have generated the following responses to the question: {problem}\n\n{solutions}\n\n"
        "Evaluate these responses.\nSelect the most consistent response based on majority consensus.\n"
        "Start your answer with \"The most consistent response is Response X\" (without quotes).",
        "Response {i}: {text}",
        r"most consistent response is Response (\d+)",
    ),
}


class GenSelect(Strategy):
    """GenSelect / USC with a knockout tournament over windows (see the module doc).

    n: candidates sampled. window_size: candidates one selection call reads (reference 8).
    prompt: `genselect` | `usc`. regex: the judgment's pattern (null: the prompt's).
    filter_incomplete_solutions: leave out candidates that did not end (reference true).
    """

    name = "gen_select"
    independent_samples = True
    count_params = ("n", "window_size")

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n, self.max_tokens, "max_tokens")

    def __init__(
        self,
        n: int = 8,
        window_size: int = 8,
        prompt: str = "genselect",
        regex: str | None = None,
        filter_incomplete_solutions: bool = True,
        selection_temperature: float = 0.6,
        selection_max_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 256,
    ) -> None:
        if prompt not in PROMPTS:
            raise ValueError(f"strategy.prompt must be one of {tuple(PROMPTS)}, got {prompt!r}")
        if isinstance(window_size, int) and window_size < 2 and not isinstance(window_size, bool):
            raise ValueError(f"strategy.window_size must be >= 2 (a call compares candidates), got {window_size}")
        self.template, self.item, default_regex = PROMPTS[prompt]
        try:
            self.regex = re.compile(regex or default_regex)
        except re.error as e:
            raise ValueError(f"strategy.regex is not a regular expression: {e}") from None
        self.n, self.window_size, self.prompt = n, window_size, prompt
        self.filter_incomplete_solutions = bool(filter_incomplete_solutions)
        self.selection_temperature, self.selection_max_tokens = float(selection_temperature), int(selection_max_tokens)
        self.temperature, self.top_p, self.max_tokens = float(temperature), float(top_p), int(max_tokens)

    # ---- one selection call ----------------------------------------------------------
    def selection_prompt(self, ctx: SolveContext, problem: Problem, group: list[Candidate]) -> list[int]:
        msgs = [dict(m) for m in ctx.task.messages(problem)]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "user")
        listing = "\n\n".join(self.item.format(i=i, text=c.text) for i, c in enumerate(group))
        msgs[last]["content"] = self.template.format(num_solutions=len(group), problem=msgs[last]["content"],
                                                     solutions=listing, max_idx=len(group) - 1)
        return list(ctx.tokenizer.apply_chat_template(msgs))

    def judgment(self, text: str, size: int) -> int | None:
        found = self.regex.findall(text)
        if not found:
            return None
        idx = int(found[-1])
        return idx if 0 <= idx < size else None

    async def pick(self, ctx: SolveContext, problem: Problem, group: list[int], cands: list[Candidate],
                   log: dict[str, Any]) -> int:
        """The winner of one group (indices into `cands`)."""
        if len(group) == 1:
            return group[0]
        req = GenerationRequest(prompt_token_ids=self.selection_prompt(ctx, problem, [cands[i] for i in group]), n=1,
                                temperature=self.selection_temperature, top_p=1.0, max_tokens=self.selection_max_tokens)
        got = await draw_complete(ctx, req)
        idx = None
        if got:
            log["calls"] += 1
            log["selection_tokens"] += len(got[0].token_ids)
            idx = self.judgment(got[0].text, len(group))
            if idx is None:
                log["unparsed"] += 1
        else:
            log["unpaid"] += 1
        if idx is None:
            idx = int(ctx.rng.integers(len(group)))
        return group[idx]

    # ---- the tournament -----------------------------------------------------------------
    def groups(self, field: list[int]) -> list[list[int]]:
        return [field[i: i + self.window_size] for i in range(0, len(field), self.window_size)]

    async def tournament(self, ctx: SolveContext, problem: Problem, cands: list[Candidate],
                         log: dict[str, Any]) -> int | None:
        field = [i for i, c in enumerate(cands) if c.finish_reason == "stop"] if self.filter_incomplete_solutions else []
        field = field or list(range(len(cands)))
        if not field:
            return None
        field = [field[int(j)] for j in ctx.rng.permutation(len(field))]  # the reference shuffles
        while len(field) > 1:
            rnd = self.groups(field)
            log["groups"].append([list(g) for g in rnd])
            field = list(await asyncio.gather(*(self.pick(ctx, problem, g, cands, log) for g in rnd)))
        return field[0]

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        draw: dict[str, Any] = {}
        cands = await sample_candidates(problem, ctx, self.n, self.temperature, self.top_p, self.max_tokens, stats=draw)
        sample_tokens = ctx.ledger.usage.generated_tokens
        log: dict[str, Any] = {"calls": 0, "selection_tokens": 0, "unparsed": 0, "unpaid": 0, "groups": []}
        sel = await self.tournament(ctx, problem, cands, log)
        u = ctx.ledger.usage
        stats = {**draw, "selection_calls": log["calls"], "selection_tokens": log["selection_tokens"],
                 "sample_tokens": sample_tokens, "tournament_rounds": len(log["groups"]), "groups": log["groups"],
                 "judgments_unparsed": log["unparsed"], "calls_unpaid": log["unpaid"],
                 "generated_tokens": u.generated_tokens, "window_size": self.window_size, "prompt": self.prompt}
        return Result(problem_id=problem.id, answer=cands[sel].answer if sel is not None else None, candidates=cands,
                      selected=sel, stats=stats)
