"""What a strategy gets besides the problem: engine access through the ledger, the
verifier, the task's prompt/answer helpers, and seeded randomness."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttscale.budget import Ledger
from ttscale.engine import Engine, GenerationOutput, GenerationRequest
from ttscale.task import Task
from ttscale.types import Problem, Reference
from ttscale.verifier import Verifier


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any printable parts (run seed, problem id, ...)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


@dataclass
class SolveContext:
    engine: Engine
    ledger: Ledger
    task: "Task"
    verifier: "Verifier | None" = None
    seed: int = 0
    # Only set for a verifier explicitly labelled as the oracle (upper bound).
    reference: Reference | None = None
    # The problem being solved (the runner sets it; extraction may need it, e.g. a
    # HumanEval prompt turns a bare function body into a program).
    problem: Problem | None = None
    rng: np.random.Generator = field(init=False)
    _requests: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def prompt_ids(self, problem: Problem) -> list[int]:
        """Token IDs of the task's chat prompt for this problem."""
        return list(self.engine.tokenizer.apply_chat_template(self.task.messages(problem)))

    def extract_answer(self, text: str) -> str | None:
        """The task's final answer in `text`, for the problem at hand."""
        if self.problem is None:
            return self.task.extract_answer(text)
        return self.task.answer_for(self.problem, text)

    def next_seed(self) -> int:
        """A per-request seed: same problem + same request order -> same samples,
        however many other problems are in flight."""
        self._requests += 1
        return derive_seed(self.seed, self._requests)

    async def generate(self, request: GenerationRequest) -> GenerationOutput:
        """Generate through the ledger (budget-checked, charged), seeded deterministically."""
        if request.seed is None:
            request = dataclasses.replace(request, seed=self.next_seed())
        return await self.ledger.generate(request)
