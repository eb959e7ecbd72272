"""Estimators and run metrics against brute force over every k-subset.

The brute force below is written independently of `ttscale.estimators`: plain
Python over `itertools.combinations`, one subset at a time, applying each
selection rule literally (ties broken uniformly, i.e. averaged over).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from fractions import Fraction

import numpy as np
import pytest

from ttscale.estimators import (
    WEIGHT_TIE_RTOL,
    best_of_curve,
    comb_ratio,
    maj_curve,
    pass_at_k,
    pass_curve,
    weighted_at_k,
    weighted_curve,
)
from ttscale.bootstrap import bootstrap_ci, bootstrap_means
from ttscale.entries import Pool
from ttscale.metrics import compute_metrics, default_ks, metrics_for_subset_sizes
from ttscale.paired import compare_runs, paired_comparison, per_problem_values


# ---------------------------------------------------------------------------
# brute force
# ---------------------------------------------------------------------------
def _subset_rules(clusters, scores, correct, sub):
    """(pass, maj, best_of, weighted) of one subset, each rule applied literally."""
    p = float(any(correct[i] for i in sub))
    votes: dict[int, list[int]] = {}
    for i in sub:
        if clusters[i] is not None:
            votes.setdefault(clusters[i], []).append(i)

    def cluster_value(members):  # uniform random member of the winning cluster
        return sum(correct[i] for i in members) / len(members)

    m = w = 0.0
    if votes:
        top = max(len(v) for v in votes.values())
        tied = [v for v in votes.values() if len(v) == top]
        m = sum(cluster_value(v) for v in tied) / len(tied)
        weight = {c: sum(scores[i] or 0.0 for i in v) for c, v in votes.items()}
        wmax = max(weight.values())
        tied_w = [c for c in weight if math.isclose(weight[c], wmax, rel_tol=WEIGHT_TIE_RTOL, abs_tol=0.0)]
        w = sum(cluster_value(votes[c]) for c in tied_w) / len(tied_w)

    def key(i):
        return -math.inf if scores[i] is None else scores[i]

    best = max(key(i) for i in sub)
    tied_b = [i for i in sub if key(i) == best]
    b = sum(correct[i] for i in tied_b) / len(tied_b)
    return p, m, b, w


def brute(clusters, scores, correct, k):
    tot = np.zeros(4)
    subsets = list(itertools.combinations(range(len(clusters)), k))
    for sub in subsets:
        tot += _subset_rules(clusters, scores, correct, sub)
    return tot / len(subsets)


def first_k(clusters, scores, correct, k):
    """What a naive evaluation does: score only the first k samples."""
    return _subset_rules(clusters, scores, correct, tuple(range(k)))


def random_pool(rng, n, *, n_clusters=None, p_none=0.2, p_correct=0.4, score_levels=4, p_no_score=0.2, mixed=True):
    """Lists with None as in records. Scores on a coarse grid so that ties happen."""
    n_clusters = n_clusters or int(rng.integers(1, 5))
    clusters = [None if rng.random() < p_none else int(rng.integers(0, n_clusters)) for _ in range(n)]
    if mixed:  # imperfect clustering: correctness per candidate
        correct = [bool(rng.random() < p_correct) for _ in range(n)]
    else:  # consistent grading: a cluster is right or wrong as a whole
        good = {c for c in range(n_clusters) if rng.random() < p_correct}
        correct = [c in good for c in clusters]
    if score_levels:
        scores = [None if rng.random() < p_no_score else float(rng.integers(0, score_levels)) / score_levels for _ in range(n)]
    else:
        scores = [None if rng.random() < p_no_score else float(rng.random()) for _ in range(n)]
    return clusters, scores, correct


def arrays(clusters, scores, correct):
    pool = Pool.of(clusters, correct, scores)
    return pool.clusters, pool.scores, pool.correct


# ---------------------------------------------------------------------------
# exact estimators == brute force
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(40))
def test_all_estimators_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(6):
        n = int(rng.integers(1, 10))
        lists = random_pool(
            rng, n,
            p_none=float(rng.choice([0.0, 0.2, 0.6])),
            score_levels=int(rng.choice([0, 2, 4])),
            mixed=bool(rng.random() < 0.5),
        )
        cl, sc, ok = arrays(*lists)
        pc, mc, bc = pass_curve(ok), maj_curve(cl, ok), best_of_curve(sc, ok)
        for k in range(1, n + 1):
            p, m, b, w = brute(*lists, k)
            assert pc[k - 1] == pytest.approx(p, abs=1e-12)
            assert pass_at_k(n, int(ok.sum()), k) == pytest.approx(p, abs=1e-12)
            assert mc[k - 1] == pytest.approx(m, abs=1e-12), (lists, k)
            assert bc[k - 1] == pytest.approx(b, abs=1e-12), (lists, k)
            est = weighted_at_k(cl, sc, ok, k)
            assert est.method == "exact"
            assert est.value == pytest.approx(w, abs=1e-12), (lists, k)


def test_maj_many_ties_equals_brute_force():
    """Many equal-size clusters, so most subsets end in multi-way ties."""
    rng = np.random.default_rng(7)
    for n in range(2, 11):
        for _ in range(5):
            clusters = [int(c) for c in rng.permutation(np.repeat(np.arange(n), 2))[:n]]
            correct = [c in (0, 1) for c in clusters]
            cl, _, ok = arrays(clusters, [None] * n, correct)
            mc = maj_curve(cl, ok)
            for k in range(1, n + 1):
                assert mc[k - 1] == pytest.approx(brute(clusters, [None] * n, correct, k)[1], abs=1e-12)


def test_maj_exact_integer_path_matches_float_path():
    rng = np.random.default_rng(3)
    for n in (12, 40, 90):
        cl, _, ok = arrays(*random_pool(rng, n, n_clusters=6, p_none=0.15, mixed=False))
        f = maj_curve(cl, ok)
        e = maj_curve(cl, ok, exact_integers=True)
        np.testing.assert_allclose(f, e, rtol=1e-12, atol=1e-15)


def test_weighted_equal_positive_scores_is_majority():
    rng = np.random.default_rng(11)
    for _ in range(20):
        n = int(rng.integers(2, 9))
        clusters, _, correct = random_pool(rng, n, n_clusters=3)
        scores = [0.7] * n
        cl, sc, ok = arrays(clusters, scores, correct)
        mc = maj_curve(cl, ok)
        for k in range(1, n + 1):
            assert weighted_at_k(cl, sc, ok, k).value == pytest.approx(mc[k - 1], abs=1e-12)
            assert weighted_at_k(cl, sc, ok, k).value == pytest.approx(brute(clusters, scores, correct, k)[3], abs=1e-12)


def test_weighted_ties_in_float_sums():
    """0.1 + 0.2 and 0.3 are not equal in floating point, but they are a tie."""
    clusters, scores, correct = [0, 0, 1], [0.1, 0.2, 0.3], [True, True, False]
    cl, sc, ok = arrays(clusters, scores, correct)
    assert weighted_at_k(cl, sc, ok, 3).value == pytest.approx(0.5)


def test_weighted_monte_carlo_agrees_with_brute_force():
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(12):
        n = 9
        lists = random_pool(rng, n, n_clusters=3, p_none=0.1, score_levels=0, mixed=False)
        cl, sc, ok = arrays(*lists)
        for k in (2, 4, 6):
            exact = brute(*lists, k)[3]
            est = weighted_at_k(cl, sc, ok, k, exact_limit=0, samples=20_000, seed=42)
            if est.method == "exact":  # a closed-form shortcut applied
                assert est.value == pytest.approx(exact, abs=1e-12)
                continue
            assert est.method == "monte_carlo" and est.subsets == 20_000
            assert abs(est.value - exact) <= 4 * est.stderr + 1e-9, (lists, k, est, exact)
            assert abs(est.value - exact) < 0.02
            again = weighted_at_k(cl, sc, ok, k, exact_limit=0, samples=20_000, seed=42)
            assert again == est  # seeded
            checked += 1
    assert checked >= 20


def test_weighted_curve_shares_draws_across_k_and_stays_unbiased():
    rng = np.random.default_rng(9)
    lists = random_pool(rng, 10, n_clusters=3, p_none=0.1, score_levels=0, p_no_score=0.1, mixed=True)
    cl, sc, ok = arrays(*lists)
    ks = [1, 2, 3, 5, 7, 9, 10]
    mc = weighted_curve(cl, sc, ok, ks, exact_limit=0, samples=20_000, seed=3)
    exact = weighted_curve(cl, sc, ok, ks)
    assert [e.method for e in mc] == ["exact", "monte_carlo", "monte_carlo", "monte_carlo", "monte_carlo", "monte_carlo", "exact"]
    assert all(e.method == "exact" for e in exact)
    for k, m, e in zip(ks, mc, exact):
        b = brute(*lists, k)[3]
        assert e.value == pytest.approx(b, abs=1e-12)
        assert abs(m.value - b) <= 4 * m.stderr + 1e-12, (k, m, b)
    # order and repetition of ks do not change the estimates
    again = weighted_curve(cl, sc, ok, [9, 3, 3], exact_limit=0, samples=20_000, seed=3)
    assert [a.value for a in again] == [mc[5].value, mc[2].value, mc[2].value]


def test_weighted_large_pool_uses_monte_carlo_and_reports_it():
    rng = np.random.default_rng(0)
    n = 64
    cl, sc, ok = arrays(*random_pool(rng, n, n_clusters=5, score_levels=0, mixed=False))
    est = weighted_at_k(cl, sc, ok, 8, samples=4000, seed=1)
    assert est.method == "monte_carlo" and est.stderr > 0
    assert weighted_at_k(cl, sc, ok, 2).method == "exact"  # C(64, 2) = 2016 subsets
    assert weighted_at_k(cl, sc, ok, n).method == "exact"  # one subset
    assert weighted_at_k(cl, sc, ok, 1).method == "exact"


# ---------------------------------------------------------------------------
# pathological pools
# ---------------------------------------------------------------------------
def test_all_candidates_without_answers():
    cl, sc, ok = arrays([None] * 4, [0.5, None, 0.2, 0.9], [False] * 4)
    np.testing.assert_array_equal(maj_curve(cl, ok), np.zeros(4))
    for k in range(1, 5):
        assert weighted_at_k(cl, sc, ok, k).value == 0.0
    np.testing.assert_array_equal(pass_curve(ok), np.zeros(4))


def test_single_candidate():
    for correct in (True, False):
        cl, sc, ok = arrays([0], [None], [correct])
        for curve in (pass_curve(ok), maj_curve(cl, ok), best_of_curve(sc, ok)):
            assert curve.tolist() == [float(correct)]
        assert weighted_at_k(cl, sc, ok, 1).value == float(correct)


def test_none_correct_and_all_correct():
    n = 7
    cl = np.array([0, 1, 1, 2, 2, 2, -1])
    for ok, expected in ((np.zeros(n, bool), 0.0), (np.ones(n, bool), 1.0)):
        np.testing.assert_array_equal(pass_curve(ok), np.full(n, expected))
        np.testing.assert_array_equal(best_of_curve(np.linspace(0, 1, n), ok), np.full(n, expected))
    # all clusters correct: majority is right whenever any candidate answered
    ok = np.array([True] * 6 + [False])
    expected = 1 - comb_ratio(1, n)[1:]  # 1 - C(1, k) / C(7, k)
    np.testing.assert_allclose(maj_curve(cl, ok), expected, rtol=1e-13)


def test_k_equals_n_is_the_whole_pool():
    clusters, scores, correct = [0, 0, 1, 1, 1, None], [0.9, 0.8, 0.1, 0.1, 0.2, 1.0], [True, True, False, False, False, False]
    cl, sc, ok = arrays(clusters, scores, correct)
    assert maj_curve(cl, ok)[-1] == 0.0  # cluster 1 has three votes
    assert weighted_at_k(cl, sc, ok, 6).value == 1.0  # 1.7 against 0.4
    assert best_of_curve(sc, ok)[-1] == 0.0  # the no-answer candidate scored highest
    assert pass_curve(ok)[-1] == 1.0


def test_best_of_unscored_rank_lowest_and_all_unscored_is_random_pick():
    cl, sc, ok = arrays([0, 1, 2], [None, 0.1, None], [True, False, True])
    # any subset containing candidate 1 picks it (wrong)
    assert best_of_curve(sc, ok).tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    cl, sc, ok = arrays([0, 1, 2, 3], [None] * 4, [True, False, False, True])
    np.testing.assert_allclose(best_of_curve(sc, ok), np.full(4, 0.5))


def test_exact_majority_is_not_first_k():
    """Naive "first k samples" evaluation gives 0 here; the expectation is 0.7."""
    clusters = [1, 1, 0, 0, 0]
    correct = [False, False, True, True, True]
    cl, _, ok = arrays(clusters, [None] * 5, correct)
    exact = maj_curve(cl, ok)[2]
    assert exact == pytest.approx(7 / 10)  # C(3,2)C(2,1) + C(3,3) of C(5,3) subsets
    assert first_k(clusters, [None] * 5, correct, 3)[1] == 0.0
    assert pass_curve(ok)[0] == pytest.approx(0.6)  # not the first sample's 0


def test_pass_at_k_matches_exact_rationals_for_large_pools():
    for n, c, k in [(256, 1, 1), (256, 1, 255), (256, 3, 64), (256, 128, 128), (200, 0, 7), (256, 250, 7), (1000, 2, 500)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)
        ok = np.arange(n) < c
        assert pass_curve(ok)[k - 1] == pytest.approx(float(exact), rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_large_pool_invariants_and_speed():
    n = 256
    # two equal clusters, one correct: 1/2 at every k by symmetry
    cl, _, ok = arrays([0] * 128 + [1] * 128, [None] * n, [True] * 128 + [False] * 128)
    np.testing.assert_allclose(maj_curve(cl, ok), np.full(n, 0.5), rtol=1e-12)
    # a correct singleton among singletons: every k gives 1/n (uniform tie-break)
    cl, _, ok = arrays(list(range(n)), [None] * n, [True] + [False] * (n - 1))
    t = time.perf_counter()
    np.testing.assert_allclose(maj_curve(cl, ok), np.full(n, 1 / n), rtol=1e-12)
    assert time.perf_counter() - t < 5
    # k = 1 is the fraction of answered-and-correct candidates; k = n is a direct vote
    rng = np.random.default_rng(0)
    clusters, _, correct = random_pool(rng, n, n_clusters=12, p_none=0.3, mixed=False)
    cl, _, ok = arrays(clusters, [None] * n, correct)
    t = time.perf_counter()
    mc = maj_curve(cl, ok)
    assert time.perf_counter() - t < 5
    assert mc[0] == pytest.approx(float(np.sum(ok & (cl >= 0))) / n)
    assert mc[-1] == pytest.approx(first_k(clusters, [None] * n, correct, n)[1])
    assert np.all((mc >= 0) & (mc <= 1 + 1e-12))


# ---------------------------------------------------------------------------
# bootstrap and paired comparison
# ---------------------------------------------------------------------------
def test_bootstrap_ci_contains_mean_narrows_and_is_seeded():
    rng = np.random.default_rng(0)
    widths = []
    for P in (20, 80, 320):
        v = (rng.random(P) < 0.4).astype(float)
        lo, hi = bootstrap_ci(v, n_boot=1000, seed=1)
        assert lo <= v.mean() <= hi
        widths.append(hi - lo)
        np.testing.assert_array_equal(bootstrap_ci(v, n_boot=1000, seed=1), [lo, hi])
    assert widths[0] > widths[1] > widths[2]
    assert bootstrap_ci(np.full(10, 0.25), n_boot=200).tolist() == [0.25, 0.25]


def test_bootstrap_columns_share_resamples_and_skip_nan():
    v = np.array([[1.0, 1.0, np.nan], [0.0, 0.0, 1.0], [1.0, 1.0, np.nan], [0.0, 0.0, 0.0]])
    means = bootstrap_means(v, n_boot=300, seed=4)
    np.testing.assert_array_equal(means[:, 0], means[:, 1])  # identical columns, identical resamples
    col = means[:, 2]
    assert np.all(np.isnan(col) | ((col >= 0) & (col <= 1)))


def test_paired_comparison_counts_and_ci():
    a = {"p1": 1, "p2": 1, "p3": 0, "p4": 1, "p5": 0, "only_a": 1}
    b = {"p1": 1, "p2": 0, "p3": 1, "p4": 0, "p5": 0, "only_b": 0}
    r = paired_comparison(a, b, n_boot=500, seed=0)
    assert r["problems"] == 5 and r["only_a"] == 1 and r["only_b"] == 1
    assert (r["a_better"], r["b_better"], r["equal"]) == (2, 1, 2)
    assert r["mean_diff"] == pytest.approx(0.2)
    assert r["diff_ci"][0] <= 0.2 <= r["diff_ci"][1]


def test_compare_runs_on_records():
    A = [record(f"p{i}", [(0, True, None)], correct=ok) for i, ok in enumerate([True, True, False, True, False])]
    B = [record(f"p{i}", [(0, True, None)], correct=ok) for i, ok in enumerate([True, False, True, False, False])]
    B[0]["error"] = "engine died"  # failed: counts as wrong
    r = compare_runs(iter(A), iter(B), n_boot=200)
    assert r["problems"] == 5
    assert (r["a_right_b_wrong"], r["a_wrong_b_right"], r["both_right"], r["both_wrong"]) == (3, 1, 0, 1)
    assert r["mean_diff"] == pytest.approx(0.4)
    maj = compare_runs(A, A, "maj@1", n_boot=50)
    assert maj["mean_diff"] == 0.0 and maj["equal"] == 5


# ---------------------------------------------------------------------------
# compute_metrics on hand-made records
# ---------------------------------------------------------------------------
def record(pid, cands, correct, error=None, usage=None):
    return {
        "problem_id": pid,
        "answer": None,
        "candidates": [{"text": "", "cluster": c, "correct": ok, "score": s} for c, ok, s in cands],
        "correct": correct,
        "error": error,
        "usage": usage if usage is not None else {},
    }


def usage(prompt, cached, gen, vcalls=0, wall=1.0):
    return {
        "requests": 1, "prompt_tokens": prompt, "cached_prompt_tokens": cached, "generated_tokens": gen,
        "verifier_calls": vcalls, "verifier_tokens": 10 * vcalls, "verifier_cached_tokens": 0,
        "prefill_flops": 2.0 * (prompt - cached), "decode_flops": 2.0 * gen, "verifier_flops": 0.0,
        "wall_time": wall, "computed_prompt_tokens": prompt - cached, "flops": 2.0 * (prompt - cached + gen),
    }


def hand_records():
    return [
        # a: clusters 0,1,0 (cluster 0 right). pass@1 2/3, pass@2 1, maj@1 2/3, maj@2 (1/2 + 1 + 1/2)/3 = 2/3,
        #    best_of@2: the pair {0.1, 0.5} picks 0.5 (right), the others pick 0.9 (right) -> 1; weighted@2 -> 1
        record("a", [(0, True, 0.9), (1, False, 0.1), (0, True, 0.5)], True, usage=usage(100, 40, 30, vcalls=3)),
        # b: everything wrong
        record("b", [(0, False, 0.2), (0, False, 0.3), (None, False, None)], False, usage=usage(100, 0, 50, vcalls=3)),
        # c: failed after a perfect pool: counts as wrong everywhere
        record("c", [(0, True, 0.9)] * 3, True, error="timeout", usage=usage(50, 0, 20, wall=3.0)),
        # d: wrong majority (two votes for 1), right answer scored highest
        record("d", [(0, True, 1.0), (1, False, 0.2), (1, False, 0.2)], False, usage=usage(100, 60, 40, vcalls=3)),
    ]


def test_compute_metrics_hand_computed():
    m = compute_metrics(iter(hand_records()), n_boot=500, seed=0)
    json.dumps(m, allow_nan=False)  # strict JSON
    assert (m["problems"], m["failed"], m["duplicates"]) == (4, 1, 0)
    assert m["accuracy"] == pytest.approx(1 / 4)
    assert m["accuracy_excluding_failed"] == pytest.approx(1 / 3)
    assert m["accuracy_ci_low"] <= m["accuracy"] <= m["accuracy_ci_high"]
    # d: pass@1 1/3, pass@2 2/3; maj@1 1/3, maj@2: {0,1},{0,2} tie -> 1/2, {1,2} -> 0: 1/3; maj@3 0
    #    best_of@1 1/3, best_of@2 2/3, best_of@3 1; weighted@2: 1.0 vs 0.2 -> 2/3, weighted@3 1.0 vs 0.4 -> 1
    assert m["pass@1"] == pytest.approx((2 / 3 + 0 + 0 + 1 / 3) / 4)
    assert m["pass@2"] == pytest.approx((1 + 0 + 0 + 2 / 3) / 4)
    assert m["pass@3"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert m["maj@1"] == pytest.approx((2 / 3 + 1 / 3) / 4)
    assert m["maj@2"] == pytest.approx((2 / 3 + 1 / 3) / 4)
    assert m["maj@3"] == pytest.approx((1 + 0) / 4)
    assert m["best_of@2"] == pytest.approx((1 + 2 / 3) / 4)
    assert m["best_of@3"] == pytest.approx((1 + 1) / 4)
    assert m["weighted@2"] == pytest.approx((1 + 2 / 3) / 4)
    assert m["weighted@3"] == pytest.approx((1 + 1) / 4)
    assert sorted(m["curves"]) == ["best_of", "maj", "pass", "weighted"]
    assert sorted(m["curves"]["pass"], key=int) == ["1", "2", "3"]  # 1, 2, then n = 3
    assert m["curves"]["maj"]["2"]["mean"] == m["maj@2"]
    lo, hi = m["curves"]["maj"]["2"]["ci"]
    assert lo <= m["maj@2"] <= hi
    assert m["curves"]["weighted"]["2"]["method"] == "exact" and m["weighted_method"]["3"] == "exact"
    # usage: totals and per-problem means, failed problems included
    assert m["tokens/prompt_total"] == 350 and m["tokens/cached_prompt_total"] == 100
    assert m["tokens/computed_prompt_total"] == 250 and m["tokens/generated_total"] == 140
    assert m["tokens/generated_mean"] == pytest.approx(35)
    assert m["verifier/calls_total"] == 9 and m["verifier/tokens_total"] == 90
    assert m["flops/all_total"] == pytest.approx(2.0 * (250 + 140))
    assert m["time/wall_total"] == pytest.approx(6.0) and m["time/wall_mean"] == pytest.approx(1.5)
    assert any("failed" in note for note in m["notes"])


def test_compute_metrics_streams_a_generator_once():
    seen = []

    def gen():
        for r in hand_records():
            seen.append(r["problem_id"])
            yield r

    m = compute_metrics(gen(), n_boot=100)
    assert seen == ["a", "b", "c", "d"] and m["problems"] == 4


def test_compute_metrics_different_pool_sizes_and_no_scores():
    recs = [
        record("x", [(0, True, None)] * 2 + [(1, False, None)] * 3, True),  # n = 5
        record("y", [(0, True, None), (1, False, None), (1, False, None)], False),  # n = 3
        record("z", [], None),  # ungraded, empty
    ]
    m = compute_metrics(recs, n_boot=100)
    assert m["pool_size_min"] == 3 and m["pool_size_max"] == 5 and m["curves_max_k"] == 3
    assert sorted(m["curves"]) == ["maj", "pass"]  # no scores: no best_of / weighted
    assert "best_of@1" not in m and "weighted@1" not in m
    assert sorted(m["curves"]["pass"], key=int) == ["1", "2", "3"]
    # x at k=3 uses its whole pool of 5: pass@3 = 1 - C(3,3)/C(5,3) = 0.9; y: 1; z: 0
    assert m["pass@3"] == pytest.approx((0.9 + 1 + 0) / 3)
    assert m["ungraded"] == 1
    notes = " ".join(m["notes"])
    assert "pool sizes differ" in notes and "no verifier scores" in notes and "no candidates" in notes


def test_compute_metrics_reports_monte_carlo():
    rng = np.random.default_rng(2)
    recs = []
    for i in range(3):
        cl, sc, ok = random_pool(rng, 12, n_clusters=3, score_levels=0, p_no_score=0.0, mixed=False)
        recs.append(record(f"p{i}", list(zip(cl, ok, sc)), ok[0]))
    m = compute_metrics(recs, n_boot=100, weighted_exact_limit=100, weighted_samples=2000)
    w = m["curves"]["weighted"]
    assert w["1"]["method"] == "exact" and w["12"]["method"] == "exact"
    assert w["4"]["method"] == "monte_carlo" and w["4"]["monte_carlo_problems"] == 3
    assert w["4"]["monte_carlo_stderr"] > 0
    assert any("Monte Carlo" in note for note in m["notes"])
    exact = compute_metrics(recs, n_boot=100)
    assert exact["curves"]["weighted"]["4"]["method"] == "exact"
    assert abs(m["weighted@4"] - exact["weighted@4"]) < 4 * w["4"]["monte_carlo_stderr"] + 1e-9
    # same seed, same numbers; records order does not change Monte Carlo draws
    again = compute_metrics(list(reversed(recs)), n_boot=100, weighted_exact_limit=100, weighted_samples=2000)
    assert again["weighted@4"] == pytest.approx(m["weighted@4"], abs=1e-15)


def test_compute_metrics_duplicates_and_empty():
    recs = hand_records()
    recs.append(record("b", [(0, True, 0.5)] * 3, True))  # a retry of b that succeeded
    m = compute_metrics(recs, n_boot=100)
    assert m["duplicates"] == 1 and m["problems"] == 4
    assert m["accuracy"] == pytest.approx(2 / 4)
    empty = compute_metrics([])
    assert empty["problems"] == 0 and empty["accuracy"] is None
    json.dumps(empty, allow_nan=False)


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(12) == [1, 2, 4, 8, 12]
    assert default_ks(0) == []


def test_metrics_for_subset_sizes_matches_estimators():
    recs = hand_records()
    out = metrics_for_subset_sizes(recs, [1, 2, 3, 5])
    assert out["ks"] == [1, 2, 3, 5] and out["problem_ids"] == ["a", "b", "c", "d"]
    assert out["pass"].shape == (4, 4)
    np.testing.assert_allclose(out["maj"][0, :3], [2 / 3, 2 / 3, 1.0])
    assert np.isnan(out["pass"][0, 3])  # k = 5 > n = 3
    np.testing.assert_array_equal(out["pass"][2], 0.0)  # failed
    pools = [Pool.of([0, 1, 0], [True, False, True])]
    bare = metrics_for_subset_sizes(pools, [2], ["maj", "best_of"])
    assert bare["maj"][0, 0] == pytest.approx(2 / 3) and np.isnan(bare["best_of"][0, 0])
    vals = per_problem_values(recs, "best_of@2")
    assert vals["a"] == pytest.approx(1.0) and vals["c"] == 0.0


# ---------------------------------------------------------------------------
# honest reporting: curves only over independent samples, finish reasons
# ---------------------------------------------------------------------------
def flagged(records, flag, stats=None):
    out = []
    for r in records:
        r = json.loads(json.dumps(r))
        for j, c in enumerate(r["candidates"]):
            c["text"] = f"text {j}"
        if flag is not ...:
            r["independent_samples"] = flag
        if stats is not None:
            r["stats"] = stats
        out.append(r)
    return out


def test_search_pools_get_no_curves_but_search_statistics():
    recs = flagged(hand_records(), False, stats={"expansions": 12, "nodes": 20, "ess": [8.0, 2.0, 4.0], "steps": 3})
    recs[0]["candidates"] = [dict(recs[0]["candidates"][0]) for _ in range(3)]  # three copies of one text
    m = compute_metrics(recs, n_boot=200)
    json.dumps(m, allow_nan=False)
    assert m["pool/independent_samples"] is False
    assert m["curves"] == {} and m["curves_max_k"] is None
    assert not [k for k in m if "@" in k]  # no pass@k, maj@k, best_of@k, weighted@k
    assert any("not independent samples" in n for n in m["notes"])
    assert m["accuracy"] == pytest.approx(1 / 4)  # the final answers are still graded
    assert m["search/expansions_mean"] == 12 and m["search/nodes_mean"] == 20 and m["search/steps_mean"] == 3
    assert m["search/ess_mean"] == pytest.approx(14 / 3) and m["search/ess_final_mean"] == 4.0
    # distinct texts over the non-failed problems a (three copies of one), b and d (three each)
    assert m["pool/distinct_texts_mean"] == pytest.approx((1 + 3 + 3) / 3)
    with pytest.raises(ValueError, match="not independent samples"):
        per_problem_values(recs, "maj@2")
    assert per_problem_values(recs, "accuracy")["a"] in (0.0, 1.0)


def test_sample_pools_get_curves_and_unflagged_records_too_with_a_note():
    samples = compute_metrics(flagged(hand_records(), True), n_boot=200)
    legacy = compute_metrics(flagged(hand_records(), ...), n_boot=200)
    assert samples["pool/independent_samples"] is True and legacy["pool/independent_samples"] is None
    for m in (samples, legacy):
        assert sorted(m["curves"]) == ["best_of", "maj", "pass", "weighted"]
        assert m["maj@2"] == pytest.approx((2 / 3 + 1 / 3) / 4)
    assert not any("independent" in n for n in samples["notes"])
    assert any("do not say whether" in n for n in legacy["notes"])
    # one record of a search in the run is enough to drop the curves
    mixed = flagged(hand_records(), True)
    mixed[1]["independent_samples"] = False
    assert compute_metrics(mixed, n_boot=200)["curves"] == {}


def test_finish_shares_read_every_producer_and_count_the_rest_as_other():
    from ttscale.finish import finish_class

    reasons = ["stop", "eos", "length", "max_tokens", "max_steps", "unfinished", "budget", "abort", None, "step_cap"]
    recs = [{"problem_id": f"p{i}", "correct": True, "candidates": [{"cluster": 0, "correct": True, "finish_reason": r}]}
            for i, r in enumerate(reasons)]
    recs[0]["candidates"].append({"cluster": 0, "correct": True, "finish_reason": "stop"})
    m = compute_metrics(recs, n_boot=100)
    assert m["finish/candidates"] == 11
    assert m["finish/eos_share"] == pytest.approx(3 / 11)
    assert m["finish/token_cap_share"] == pytest.approx(2 / 11)
    assert m["finish/step_cap_share"] == pytest.approx(2 / 11)
    assert m["finish/budget_share"] == pytest.approx(2 / 11)
    assert m["finish/other_share"] == pytest.approx(2 / 11)  # "abort" and None
    assert sum(m[f"finish/{c}_share"] for c in ("eos", "step_cap", "token_cap", "budget", "other")) == pytest.approx(1)
    assert m["finish_reasons"] == {"stop": 2, "eos": 1, "length": 1, "max_tokens": 1, "max_steps": 1, "unfinished": 1,
                                   "budget": 1, "abort": 1, "none": 1, "step_cap": 1}
    assert finish_class("STOP") == "eos" and finish_class("something new") == "other"
    from ttscale.runner.tracking import flat_summary  # what the W&B summary gets

    summary = flat_summary(m)
    assert summary["finish/eos_share"] == m["finish/eos_share"] and summary["finish/candidates"] == 11
    empty = compute_metrics([], n_boot=10)
    assert empty["finish/candidates"] == 0 and empty["finish/eos_share"] is None


def test_weighted_is_not_reported_over_negative_scores():
    """Summed as weights, negative scores (raw mean log-probs) make a larger class weigh
    less: weighted@k is left out, best_of@k (a ranking) is kept."""
    recs = flagged(hand_records(), True)
    for r in recs:
        for c in r["candidates"]:
            if c["score"] is not None:
                c["score"] = c["score"] - 2.0  # same ranking, all negative
    m = compute_metrics(recs, n_boot=100)
    assert "weighted" not in m["curves"] and not [k for k in m if k.startswith("weighted")]
    assert m["best_of@2"] == compute_metrics(flagged(hand_records(), True), n_boot=100)["best_of@2"]
    assert any("weighted@k is not reported" in n for n in m["notes"])
