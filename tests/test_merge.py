"""Sharded runs (job arrays) and their merge: the merged run equals the unsharded run."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from ttscale.backends.fake import FakeEngine
from ttscale.runner.merge import MergeError, merge_run
from ttscale.results import iter_records
from ttscale.runner import run

CONF = str(Path(__file__).resolve().parents[1] / "conf")
PROBLEMS = 11  # not a multiple of the shard count


def make_cfg(root, *overrides, problems=PROBLEMS):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", f"run.root={root}", "run.progress=false",
                                           "run.summary=false", "run.fsync=false", *overrides])
    with open_dict(cfg):
        cfg.task = OmegaConf.create({"_target_": "tests.helpers.ToyTask", "num_problems": problems, "modulo": 3})
    return cfg


def responder(prompt: str):
    i = int(prompt.strip()[1:])
    right = str(i % 3)
    return [(f"step\n\n\\boxed{{{right}}}", 0.45), ("\\boxed{7}", 0.3), ("no answer", 0.1), (f"\\boxed{{{i % 5}}}", 0.15)]


class JitterEngine(FakeEngine):
    """Fake engine whose requests finish in a random order (completion order != problem order)."""

    def __init__(self, *a, jitter_seed: int = 0, **kw):
        super().__init__(*a, **kw)
        self._jitter = random.Random(jitter_seed)

    async def generate(self, request):
        await asyncio.sleep(self._jitter.random() * 0.01)
        return await super().generate(request)


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "default").iterdir() if p.is_dir())


# What depends on timing or on which other problems shared the engine, not on the seed:
# wall time, and prefix-cache hits (cached / computed prompt tokens and the prefill FLOPs
# they imply), since the cache is warmed by whatever ran before on the same engine.
CACHE_DEPENDENT = ("tokens/cached_prompt", "tokens/computed_prompt", "flops/prefill", "flops/all")
USAGE_CACHE_FIELDS = ("wall_time", "cached_prompt_tokens", "computed_prompt_tokens", "prefill_flops", "flops")


def strip_run_keys(m: dict) -> dict:
    return {k: v for k, v in m.items()
            if not k.startswith(("run/", "time/", "estimate/")) and not any(k.startswith(c + "_") for c in CACHE_DEPENDENT)}


def comparable(rec: dict) -> dict:
    """A record without its timing- and cache-dependent usage fields."""
    r = json.loads(json.dumps(rec))
    for f in USAGE_CACHE_FIELDS:
        r.get("usage", {}).pop(f, None)
    return r


def run_sharded(root, k, *overrides, engine_seed=1, shards=None):
    out = []
    for i in shards if shards is not None else range(k):
        cfg = make_cfg(root, *overrides, f"run.shard={i}", f"run.num_shards={k}")
        out.append(run(cfg, engine=JitterEngine(responder, jitter_seed=engine_seed + i)))
    return out


@pytest.mark.parametrize("strategy", [["strategy=majority_vote", "strategy.n=4"],
                                      ["strategy=best_of_n", "verifier=self_certainty", "strategy.n=3"]])
def test_three_shards_merged_equal_the_unsharded_run(tmp_path, strategy):
    full = tmp_path / "full"
    m_full = run(make_cfg(full, *strategy, "run.concurrency=4"), engine=JitterEngine(responder, jitter_seed=99))
    [d_full] = run_dirs(full)

    sharded = tmp_path / "sharded"
    shard_metrics = run_sharded(sharded, 3, *strategy, "run.concurrency=4")
    [d] = run_dirs(sharded)  # the shards share one run directory (same hash)
    assert d.name == d_full.name
    assert sorted(p.name for p in d.glob("records.shard-*")) == [f"records.shard-00{i}-of-003.jsonl" for i in range(3)]
    assert sum(m["problems"] for m in shard_metrics) == PROBLEMS
    # the last shard merged automatically
    auto = json.loads((d / "metrics.json").read_text())

    rep = merge_run(d)  # and merging by hand gives the same files
    assert rep.merged and rep.problems == PROBLEMS and rep.expected == PROBLEMS and rep.duplicates == 0
    lines = (d / "records.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert [r["index"] for r in recs] == list(range(PROBLEMS))  # each problem once, in problem order
    assert [r["problem_id"] for r in recs] == [f"q{i}" for i in range(PROBLEMS)]

    full_recs = {r["problem_id"]: r for r in iter_records(d_full)}
    for r in recs:  # same seed -> the same samples, whichever shard solved the problem
        assert comparable(r) == comparable(full_recs[r["problem_id"]])

    merged = json.loads((d / "metrics.json").read_text())
    saved_full = json.loads((d_full / "metrics.json").read_text())
    assert strip_run_keys(merged) == strip_run_keys(saved_full) == strip_run_keys(json.loads(json.dumps(m_full)))
    assert strip_run_keys(auto) == strip_run_keys(merged)
    assert merged["run/num_shards"] == 3 and merged["run/partial"] is False
    for key in ("run/verifier_errors", "run/skipped_rows", "run/problems_expected"):
        assert merged[key] == saved_full[key], key
    assert merged["run/hash"] == saved_full["run/hash"]
    assert merged["curves"]["maj"] == saved_full["curves"]["maj"]
    for key in ("accuracy", "accuracy_ci_low", "pass@2", "maj@2", "tokens/generated_total", "tokens/prompt_total"):
        assert merged[key] == saved_full[key]


def test_merged_run_relaunched_unsharded_or_sharded_generates_nothing(tmp_path, monkeypatch):
    run_sharded(tmp_path, 3, "strategy.n=2")
    [d] = run_dirs(tmp_path)
    assert (d / "metrics.json").exists()
    import ttscale.runner.job as runner_job

    def no_engine(*a, **k):
        raise AssertionError("an engine was loaded although nothing was left to run")

    monkeypatch.setattr(runner_job, "get_engine", no_engine)
    m = run(make_cfg(tmp_path, "strategy.n=2"))  # unsharded relaunch: everything is done
    assert m["problems"] == PROBLEMS
    for i in range(3):
        run(make_cfg(tmp_path, "strategy.n=2", f"run.shard={i}", "run.num_shards=3"))
    eng = FakeEngine(responder)
    run(make_cfg(tmp_path, "strategy.n=2", "run.shard=1", "run.num_shards=2"), engine=eng)  # another split
    assert eng.requests == []


def test_merge_refuses_missing_or_unfinished_shards_unless_asked(tmp_path):
    run_sharded(tmp_path, 3, "strategy.n=2", shards=[0, 2])
    [d] = run_dirs(tmp_path)
    assert not (d / "metrics.json").exists()  # no automatic merge: shard 1 never ran
    with pytest.raises(MergeError, match=r"shards \[1\] have not run"):
        merge_run(d)
    rep = merge_run(d, allow_incomplete=True)
    m = json.loads((d / "metrics.json").read_text())
    assert m["run/partial"] is True and m["problems"] == rep.problems < PROBLEMS

    # shard 1 killed mid-way: a torn record and no final metrics
    run_sharded(tmp_path, 3, "strategy.n=2", shards=[1])
    shard1 = d / "records.shard-001-of-003.jsonl"
    lines = shard1.read_bytes().splitlines(keepends=True)
    shard1.write_bytes(b"".join(lines[:1]) + lines[1][:10])
    (d / "metrics.shard-001-of-003.json").unlink()
    (d / "records.jsonl").unlink()
    with pytest.raises(MergeError, match=r"shards \[1\] have not finished"):
        merge_run(d)
    # relaunching shard 1 completes it (only its missing problems), and the last shard merges
    eng = FakeEngine(responder)
    run(make_cfg(tmp_path, "strategy.n=2", "run.shard=1", "run.num_shards=3"), engine=eng)
    assert len(eng.requests) == len(range(1, PROBLEMS, 3)) - 1
    recs = [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()]
    assert [r["index"] for r in recs] == list(range(PROBLEMS))
    assert json.loads((d / "metrics.json").read_text())["run/partial"] is False


def test_merge_keeps_records_of_an_earlier_unsharded_attempt(tmp_path):
    """An unsharded run killed after some problems, relaunched as a job array: nothing is lost."""
    cfg = make_cfg(tmp_path, "strategy.n=2")
    run(cfg, engine=FakeEngine(responder))
    [d] = run_dirs(tmp_path)
    lines = (d / "records.jsonl").read_text().splitlines(keepends=True)
    (d / "records.jsonl").write_text("".join(lines[:4]))
    (d / "metrics.json").unlink()
    eng = FakeEngine(responder)
    for i in range(2):
        run(make_cfg(tmp_path, "strategy.n=2", f"run.shard={i}", "run.num_shards=2"), engine=eng)
    assert len(eng.requests) == PROBLEMS - 4
    recs = [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()]
    assert [r["index"] for r in recs] == list(range(PROBLEMS))


def test_merge_script_on_an_experiment_directory(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("merge_script", Path(__file__).resolve().parents[1] / "scripts" / "merge.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run_sharded(tmp_path, 2, "strategy.n=2")
    run_sharded(tmp_path, 2, "strategy.n=3")
    for d in run_dirs(tmp_path):
        (d / "records.jsonl").unlink()
        (d / "metrics.json").unlink()
    assert mod.main([str(tmp_path / "default")]) == 0
    out = capsys.readouterr().out
    assert out.count("merged, 2 shards") == 2
    for d in run_dirs(tmp_path):
        assert len((d / "records.jsonl").read_text().splitlines()) == PROBLEMS
    assert mod.main([str(tmp_path / "nothing")]) == 1


def test_a_search_run_and_its_merge_report_the_same_keys_and_no_curves(tmp_path):
    """Particle filtering's pool is not samples: the run and its merged shards give the
    same metrics keys, none of them a curve over k, with search statistics and finish
    shares instead; every record says whether its candidates are independent samples."""
    pf = ["strategy=particle_filter", "verifier=arithmetic_checker", "strategy.n=3"]
    m_full = run(make_cfg(tmp_path / "full", *pf), engine=FakeEngine(responder))
    run_sharded(tmp_path / "sharded", 2, *pf)
    [d] = run_dirs(tmp_path / "sharded")
    merged = json.loads((d / "metrics.json").read_text())
    assert merged["run/num_shards"] == 2
    assert set(strip_run_keys(merged)) == set(strip_run_keys(m_full))
    for m in (m_full, merged):
        assert m["pool/independent_samples"] is False and m["curves"] == {}
        assert not [k for k in m if "@" in k]
        assert m["search/ess_mean"] > 0 and m["search/expansions_mean"] > 0 and m["pool/distinct_texts_mean"] >= 1
        assert m["finish/candidates"] == 3 * PROBLEMS
        assert sum(m[f"finish/{c}_share"] for c in ("eos", "step_cap", "token_cap", "budget", "other")) == pytest.approx(1)
    for k in ("search/ess_mean", "pool/distinct_texts_mean", "finish/eos_share", "accuracy"):
        assert merged[k] == pytest.approx(m_full[k]), k
    assert {r["independent_samples"] for r in iter_records(d)} == {False}

    bon = run(make_cfg(tmp_path / "bon", "strategy=best_of_n", "verifier=arithmetic_checker", "strategy.n=3"),
              engine=FakeEngine(responder))
    assert bon["pool/independent_samples"] is True and "maj@2" in bon and "best_of@3" in bon
    [b] = run_dirs(tmp_path / "bon")
    assert {r["independent_samples"] for r in iter_records(b)} == {True}
