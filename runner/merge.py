"""Join the shards of a run into one `records.jsonl` and one `metrics.json`.

A sharded run (`run.shard=i run.num_shards=k`, e.g. a SLURM job array) writes
`records.shard-XXX-of-YYY.jsonl` and `metrics.shard-XXX-of-YYY.json` into the one
run directory its shards share (the shard keys are not part of the run's hash).
`merge_run` writes every problem's record exactly once, ordered by its index in
the task's problem list, to `records.jsonl`, and recomputes `metrics.json` from
those records, so the merged metrics equal the unsharded run's (the per-problem
seeds derive from the run seed and the problem id, not from the shard). After a
merge the directory looks like a finished unsharded run: relaunching the run
without shards generates nothing.

Shard files are kept (merging again gives the same files), unless
``remove_shards=True``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ttscale.results import RECORDS, iter_records, write_json_atomic, write_text_atomic
from ttscale.run_metrics import record_order, run_metrics
from ttscale.runner.estimate import merged_estimate
from ttscale.runner.tracking import tracker_for

SHARD_RE = re.compile(r"^records\.shard-(\d+)-of-(\d+)\.jsonl$")
SHARD_METRICS_RE = re.compile(r"^metrics\.shard-(\d+)-of-(\d+)\.json$")


class MergeError(RuntimeError):
    """The shards cannot be merged (missing shards, unfinished shards, conflicting records)."""


@dataclass
class ShardInfo:
    shard: int
    num_shards: int
    records: Path | None = None
    metrics: Path | None = None
    metrics_data: dict[str, Any] | None = None


@dataclass
class MergeReport:
    run_dir: Path
    num_shards: int
    problems: int
    expected: int | None
    duplicates: int = 0
    missing_shards: list[int] = field(default_factory=list)
    unfinished_shards: list[int] = field(default_factory=list)
    merged: bool = False
    metrics: dict[str, Any] | None = None

    def line(self) -> str:
        state = "merged" if self.merged else "not merged"
        exp = f"/{self.expected}" if self.expected is not None else ""
        extra = []
        if self.duplicates:
            extra.append(f"{self.duplicates} differing duplicate record(s): the first kept")
        if self.missing_shards:
            extra.append(f"missing shards {self.missing_shards}")
        if self.unfinished_shards:
            extra.append(f"unfinished shards {self.unfinished_shards}")
        acc = (self.metrics or {}).get("accuracy")
        acc_s = f"  accuracy {100 * acc:.1f}%" if isinstance(acc, (int, float)) else ""
        return f"{self.run_dir}: {state}, {self.num_shards} shards, {self.problems}{exp} problems{acc_s}" + (
            f" ({'; '.join(extra)})" if extra else ""
        )


def find_shards(run_dir: str | Path) -> dict[int, dict[int, ShardInfo]]:
    """{num_shards: {shard: ShardInfo}} for every shard file in the run directory."""
    run_dir = Path(run_dir)
    out: dict[int, dict[int, ShardInfo]] = {}
    for p in run_dir.iterdir() if run_dir.is_dir() else []:
        for rx, attr in ((SHARD_RE, "records"), (SHARD_METRICS_RE, "metrics")):
            m = rx.match(p.name)
            if m:
                i, k = int(m.group(1)), int(m.group(2))
                info = out.setdefault(k, {}).setdefault(i, ShardInfo(i, k))
                setattr(info, attr, p)
    for group in out.values():
        for info in group.values():
            if info.metrics is not None:
                try:
                    info.metrics_data = json.loads(info.metrics.read_text())
                except (OSError, json.JSONDecodeError):
                    info.metrics_data = None
    return out


def _read_records(path: Path) -> list[dict[str, Any]]:
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break  # torn tail of a killed shard: that problem is not done
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def merge_run(
    run_dir: str | Path,
    *,
    num_shards: int | None = None,
    allow_incomplete: bool = False,
    remove_shards: bool = False,
) -> MergeReport:
    """Merge the shards of one run directory (see the module doc).

    Refuses (MergeError) when a shard's records are missing, when a shard has not
    finished (no metrics file, or a partial one), or when fewer problems were recorded
    than the shards expected -- unless ``allow_incomplete``, which merges what exists
    and marks the metrics ``run/partial``.
    """
    run_dir = Path(run_dir)
    groups = find_shards(run_dir)
    if not groups:
        raise MergeError(f"{run_dir}: no shard files (records.shard-*-of-*.jsonl)")
    if num_shards is None:
        if len(groups) > 1:
            raise MergeError(f"{run_dir}: shards of several splits {sorted(groups)}; pick one with num_shards")
        num_shards = next(iter(groups))
    if num_shards not in groups:
        raise MergeError(f"{run_dir}: no shard files of {num_shards} shards (found {sorted(groups)})")
    shards = groups[num_shards]
    # A shard whose problems were all recorded before (e.g. by an earlier unsharded attempt) has
    # final metrics but no records file: finished means final metrics, present means any file.
    missing = [i for i in range(num_shards) if i not in shards]
    unfinished = [
        i for i in range(num_shards)
        if i not in missing and (shards[i].metrics_data is None or shards[i].metrics_data.get("run/partial"))
    ]
    expected: int | None = None
    if not missing and not unfinished:
        exp = [shards[i].metrics_data.get("run/problems_expected") for i in range(num_shards)]  # type: ignore[union-attr]
        expected = sum(int(e) for e in exp) if all(isinstance(e, int) for e in exp) else None

    records: dict[str, dict[str, Any]] = {}
    duplicates = 0
    # records.jsonl first: records of an earlier (unsharded or merged) attempt, which the shards skipped
    sources = [run_dir / RECORDS] if (run_dir / RECORDS).exists() else []
    sources += [shards[i].records for i in sorted(shards) if shards[i].records is not None]  # type: ignore[misc]
    for src in sources:
        for rec in _read_records(src):
            pid = str(rec["problem_id"])
            if pid in records:
                if records[pid].get("error") is not None and rec.get("error") is None:
                    records[pid] = rec  # a failed problem re-run (run.retry_failed): the success replaces it
                    continue
                # a copy (records.jsonl of an earlier merge) or a second attempt: keep the first
                duplicates += records[pid] != rec and rec.get("error") is None
                continue
            records[pid] = rec
    ordered = sorted(records.values(), key=record_order)
    report = MergeReport(run_dir, num_shards, len(ordered), expected, duplicates, missing, unfinished)
    problems_short = expected is not None and len(ordered) < expected
    if (missing or unfinished or problems_short) and not allow_incomplete:
        why = []
        if missing:
            why.append(f"shards {missing} have not run (no records, no metrics)")
        if unfinished:
            why.append(f"shards {unfinished} have not finished (no final metrics)")
        if problems_short:
            why.append(f"{len(ordered)} of {expected} problems recorded")
        raise MergeError(f"{run_dir}: not merged: {'; '.join(why)} (relaunch them, or merge with --allow-incomplete)")

    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in ordered)
    write_text_atomic(run_dir / RECORDS, text)
    metrics = run_metrics(ordered)  # the run's own metrics, grading counters included
    shard_metrics = [shards[i].metrics_data or {} for i in sorted(shards)]
    walls = [float(m["run/wall_time"]) for m in shard_metrics if isinstance(m.get("run/wall_time"), (int, float))]
    metrics["run/wall_time"] = max(walls) if walls else None  # elapsed when the shards ran side by side
    metrics["run/wall_time_shards_total"] = sum(walls) if walls else None
    sk = [m.get("run/skipped_rows") for m in shard_metrics if isinstance(m.get("run/skipped_rows"), int)]
    if sk:  # rows of the task's data every shard skipped alike (task.on_bad_row=skip)
        metrics["run/skipped_rows"] = max(sk)
    metrics["run/problems_expected"] = expected if expected is not None else len(ordered)
    metrics["run/partial"] = bool(missing or unfinished or problems_short)
    metrics["run/num_shards"] = num_shards
    h = next((m.get("run/hash") for m in shard_metrics if m.get("run/hash")), None)
    if h is None and (run_dir / "identity.json").exists():
        h = json.loads((run_dir / "identity.json").read_text()).get("hash")
    metrics["run/hash"] = h
    metrics.update(merged_estimate(shard_metrics, metrics))
    write_json_atomic(run_dir / "metrics.json", metrics)
    if remove_shards:
        for info in shards.values():
            for p in (info.records, info.metrics):
                if p is not None:
                    p.unlink(missing_ok=True)
    report.merged = True
    report.metrics = metrics
    return report


def merge_if_complete(run_dir: str | Path, num_shards: int) -> MergeReport | None:
    """Merge when every shard of `num_shards` has finished; else do nothing (None).

    Called by the runner after each shard: the last shard to finish merges. Two shards
    finishing together both merge; the writes are atomic and give the same files.
    """
    shards = find_shards(run_dir).get(num_shards, {})
    if len(shards) < num_shards or any(s.metrics_data is None or s.metrics_data.get("run/partial") for s in shards.values()):
        return None
    try:
        return merge_run(run_dir, num_shards=num_shards)
    except MergeError:
        return None


def is_sharded(run_dir: str | Path) -> bool:
    return bool(find_shards(run_dir))


def log_merged_run(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Log a merged run to W&B as the run of the whole configuration (id = the run's hash).

    Uses the logger settings of the run's saved config; the shard runs (ids
    `<hash>-s<i>of<k>`, tag `shard`) stay beside it in the same group.
    """
    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    ident = json.loads((run_dir / "identity.json").read_text()) if (run_dir / "identity.json").exists() else {}
    env = json.loads((run_dir / "environment.json").read_text()) if (run_dir / "environment.json").exists() else None
    choices = ident.get("choices") or {}
    tags = [f"{g}:{v}" for g, v in choices.items() if g in ("strategy", "task", "model")]
    n = cfg.get("strategy", {}).get("n") if cfg.get("strategy") is not None else None
    if n is not None:
        tags.append(f"n:{n}")
    tags += [f"seed:{cfg.get('seed')}", "merged"]
    tracker = tracker_for(cfg)
    tracker.start(
        config={**OmegaConf.to_container(cfg, resolve=True), "environment": env},
        run_id=str(metrics.get("run/hash") or ident.get("hash") or run_dir.name), name=run_dir.name,
        group=str(cfg.run.experiment), tags=tags, run_dir=str(run_dir),
    )
    tracker.log_results(metrics, iter_records(run_dir))
    tracker.finish()
