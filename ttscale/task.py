"""The Task contract: load problems, build prompts, extract answers, grade.

Grading sees the `Reference`; strategies never do. Subclasses live one family per
file in `tasks/` and are chosen with `_target_` in `conf/task/*.yaml`.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from ttscale.types import Candidate, Problem, Reference, Result

log = logging.getLogger("ttscale")

DEFAULT_SYSTEM = None

# How a candidate ended, as strategies record it (`Candidate.finish_reason`): the engine's
# "stop" (end of sequence or a stop string) and the searches' "eos" are a finished
# solution. Everything else was cut: "length" (the engine's token cap), "max_tokens",
# "max_steps" (a search's caps), "budget", "unfinished" (search stopped with the path
# open), "abort". A candidate with no recorded reason (None: built by hand or by a
# strategy that records none) counts as finished, with a warning once per process.
FINISHED_REASONS = ("stop", "eos")
_warned_missing = False


def is_finished(finish_reason: str | None) -> bool:
    """Whether a candidate that ended so is a finished solution (None counts as finished)."""
    global _warned_missing
    if finish_reason is None:
        if not _warned_missing:
            _warned_missing = True
            log.warning("a candidate has no finish_reason: graded as finished (strategies should record one)")
        return True
    return finish_reason in FINISHED_REASONS


def credited(task: Any, candidate: Candidate) -> bool:
    """Whether the task grades this candidate's answer: a finished one always, an unfinished
    one only when the task opts in (`task.grade_unfinished=true`)."""
    return bool(task.grade_unfinished) or is_finished(candidate.finish_reason)


def withhold_unfinished(task: Any, candidates: Sequence[Candidate]) -> int:
    """Strict grading: an unfinished candidate has no answer. Its extracted answer moves to
    `extra["unfinished_answer"]` (kept for analysis), `answer` and `cluster` become None, so
    it neither votes nor earns credit. Idempotent; returns how many answers it withheld."""
    n = 0
    for c in candidates:
        if c.answer is not None and not credited(task, c):
            c.extra["unfinished_answer"] = c.answer
            c.answer, c.cluster = None, None
            n += 1
    return n


class Task:
    """Base class. Override `load`, `messages`, `extract_answer`, `grade_answer`."""

    name: str = "task"
    kind: str = "math"  # "math" | "code"
    # Rows of the task's data that were skipped as bad (`task.on_bad_row=skip`), one message each.
    skipped_rows: Sequence[str] = ()
    # Code tasks: the sandbox their programs run in (a `ttscale.sandbox.Sandbox`); None elsewhere.
    sandbox: Any = None
    # Whether an unfinished candidate's answer counts. The math tasks are strict (False,
    # `task.grade_unfinished`); the base class and the code tasks grade every program.
    grade_unfinished: bool = True

    def __init__(self, limit: int | None = None, offset: int = 0, name: str | None = None, **kwargs: Any) -> None:
        label = name or self.name
        if limit is not None and limit < 0:
            raise ValueError(f"task={label}: task.limit must be >= 0 or null, got {limit}")
        if offset < 0:
            raise ValueError(f"task={label}: task.offset must be >= 0, got {offset}")
        self.limit = limit
        self.offset = offset

    # ---- problems ---------------------------------------------------------
    def load_all(self) -> list[tuple[Problem, Reference]]:
        raise NotImplementedError

    def load(self) -> list[tuple[Problem, Reference]]:
        """Problems after `offset` / `limit`."""
        items = self.load_all()
        items = items[self.offset :]
        if self.limit is not None:
            items = items[: self.limit]
        return items

    # ---- prompting ----------------------------------------------------------
    def messages(self, problem: Problem) -> list[dict[str, str]]:
        raise NotImplementedError

    # ---- answers ------------------------------------------------------------
    def extract_answer(self, text: str) -> str | None:
        raise NotImplementedError

    def answer_for(self, problem: Problem, text: str) -> str | None:
        """The answer in `text` for `problem` (tasks whose extraction needs the problem override it)."""
        return self.extract_answer(text)

    def answer_key(self, answer: str) -> str:
        """A cheap normal form used to group equal answers before `equivalent`."""
        return " ".join(answer.split())

    def equivalent(self, a: str, b: str) -> bool:
        """Whether two extracted answers are the same answer (for voting)."""
        return self.answer_key(a) == self.answer_key(b)

    def grade_answer(self, answer: str | None, reference: Reference, problem: Problem) -> bool:
        raise NotImplementedError

    def grade(self, problem: Problem, reference: Reference, result: Result) -> None:
        """Mark every candidate and the final answer correct/incorrect, in place.

        Strict grading (unless `grade_unfinished`): an unfinished candidate's answer is
        withheld (`withhold_unfinished`), and a final answer whose selected candidate is
        unfinished is not credited."""
        memo: dict[str | None, bool] = {}
        withhold_unfinished(self, result.candidates)

        def check(ans: str | None) -> bool:
            if ans not in memo:
                memo[ans] = bool(ans is not None and self.grade_answer(ans, reference, problem))
            return memo[ans]

        for c in result.candidates:
            c.correct = check(c.answer)
        sel = result.selected
        from_unfinished = sel is not None and 0 <= sel < len(result.candidates) and not credited(
            self, result.candidates[sel])
        result.correct = False if from_unfinished else check(result.answer)

    async def agrade_answer(self, answer: str | None, reference: Reference, problem: Problem) -> bool:
        """`grade_answer` for callers on an event loop (code tasks run the program in the sandbox)."""
        return bool(answer is not None and self.grade_answer(answer, reference, problem))

    async def agrade(self, problem: Problem, reference: Reference, result: Result) -> None:
        """`grade` for the runner's event loop; tasks whose grading waits on a sandbox override it."""
        self.grade(problem, reference, result)


def grade_submitted(result: Result) -> None:
    """Pass@k grading (Di et al. 2025, arXiv:2510.03199, best-of-majority): a strategy that
    submits several answers lists their candidate indices in `result.stats["submitted"]`;
    the result is then correct when any submitted answer is. Call after `Task.grade` (the
    candidates must be graded). The first answer's own grade stays in
    `result.grading["first_answer_correct"]`, k in `result.grading["pass_at_k"]`. One
    answer (or none listed): nothing changes."""
    idx = result.stats.get("submitted") if isinstance(result.stats, dict) else None
    if not idx or len(idx) < 2:
        return
    result.grading["first_answer_correct"] = result.correct
    result.grading["pass_at_k"] = len(idx)
    result.correct = any(bool(result.candidates[i].correct) for i in idx)


def cluster_answers(task: Task, candidates: Sequence[Candidate]) -> list[int | None]:
    """Assign each candidate an answer-equivalence class id (None when it has no answer).

    Candidates are first grouped by `task.answer_key`; the groups' representatives
    are then merged with `task.equivalent` (e.g. math-verify: `1/2` ~ `0.5`).
    Ids are stable: numbered by first appearance. Sets `candidate.cluster`. Unfinished
    candidates' answers are withheld first (strict grading, `withhold_unfinished`), so
    every strategy that votes or selects over classes sees only finished answers.
    """
    withhold_unfinished(task, candidates)
    reps: list[str] = []  # one representative answer per cluster
    by_key: dict[str, int] = {}
    out: list[int | None] = []
    for c in candidates:
        if c.answer is None:
            out.append(None)
            c.cluster = None
            continue
        key = task.answer_key(c.answer)
        cid = by_key.get(key)
        if cid is None:
            for i, rep in enumerate(reps):
                if task.equivalent(rep, c.answer):
                    cid = i
                    break
            if cid is None:
                cid = len(reps)
                reps.append(c.answer)
            by_key[key] = cid
        c.cluster = cid
        out.append(cid)
    return out
