"""Test helpers: a tiny self-contained task whose answers are \\boxed{...} strings."""

from __future__ import annotations

import re

from ttscale.task import Task
from ttscale.budget import Budget, Ledger
from ttscale.context import SolveContext
from ttscale.types import Problem, Reference

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


class ToyTask(Task):
    """Problems "q0".."q{n-1}" whose reference answer is str(i % modulo)."""

    name = "toy"

    def __init__(self, num_problems: int = 4, modulo: int = 3, **kw) -> None:
        super().__init__(**kw)
        self.num_problems, self.modulo = num_problems, modulo

    def load_all(self):
        return [(Problem(id=f"q{i}", question=f"q{i}"), Reference(answer=str(i % self.modulo)))
                for i in range(self.num_problems)]

    def messages(self, problem):
        return [{"role": "user", "content": problem.question}]

    def extract_answer(self, text):
        m = BOXED.findall(text)
        return m[-1].strip() if m else None

    def answer_key(self, answer):
        return answer.replace(" ", "").lstrip("0") or "0"

    def grade_answer(self, answer, reference, problem):
        return self.answer_key(answer) == self.answer_key(reference.answer)


def make_ctx(engine, task=None, verifier=None, budget=None, seed=0, reference=None) -> SolveContext:
    return SolveContext(engine=engine, ledger=Ledger(engine, budget or Budget()), task=task or ToyTask(),
                        verifier=verifier, seed=seed, reference=reference)


CRASH_MARK = "the engine crashed on purpose (tests/helpers.py)"


def crashing_engine(**_kw):
    """A backend whose construction raises: a job whose run crashes (tests/sweep_conf/backend/crash.yaml)."""
    raise RuntimeError(CRASH_MARK)
