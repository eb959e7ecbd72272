"""The synthetic arithmetic task: deterministic from its seed, answers right
(recomputed here from the problem text alone), numeric grading."""

from __future__ import annotations

import re

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ttscale.tasks.arithmetic import ArithmeticTask
from tests.conftest import ROOT
from ttscale.types import Candidate, Result

ADD = re.compile(r"(?:buys|finds|gets) (\d+) more|gives (?:him|her) (\d+)")
SUB = re.compile(r"gives away (\d+)|loses (\d+)|sells (\d+)|gives (\d+) \w+ to a friend")
MUL = re.compile(r"becomes (\d+) times as large|ends up with (\d+) times as many")


def solve_word_problem(question: str) -> tuple[int, list[int]]:
    """Recompute a word problem's answer from its sentences (left to right)."""
    sentences = re.split(r"(?<=[.?])\s+", question)
    first = re.fullmatch(r"[A-Z][a-z]+ has (\d+) [a-z]+\.", sentences[0])
    assert first, sentences[0]
    total = int(first.group(1))
    operands = [total]
    assert sentences[-1].startswith("How many") and sentences[-1].endswith("have now?")
    for s in sentences[1:-1]:
        for pattern, op in ((ADD, "+"), (SUB, "-"), (MUL, "*")):
            m = pattern.search(s)
            if m:
                n = int(next(g for g in m.groups() if g is not None))
                total = total + n if op == "+" else total - n if op == "-" else total * n
                assert total >= 0, question  # a story never takes away more than there is
                operands.append(n)
                break
        else:
            raise AssertionError(f"unrecognised sentence {s!r}")
    return total, operands


def solve_plain(question: str) -> int:
    m = re.fullmatch(r"Calculate ([\d +\-*]+)\.", question)
    assert m, question
    return eval(m.group(1))  # only digits and + - * (checked above): Python's own precedence


def task_kwargs() -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "arithmetic.yaml"))
    cfg.pop("_target_")
    return cfg


def default_task(**overrides) -> ArithmeticTask:
    cfg = OmegaConf.load(ROOT / "conf" / "task" / "arithmetic.yaml")
    for k, v in overrides.items():
        OmegaConf.update(cfg, k, v)
    return instantiate(cfg)


def test_default_config_is_two_operand_add_subtract_word_problems():
    task = default_task()
    assert (task.num_operands, task.operators, task.phrasing) == (2, ("+", "-"), "word")
    items = ArithmeticTask(**{**task_kwargs(), "num_problems": 100}).load()
    assert len(task.load()) == task.num_problems
    p, r = items[0]  # pinned: the default problems change only on purpose
    assert p.id == "arithmetic-0"
    assert p.question == "Leo has 10 stamps. A friend gives him 5 stamps. How many stamps does Leo have now?"
    assert r.answer == "15"
    assert (task.min_value, task.max_value) == (1, 10)
    ops = [op for _, r in items for op in r.data["operators"]]
    assert 30 < ops.count("-") < 70  # both operations are drawn


def test_deterministic_from_seed_and_prefix_stable():
    a = ArithmeticTask(seed=3, num_problems=20).load()
    b = ArithmeticTask(seed=3, num_problems=20).load()
    assert a == b
    c = ArithmeticTask(seed=4, num_problems=20).load()
    assert [p.question for p, _ in a] != [p.question for p, _ in c]
    longer = ArithmeticTask(seed=3, num_problems=50).load()
    assert longer[:20] == a
    part = ArithmeticTask(seed=3, num_problems=20, offset=5, limit=4).load()
    assert part == a[5:9]
    assert ArithmeticTask(seed=3, num_problems=20, offset=18, limit=10).load() == a[18:]
    ids = [p.id for p, _ in longer]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"num_operands": 4, "operators": ["+", "-"]},
        {"num_operands": 3, "operators": ["+", "-", "*"], "max_factor": 5},
        {"num_operands": 5, "operators": ["-"], "min_value": 1, "max_value": 9},
        {"num_operands": 3, "operators": ["*"], "min_value": 2, "max_value": 12},
    ],
)
def test_word_problem_answers_are_right(kw):
    task = ArithmeticTask(seed=11, num_problems=200, **kw)
    for problem, ref in task.load():
        answer, operands = solve_word_problem(problem.question)
        assert ref.answer == str(answer), problem.question
        assert operands == ref.data["operands"]
        assert len(operands) == task.num_operands
        lo, hi = task.min_value, task.max_value
        for n, op in zip(operands[1:], ref.data["operators"]):
            assert 2 <= n <= task.max_factor if op == "*" else lo <= n <= hi
        assert lo <= operands[0] <= hi


@pytest.mark.parametrize("allow_negative", [False, True])
def test_plain_problem_answers_use_precedence(allow_negative):
    task = ArithmeticTask(seed=5, num_problems=200, phrasing="plain", num_operands=4,
                          operators=["+", "-", "*"], allow_negative=allow_negative)
    answers = []
    for problem, ref in task.load():
        answers.append(solve_plain(problem.question))
        assert ref.answer == str(answers[-1]), problem.question
    assert any(a < 0 for a in answers) == allow_negative


def test_prompt_asks_for_steps_and_a_box():
    task = default_task()
    p, _ = task.load()[0]
    [msg] = task.messages(p)
    assert msg["role"] == "user"
    assert msg["content"].startswith(p.question + "\n\n")
    assert "blank line" in msg["content"] and "\\boxed{}" in msg["content"]


def test_numeric_grading():
    task = default_task(max_value=50)
    problem, ref = task.load()[0]  # 38 + 17 = 55
    texts = {
        "38 + 17 = 55\n\n\\boxed{55}": True,
        "\\boxed{55 stamps}": True,
        "So the answer is 55.0": True,
        "38 + 17 = 55\n\nLeo has 55 stamps now.": False,  # no stated answer: last_number is opt-in
        "\\boxed{\\$55}": True,
        "\\boxed{38 + 17 = 55}": True,
        "38 + 17 = 45\n\n\\boxed{45}": False,
        "\\boxed{55} ... no wait, \\boxed{56}": False,
        "I cannot tell.": False,
    }
    cands = [Candidate(text=t, answer=task.extract_answer(t)) for t in texts]
    assert [c.answer for c in cands] == ["55", "55", "55", None, "55", "55", "45", "56", None]
    result = Result(problem_id=problem.id, answer="55", candidates=cands)
    task.grade(problem, ref, result)
    assert [c.correct for c in cands] == list(texts.values())
    assert result.correct is True
    assert task.equivalent("55", "55.0") and not task.equivalent("55", "56")
    assert task.answer_key("\\boxed{1,200}") == "1200"
    # The lenient fallback, when asked for, reads the last number.
    lenient = default_task(max_value=50, answer_fallback="last_number")
    assert lenient.extract_answer("38 + 17 = 55\n\nLeo has 55 stamps now.") == "55"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_operands": 1}, "num_operands"),
        ({"operators": ["/"]}, "operators"),
        ({"operators": []}, "operators"),
        ({"min_value": 10, "max_value": 5}, "min_value"),
        ({"phrasing": "poem"}, "phrasing"),
        ({"num_problems": -1}, "num_problems"),
        ({"operators": ["*"], "max_factor": 1}, "max_factor"),
    ],
)
def test_bad_settings_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        ArithmeticTask(**kw)
