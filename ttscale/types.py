"""Core records shared by every component: problems, candidates, results, usage.

A `Problem` is what a strategy sees. The `Reference` (answer, hidden tests) is
kept apart and only reaches the task's grader after `solve` returns, so the
oracle cannot leak into a search by accident.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

_ATOMS = (str, int, float, bool, type(None))


def plain(obj: Any) -> Any:
    """`dataclasses.asdict` for records: dataclasses become dicts, containers are copied,
    without its per-value `deepcopy` of immutable scalars (which made writing a record
    cost milliseconds)."""
    if isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()} if type(obj) is dict else type(obj)((k, plain(v)) for k, v in obj.items())
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return type(obj)(*[plain(v) for v in obj]) if hasattr(obj, "_fields") else type(obj)(plain(v) for v in obj)
    return copy.deepcopy(obj)


@dataclass(frozen=True)
class Problem:
    """A problem as a strategy and its verifier see it (no reference answer)."""

    id: str
    question: str
    # Visible metadata: subject, level, entry point, *public* tests, ...
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """What grading needs and a strategy must never see."""

    answer: str | None = None
    solution: str | None = None
    # Hidden tests or any other grading data (code tasks).
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Usage:
    """Compute spent; adds up with `+`. Every cost goes through one of these."""

    requests: int = 0
    prompt_tokens: int = 0  # all prompt tokens sent (computed + cached)
    cached_prompt_tokens: int = 0  # served from the prefix cache, as the engine reports
    generated_tokens: int = 0
    verifier_calls: int = 0  # one per scored candidate / step prefix forward pass
    verifier_tokens: int = 0  # tokens given to the verifier model (computed + cached)
    verifier_cached_tokens: int = 0  # of those, served from its prefix cache
    # Tokens whose prefix-cache hits the engine did not report (a server without prompt-token
    # details): counted as computed, so FLOPs are an upper bound, and the cached counts are
    # written as None (unknown) in the record.
    cache_unknown_prompt_tokens: int = 0
    verifier_cache_unknown_tokens: int = 0
    prefill_flops: float = 0.0  # 2 * params * computed (uncached) prompt tokens
    decode_flops: float = 0.0  # 2 * params * generated tokens
    verifier_flops: float = 0.0  # 2 * verifier params * verifier tokens computed
    wall_time: float = 0.0

    @property
    def computed_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_prompt_tokens

    @property
    def flops(self) -> float:
        return self.prefill_flops + self.decode_flops + self.verifier_flops

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __iadd__(self, other: Usage) -> Usage:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def to_dict(self) -> dict[str, Any]:
        d = plain(self)
        d["computed_prompt_tokens"] = self.computed_prompt_tokens
        d["flops"] = self.flops
        if self.cache_unknown_prompt_tokens:  # some cache hits were not reported: unknown
            d["cached_prompt_tokens"] = d["computed_prompt_tokens"] = None
        if self.verifier_cache_unknown_tokens:
            d["verifier_cached_tokens"] = None
        d["flops_upper_bound"] = self.flops_upper_bound
        return d

    @property
    def flops_upper_bound(self) -> bool:
        """Whether FLOPs count tokens as computed whose cache hits were not reported."""
        return bool(self.cache_unknown_prompt_tokens or self.verifier_cache_unknown_tokens)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Usage:
        """The usage of a record; a count written as None (unknown) reads as 0, its
        `*_cache_unknown_*` field keeping that it was unknown."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and v is not None})


# How a candidate ended (`Candidate.finish_reason`), one fixed vocabulary for every strategy:
#   "stop"      end of sequence (or a stop string ending the solution): a finished solution;
#   "length"    the per-solution token allowance (`sampling.max_tokens`, which step searches
#               share as `strategy.step.max_total_tokens`) ran out;
#   "step_cap"  a step search reached `strategy.step.max_steps` (only with
#               `strategy.step.last_step=capped`; by default the last step runs to the end);
#   "budget"    compute ran out before the solution ended: the problem's budget
#               (`budget.*`) or the strategy's own (A*'s `max_expansions`); a search stopped
#               mid-way leaves its frontier with this reason;
#   "abort"     the engine aborted the generation.
# Only "stop" is a solution that ended by itself. Records written before this vocabulary
# ("eos", "max_steps", "max_tokens", "unfinished") are read back mapped onto it.
FINISH_REASONS = ("stop", "length", "step_cap", "budget", "abort")
LEGACY_FINISH_REASONS = {"eos": "stop", "max_steps": "step_cap", "max_tokens": "length", "unfinished": "budget"}


@dataclass
class Candidate:
    """One complete (or abandoned) solution produced by a strategy."""

    text: str
    answer: str | None = None  # extracted final answer (None: none found)
    num_tokens: int = 0
    finish_reason: str | None = None  # how it ended: one of FINISH_REASONS
    steps: list[str] | None = None  # step segmentation, for step-level strategies
    step_scores: list[float] | None = None  # process scores, one per step
    score: float | None = None  # outcome score from the verifier (higher is better)
    mean_logprob: float | None = None  # mean log-probability of the sampled tokens
    cluster: int | None = None  # answer-equivalence class within the problem
    correct: bool | None = None  # filled by the grader after solve() returns
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        names = {f.name for f in fields(cls)}
        c = cls(**{k: v for k, v in d.items() if k in names})
        c.finish_reason = LEGACY_FINISH_REASONS.get(c.finish_reason, c.finish_reason)  # type: ignore[arg-type]
        return c


@dataclass
class Result:
    """What `strategy.solve` returns for one problem, then graded and recorded."""

    problem_id: str
    answer: str | None  # the strategy's final answer
    candidates: list[Candidate] = field(default_factory=list)
    selected: int | None = None  # index into candidates of the chosen one
    usage: Usage = field(default_factory=Usage)
    stats: dict[str, Any] = field(default_factory=dict)  # search statistics
    correct: bool | None = None  # grade of the final answer
    error: str | None = None  # set when the problem failed (engine error, ...)
    grading: dict[str, Any] = field(default_factory=dict)
    # a step search's tree, compact and bounded (`ttscale.strategies.tree_record`); None: none
    tree: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = plain(self)
        d["usage"] = self.usage.to_dict()
        if d["tree"] is None:  # records of strategies without a tree stay as they were
            del d["tree"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        return cls(
            problem_id=d["problem_id"],
            answer=d.get("answer"),
            candidates=[Candidate.from_dict(c) for c in d.get("candidates", [])],
            selected=d.get("selected"),
            usage=Usage.from_dict(d.get("usage", {})),
            stats=d.get("stats", {}),
            correct=d.get("correct"),
            error=d.get("error"),
            grading=d.get("grading", {}),
            tree=d.get("tree"),
        )
