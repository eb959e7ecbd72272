"""The echo floor: how often a completion that only restates the problem is graded correct.

A grader that reads "any number in the text" credits a model that merely repeats the
question whenever the question's last number happens to be the answer ("Mia has 8
stickers. She gives away 4 stickers." -> 4). That share is a floor under every accuracy
the task reports, whatever the strategy does. `echo_floor` grades, for every problem,
a few completions that only restate it, through the task's own path
(`task.answer_for` then `task.grade`), as *finished* candidates (the worst case: strict
grading withholds the answer of an unfinished one anyway):

* `question`   -- the question text itself;
* `repeat_last` -- the question followed by its last sentence again;
* `sentences`  -- the question's sentences one per paragraph (a "step-by-step" restatement);
* `prompt`     -- the whole user prompt (question and instructions), as a model that
  parrots its input writes it.

`scripts/check_echo.py` runs it on the arithmetic task and GSM8K.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from ttscale.types import Candidate, Problem, Reference, Result

VARIANTS = ("question", "repeat_last", "sentences", "prompt")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def echo_texts(task: Any, problem: Problem) -> dict[str, str]:
    """The completions that only restate `problem`, by variant name."""
    q = problem.question.strip()
    parts = sentences(q)
    prompt = "\n\n".join(m["content"] for m in task.messages(problem))
    return {
        "question": q,
        "repeat_last": f"{q}\n\n{parts[-1] if parts else q}",
        "sentences": "\n\n".join(parts),
        "prompt": prompt,
    }


@dataclass
class EchoReport:
    task: str
    problems: int
    correct: dict[str, int] = field(default_factory=lambda: {v: 0 for v in VARIANTS})
    answered: dict[str, int] = field(default_factory=lambda: {v: 0 for v in VARIANTS})
    any_correct: int = 0  # problems where at least one variant was graded correct
    examples: list[dict[str, Any]] = field(default_factory=list)

    def rate(self, variant: str) -> float:
        return self.correct[variant] / self.problems if self.problems else 0.0

    @property
    def any_rate(self) -> float:
        return self.any_correct / self.problems if self.problems else 0.0

    @property
    def worst_rate(self) -> float:
        return max((self.rate(v) for v in VARIANTS), default=0.0)


def grade_echo(task: Any, problem: Problem, reference: Reference, text: str) -> Candidate:
    """`text` graded as a finished completion for `problem`, as a run grades it."""
    cand = Candidate(text=text, answer=task.answer_for(problem, text), finish_reason="stop")
    result = Result(problem_id=problem.id, answer=cand.answer, candidates=[cand], selected=0)
    task.grade(problem, reference, result)
    return cand


def echo_floor(task: Any, items: Sequence[tuple[Problem, Reference]], max_examples: int = 10) -> EchoReport:
    """Grade every echo variant of every problem; count those graded correct."""
    rep = EchoReport(task=getattr(task, "name", "task"), problems=len(items))
    for problem, ref in items:
        hit = False
        for variant, text in echo_texts(task, problem).items():
            c = grade_echo(task, problem, ref, text)
            rep.answered[variant] += c.answer is not None
            if c.correct:
                rep.correct[variant] += 1
                hit = True
                if len(rep.examples) < max_examples:
                    rep.examples.append({"id": problem.id, "variant": variant, "answer": c.answer,
                                         "reference": ref.answer})
        rep.any_correct += hit
    return rep
