"""Math dataset loading: the real configs and loaders on the shared offline copies,
field mapping, ids, limit/offset, and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ttscale.tasks.math_tasks import MathTask, answer_to_str
from tests.conftest import ROOT, shared_dataset

CONF = ROOT / "conf" / "task"
SHARED = {  # name -> (file in ../shared/datasets, rows)
    "math500": ("math500.jsonl", 500),
    "gsm8k": ("gsm8k_test.jsonl", 1319),
    "aime24": ("aime24.jsonl", 30),
    "aime25": ("aime25.jsonl", 30),
    "amc23": ("amc23.jsonl", 40),
}
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def task_from_conf(name: str, **overrides):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    for k, v in overrides.items():
        OmegaConf.update(cfg, k, v)
    return instantiate(cfg)


def shared_task(name: str, **overrides):
    return task_from_conf(name, path=str(shared_dataset(SHARED[name][0])), **overrides)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_file_loads_with_its_config(name):
    task = shared_task(name)
    items = task.load()
    assert len(items) == SHARED[name][1]
    ids = [p.id for p, _ in items]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith(f"{name}-") for i in ids)
    for problem, ref in items:
        assert isinstance(ref.answer, str) and ref.answer.strip() == ref.answer and ref.answer
        assert problem.question and problem.question == problem.question.strip()
        # The reference never rides along with the problem.
        assert "answer" not in problem.meta and "solution" not in problem.meta
        assert problem.meta["task"] == name
        msgs = task.messages(problem)
        assert msgs[-1]["role"] == "user"
        assert msgs[-1]["content"].count("\\boxed{}") == 1
        assert problem.question in msgs[-1]["content"]


def test_math500_fields():
    items = shared_task("math500").load()
    p, r = items[0]
    assert p.id == "math500-0"  # the local copy has no unique_id: row index
    assert p.question.startswith("Convert the point $(0,3)$")
    assert r.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert r.solution and "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}" in r.solution
    assert p.meta["subject"] == "Precalculus" and p.meta["level"] == 2
    assert {p.meta["level"] for p, _ in items} == {1, 2, 3, 4, 5}


def test_gsm8k_answer_after_marker():
    items = shared_task("gsm8k").load()
    p, r = items[0]
    assert p.id == "gsm8k-0"
    assert p.question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert r.answer == "18"
    assert r.solution is not None and r.solution.endswith("#### 18")
    assert all("####" not in p.question for p, _ in items)
    # Thousands separators in "#### 1,450,000" are dropped from the reference.
    answers = [r.answer for _, r in items]
    assert all("," not in a for a in answers)
    assert "1450000" in answers


def test_aime_and_amc_fields():
    aime24 = shared_task("aime24").load()
    assert aime24[0][0].id == "aime24-60" and aime24[0][1].answer == "204"
    assert aime24[0][1].solution and "\\framebox{204}" in aime24[0][1].solution
    amc = shared_task("amc23").load()
    assert amc[0][0].id == "amc23-0" and amc[0][1].answer == "27"  # 27.0 in the file
    assert [r.answer for _, r in amc][:4] == ["27", "36", "45", "3159"]
    assert all(r.solution is None for _, r in amc)


def test_aime25_instruction_is_stripped_and_added_once():
    task = shared_task("aime25")
    items = task.load()
    p, r = items[0]
    assert p.id == "aime25-0" and r.answer == "70"
    assert p.question == "Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b.$"
    for p, _ in items:
        assert INSTRUCTION not in p.question
        assert task.messages(p)[-1]["content"].count(INSTRUCTION) == 1
    # Without strip_suffixes the file's own instruction stays in the problem text.
    raw = shared_task("aime25", strip_suffixes=[]).load()
    assert raw[0][0].question.endswith(INSTRUCTION)


def test_limit_offset_and_stable_ids():
    full = shared_task("math500").load()
    again = shared_task("math500").load()
    assert [p.id for p, _ in full] == [p.id for p, _ in again]
    part = shared_task("math500", limit=7, offset=100).load()
    assert [p.id for p, _ in part] == [p.id for p, _ in full[100:107]]
    assert [r.answer for _, r in part] == [r.answer for _, r in full[100:107]]
    assert shared_task("math500", offset=495).load() == full[495:]
    assert shared_task("math500", limit=0).load() == []


@pytest.mark.parametrize("name", sorted(SHARED) + ["arithmetic"])
def test_math_task_configs_instantiate_without_loading(name):
    task = task_from_conf(name)  # no data is read until load()
    assert task.name == name and task.kind == "math"
    assert getattr(task, "_items", None) is None


# ---------------------------------------------------------------- user files


def _user_rows():
    return [
        {"qid": "a", "Question": "What is 1+1?", "Final": "2", "topic": "add"},
        {"qid": "b", "Question": "What is half of 1?", "Final": "\\frac{1}{2}", "topic": "div"},
        {"qid": "c", "Question": "What is 10 times 2.5?", "Final": " 25 ", "topic": "mul"},
    ]


def _user_task(path: Path, **kw) -> MathTask:
    args = dict(name="mine", path=str(path), problem_field="Question", answer_field="Final",
                id_field="qid", meta_fields=["topic"])
    args.update(kw)
    return MathTask(**args)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_user_file_with_own_field_names(tmp_path, fmt):
    rows = _user_rows()
    path = tmp_path / f"mine.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({k: [r[k] for r in rows] for k in rows[0]})
        pq.write_table(table, path)
    items = _user_task(path).load()
    assert [p.id for p, _ in items] == ["mine-a", "mine-b", "mine-c"]
    assert [p.question for p, _ in items][0] == "What is 1+1?"
    assert [r.answer for _, r in items] == ["2", "\\frac{1}{2}", "25"]
    assert items[1][0].meta == {"topic": "div", "task": "mine"}
    # Without an id field: <name>-<row index>.
    assert [p.id for p, _ in _user_task(path, id_field=None).load()] == ["mine-0", "mine-1", "mine-2"]


def test_field_alternatives_pick_the_first_present(tmp_path):
    path = tmp_path / "alt.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "1"}) + "\n")
    items = MathTask(name="alt", path=str(path), problem_field=["problem", "question"]).load()
    assert items[0][0].question == "Q?"


def test_wrong_field_name_is_a_clear_error(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _user_rows()))
    with pytest.raises(ValueError, match=r"'Problem'.*task\.problem_field.*Question"):
        _user_task(path, problem_field="Problem").load()
    with pytest.raises(ValueError, match=r"'answer'.*task\.answer_field"):
        _user_task(path, answer_field="answer").load()
    with pytest.raises(ValueError, match=r"task\.meta_fields.*'level'"):
        _user_task(path, meta_fields=["level"]).load()
    with pytest.raises(ValueError, match=r"task\.prompt_template"):
        _user_task(path, prompt_template="no placeholder")
    with pytest.raises(ValueError, match=r"task\.fallbacks"):
        _user_task(path, fallbacks=["boxed", "guess"])


def test_duplicate_ids_are_refused(tmp_path):
    path = tmp_path / "dup.jsonl"
    rows = _user_rows()
    rows[2]["qid"] = "a"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"same id 'mine-a'.*task\.id_field"):
        _user_task(path).load()


def test_missing_or_bad_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ValueError, match=r"task\.path=.*nope\.jsonl does not exist"):
        task_from_conf("math500", path=str(missing)).load()
    txt = tmp_path / "data.txt"
    txt.write_text("x")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        MathTask(name="m", path=str(txt)).load()
    with pytest.raises(ValueError, match=r"task\.hub=.*task\.path="):
        MathTask(name="m")
    with pytest.raises(ValueError, match=r"task\.limit"):
        MathTask(name="m", path=str(txt), limit=-1)


@pytest.mark.parametrize("kw, field", [({"limit": -1}, "limit"), ({"offset": -2}, "offset")])
def test_a_negative_limit_or_offset_is_refused_by_every_task_family(tmp_path, kw, field):
    from ttscale.tasks.arithmetic import ArithmeticTask
    from ttscale.tasks.code import MBPP

    (tmp_path / "d.jsonl").write_text("{}\n")
    for make in (lambda: MathTask(name="m", path=str(tmp_path / "d.jsonl"), **kw),
                 lambda: ArithmeticTask(name="a", **kw),
                 lambda: MBPP(path=str(tmp_path / "d.jsonl"), **kw)):
        with pytest.raises(ValueError, match=rf"^task=\w+: task\.{field} must be >= 0"):
            make()


def test_hub_offline_is_a_clear_error(monkeypatch):
    """No network here: with the Hub unreachable, a Hub task says so and points at task.path."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    task = task_from_conf("math500")
    assert task.hub == "HuggingFaceH4/MATH-500" and task.path is None
    with pytest.raises(ValueError, match=r"HuggingFaceH4/MATH-500.*unreachable.*task\.path="):
        task.load()


def test_hub_connection_errors_are_translated(monkeypatch):
    """A network failure (not offline mode) inside datasets also becomes the same ValueError."""
    import datasets
    import requests

    def fail(*a, **k):
        raise requests.exceptions.ConnectionError("Name or service not known")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(ValueError, match=r"openai/gsm8k.*config 'main'.*split 'test'.*unreachable.*task\.path="):
        task_from_conf("gsm8k").load()


def test_answer_to_str():
    assert answer_to_str(70) == "70"
    assert answer_to_str(27.0) == "27"
    assert answer_to_str(2.5) == "2.5"
    assert answer_to_str("  \\frac{1}{2} ") == "\\frac{1}{2}"
    assert answer_to_str(None) is None
