"""Parallel-distill-refine (PDR) and sequential refinement (SR).

Madaan et al. 2025, "Rethinking Thinking Tokens: LLMs as Improvement Operators"
(arXiv:2510.01123). No public code; the paper is the reference, its names are kept where
it names things (M drafts in parallel, a bounded workspace, rounds of refinement).

PDR, per problem:

1. draft: `M` solutions sampled in parallel (round 0: the task's prompt);
2. distill: the round's drafts are turned into a workspace of at most `workspace_tokens`
   policy tokens (`distill`):
   - `summary`: the model reads the drafts and writes a summary (one generation capped
     at `workspace_tokens`, charged like any other);
   - `top_k`: the `k` best drafts by the verifier's score, extracted, each cut so the
     whole workspace fits the bound;
   - `random_k`: `k` drafts drawn at random (seeded), extracted and cut the same way;
3. refine: `M` new drafts, each conditioned on the workspace *only* (the question plus
   the workspace; no earlier draft is in the prompt unless the workspace holds it);
4. steps 2-3 repeat for `rounds` rounds; the answer comes from the last round's drafts
   (`selection`: `vote`, the majority answer, or `best_score`, the verifier's best).

Sequential refinement (the paper's baseline; Snell et al. 2024's sequential revisions):
`M: 1`, `distill: top_k`, `k: 1`: one draft improved `rounds` times, each seeing the
previous one (cut to the bound) (`conf/strategy/sequential_refinement.yaml`). Snell et
al.'s parallel versus sequential revisions fall out as settings of `M` and `rounds`.

The prompts (`distill_prompt`, `refine_prompt`) extend the task's last user message, so
the question comes first and the model answers in the task's format. Every draft is a
complete sample of up to `max_tokens` (`sampling.max_tokens`) drawn as parallel sampling
draws them (never cut by the budget; `strategies/sampling.draw_complete`); the budget
stops the rounds, and the answer then comes from the last round that has drafts.

`Result.stats` records both costs the paper reports: `total_tokens` (every generated
token) and `sequential_tokens`, the tokens on the longest sequential chain (per round
the longest draft, plus the summary: a latency proxy), with the workspace size of every
round (`workspace_tokens_per_round`).
"""

from __future__ import annotations

from typing import Any, Sequence

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.sampling import draw_complete, plurality, score_candidates
from ttscale.task import cluster_answers
from ttscale.context import SolveContext
from ttscale.engine import Completion, GenerationRequest
from ttscale.types import Candidate, Problem, Result

DISTILLS = ("summary", "top_k", "random_k")
SELECTIONS = ("vote", "best_score")
DISTILL_PROMPT = ("Here are {m} attempts at this problem:\n\n{drafts}\n\nSummarize them for a later attempt: the "
                  "approaches, the intermediate results they agree on, where they disagree, and which mistakes to avoid.")
REFINE_PROMPT = "Notes from earlier attempts at this problem:\n\n{workspace}\n\nUsing the notes, write a complete, correct solution."


class ParallelDistillRefine(Strategy):
    """PDR and SR (Madaan et al. 2025). See the module doc.

    M: drafts per round. rounds: refinement rounds after the first drafts.
    workspace_tokens: the workspace's bound, in policy tokens.
    distill: `summary` | `top_k` | `random_k`; k: drafts kept by the extractive ones.
    selection: `vote` | `best_score` (the last round's drafts).
    """

    name = "pdr"
    count_params = ("M", "rounds", "workspace_tokens", "k")

    def request_shape(self) -> RequestShape:
        return RequestShape(self.M, self.max_tokens, "max_tokens")  # M whole drafts

    def __init__(
        self,
        M: int = 4,
        rounds: int = 2,
        workspace_tokens: int = 256,
        distill: str = "summary",
        k: int = 2,
        selection: str = "vote",
        distill_prompt: str = DISTILL_PROMPT,
        refine_prompt: str = REFINE_PROMPT,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 256,
    ) -> None:
        if distill not in DISTILLS:
            raise ValueError(f"strategy.distill must be one of {DISTILLS}, got {distill!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"strategy.selection must be one of {SELECTIONS}, got {selection!r}")
        if "{workspace}" not in refine_prompt:
            raise ValueError("strategy.refine_prompt must hold '{workspace}'")
        if distill == "summary" and "{drafts}" not in distill_prompt:
            raise ValueError("strategy.distill_prompt must hold '{drafts}'")
        self.M, self.rounds, self.workspace_tokens, self.k = M, rounds, workspace_tokens, k
        self.distill, self.selection = distill, selection
        self.distill_prompt, self.refine_prompt = distill_prompt, refine_prompt
        self.temperature, self.top_p, self.max_tokens = float(temperature), float(top_p), int(max_tokens)
        # an instance attribute: only these settings read scores
        self.requires_verifier = distill == "top_k" or selection == "best_score"

    # ---- prompts -----------------------------------------------------------------
    def prompt(self, ctx: SolveContext, problem: Problem, extra: str | None) -> list[int]:
        msgs = [dict(m) for m in ctx.task.messages(problem)]
        if extra is not None:
            last = max(i for i, m in enumerate(msgs) if m["role"] == "user")
            msgs[last]["content"] = msgs[last]["content"] + "\n\n" + extra
        return list(ctx.tokenizer.apply_chat_template(msgs))

    async def drafts(self, ctx: SolveContext, problem: Problem, workspace: str | None, n: int) -> list[Completion]:
        extra = None if workspace is None else self.refine_prompt.format(workspace=workspace)
        wants_lp = ctx.verifier is not None and ctx.verifier.needs_logprobs
        req = GenerationRequest(prompt_token_ids=self.prompt(ctx, problem, extra), n=n, temperature=self.temperature,
                                top_p=self.top_p, max_tokens=self.max_tokens, logprobs=1 if wants_lp else None)
        return await draw_complete(ctx, req)

    # ---- distillation --------------------------------------------------------------
    def extract(self, ctx: SolveContext, picked: Sequence[Candidate], ids: Sequence[list[int]]) -> tuple[str, int]:
        """The picked drafts, headed and cut so that the whole fits `workspace_tokens`."""
        tok = ctx.tokenizer
        parts: list[str] = []
        used = 0
        for j, (c, t) in enumerate(zip(picked, ids)):
            head = tok.encode(("\n\n" if parts else "") + f"Attempt {j + 1}:\n")
            room = self.workspace_tokens - used - len(head)
            if room <= 0:
                break
            body = list(t)[:room]
            parts.append(tok.decode(head) + tok.decode(body))
            used += len(head) + len(body)
        return "".join(parts), used

    async def distill_round(self, problem: Problem, ctx: SolveContext, cands: list[Candidate],
                            comps: list[Completion]) -> tuple[str | None, int, int]:
        """(workspace, its tokens, tokens generated to make it); None: the budget stopped it."""
        if self.distill == "summary":
            listing = "\n\n".join(f"Attempt {i + 1}:\n{c.text}" for i, c in enumerate(cands))
            extra = self.distill_prompt.format(m=len(cands), drafts=listing)
            req = GenerationRequest(prompt_token_ids=self.prompt(ctx, problem, extra), n=1,
                                    temperature=self.temperature, top_p=self.top_p, max_tokens=self.workspace_tokens)
            got = await draw_complete(ctx, req)
            if not got:
                return None, 0, 0
            return got[0].text, len(got[0].token_ids), len(got[0].token_ids)
        if self.distill == "top_k":
            await score_candidates(problem, ctx, cands)
            order = sorted(range(len(cands)), key=lambda i: (-(cands[i].score if cands[i].score is not None
                                                               else float("-inf")), i))
        else:
            order = [int(i) for i in ctx.rng.permutation(len(cands))]
        keep = order[: self.k]
        text, used = self.extract(ctx, [cands[i] for i in keep], [comps[i].token_ids for i in keep])
        return text, used, 0

    # ---- the rounds -----------------------------------------------------------------
    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        workspace: str | None = None
        last: list[Candidate] = []
        per_round: list[dict[str, Any]] = []
        sequential = 0
        for r in range(self.rounds + 1):
            comps = await self.drafts(ctx, problem, workspace, self.M)
            if not comps:
                break
            cands = [Candidate(text=c.text, answer=ctx.extract_answer(c.text), num_tokens=len(c.token_ids),
                               finish_reason=c.finish_reason, mean_logprob=c.mean_logprob,
                               extra={"round": r}) for c in comps]
            last = cands
            longest = max(len(c.token_ids) for c in comps)
            sequential += longest
            info: dict[str, Any] = {"round": r, "drafts": len(comps), "longest_draft": longest}
            per_round.append(info)
            if r == self.rounds:
                break
            workspace, size, made = await self.distill_round(problem, ctx, cands, comps)
            if workspace is None:
                break
            sequential += made
            info.update({"workspace_tokens": size, "distill_tokens": made, "workspace": workspace})
        return await self.result(problem, ctx, last, per_round, sequential)

    async def result(self, problem: Problem, ctx: SolveContext, cands: list[Candidate],
                     per_round: list[dict[str, Any]], sequential: int) -> Result:
        cluster_answers(ctx.task, cands)
        sel = None
        if self.selection == "best_score":
            await score_candidates(problem, ctx, [c for c in cands if c.score is None])
            scored = [i for i, c in enumerate(cands) if c.score is not None]
            sel = max(scored, key=lambda i: (cands[i].score, -i)) if scored else None
        if sel is None:
            sel = plurality(cands)
        if sel is None and cands:
            sel = 0
        u = ctx.ledger.usage
        stats = {
            "rounds_done": len(per_round), "total_tokens": u.generated_tokens, "sequential_tokens": sequential,
            "workspace_tokens_per_round": [i.get("workspace_tokens") for i in per_round if "workspace_tokens" in i],
            "per_round": per_round, "samples": len(cands), "M": self.M, "distill": self.distill,
            "budget_exhausted": ctx.ledger.exhausted or len(per_round) < self.rounds + 1,
            "generated_tokens": u.generated_tokens, "verifier_calls": u.verifier_calls,
        }
        return Result(problem_id=problem.id, answer=cands[sel].answer if sel is not None else None,
                      candidates=cands, selected=sel, stats=stats)
