"""Smoke test of the benchmark's code paths on the fake engine (nothing here is timed:
the numbers come from scripts/bench.py on a real engine)."""

from __future__ import annotations

import json
import re

import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.bench import orchestration
from ttscale.bench.engine_parts import Bench, RawJob, overhead, search
from ttscale.bench.report import Row, judged, table

NUM = re.compile(r"\d+")


def two_ways(prompt: str):
    """Two solutions per problem that share their first step, so samples differ by seed."""
    a, b = ([int(x) for x in NUM.findall(prompt.split("\n\n", 1)[0])] + [1, 2])[:2]
    return [(f"{a} + {b} = {a + b}\n\nThe answer is \\boxed{{{a + b}}}", 0.6),
            (f"{a} + {b} = {a + b + 1}\n\nThe answer is \\boxed{{{a + b + 1}}}", 0.4)]


@pytest.fixture
def bench():
    return Bench(engine=FakeEngine(two_ways, num_parameters=1000, block_size=8))


def test_overhead_compares_the_runner_with_raw_requests_of_the_same_samples(bench):
    rows, data = overhead(bench, problems=3, n=4, max_tokens=64, repeats=2)
    assert len(data["pairs"]) == 2
    for p in data["pairs"]:
        # the raw side got the framework's seeds: the very same samples, the same tokens
        assert p["identical_samples"] == 3
        assert p["raw_tokens"] == p["framework_tokens"] > 0
        assert p["raw_s"] > 0 and p["framework_s"] > 0
    ratio = rows[0]
    assert ratio.part == "overhead" and ratio.target == "<= 1.1" and ratio.passed in (True, False)
    # equal tokens: the per-token ratio is the time ratio; the median of the pairs
    assert ratio.value == pytest.approx(sum(p["time_ratio"] for p in data["pairs"]) / 2)


@pytest.mark.parametrize("name", ["pf", "a_star"])
def test_search_runs_in_flight_one_at_a_time_and_raw(bench, name):
    conc, prefix, res = search(bench, name, problems=4, width=2, max_tokens=64, one_at_a_time=2, expansions=3,
                               step_tokens=32)
    fl, one = res["in_flight"], res["one_at_a_time"]
    assert (fl["problems"], one["problems"]) == (4, 2)  # one at a time: the first 2 of the same problems
    assert res["same_texts_both_ways"] == 2  # seeded per problem: concurrency changes no sample here
    assert fl["generated"] > one["generated"] > 0
    assert res["raw_batched"]["generated"] > 0 and res["raw_batched"]["sequences"] == 8
    assert 0 < fl["cached_share"] < fl["cached_share_continuations"] < 1  # continuations hit the cache
    assert fl["requests"] >= 4  # at least one request per problem, each one logged
    metrics = [r.metric for r in conc]
    assert any("in flight / one at a time" in m for m in metrics)
    assert any("in flight / raw batched" in m for m in metrics)
    assert {r.part for r in prefix} == {"prefix"}
    assert [r.target for r in prefix if r.target] == ([">= 0.8"] if name == "pf" else [])
    assert 0 < fl["opener_share"] < 1
    judged_rows = [r for r in conc if r.target]
    assert len(judged_rows) == (2 if name == "pf" else 0)  # the targets are particle filtering's


def test_raw_jobs_on_a_plain_engine(bench):
    ids = bench.problems(2)
    assert len(ids) == 2 and all(len(p) > 20 for _, p in ids)
    wall, outs = bench.raw([RawJob(p, n=3, max_tokens=5, seed=1) for _, p in ids])
    assert wall >= 0 and [len(o) for o in outs] == [3, 3]
    assert all(k == 5 for o in outs for _, k in o)


def test_orchestration_measures_cost_and_memory_in_process(tmp_path):
    res = orchestration.measure(300, "particle_filter", str(tmp_path), window=100)
    assert res["problems"] == res["metrics_problems"] == 300
    assert res["window"] == 100  # windows longer than the 64 problems in flight see requests
    assert res["requests"] >= 300 and res["engine_s"] > 0
    for w in ("first", "last"):
        assert res[w]["framework_ms"] > 0 and res[w]["requests"] >= 1
    assert res["rss_mb_end_of_solve"] > 0 and res["peak_rss_mb"] >= res["rss_mb_start"]
    assert res["record_bytes_per_problem"] > 100  # records are written, each with its candidates


def test_bench_script_orchestration_part_writes_table_and_json(tmp_path, capsys):
    from scripts.bench import main

    out = tmp_path / "b.json"
    code = main(["--parts", "orchestration", "--orch-problems", "60", "--orch-small", "30",
                 "--orch-strategies", "best_of_n", "--out", str(out)])
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert code in (0, 1)
    assert "orchestration" in text and "peak RSS" in text and "target" in text
    assert data["machine"]["nproc"] >= 1 and "load_at_end" in data["machine"]
    small, large = data["parts"]["orchestration"]["best_of_n"]["small"], data["parts"]["orchestration"]["best_of_n"]["large"]
    assert (small["problems"], large["problems"]) == (30, 60)
    assert {r["part"] for r in data["rows"]} == {"orchestration"}


def test_bench_script_refuses_unknown_parts(capsys):
    from scripts.bench import main

    with pytest.raises(SystemExit):
        main(["--parts", "overhead,speed"])
    assert "speed" in capsys.readouterr().err


def test_table_and_targets():
    rows = [judged("p", "ratio", 1.05, "<=", 1.1, "x"), judged("p", "share", 0.5, ">=", 0.8), Row("p", "info", None)]
    assert [r.passed for r in rows] == [True, False, None]
    t = table(rows)
    assert "PASS" in t and "FAIL" in t and "<= 1.1" in t
