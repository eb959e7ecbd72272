"""Best-of-Majority (BoM): keep the frequent answers, then return the top-k by reward.

Di, Ji, Li, Zhao and Gu 2025, "Best-of-Majority: Minimax-Optimal Strategy for Pass@k
Inference Scaling" (arXiv:2510.03199). For Pass@k inference the agent may submit up to
`k` answers. BoM samples `N` responses from the policy, estimates each answer's
probability by its frequency `pi_hat(y) = #{i : y_i = y} / N`, keeps only the answers
with `pi_hat(y) >= alpha`, and returns the `k` of those with the highest reward-model
score. The frequency filter is what protects against reward hacking (a rare response
the reward model over-scores), the reward ranking is what majority voting lacks.

Answers are grouped by the task's equivalence (math-verify for math), so "responses"
of the paper are answer classes here. The reward of a class is the best score of its
responses (`class_reward: max`, its representative is that response) or their mean
(`class_reward: mean`). Samples without an extracted answer count in `N` but belong
to no class. If no class reaches `alpha` (possible when `alpha` > 1 / #classes), the
most frequent class(es) are kept, so BoM falls back to majority voting rather than
returning nothing. Ties in reward go to the more frequent class, then to the one seen
first.

`Result.candidates` holds all N samples (each scored, so best-of-k and maj@k can be
replayed offline); `Result.stats["top_k"]` lists the returned answers in rank order
(answer, frequency, reward, candidate index); `Result.answer` is the first of them.
With k > 1 the result is graded as the paper's Pass@k (`pass_at_k: true`, the default;
`false` grades the first answer only): correct when any of the k returned answers is (`Result.stats["submitted"]`, their candidate indices, read by
`ttscale.task.grade_submitted` after grading; the first answer's own grade is kept in
`Result.grading["first_answer_correct"]`).
"""

from __future__ import annotations

from typing import Any

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.sampling import sample_candidates, score_candidates
from ttscale.context import SolveContext
from ttscale.types import Candidate, Problem, Result

CLASS_REWARDS = ("max", "mean")


class BestOfMajority(Strategy):
    name = "best_of_majority"
    requires_verifier = True
    independent_samples = True
    count_params = ("n", "k")

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n, self.max_tokens, "max_tokens")  # n whole samples

    def __init__(
        self,
        n: int = 16,
        k: int = 1,
        alpha: float = 0.125,
        class_reward: str = "max",
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 256,
        pass_at_k: bool = True,
    ) -> None:
        if n < 1 or k < 1:
            raise ValueError(f"strategy.n and strategy.k must be >= 1, got n={n}, k={k}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"strategy.alpha must be in [0, 1], got {alpha}")
        if class_reward not in CLASS_REWARDS:
            raise ValueError(f"strategy.class_reward must be one of {CLASS_REWARDS}, got {class_reward!r}")
        self.n, self.k, self.alpha, self.class_reward = n, k, alpha, class_reward
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.pass_at_k = bool(pass_at_k)

    def rank(self, cands: list[Candidate]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(the returned top-k, every class) for clustered, scored candidates."""
        n = len(cands)
        classes: dict[int, dict[str, Any]] = {}
        for i, c in enumerate(cands):
            if c.cluster is None:
                continue
            cl = classes.setdefault(c.cluster, {"cluster": c.cluster, "members": [], "first": i})
            cl["members"].append(i)
        for cl in classes.values():
            scores = [cands[i].score for i in cl["members"] if cands[i].score is not None]
            best = max(cl["members"], key=lambda i: (_num(cands[i].score), -i))
            cl["index"] = best
            cl["answer"] = cands[best].answer
            cl["count"] = len(cl["members"])
            cl["frequency"] = cl["count"] / n if n else 0.0
            if not scores:
                cl["reward"] = None
            elif self.class_reward == "max":
                cl["reward"] = max(scores)
            else:
                cl["reward"] = sum(scores) / len(scores)
        every = sorted(classes.values(), key=lambda cl: cl["first"])
        kept = [cl for cl in every if cl["frequency"] >= self.alpha - 1e-12]
        if not kept and every:
            top = max(cl["count"] for cl in every)
            kept = [cl for cl in every if cl["count"] == top]
        kept.sort(key=lambda cl: (-_num(cl["reward"]), -cl["count"], cl["first"]))
        public = [{key: cl[key] for key in ("answer", "cluster", "frequency", "count", "reward", "index")}
                  for cl in kept[: self.k]]
        summary = [{key: cl[key] for key in ("answer", "cluster", "frequency", "reward")} for cl in every]
        return public, summary

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        draw: dict = {}
        cands = await sample_candidates(problem, ctx, self.n, self.temperature, self.top_p, self.max_tokens, stats=draw)
        await score_candidates(problem, ctx, cands)
        top, classes = self.rank(cands)
        selected = top[0]["index"] if top else None
        return Result(
            problem_id=problem.id,
            answer=cands[selected].answer if selected is not None else None,
            candidates=cands,
            selected=selected,
            stats={
                **draw,
                "alpha": self.alpha,
                "k": self.k,
                "answer_classes": len(classes),
                "kept_classes": sum(1 for cl in classes if cl["frequency"] >= self.alpha - 1e-12),
                "top_k": top,
                # the answers graded: all k as Pass@k (any of them right), or the first only
                "submitted": [cl["index"] for cl in (top if self.pass_at_k else top[:1])],
                "classes": classes,
                "verifier_calls": ctx.ledger.usage.verifier_calls,
            },
        )


def _num(x: float | None) -> float:
    return float("-inf") if x is None else float(x)
