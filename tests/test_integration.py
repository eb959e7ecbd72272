"""End to end on the real vLLM CPU engine (embedded SmolLM2), through Hydra composition
and the runner, the way `scripts/run.py` runs a job."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import shared_dataset
from ttscale.results import iter_records
from ttscale.runner import run

CONF = str(Path(__file__).resolve().parents[1] / "conf")
pytestmark = pytest.mark.engine


def compose_cfg(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=["logger=none", f"run.root={tmp_path}", "run.progress=false",
                                            "sampling.max_tokens=96", *overrides])


def only_run_dir(root: Path) -> Path:
    (d,) = [p for p in (root / "default").iterdir() if p.is_dir()]
    return d


def run_on_shared(real_engine, tmp_path, task: str, *overrides):
    """Run `task` from its copy in ../shared/datasets on the session engine; metrics and records."""
    path = shared_dataset(f"{task}.jsonl")
    m = run(compose_cfg(tmp_path, f"task={task}", f"task.path={path}", *overrides), engine=real_engine)
    return m, list(iter_records(only_run_dir(tmp_path)))


def test_math500_best_of_n_with_self_certainty(real_engine, tmp_path):
    m, recs = run_on_shared(real_engine, tmp_path, "math500", "task.limit=4",
                            "strategy=best_of_n", "strategy.n=4", "verifier=self_certainty")
    assert len(recs) == 4 and m["problems"] == 4 and m["failed"] == 0
    for r in recs:
        assert r["error"] is None and len(r["candidates"]) == 4
        for c in r["candidates"]:
            assert c["mean_logprob"] is not None and c["mean_logprob"] < 0
            assert c["score"] == c["mean_logprob"]  # self-certainty scored every sample
            assert isinstance(c["correct"], bool)
        best = max(c["score"] for c in r["candidates"])
        assert r["candidates"][r["selected"]]["score"] == best
        assert r["usage"]["generated_tokens"] == sum(c["num_tokens"] for c in r["candidates"])
    assert "pass@4" in m and "best_of@4" in m and m["tokens/generated_total"] > 0


def test_humaneval_best_of_n_with_unit_tests_reports_false_positives(real_engine, tmp_path):
    m, recs = run_on_shared(real_engine, tmp_path, "humaneval", "task.limit=2",
                            "strategy=best_of_n", "strategy.n=2", "verifier=unit_tests")
    assert len(recs) == 2 and m["failed"] == 0
    for r in recs:
        assert "false_positives" in r["grading"]
        for c in r["candidates"]:
            assert "hidden_passed" in c["extra"] and "public_total" in c["extra"]
    assert "pass@1" in m and "pass@2" in m
    assert m["grading/false_positives_total"] == sum(r["grading"]["false_positives"] for r in recs)
    assert "grading/false_positive_rate" in m
