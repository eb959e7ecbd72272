"""Problem-level percentile bootstrap: problems are resampled with replacement (a seeded
numpy Generator), the same resamples for every column, so every metric of a run shares them."""

from __future__ import annotations

import warnings

import numpy as np


# ---------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------
def bootstrap_means(values: np.ndarray, *, n_boot: int = 1000, seed: int | np.random.Generator = 0, chunk_elems: int = 250_000) -> np.ndarray:
    """Means of problem-level bootstrap resamples: (n_boot,) for a vector, (n_boot, M) for (P, M) columns.

    Problems (rows) are resampled with replacement, the same resamples for all
    columns. nan entries are left out of a column's mean (the mean is over the
    resampled rows where it is defined; nan if none is).
    """
    v = np.asarray(values, dtype=np.float64)
    vector = v.ndim == 1
    if vector:
        v = v[:, None]
    P = v.shape[0]
    if P == 0:
        raise ValueError("bootstrap needs at least one problem")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    defined = ~np.isnan(v)
    v0 = np.where(defined, v, 0.0)
    step = max(1, chunk_elems // P)
    out = []
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        idx = rng.integers(0, P, size=(b, P))
        counts = np.bincount((idx + P * np.arange(b)[:, None]).ravel(), minlength=b * P).reshape(b, P).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append((counts @ v0) / (counts @ defined))
    means = np.concatenate(out)
    return means[:, 0] if vector else means


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 1000, seed: int | np.random.Generator = 0, level: float = 0.95) -> np.ndarray:
    """Percentile bootstrap CI of the mean: array [low, high] (vector) or (M, 2) (columns)."""
    means = bootstrap_means(values, n_boot=n_boot, seed=seed)
    return _percentile_ci(means, level)


def _percentile_ci(means: np.ndarray, level: float) -> np.ndarray:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    alpha = (1 - level) / 2
    with warnings.catch_warnings():  # all-nan columns give nan, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        q = np.nanquantile(means, [alpha, 1 - alpha], axis=0)
    return q.T
