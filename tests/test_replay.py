"""Replay of stored pools: the same selection reproduces the source run's metrics exactly,
another selection runs with no generation, and its identity names the source run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.results import iter_records
from ttscale.runner import run
from ttscale.runner.errors import ConfigError
from ttscale.runner.replay import replay
from tests.helpers import ToyTask
from tests.test_runner import make_cfg

ROOT = Path(__file__).resolve().parents[1]


def responder(prompt: str):
    i = int(prompt.strip()[1:])
    right = str(i % 3)
    return [(f"work\n\n\\boxed{{{right}}}", 0.45), ("\\boxed{9}", 0.35), ("hmm \\boxed{4}", 0.2)]


def source_run(tmp_path, *overrides):
    eng = FakeEngine(responder, vocab_floor=-20.0)
    metrics = run(make_cfg(tmp_path, *overrides, problems=8), engine=eng)
    [d] = [p for p in (tmp_path / "default").iterdir() if p.is_dir()]
    return d, metrics


CURVE_KEYS = ("accuracy", "tokens/generated_total", "tokens/prompt_total")


def test_replay_of_best_of_n_and_majority_reproduces_the_source_metrics(tmp_path):
    src, m = source_run(tmp_path / "a", "strategy=best_of_n", "verifier=self_certainty", "strategy.n=8")
    out, r = replay(src, ["strategy=best_of_n", "verifier=self_certainty", "logger=none"])
    assert out != src and out.parent == src.parent and out.name.startswith(src.name.split("-")[0] + "-best_of_n-")
    at_k = [k for k in m if "@" in k]
    assert {"pass@8", "maj@8", "best_of@8"} <= set(at_k)
    for k in [*CURVE_KEYS, *at_k]:
        assert r[k] == m[k], k
    src2, m2 = source_run(tmp_path / "b", "strategy=majority_vote", "strategy.n=8")
    out2, r2 = replay(src2, ["strategy=majority_vote", "logger=none"])
    for k in ("accuracy", "maj@1", "maj@4", "maj@8", "pass@8", "tokens/generated_total", "tokens/prompt_total"):
        assert r2[k] == m2[k], k
    cfg = json.loads((out2 / "identity.json").read_text())["config"]
    assert cfg["replay"] == {"source": json.loads((src2 / "identity.json").read_text())["hash"]}
    # the source's selection differs from majority here: replaying majority over a best-of-N
    # pool gives that pool's maj@8 as accuracy
    _, r3 = replay(src, ["strategy=majority_vote", "logger=none"])
    direct = []
    for rec in iter_records(src):  # plurality by hand: the heaviest class, ties to the first seen
        cl = [c["cluster"] for c in rec["candidates"]]
        counts = {k: cl.count(k) for k in cl if k is not None}
        best = max(counts, key=lambda k: (counts[k], -cl.index(k)))
        direct.append(bool(rec["candidates"][cl.index(best)]["correct"]))
    assert r3["accuracy"] == pytest.approx(sum(direct) / len(direct))
    assert r3["maj@8"] == m["maj@8"]
    out4, r4 = replay(src, ["strategy=best_of_majority", "verifier=self_certainty", "logger=none"])
    assert r4["failed"] == 0 and r4["best_of@8"] == m["best_of@8"]
    assert all(len(x["candidates"]) == 8 for x in iter_records(out4))


def test_replay_of_adaptive_consistency_uses_a_prefix_of_each_pool(tmp_path):
    src, m = source_run(tmp_path, "strategy=majority_vote", "strategy.n=8")
    out, r = replay(src, ["strategy=adaptive_consistency", "strategy.conf_thresh=0.8", "logger=none"])
    recs = {x["problem_id"]: x for x in iter_records(src)}
    for rec in iter_records(out):
        n = rec["stats"]["samples"]
        assert 1 <= n <= 8
        used = recs[rec["problem_id"]]["candidates"][:n]
        assert [c["text"] for c in rec["candidates"]] == [c["text"] for c in used]
        assert rec["usage"]["generated_tokens"] == sum(c["num_tokens"] for c in used)
    assert r["tokens/generated_total"] <= m["tokens/generated_total"]


def test_deepconf_replay_revotes_stored_confidence(tmp_path):
    src, m = source_run(tmp_path, "strategy=deepconf_offline", "strategy.n=8", "strategy.window_size=4", "strategy.conf_topk=5")
    assert "conf_top10_min_window@8" in m and m["voter_methods"]["conf_mean@8"] == "exact"
    _, r = replay(src, ["strategy=deepconf_offline", "strategy.eta=10", "strategy.window_size=4", "strategy.conf_topk=5", "logger=none"])
    assert r["accuracy"] == m["accuracy"]
    _, r90 = replay(src, ["strategy=deepconf_offline", "strategy.eta=90", "strategy.window_size=4", "strategy.conf_topk=5", "logger=none"])
    assert r90["conf_top10_min_window@8"] == m["conf_top10_min_window@8"]  # the same pools


def test_bad_replays_are_one_line_and_exit_2(tmp_path):
    src, _ = source_run(tmp_path, "strategy=majority_vote", "strategy.n=4")
    with pytest.raises(ConfigError, match="needs a model"):
        replay(src, ["strategy=best_of_n", "verifier=prm_vllm"])
    with pytest.raises(ConfigError, match="task cannot change"):
        replay(src, ["strategy=majority_vote", "task=gsm8k"])
    p = subprocess.run([sys.executable, str(ROOT / "scripts/replay.py"), str(tmp_path / "nope"), "strategy=majority_vote"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "not a run directory" in p.stderr and len(p.stderr.strip().splitlines()) == 1


class TwinTask(ToyTask):
    """Problems q0..q5 where q0/q3, q1/q4, q2/q5 ask the same question (same prompt)."""

    def messages(self, problem):
        return [{"role": "user", "content": f"q{int(problem.id[1:]) % 3}"}]


def test_replay_tells_problems_with_the_same_prompt_apart(tmp_path):
    cfg = make_cfg(tmp_path, "strategy=majority_vote", "strategy.n=6", problems=6)
    cfg.task._target_ = "tests.test_replay.TwinTask"
    m = run(cfg, engine=FakeEngine(responder))
    [src] = [p for p in (tmp_path / "default").iterdir() if p.is_dir()]
    out, r = replay(src, ["strategy=majority_vote", "logger=none"])
    assert r["failed"] == 0 and r["accuracy"] == m["accuracy"] and r["maj@6"] == m["maj@6"]
    texts = {x["problem_id"]: [c["text"] for c in x["candidates"]] for x in iter_records(src)}
    assert {x["problem_id"]: [c["text"] for c in x["candidates"]] for x in iter_records(out)} == texts
