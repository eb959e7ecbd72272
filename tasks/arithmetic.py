"""Synthetic arithmetic problems, generated from a seed: the embedded default task.

Problem `i` is generated from its own random stream (`"<seed>:<i>"`), so the
first problems do not change when `num_problems` grows, and the same config
gives the same problems on every machine and Python version.

Difficulty: `num_operands`, the operand range `[min_value, max_value]`, the
`operators` (`+`, `-`, optionally `*`, whose factor is drawn from
`[2, max_factor]`). Phrasing:

* `word` -- a short story read left to right ("Mia has 23 stickers. She gives
  away 15 stickers. ..."): each operation applies to the running total, which
  never goes negative (a subtraction takes at most what there is).
* `plain` -- "Calculate 23 + 15 * 4." with the usual precedence
  (`*` before `+`/`-`); negative results are allowed only with `allow_negative`.

The prompt asks for one equation per step, steps separated by blank lines (the
step delimiter of the step-level strategies), and the answer in `\\boxed{}`.
Grading is numeric: the one number the extracted answer states.
"""

from __future__ import annotations

import random
from typing import Sequence

from ttscale.tasks import answers as A
from ttscale.tasks.math_tasks import MathBase
from ttscale.types import Problem, Reference

OPERATORS = ("+", "-", "*")
PHRASINGS = ("word", "plain")

ARITHMETIC_PROMPT = (
    "{question}\n\n"
    "Solve it step by step. Write one equation per step, and leave a blank line between steps. "
    "Put the final answer in \\boxed{}."
)

NAMES = [
    ("Mia", "she", "her"), ("Tom", "he", "him"), ("Ava", "she", "her"), ("Leo", "he", "him"),
    ("Zoe", "she", "her"), ("Sam", "he", "him"), ("Emma", "she", "her"), ("Noah", "he", "him"),
    ("Lily", "she", "her"), ("Ben", "he", "him"), ("Nina", "she", "her"), ("Omar", "he", "him"),
]
ITEMS = ["apple", "marble", "sticker", "book", "pencil", "cookie", "coin", "card", "shell", "stamp"]
ADD = [
    "{P} buys {n} more {item}.",
    "{P} finds {n} more {item}.",
    "A friend gives {o} {n} {item}.",
    "{P} gets {n} more {item}.",
]
SUB = [
    "{P} gives away {n} {item}.",
    "{P} loses {n} {item}.",
    "{P} sells {n} {item}.",
    "{P} gives {n} {item} to a friend.",
]
MUL = [
    "Then the number of {items} {p} has becomes {n} times as large.",
    "{P} then ends up with {n} times as many {items} as before.",
]


def evaluate(operands: Sequence[int], operators: Sequence[str], sequential: bool) -> int:
    """Left to right (`sequential`) or with `*` before `+`/`-`."""
    if sequential:
        total = operands[0]
        for op, n in zip(operators, operands[1:]):
            total = total + n if op == "+" else total - n if op == "-" else total * n
        return total
    terms: list[int] = [operands[0]]
    signs: list[int] = [1]
    for op, n in zip(operators, operands[1:]):
        if op == "*":
            terms[-1] *= n
        else:
            terms.append(n)
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms))


class ArithmeticTask(MathBase):
    """Generated arithmetic word (or plain) problems with integer answers."""

    def __init__(
        self,
        name: str = "arithmetic",
        num_problems: int = 100,
        seed: int = 0,
        num_operands: int = 2,
        min_value: int = 1,
        max_value: int = 10,
        operators: Sequence[str] = ("+", "-"),
        max_factor: int = 9,
        phrasing: str = "word",
        allow_negative: bool = False,
        prompt_template: str = ARITHMETIC_PROMPT,
        fallbacks: Sequence[str] = ("boxed", "answer_is"),
        **kwargs,
    ) -> None:
        super().__init__(name=name, prompt_template=prompt_template, fallbacks=fallbacks, **kwargs)
        if num_problems < 0:
            raise ValueError(f"task.num_problems must be >= 0, got {num_problems}")
        if num_operands < 2:
            raise ValueError(f"task.num_operands must be >= 2, got {num_operands}")
        if not 0 <= min_value <= max_value:
            raise ValueError(f"task.min_value/max_value must satisfy 0 <= min <= max, got {min_value}, {max_value}")
        ops = tuple(operators)
        bad = [o for o in ops if o not in OPERATORS]
        if not ops or bad:
            raise ValueError(f"task.operators must be a non-empty subset of {list(OPERATORS)}, got {list(ops)}")
        if "*" in ops and max_factor < 2:
            raise ValueError(f"task.max_factor must be >= 2 with '*', got {max_factor}")
        if phrasing not in PHRASINGS:
            raise ValueError(f"task.phrasing must be one of {PHRASINGS}, got {phrasing!r}")
        self.num_problems, self.seed = num_problems, seed
        self.num_operands, self.min_value, self.max_value = num_operands, min_value, max_value
        self.operators, self.max_factor = ops, max_factor
        self.phrasing, self.allow_negative = phrasing, allow_negative

    # ---- generation ---------------------------------------------------------
    def _draw(self, rng: random.Random) -> tuple[list[int], list[str]]:
        sequential = self.phrasing == "word"
        while True:  # rejection sampling; every accepted draw is a valid problem
            operands = [rng.randint(self.min_value, self.max_value)]
            ops: list[str] = []
            total = operands[0]
            for _ in range(self.num_operands - 1):
                op = rng.choice(self.operators)
                if op == "-" and sequential and not self.allow_negative and total < self.min_value:
                    break  # nothing left to take away: draw again
                if op == "*":
                    n = rng.randint(2, self.max_factor)
                elif op == "-" and sequential and not self.allow_negative:
                    n = rng.randint(self.min_value, min(self.max_value, total))
                else:
                    n = rng.randint(self.min_value, self.max_value)
                ops.append(op)
                operands.append(n)
                total = evaluate(operands, ops, sequential=True)
            if len(operands) < self.num_operands:
                continue
            if sequential or self.allow_negative or evaluate(operands, ops, sequential=False) >= 0:
                return operands, ops

    def _word(self, rng: random.Random, operands: list[int], ops: list[str]) -> str:
        name, p, o = rng.choice(NAMES)
        thing = rng.choice(ITEMS)
        items = thing + "s"
        fmt = dict(P=p.capitalize(), p=p, o=o, items=items)
        sentences = [f"{name} has {operands[0]} {thing if operands[0] == 1 else items}."]
        for op, n in zip(ops, operands[1:]):
            pool = ADD if op == "+" else SUB if op == "-" else MUL
            sentences.append(rng.choice(pool).format(n=n, item=thing if n == 1 else items, **fmt))
        sentences.append(f"How many {items} does {name} have now?")
        return " ".join(sentences)

    @staticmethod
    def expression(operands: Sequence[int], ops: Sequence[str]) -> str:
        parts = [str(operands[0])]
        for op, n in zip(ops, operands[1:]):
            parts += [op, str(n)]
        return " ".join(parts)

    def generate(self, index: int) -> tuple[Problem, Reference]:
        rng = random.Random(f"{self.seed}:{index}")
        operands, ops = self._draw(rng)
        sequential = self.phrasing == "word"
        answer = evaluate(operands, ops, sequential=sequential)
        expr = self.expression(operands, ops)
        question = self._word(rng, operands, ops) if sequential else f"Calculate {expr}."
        problem = Problem(id=f"{self.name}-{index}", question=question, meta={"task": self.name})
        ref = Reference(
            answer=str(answer),
            data={"operands": operands, "operators": ops, "order": "left-to-right" if sequential else "precedence"},
        )
        return problem, ref

    def load_all(self) -> list[tuple[Problem, Reference]]:
        return [self.generate(i) for i in range(self.num_problems)]

    def load(self) -> list[tuple[Problem, Reference]]:
        # Generate only the problems asked for.
        stop = self.num_problems if self.limit is None else min(self.num_problems, self.offset + self.limit)
        return [self.generate(i) for i in range(self.offset, stop)]

    # ---- answers -------------------------------------------------------------
    def extract_answer(self, text: str) -> str | None:
        ans = super().extract_answer(text)
        num = A.to_number(ans)
        return ans if num is None else A.number_str(num)

    def answer_key(self, answer: str) -> str:
        num = A.to_number(answer)
        return super().answer_key(answer) if num is None else A.number_str(num)

    def equivalent(self, a: str, b: str) -> bool:
        return self.answer_key(a) == self.answer_key(b)

    def grade_answer(self, answer: str | None, reference: Reference, problem: Problem) -> bool:
        return A.numbers_equal(A.to_number(answer), A.to_number(reference.answer))
