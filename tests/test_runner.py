"""The runner on the fake engine: records, resume, identity, concurrency, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from ttscale.backends.fake import FakeEngine
from ttscale.results import iter_records
from ttscale.runner import ConfigError, run
from ttscale.runner.identity import run_identity

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def make_cfg(tmp_path, *overrides, problems=6):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", f"run.root={tmp_path}", "run.progress=false",
                                           "run.summary=false", *overrides])
    with open_dict(cfg):
        cfg.task = OmegaConf.create({"_target_": "tests.helpers.ToyTask", "num_problems": problems, "modulo": 3})
    return cfg


def responder(prompt: str):
    i = int(prompt.strip()[1:])
    right = str(i % 3)
    return [(f"work\n\n\\boxed{{{right}}}", 0.6), ("\\boxed{9}", 0.4)]


def only_dir(root: Path) -> Path:
    dirs = [p for p in (root / "default").iterdir() if p.is_dir()]
    assert len(dirs) == 1
    return dirs[0]


def test_run_writes_one_record_per_problem_and_metrics(tmp_path):
    eng = FakeEngine(responder, delay=0.01)
    m = run(make_cfg(tmp_path, "strategy.n=4"), engine=eng)
    d = only_dir(tmp_path)
    recs = list(iter_records(d))
    assert sorted(r["problem_id"] for r in recs) == [f"q{i}" for i in range(6)]
    for r in recs:
        assert len(r["candidates"]) == 4
        for c in r["candidates"]:
            assert c["correct"] == (c["answer"] == str(int(r["problem_id"][1:]) % 3))
        assert r["usage"]["generated_tokens"] > 0
    assert (d / "config.yaml").exists() and (d / "metrics.json").exists()
    saved = json.loads((d / "metrics.json").read_text())
    assert saved["problems"] == 6 and m["problems"] == 6
    assert eng.max_in_flight > 1  # problems were in flight together


def test_resume_skips_done_drops_torn_line_and_never_duplicates(tmp_path):
    cfg = make_cfg(tmp_path, "strategy.n=2")
    eng = FakeEngine(responder)
    run(cfg, engine=eng)
    d = only_dir(tmp_path)
    lines = (d / "records.jsonl").read_bytes().splitlines(keepends=True)
    # Simulate a kill: keep 3 records, then a torn half line.
    (d / "records.jsonl").write_bytes(b"".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    eng2 = FakeEngine(responder)
    run(cfg, engine=eng2)
    ids = [json.loads(x)["problem_id"] for x in (d / "records.jsonl").read_bytes().splitlines()]
    assert sorted(ids) == [f"q{i}" for i in range(6)] and len(ids) == 6
    assert len(eng2.requests) == 3  # only the 3 missing problems were generated


def test_relaunching_a_finished_run_generates_nothing(tmp_path):
    cfg = make_cfg(tmp_path)
    run(cfg, engine=FakeEngine(responder))
    eng = FakeEngine(responder)
    run(cfg, engine=eng)
    assert eng.requests == []


def test_identity_ignores_logging_but_not_strategy(tmp_path):
    a = make_cfg(tmp_path, "strategy.n=4")
    b = make_cfg(tmp_path / "other", "strategy.n=4", "run.concurrency=3", "logger=wandb")
    c = make_cfg(tmp_path, "strategy.n=5")
    assert run_identity(a)[1] == run_identity(b)[1]
    assert run_identity(a)[1] != run_identity(c)[1]


def test_a_failing_problem_is_recorded_and_the_run_goes_on(tmp_path):
    eng = FakeEngine(responder, fail=lambda req, text: "q2\n" in text)
    m = run(make_cfg(tmp_path), engine=eng)
    recs = {r["problem_id"]: r for r in iter_records(only_dir(tmp_path))}
    assert len(recs) == 6
    assert "injected failure" in recs["q2"]["error"] and recs["q2"]["correct"] is False
    assert all(recs[f"q{i}"]["error"] is None for i in (0, 1, 3, 4, 5))
    assert m["failed"] == 1


def test_oracle_runs_are_labelled(tmp_path):
    m = run(make_cfg(tmp_path, "strategy=best_of_n", "verifier=oracle", "strategy.n=4"), engine=FakeEngine(responder))
    assert m["verifier_is_oracle"] is True
    assert all(r["verifier_is_oracle"] for r in iter_records(only_dir(tmp_path)))


def test_strategy_needing_a_verifier_fails_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="verifier"):
        run(make_cfg(tmp_path, "strategy=best_of_n"), engine=FakeEngine(responder))
    assert not (tmp_path / "default").exists()


def test_grading_counters_become_a_false_positive_rate():
    from ttscale.run_metrics import grading_metrics

    m = grading_metrics({"candidates": 8, "public_all_passed": 4, "hidden_passed": 3, "false_positives": 1})
    assert m["grading/false_positive_rate"] == 0.25 and m["grading/false_positives_total"] == 1
    assert grading_metrics({"candidates": 3})  == {}  # math tasks: nothing to report
    assert grading_metrics({"false_positives": 0, "public_all_passed": 0})["grading/false_positive_rate"] is None


def test_a_run_directory_from_before_the_floors_resumes_at_its_results_version(tmp_path, monkeypatch):
    """tests/fixtures/run_before_floors: a run made by ttscale before its folders were
    installed under `ttscale.` (config targets `strategies.best_of_n.BestOfN`), stopped after
    3 of 6 problems. The floors alone change no identity: at that run's results version the
    same command today finds the same directory (targets are hashed without the `ttscale.`
    prefix) and runs only the 3 missing problems. At today's version (strict grading and the
    rest of RESULTS_VERSION 2) the same command is a new run in a new directory, and the old
    one is left as it was: records of two meanings are never mixed."""
    import shutil

    import ttscale.runner.identity as identity

    fixture = Path(__file__).parent / "fixtures" / "run_before_floors"
    exp = tmp_path / "before_floors"
    shutil.copytree(fixture, exp)
    [old] = exp.iterdir()
    old_lines = (old / "records.jsonl").read_text().splitlines()
    old_hash = json.loads((old / "identity.json").read_text())["hash"]
    cfg = make_cfg(tmp_path, "strategy=best_of_n", "verifier=self_certainty", "strategy.n=3",
                   "run.experiment=before_floors")
    assert cfg.strategy._target_ == "ttscale.strategies.best_of_n.BestOfN"

    # today: a new directory, the old one untouched
    assert identity.RESULTS_VERSION >= 2 and run_identity(cfg)[1] != old_hash
    run(cfg, engine=FakeEngine(responder))
    new = next(p for p in exp.iterdir() if p != old)
    assert (old / "records.jsonl").read_text().splitlines() == old_lines and not (old / "metrics.json").exists()
    assert json.loads((new / "identity.json").read_text())["config"]["results_version"] == identity.RESULTS_VERSION
    shutil.rmtree(new)

    # at the fixture's own results version: the same directory, resumed
    monkeypatch.setattr(identity, "RESULTS_VERSION", 1)
    assert run_identity(cfg)[1] == old_hash
    eng = FakeEngine(responder)
    m = run(cfg, engine=eng)
    assert [p.name for p in exp.iterdir()] == [old.name]
    lines = (old / "records.jsonl").read_text().splitlines()
    assert lines[:3] == old_lines and len(lines) == 6
    assert sorted(json.loads(x)["problem_id"] for x in lines) == [f"q{i}" for i in range(6)]
    assert m["problems"] == 6 and eng.num_requests == 3  # one request (n=3) per missing problem
