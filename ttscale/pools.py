"""What a run's candidate pools are, and what describes them when they are not samples.

Curves over k (pass@k, maj@k, best_of@k, weighted@k) are expectations over k-subsets of
a pool of *independent* samples. A search's pool is not one: particle filtering's final
particles are resampled copies of a few trajectories, beam search keeps its best beams,
A* returns every finished node. Treated as samples, such a pool reports a "pass@1" that
is the share of copies of a trajectory the search already chose. So each strategy
declares `independent_samples` (a class attribute), the runner writes it into every
record, and the metrics compute curves only when the records say so. A search is
described instead by what it did, from the statistics it records: ``search/<stat>_mean``
per problem for expansions, nodes, pops, steps, resamplings, sequences, and for particle
filtering the effective sample size (``search/ess_mean``: its mean over the resampling
steps, ``search/ess_final_mean``: at the last one); and, for every run,
``pool/distinct_texts_mean``, the distinct candidate texts per problem.

Records written before the flag existed say nothing; their curves are computed as
before, and a note says the pools were not declared.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# numeric `Result.stats` entries summarised as search/<key>_mean (those a record has)
SEARCH_STATS = ("expansions", "nodes", "pops", "steps", "resamplings", "sequences")


def distinct_texts(candidates: Iterable[Mapping[str, Any]]) -> int:
    """The number of distinct candidate texts of one record."""
    return len({c.get("text") for c in candidates})


def search_stats(stats: Mapping[str, Any] | None) -> dict[str, float]:
    """The search statistics of one record that the summary reads (absent ones left out)."""
    out: dict[str, float] = {}
    for key in SEARCH_STATS:
        v = (stats or {}).get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    ess = (stats or {}).get("ess")
    if isinstance(ess, list):
        vals = [float(x) for x in ess if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if vals:
            out["ess"] = sum(vals) / len(vals)
            out["ess_final"] = vals[-1]
    return out


def independence(flags: Iterable[bool | None]) -> tuple[bool | None, str | None]:
    """Whether the run's pools are independent samples, from each record's flag, and a note.

    False if any record says False; True if the others all say True; None if no record
    says (written before the flag), in which case curves are computed as before."""
    seen = {f for f in flags}
    if False in seen:
        note = "candidates are not independent samples (a search's final pool): curves over k are not computed; " \
               "see search/* and pool/distinct_texts_mean"
        if True in seen or None in seen:
            note += " (some records say otherwise, or nothing: the run mixes code versions)"
        return False, note
    if True in seen:
        if None in seen:
            return True, "some records do not say whether their candidates are independent samples; curves use them as such"
        return True, None
    if not seen:
        return None, None
    return None, ("records do not say whether their candidates are independent samples (written before this was "
                  "recorded): curves over k are computed as for samples, which a search's pool is not")


def search_summary(rows: Sequence[Mapping[str, float]], distinct: Sequence[int]) -> dict[str, float]:
    """``search/<stat>_mean`` over the problems that report the stat, ``pool/distinct_texts_mean``
    over all given problems (callers pass the non-failed ones)."""
    out: dict[str, float] = {}
    keys = sorted({k for r in rows for k in r})
    for k in keys:
        vals = [r[k] for r in rows if k in r]
        out[f"search/{k}_mean"] = sum(vals) / len(vals)
    if distinct:
        out["pool/distinct_texts_mean"] = sum(distinct) / len(distinct)
    return out


def sample_curves(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A run's curves over k when its pools are independent samples, else {} (a run whose
    metrics say `pool/independent_samples: false`, even if an older metrics.json of it
    holds curves). What plots of accuracy against k read."""
    if metrics.get("pool/independent_samples") is False:
        return {}
    return dict(metrics.get("curves") or {})


def summary_line(metrics: Mapping[str, Any]) -> str | None:
    """One console line describing a search's pool (None for a pool of samples)."""
    if metrics.get("pool/independent_samples") is not False:
        return None
    parts = [f"{k[len('search/'):-len('_mean')]} {v:.3g}" for k, v in sorted(metrics.items())
             if k.startswith("search/") and k.endswith("_mean") and isinstance(v, (int, float))]
    d = metrics.get("pool/distinct_texts_mean")
    if isinstance(d, (int, float)):
        parts.append(f"distinct final texts {d:.3g}")
    return "search (per problem, no curves over k: not samples): " + (", ".join(parts) or "no statistics recorded")


NEGATIVE_WEIGHTS_NOTE = ("weighted@k is not reported: some scores are negative, and a vote that sums them makes a "
                         "larger answer class weigh less (raw mean log-probabilities, say; map them to [0, 1])")


def negative_scores(score_arrays: Iterable[Any]) -> bool:
    """Whether any pool holds a negative score (weighted@k then sums them as weights)."""
    for scores in score_arrays:
        if any(s < 0 for s in scores if s == s):  # nan (unscored) is not negative
            return True
    return False
