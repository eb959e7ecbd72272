"""A run's metrics from its records: the one place that assembles them, used by the run
as it finishes and by the merge of a sharded run alike (so both give the same keys).

Records are streamed; only what the metrics read (a few arrays per problem) is kept, to
put the problems in their order in the task's list before computing: the bootstrap CIs
then do not depend on which problem finished first, and a merged sharded run gets the
same metrics as the unsharded one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ttscale.confidence_curves import confidence_entry, confidence_metrics
from ttscale.entries import problem_entry
from ttscale.metrics import compute_metrics

# Per-record grading counters that tasks report (code tasks: public vs hidden tests).
GRADING_COUNTS = ("candidates", "public_all_passed", "hidden_passed", "false_positives")


def record_order(rec: Mapping[str, Any]) -> tuple:
    """A record's place: its index in the task's problem list, then its id."""
    idx = rec.get("index")
    return (0, int(idx), str(rec["problem_id"])) if isinstance(idx, int) else (1, 0, str(rec["problem_id"]))


def grading_metrics(totals: Mapping[str, int]) -> dict[str, Any]:
    """Run totals of the tasks' grading counters. `grading/false_positive_rate`: of the
    candidates that pass every public test, the share that fails the hidden tests (how
    often a public-test verifier is fooled)."""
    if "false_positives" not in totals:
        return {}
    out: dict[str, Any] = {f"grading/{k}_total": v for k, v in totals.items()}
    passed_public = totals.get("public_all_passed", 0)
    out["grading/false_positive_rate"] = totals["false_positives"] / passed_public if passed_public else None
    return out


def run_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics of one run (or one shard) from its records: `compute_metrics` over the
    problems in task order, the grading counters' totals, candidates the verifier raised
    on (`run/verifier_errors`), and the oracle label."""
    entries, verifier_errors, oracle = [], 0, False
    confident: list[tuple[tuple, Any]] = []  # pools whose candidates stored confidence (DeepConf voters)
    grading: dict[str, int] = {}
    for r in records:
        # candidates the verifier raised on (left unscored, marked `extra.verifier_error`)
        verifier_errors += sum(1 for c in r.get("candidates") or () if (c.get("extra") or {}).get("verifier_error"))
        for key in GRADING_COUNTS:
            if isinstance((r.get("grading") or {}).get(key), int):
                grading[key] = grading.get(key, 0) + r["grading"][key]
        oracle = oracle or bool(r.get("verifier_is_oracle"))
        entries.append((record_order(r), problem_entry(r)))
        if (ce := confidence_entry(r)) is not None:
            confident.append((record_order(r), ce))
    entries.sort(key=lambda x: x[0])
    confident.sort(key=lambda x: x[0])
    metrics = compute_metrics(e for _, e in entries)
    conf = confidence_metrics(e for _, e in confident)
    metrics.setdefault("curves", {}).update(conf.pop("curves", {}))
    metrics.update(conf)
    metrics.update(grading_metrics(grading))
    metrics["run/verifier_errors"] = verifier_errors
    if oracle:
        metrics["verifier_is_oracle"] = True
    return metrics
