"""Exact estimators over the k-subsets of one problem's stored pool of n candidates.

Every function here is pure (numpy in, numbers out) and answers one question:
if we had drawn only k of the n stored samples -- every one of the C(n, k)
subsets equally likely -- what is the expected score of a selection rule?
That is what "accuracy at k samples" means when the n samples are i.i.d.; it
is *not* the score of "the first k samples", which is one arbitrary subset.

A pool is three aligned arrays (see `ttscale.metrics.Pool`):

* ``clusters``: int, the answer-equivalence class of each candidate; ``-1``
  means the candidate has no answer and does not vote.
* ``correct``: bool, the grade of each candidate (ungraded counts as wrong).
* ``scores``: float, the verifier's outcome score; ``nan`` means no score.

Conventions shared by all rules
-------------------------------
* Ties are broken uniformly at random, and the expectation includes the
  tie-break: a tie among t options of which one is correct counts 1/t.
* When a rule picks a *cluster* (majority, weighted majority), its answer is
  that of a uniformly random member of the cluster inside the subset, so a
  cluster whose members were graded differently (imperfect clustering)
  contributes the fraction of its chosen members that are correct. With
  consistent grading this is just "the cluster is correct".
* A subset in which no candidate has an answer scores 0.

Rules
-----
* ``pass_curve`` / ``pass_at_k``: the unbiased pass@k estimator of Chen et al.
  (2021), 1 - C(n-c, k) / C(n, k), as a product (no large binomials).
* ``maj_curve``: exact expected majority vote (plurality of answer clusters) for
  every k at once, by a polynomial dynamic programme (see its docstring).
* ``best_of_curve``: exact expected correctness of the top-scored candidate of
  the subset, for every k at once; unscored candidates rank lowest.
* ``weighted_curve``: weighted majority (a cluster's weight is the sum of its
  members' scores in the subset; unscored members weigh 0). Exact by
  enumeration when C(n, k) is small or a shortcut applies, otherwise a seeded
  Monte Carlo estimate over uniformly drawn k-subsets; the result says which.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# Float64 holds C(n, k) exactly enough up to n of about 1020; the majority DP
# switches to exact Python integers beyond this pool size.
FLOAT_DP_MAX_N = 1000

# Weighted majority: cluster weights within this relative distance of the
# largest are tied (sums of the same scores in another order differ by ulps).
WEIGHT_TIE_RTOL = 1e-9


# ---------------------------------------------------------------------------
# binomial helpers
# ---------------------------------------------------------------------------
def comb_ratios(a: np.ndarray | list[int], n: int) -> np.ndarray:
    """R[i, k] = C(a[i], k) / C(n, k) for k = 0..n (zero for k > a[i]); 0 <= a[i] <= n.

    R[i, k] = prod_{t<k} (a[i] - t) / (n - t), which never forms a large binomial.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1)
    if np.any((a < 0) | (a > n)):
        raise ValueError(f"need 0 <= a <= n = {n}")
    t = np.arange(n, dtype=np.float64)[None, :]
    out = np.ones((a.shape[0], n + 1))
    np.cumprod(np.clip((a - t) / (n - t), 0.0, None), axis=1, out=out[:, 1:])
    return out


def comb_ratio(a: int, n: int) -> np.ndarray:
    """C(a, k) / C(n, k) for k = 0..n (zero for k > a)."""
    return comb_ratios([a], n)[0]


def _check_k(n: int, k: int) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..n (n={n}), got {k}")


# ---------------------------------------------------------------------------
# pass@k
# ---------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k / i), their numerically stable form.
    """
    _check_k(n, k)
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_curve(correct: np.ndarray) -> np.ndarray:
    """pass@k for k = 1..n (index k-1) of a pool with these per-candidate grades."""
    correct = np.asarray(correct, dtype=bool)
    n = correct.size
    if n == 0:
        return np.zeros(0)
    c = int(correct.sum())
    return 1.0 - comb_ratio(n - c, n)[1:]


# ---------------------------------------------------------------------------
# best-of-k (selection by verifier score)
# ---------------------------------------------------------------------------
def best_of_curve(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Expected correctness of the top-scored candidate of a random k-subset, k = 1..n.

    Candidates are grouped by distinct score (``nan`` = no score, ranked lowest,
    tied with ``-inf``). Group g (m_g members, c_g correct, A_g candidates in
    higher groups) holds the subset's top exactly when the subset avoids the A_g
    higher candidates but not all of group g:

        P(top in g) = [C(n - A_g, k) - C(n - A_g - m_g, k)] / C(n, k)

    and then the pick is a uniform member of the group's chosen ones, correct
    with probability c_g / m_g by symmetry.
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    n = scores.size
    if n == 0:
        return np.zeros(0)
    keyed = np.where(np.isnan(scores), -np.inf, scores)
    values, inverse = np.unique(-keyed, return_inverse=True)  # ascending -score = descending score
    sizes = np.bincount(inverse, minlength=values.size)
    good = np.bincount(inverse, weights=correct.astype(np.float64), minlength=values.size)
    above = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    p_top = comb_ratios(n - above, n) - comb_ratios(n - above - sizes, n)  # (groups, k = 0..n)
    return ((good / sizes) @ p_top)[1:]


# ---------------------------------------------------------------------------
# maj@k (plurality vote over answer clusters)
# ---------------------------------------------------------------------------
def _cluster_table(clusters: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sizes and correct counts of the answer clusters (no-answer candidates left out)."""
    clusters = np.asarray(clusters, dtype=np.int64)
    correct = np.asarray(correct, dtype=bool)
    answered = clusters >= 0
    _, inverse = np.unique(clusters[answered], return_inverse=True)
    sizes = np.bincount(inverse).astype(np.int64)
    good = np.bincount(inverse, weights=correct[answered].astype(np.float64)).astype(np.int64)
    return sizes, good


def maj_curve(clusters: np.ndarray, correct: np.ndarray, *, exact_integers: bool | None = None) -> np.ndarray:
    """Exact expected majority-vote correctness over random k-subsets, k = 1..n.

    For a target cluster l (size m_l) and each count j >= 1 of its members in the
    subset, count the subsets in which every other cluster has fewer than j
    members or exactly j (a tie), keeping T = the number of tied clusters: the
    target then wins with probability 1 / (T + 1). Clusters smaller than j can
    never tie, so together with the no-answer candidates they form one free pool
    of F candidates (generating function (1 + z)^F); each cluster of size >= j
    (at most n / j of them) multiplies the generating function by

        sum_{x<j} C(m, x) z^x  +  t C(m, j) z^j       (t marks a tie).

    The coefficient of z^s t^T counts the ways to draw s other candidates with T
    ties; the target contributes C(m_l, j) and the subset size is k = j + s, so
    one pass serves every k. The result is divided by C(n, k). Correct clusters
    are summed, each weighted by its fraction of correct members.

    Cost is about n^3 log n elementary operations per correct cluster in the
    worst case (a few ms for typical pools with n = 256). Float64 is used up to
    n = FLOAT_DP_MAX_N (all terms are positive, so the relative error stays at
    rounding level); beyond it, or with ``exact_integers=True``, the counts are
    exact Python integers and the result is the correctly rounded rational.
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    n = clusters.size
    if n == 0:
        return np.zeros(0)
    sizes, good = _cluster_table(clusters, correct)
    if exact_integers is None:
        exact_integers = n > FLOAT_DP_MAX_N
    if exact_integers:
        dtype: type = object
        binom = lambda m, x: math.comb(m, x)  # noqa: E731
        frac = Fraction
    else:
        dtype = np.float64
        binom = lambda m, x: float(math.comb(m, x))  # noqa: E731
        frac = lambda a, b: a / b  # noqa: E731

    total = np.zeros(n + 1, dtype=dtype)  # indexed by k; sums counts * 1/(T+1) * fraction correct
    for l in np.flatnonzero(good > 0):
        m_l = int(sizes[l])
        p_l = frac(int(good[l]), m_l)
        others = np.delete(sizes, l)
        S = n - m_l  # candidates outside the target cluster (incl. no-answer)
        for j in range(1, m_l + 1):
            big = others[others >= j]
            free = S - int(big.sum())
            D = np.zeros((S + 1, big.size + 1), dtype=dtype)
            D[: free + 1, 0] = [binom(free, s) for s in range(free + 1)]
            filled = free  # highest s with a nonzero entry so far
            for m in big.tolist():
                coef = [binom(m, x) for x in range(j + 1)]
                new = np.zeros_like(D)
                width = filled + 1
                for x in range(j):
                    new[x : x + width, :] += coef[x] * D[:width, :]
                new[j : j + width, 1:] += coef[j] * D[:width, :-1]  # a tie at j
                D = new
                filled += j
            ties = np.array([frac(1, T + 1) for T in range(big.size + 1)], dtype=dtype)
            E = D @ ties  # ways to fill the other s slots, weighted by 1/(T+1)
            total[j : j + S + 1] += (p_l * binom(m_l, j)) * E
    if exact_integers:
        return np.array([float(total[k] / math.comb(n, k)) for k in range(1, n + 1)])
    norm = np.array([float(math.comb(n, k)) for k in range(n + 1)])
    return (total / norm)[1:]


# ---------------------------------------------------------------------------
# weighted@k (weighted majority by verifier score)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightedEstimate:
    """weighted@k for one pool and one k."""

    value: float
    method: str  # "exact" or "monte_carlo"
    stderr: float = 0.0  # Monte Carlo standard error (0 when exact)
    subsets: int = 0  # subsets evaluated (0 for closed-form shortcuts)


def _tally(idx: np.ndarray, slot: np.ndarray, weights: np.ndarray, correct: np.ndarray, L: int) -> np.ndarray:
    """Per subset (row of ``idx``) and cluster: [weight sum, member count, correct count].

    ``slot`` maps candidates to clusters 0..L-1, no answer to L (a slot dropped here).
    Returns shape (3, rows, L); tallies of disjoint batches of columns add up.
    """
    S = idx.shape[0]
    flat = (slot[idx] + (L + 1) * np.arange(S, dtype=np.int64)[:, None]).ravel()
    size = S * (L + 1)
    out = np.empty((3, S, L))
    for t, w in enumerate((weights, None, correct)):
        counts = np.bincount(flat, weights=None if w is None else w[idx].ravel(), minlength=size)
        out[t] = counts.reshape(S, L + 1)[:, :L]
    return out


def _outcome(tally: np.ndarray) -> np.ndarray:
    """Weighted-majority outcome of each subset from its tally (see `_tally`)."""
    W, N, C = tally
    present = N > 0
    Wp = np.where(present, W, -np.inf)
    wmax = Wp.max(axis=1, keepdims=True)
    tol = WEIGHT_TIE_RTOL * np.abs(np.where(np.isfinite(wmax), wmax, 0.0))
    tie = present & (Wp >= wmax - tol)
    t = tie.sum(axis=1)
    frac_correct = np.where(tie, C / np.maximum(N, 1), 0.0).sum(axis=1)
    return np.where(t > 0, frac_correct / np.maximum(t, 1), 0.0)


def weighted_curve(
    clusters: np.ndarray,
    scores: np.ndarray,
    correct: np.ndarray,
    ks: list[int] | tuple[int, ...],
    *,
    exact_limit: int = 200_000,
    samples: int = 20_000,
    seed: int | np.random.SeedSequence | None = 0,
    chunk: int = 20_000,
) -> list[WeightedEstimate]:
    """Expected weighted-majority correctness over random k-subsets, for each k in ``ks``.

    Exact in closed form when a shortcut applies -- no answers at all (0); k = 1
    (the lone candidate's grade); k = n (the one subset); a single answer
    cluster, or all answered candidates with the same positive score (both
    reduce to ``maj_curve``) -- else exact by enumerating all C(n, k) subsets
    when that is at most ``exact_limit``, else a Monte Carlo mean over
    ``samples`` uniform k-subsets drawn with ``seed``, with its standard error.
    The Monte Carlo subsets of every k are the prefixes of the same ``samples``
    random permutations (common random numbers: each k is still unbiased, and
    the curve is smoother than with independent draws).
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    correct_f = np.asarray(correct, dtype=bool).astype(np.float64)
    weights = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    n = clusters.size
    ks = [int(k) for k in ks]
    for k in ks:
        _check_k(n, k)
    answered = clusters >= 0
    if not answered.any():
        return [WeightedEstimate(0.0, "exact") for _ in ks]
    _, dense = np.unique(clusters[answered], return_inverse=True)
    L = int(dense.max()) + 1
    slot = np.full(n, L, dtype=np.int64)  # no answer -> the extra slot L
    slot[answered] = dense

    def values(idx: np.ndarray) -> np.ndarray:
        return _outcome(_tally(idx, slot, weights, correct_f, L))
    w_ans = weights[answered]
    like_majority = L == 1 or (w_ans[0] > 0 and np.all(w_ans == w_ans[0]))
    maj = maj_curve(clusters, correct) if like_majority else None

    out: dict[int, WeightedEstimate] = {}
    for k in ks:
        if k == 1:
            out[k] = WeightedEstimate(float(correct_f[answered].sum() / n), "exact")
        elif k == n:
            v = values(np.arange(n)[None, :])[0]
            out[k] = WeightedEstimate(float(v), "exact", subsets=1)
        elif maj is not None:
            out[k] = WeightedEstimate(float(maj[k - 1]), "exact")
        elif (total := math.comb(n, k)) <= exact_limit:
            acc = 0.0
            combos = itertools.combinations(range(n), k)
            for done in range(0, total, chunk):
                b = min(chunk, total - done)
                flat = itertools.chain.from_iterable(itertools.islice(combos, b))
                idx = np.fromiter(flat, dtype=np.int64, count=b * k).reshape(b, k)
                acc += float(values(idx).sum())
            out[k] = WeightedEstimate(acc / total, "exact", subsets=total)

    mc_ks = [k for k in ks if k not in out]
    if mc_ks:
        rng = np.random.default_rng(seed)
        kmax = max(mc_ks)
        vals: dict[int, list[np.ndarray]] = {k: [] for k in mc_ks}
        for done in range(0, samples, chunk):
            b = min(chunk, samples - done)
            prefix = rng.random((b, n)).argsort(axis=1)[:, :kmax]  # random permutations' first kmax
            tally, done_k = np.zeros((3, b, L)), 0
            for k in sorted(mc_ks):  # tallies of growing prefixes, added incrementally
                tally += _tally(prefix[:, done_k:k], slot, weights, correct_f, L)
                done_k = k
                vals[k].append(_outcome(tally))
        for k in mc_ks:
            v = np.concatenate(vals[k])
            se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
            out[k] = WeightedEstimate(float(v.mean()), "monte_carlo", stderr=se, subsets=int(v.size))
    return [out[k] for k in ks]


def weighted_at_k(
    clusters: np.ndarray,
    scores: np.ndarray,
    correct: np.ndarray,
    k: int,
    *,
    exact_limit: int = 200_000,
    samples: int = 20_000,
    seed: int | np.random.SeedSequence | None = 0,
    chunk: int = 20_000,
) -> WeightedEstimate:
    """weighted@k for one k (see `weighted_curve`)."""
    return weighted_curve(clusters, scores, correct, [k], exact_limit=exact_limit, samples=samples, seed=seed, chunk=chunk)[0]
