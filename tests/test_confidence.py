"""DeepConf's confidence signals and offline voters, against direct computations."""

from __future__ import annotations

import asyncio
import itertools
import math

import numpy as np
import pytest

from ttscale.backends.fake import FakeEngine as Fake
from ttscale.confidence import (
    first_window_below,
    group_confidence,
    summarize,
    token_confidence,
    token_entropy,
    top_eta_mask,
    trace_scores,
)
from ttscale.confidence_curves import confidence_entry, confidence_metrics, voter_curve
from ttscale.confidence_vote import pool_vote, vote_index
from ttscale.strategies.deepconf import DeepConfOffline
from ttscale.types import Problem
from tests.helpers import make_ctx

# hand-made top-3 log-probabilities of a 6-token trace
TOPS = [
    {1: -0.1, 2: -2.5, 3: -4.0},
    {4: -0.7, 5: -0.7, 6: -5.0},
    {7: -0.05, 8: -3.0, 9: -6.0},
    {1: -1.1, 2: -1.1, 3: -1.1},
    {4: -0.2, 5: -2.0, 6: -3.0},
    {7: -0.01, 8: -5.0, 9: -9.0},
]


def direct_conf():
    return [-(sum(t.values()) / 3) for t in TOPS]


def test_trace_scores_equal_a_direct_computation():
    c = direct_conf()
    assert np.allclose(token_confidence(TOPS), c)
    w = 3
    groups = [sum(c[i : i + w]) / w for i in range(len(c) - w + 1)]
    assert np.allclose(group_confidence(np.array(c), w), groups)
    s = trace_scores(np.array(c), window_size=w, tail_tokens=2, bottom_percent=0.5)
    assert s["mean"] == pytest.approx(sum(c) / 6)
    assert s["tail"] == pytest.approx((c[4] + c[5]) / 2)
    assert s["min_window"] == pytest.approx(min(groups))
    assert s["bottom_window"] == pytest.approx(sum(sorted(groups)[:2]) / 2)  # int(4 * 0.5) = 2 lowest groups
    # a trace shorter than the window is one group: its mean
    assert trace_scores(np.array(c), window_size=10)["min_window"] == pytest.approx(sum(c) / 6)
    ent = token_entropy(TOPS)
    p = np.exp(list(TOPS[3].values()))
    assert ent[3] == pytest.approx(math.log(3))
    p = np.exp(np.array(list(TOPS[0].values())))
    p /= p.sum()
    assert ent[0] == pytest.approx(float(-(p * np.log(p)).sum()))
    summ = summarize(TOPS, window_size=w, tail_tokens=2, bottom_percent=0.5, points=2)
    assert summ["tokens"] == 6 and summ["topk"] == 3
    assert summ["groups"] == [round(min(groups[:2]), 4), round(min(groups[2:]), 4)]  # min of each chunk
    assert summ["scores"]["min_window"] == pytest.approx(min(groups), abs=1e-6)


def test_first_window_below_is_the_first_full_window_under_the_threshold():
    c = [5, 5, 5, 1, 5, 0, 0, 0]
    # windows of 3 ending at 2..7: 5, 3.67, 3.67, 2, 1.67, 0
    assert first_window_below(c, 3, 3.0) == 5
    assert first_window_below(c, 3, 4.0) == 3
    assert first_window_below(c, 3, 0.0) is None
    assert first_window_below(c[:2], 3, 100.0) is None  # no full window yet


@pytest.mark.parametrize("n,eta,kept", [(10, 10, 1), (10, 90, 9), (20, 10, 2), (16, 90, 15), (16, 10, 2), (7, 100, 7)])
def test_filtering_keeps_exactly_the_top_eta_percent(n, eta, kept):
    rng = np.random.default_rng(n)
    v = rng.permutation(n).astype(float)
    mask = top_eta_mask(v, eta)
    assert mask.sum() == kept == math.ceil(n * eta / 100)
    assert v[mask].min() > v[~mask].max() if kept < n else True


def _cands(clusters, scores, correct=None):
    out = []
    for i, (cl, s) in enumerate(zip(clusters, scores)):
        out.append({"cluster": cl, "correct": bool(correct[i]) if correct else False,
                    "extra": {"confidence": {"scores": {k: s for k in ("mean", "tail", "bottom_window", "min_window")}, "entropy": 1.0 / s}}})
    return out


def test_voters_filter_then_weight():
    # class 0: three low-confidence traces; class 1: two confident ones
    clusters, scores = [0, 0, 0, 1, 1], [1.0, 1.0, 1.0, 5.0, 4.0]
    assert vote_index(clusters, [1.0] * 5) == 0  # plain majority
    assert vote_index(clusters, scores) == 3  # weighted: 14 vs 3... class 1 = 9 > 3
    assert vote_index(clusters, [1.0] * 5, scores, eta=40) == 3  # top 2 are both class 1
    assert pool_vote(_cands(clusters, [3.0, 3.0, 3.0, 4.0, 4.0]), "confidence", "tail") == 0  # 9 vs 8
    assert pool_vote(_cands(clusters, [3.0, 3.0, 3.0, 4.0, 4.0]), "confidence", "tail", eta=40) == 3
    # inverse entropy: entropy = 1/score, so the same as weighting by the score
    assert pool_vote(_cands(clusters, scores), "inverse_entropy", "mean") == 3
    assert vote_index([None, None], [1.0, 1.0]) is None


def brute_voter_at_k(clusters, w, fs, correct, k, eta):
    """Every k-subset: filter the top eta% by fs, weighted tally, ties split evenly."""
    vals = []
    for sub in itertools.combinations(range(len(clusters)), k):
        ans = [i for i in sub if clusters[i] >= 0]
        if not ans:
            vals.append(0.0)
            continue
        m = max(1, math.ceil(eta / 100 * len(ans) - 1e-9))
        kth = sorted((fs[i] for i in ans), reverse=True)[m - 1]
        keep = [i for i in ans if fs[i] >= kth]
        tot = {}
        for i in keep:
            tot[clusters[i]] = tot.get(clusters[i], 0.0) + w[i]
        best = max(tot.values())
        win = [c for c, t in tot.items() if t >= best - 1e-12]
        vals.append(sum(np.mean([correct[i] for i in keep if clusters[i] == c]) for c in win) / len(win))
    return float(np.mean(vals))


@pytest.mark.parametrize("eta", [10, 50, 90, 100])
def test_voter_curve_is_exact_against_brute_force(eta):
    rng = np.random.default_rng(eta)
    n = 9
    clusters = rng.integers(-1, 3, n)
    fs = rng.random(n) * 10
    correct = clusters == 1
    ests = voter_curve(clusters, fs, fs, correct, [1, 2, 3, 5, 9], eta)
    for k, e in zip([1, 2, 3, 5, 9], ests):
        assert e.method == "exact"
        assert e.value == pytest.approx(brute_voter_at_k(clusters, fs, fs, correct, k, eta), abs=1e-9)
    mc = voter_curve(clusters, fs, fs, correct, [5], eta, exact_limit=10, samples=4000, seed=1)[0]
    assert mc.method == "monte_carlo"
    assert abs(mc.value - ests[3].value) < 4 * mc.stderr + 1e-9


def _floor_engine():
    # two answers; "7" has a branching (less confident) path
    return Fake(completions=[("so \\boxed{3}", 0.5), ("hm a \\boxed{7}", 0.25), ("hm b \\boxed{7}", 0.25)], vocab_floor=-20.0)


def test_deepconf_offline_on_the_fake_engine_stores_small_confidence_and_votes():
    eng = _floor_engine()
    strat = DeepConfOffline(n=12, conf_topk=5, window_size=4, tail_tokens=4, eta=10, confidence="min_window")
    strat.check()
    res = asyncio.run(strat.solve(Problem("q0", "q0"), make_ctx(eng)))
    assert len(res.candidates) == 12
    assert [r.logprobs for r in eng.requests] == [5]
    for c in res.candidates:
        info = c.extra["confidence"]
        assert set(info["scores"]) == {"mean", "tail", "bottom_window", "min_window"} and len(info["groups"]) <= 32
    # the top-10% voter picks the most confident trace's class: "3" is never branched after "s"
    best = max(res.candidates, key=lambda c: c.extra["confidence"]["scores"]["min_window"])
    assert res.answer == best.answer
    with pytest.raises(ValueError, match="strategy.eta"):
        DeepConfOffline(eta=0).check()
    with pytest.raises(ValueError, match="strategy.confidence"):
        DeepConfOffline(confidence="lowest").check()


def test_confidence_metrics_from_records():
    recs = []
    for p in range(3):
        cands = _cands([0, 0, 1, 1], [1.0, 2.0, 3.0 + p, 4.0], correct=[0, 0, 1, 1])
        recs.append({"problem_id": f"p{p}", "candidates": cands, "independent_samples": True})
    m = confidence_metrics(confidence_entry(r) for r in recs)
    assert m["confidence_problems"] == 3
    assert m["conf_top10_tail@4"] == 1.0 and m["conf_mean@4"] == 1.0  # 7+ vs 3
    assert m["conf_top10_tail@1"] == pytest.approx(0.5)
    assert m["voter_methods"]["conf_top10_tail@2"] == "exact"
    assert confidence_entry({"problem_id": "x", "candidates": [{"cluster": 0}], "independent_samples": True}) is None
    assert confidence_entry({**recs[0], "independent_samples": False}) is None  # not independent samples: no curves


def test_voter_curves_join_the_run_curves():
    from ttscale.run_metrics import run_metrics

    recs = [{"problem_id": f"p{p}", "correct": True, "independent_samples": True,
             "candidates": _cands([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], correct=[0, 0, 1, 1])}
            for p in range(2)]
    m = run_metrics(recs)
    assert "maj" in m["curves"] and m["curves"]["conf_top10_tail"]["4"]["mean"] == 1.0
    assert m["curves"]["conf_top10_tail"]["2"]["method"] == "exact"
