"""Math word problems with a single final answer: MATH-500, GSM8K, AIME 2024/2025,
AMC 2023, or any file of yours with a problem and an answer per row.

One class, configured per dataset in `conf/task/<name>.yaml`: where the rows come
from (`hub` + `split`/`hub_config`, or a local `path`), which fields hold the
problem / answer / solution / id (`*_field`, one name or a list of alternatives,
the first present is used), and how the prompt is built. Grading uses
`tasks.answers` (boxed extraction + math-verify).

Strict grading (the defaults; README "Math tasks" lists every decision):

* only a finished candidate's answer counts (`ttscale.task.withhold_unfinished`); one cut
  by a token cap, a step cap or the budget has none. `task.grade_unfinished=true` grades
  it as it stands;
* answers are read only where the solution states them: the last `\\boxed{}`, "The answer
  is X" / "Final answer: X" (`answer_is`), GSM8K's "#### X" (`hash`), as `task.fallbacks`
  lists. Reading any number (`last_number`) is off; `task.answer_fallback=last_number`
  tries it after them;
* a verbatim copy of the question in the completion is ignored, so an echo of the
  question never states an answer (`scripts/check_echo.py` measures the echo floor).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from ttscale.tasks import answers as A
from ttscale.task import Task
from ttscale.tasks.loading import load_rows, pick_field
from ttscale.tasks.rows import Rows, bad_row, check_on_bad_row
from ttscale.types import Problem, Reference

log = logging.getLogger("ttscale")

DEFAULT_PROMPT = "{question}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
QUESTION = "{question}"

FieldSpec = str | Sequence[str] | None


def answer_to_str(value: Any) -> str | None:
    """A reference answer as a string: `70` -> `'70'`, `27.0` -> `'27'`, `' 3 '` -> `'3'`."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value).strip()


class MathBase(Task):
    """Prompting, answer extraction and math-verify grading shared by the math tasks."""

    kind = "math"

    def __init__(
        self,
        name: str = "math",
        prompt_template: str = DEFAULT_PROMPT,
        system_prompt: str | None = None,
        fallbacks: Sequence[str] = ("boxed", "answer_is"),
        answer_fallback: str | None = None,
        grade_unfinished: bool = False,
        grading_timeout: int | None = A.DEFAULT_TIMEOUT_S,
        max_answer_chars: int = A.DEFAULT_MAX_ANSWER_CHARS,
        limit: int | None = None,
        offset: int = 0,
    ) -> None:
        super().__init__(limit=limit, offset=offset, name=name)
        if QUESTION not in prompt_template:
            raise ValueError(f"task={name}: task.prompt_template must contain {QUESTION!r}")
        if isinstance(fallbacks, str):
            raise ValueError(f"task={name}: task.fallbacks must be a list, e.g. [boxed, answer_is], got {fallbacks!r}")
        lenient = [f for f in fallbacks if f in A.ANY_NUMBER]
        if lenient:
            raise ValueError(f"task={name}: task.fallbacks may list only {list(A.EXPLICIT)}; {lenient[0]} reads any "
                             f"number (an echo of the question gets an answer): opt in with "
                             f"task.answer_fallback={lenient[0]}")
        unknown = [f for f in fallbacks if f not in A.FALLBACKS]
        if unknown:
            raise ValueError(f"task={name}: task.fallbacks has unknown methods {unknown}; choose from {list(A.EXPLICIT)}")
        if answer_fallback not in (None, *A.ANY_NUMBER):
            raise ValueError(f"task={name}: task.answer_fallback must be null or one of {list(A.ANY_NUMBER)}, "
                             f"got {answer_fallback!r}")
        if not isinstance(grade_unfinished, bool):
            raise ValueError(f"task={name}: task.grade_unfinished must be true or false, got {grade_unfinished!r}")
        self.name = name
        self.prompt_template = prompt_template
        self.system_prompt = system_prompt
        self.fallbacks = tuple(fallbacks) + ((answer_fallback,) if answer_fallback else ())
        self.answer_fallback = answer_fallback
        self.grade_unfinished = grade_unfinished
        self.grading_timeout = grading_timeout
        self.max_answer_chars = max_answer_chars

    # ---- prompting ----------------------------------------------------------
    def prompt(self, problem: Problem) -> str:
        # str.replace, not str.format: templates are full of LaTeX braces (\boxed{}).
        return self.prompt_template.replace(QUESTION, problem.question)

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        msgs = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        msgs.append({"role": "user", "content": self.prompt(problem)})
        return msgs

    # ---- answers ------------------------------------------------------------
    def extract_answer(self, text: str) -> str | None:
        return A.extract_answer(text, self.fallbacks)

    def answer_for(self, problem: Problem, text: str) -> str | None:
        """The answer `text` states for `problem`; verbatim copies of the question are
        ignored first, so restating the problem never states an answer."""
        q = problem.question.strip()
        return self.extract_answer(text.replace(q, "\n") if q else text)

    def answer_key(self, answer: str) -> str:
        return A.answer_key(answer)

    def equivalent(self, a: str, b: str) -> bool:
        return A.equivalent(a, b, timeout_s=self.grading_timeout, max_answer_chars=self.max_answer_chars)

    def grade_answer(self, answer: str | None, reference: Reference, problem: Problem) -> bool:
        return A.math_equal(
            reference.answer, answer, timeout_s=self.grading_timeout, max_answer_chars=self.max_answer_chars
        )


class MathTask(MathBase):
    """A math dataset loaded from the Hub or a local file (see `conf/task/*.yaml`).

    `path` wins over `hub`, so `task.path=my.jsonl` alone switches a Hub task to a
    file. Problem ids are `<name>-<id field>` when the dataset has an id field,
    else `<name>-<row index>` (the index in the whole file, so ids do not move
    with `offset`/`limit`).
    """

    def __init__(
        self,
        name: str,
        hub: str | None = None,
        hub_config: str | None = None,
        split: str = "test",
        revision: str | None = None,
        path: str | None = None,
        problem_field: FieldSpec = "problem",
        answer_field: FieldSpec = "answer",
        solution_field: FieldSpec = None,
        id_field: FieldSpec = None,
        meta_fields: Sequence[str] = (),
        answer_marker: str | None = None,
        strip_suffixes: Sequence[str] = (),
        on_bad_row: str = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if not hub and not path:
            raise ValueError(f"task={name}: set task.hub=<Hub dataset> or task.path=<local file>")
        # a malformed / non-UTF-8 line, a row without problem, answer or id, a duplicate id:
        # "error" names file and line; "skip" skips it and counts it (run/skipped_rows)
        self.on_bad_row = check_on_bad_row(on_bad_row, task=name)
        self.skipped_rows: list[str] = []
        self.hub, self.hub_config, self.split, self.revision = hub, hub_config, split, revision
        self.path = path
        self.problem_field, self.answer_field = problem_field, answer_field
        self.solution_field, self.id_field = solution_field, id_field
        self.meta_fields = tuple(meta_fields)
        self.answer_marker = answer_marker
        self.strip_suffixes = tuple(s.strip() for s in strip_suffixes if s.strip())
        self._items: list[tuple[Problem, Reference]] | None = None

    # ---- loading --------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        return load_rows(task=self.name, path=self.path, hub=self.hub, split=self.split,
                         config=self.hub_config, revision=self.revision, on_bad_row=self.on_bad_row)

    def _question(self, text: str) -> str:
        text = text.strip()
        for suffix in self.strip_suffixes:
            if text.endswith(suffix):
                text = text[: -len(suffix)].rstrip()
        return text

    def _answer_and_solution(self, raw: Any, solution: Any) -> tuple[str | None, str | None]:
        if self.answer_marker is None:
            return answer_to_str(raw), (str(solution) if solution is not None else None)
        # GSM8K: the answer field is a worked solution ending "#### 18".
        text = str(raw)
        if self.answer_marker not in text:
            return None, text
        ans = text.rsplit(self.answer_marker, 1)[1].strip()
        num = A.canonical_number(ans)
        return (num if num is not None else ans), (str(solution) if solution is not None else text)

    def load_all(self) -> list[tuple[Problem, Reference]]:
        if self._items is not None:
            return self._items
        rows = self.rows()
        if not rows:
            n_bad = len(getattr(rows, "skipped", ()))
            raise ValueError(f"task={self.name}: the dataset has no rows ({self.path or self.hub})"
                             + (f"; {n_bad} bad row(s) skipped" if n_bad else ""))
        columns = sorted({k for r in rows for k in r})  # every row: the first may be a bad one
        pf = pick_field(columns, self.problem_field, key="problem_field", task=self.name)
        af = pick_field(columns, self.answer_field, key="answer_field", task=self.name)
        sf = pick_field(columns, self.solution_field, key="solution_field", task=self.name, required=False)
        idf = pick_field(columns, self.id_field, key="id_field", task=self.name, required=False)
        missing_meta = [m for m in self.meta_fields if m not in columns]
        if missing_meta:
            raise ValueError(
                f"task={self.name}: task.meta_fields {missing_meta} are not in the dataset; its fields are {columns}"
            )
        items: list[tuple[Problem, Reference]] = []
        seen: dict[str, int] = {}
        rows = rows if isinstance(rows, Rows) else Rows(rows)
        skipped = list(rows.skipped)

        def bad(message: str) -> None:
            bad_row(message, task=self.name, on_bad_row=self.on_bad_row, skipped=skipped)

        for i, row in enumerate(rows):
            at = rows.where(i)
            if idf is not None and row.get(idf) in (None, ""):
                bad(f"{at}: no id in field {idf!r} (task.id_field)")
                continue
            pid = f"{self.name}-{row[idf]}" if idf is not None else f"{self.name}-{rows.ordinal(i)}"
            if pid in seen:
                bad(f"{at}: duplicate id: same id {pid!r} as {rows.where(seen[pid])} (task.id_field={idf}; "
                    "task.id_field=null numbers rows instead)")
                continue
            if row.get(pf) is None or not str(row[pf]).strip():
                bad(f"{at}: no problem text in field {pf!r} (task.problem_field)")
                continue
            raw = row.get(af)
            answer, solution = self._answer_and_solution(raw, row.get(sf) if sf else None) if raw is not None else (None, None)
            if answer is None or answer == "":
                bad(f"{at}: no answer in field {af!r} (task.answer_field)")
                continue
            seen[pid] = i
            meta = {m: row.get(m) for m in self.meta_fields}
            meta["task"] = self.name
            problem = Problem(id=pid, question=self._question(str(row[pf])), meta=meta)
            items.append((problem, Reference(answer=answer, solution=solution)))
        self.skipped_rows = skipped
        if skipped:
            log.warning("task=%s: skipped %d bad row(s) (task.on_bad_row=skip); first: %s",
                        self.name, len(skipped), skipped[0])
        if not items:
            raise ValueError(f"task={self.name}: no usable rows in {self.path or self.hub} ({len(skipped)} bad)")
        self._items = items
        return items


@dataclass
class Agreement:
    """How often the grader accepts the reference solutions' own final answers."""

    task: str
    problems: int
    with_solution: int  # problems that have a reference solution
    solution_agree: int  # final answer extracted from the solution graded correct
    self_agree: int  # reference answer graded against itself
    # A grader that accepts anything would agree 100%: each reference answer is also
    # graded against the *next* problem's reference; where the two differ in normal
    # form and the grader still says "equal", it is listed (a possible false positive).
    cross_pairs: int = 0
    cross_accepted: int = 0
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    @property
    def solution_rate(self) -> float | None:
        return self.solution_agree / self.with_solution if self.with_solution else None

    @property
    def self_rate(self) -> float:
        return self.self_agree / self.problems if self.problems else 0.0


def reference_agreement(task: MathBase, items: Sequence[tuple[Problem, Reference]]) -> Agreement:
    """Grade each reference solution's extracted final answer, and each reference
    answer against itself, with the task's own extraction and grader."""
    rep = Agreement(task=task.name, problems=len(items), with_solution=0, solution_agree=0, self_agree=0)
    for problem, ref in items:
        self_ok = task.grade_answer(ref.answer, ref, problem)
        rep.self_agree += self_ok
        if not self_ok:
            rep.disagreements.append({"id": problem.id, "kind": "self", "reference": ref.answer})
        if ref.solution:
            rep.with_solution += 1
            extracted = task.extract_answer(ref.solution)
            ok = task.grade_answer(extracted, ref, problem)
            rep.solution_agree += ok
            if not ok:
                rep.disagreements.append(
                    {"id": problem.id, "kind": "solution", "reference": ref.answer, "extracted": extracted}
                )
    for (problem, ref), (other, oref) in zip(items, list(items[1:]) + list(items[:1])):
        if ref.answer is None or oref.answer is None or task.answer_key(ref.answer) == task.answer_key(oref.answer):
            continue
        rep.cross_pairs += 1
        if task.grade_answer(oref.answer, ref, problem):
            rep.cross_accepted += 1
            rep.disagreements.append(
                {"id": problem.id, "kind": "cross", "reference": ref.answer, "other": oref.answer, "other_id": other.id}
            )
    return rep
