"""Append-only per-problem records: one JSON line per finished problem.

A record is appended with a single `write` on an O_APPEND descriptor and flushed
(fsync'd when `fsync=True`), so a kill leaves at most one torn last line; `recover()`
drops it (truncating the file to its last complete line) and returns the ids already
done, which the runner skips. Shards of a run write their own files in the same run
directory (`records.shard-003-of-008.jsonl`); `iter_records` reads them all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

RECORDS = "records.jsonl"


def shard_filename(shard: int, num_shards: int) -> str:
    if num_shards <= 1:
        return RECORDS
    return f"records.shard-{shard:03d}-of-{num_shards:03d}.jsonl"


def record_files(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("records.shard-*.jsonl"))
    main = run_dir / RECORDS
    return ([main] if main.exists() else []) + files


def _complete_lines(path: Path) -> tuple[list[bytes], int]:
    """Complete lines and the byte length they cover (a torn tail is excluded)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


def _lines(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    for f in record_files(run_dir):
        with open(f, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # torn tail
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def iter_records(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete record of a run (all shard files), one per problem id: its first
    successful record, or, for a problem that only ever failed, its first failed record
    (a problem re-run with `run.retry_failed` has its failed record first, kept as history).
    Failed-only problems come last; readers order records by `index`."""
    seen: set[str] = set()
    failed: dict[str, dict[str, Any]] = {}  # failed-only so far (failures are few)
    for rec in _lines(run_dir):
        pid = rec.get("problem_id")
        if pid in seen:
            continue
        if rec.get("error") is not None:
            failed.setdefault(pid, rec)
            continue
        seen.add(pid)
        failed.pop(pid, None)
        yield rec
    yield from failed.values()


class ResultsStore:
    def __init__(self, run_dir: str | Path, shard: int = 0, num_shards: int = 1, fsync: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / shard_filename(shard, num_shards)
        self.fsync = fsync
        self._fd: int | None = None
        self.dropped_torn_line = False

    def recover(self) -> set[str]:
        """Drop a torn last line (from a kill) and return the problem ids already recorded."""
        if not self.path.exists():
            return set()
        lines, end = _complete_lines(self.path)
        size = self.path.stat().st_size
        done: set[str] = set()
        good_end = 0
        offset = 0
        for line in lines:
            offset += len(line) + 1
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break  # corrupt line: keep everything before it
            done.add(rec["problem_id"])
            good_end = offset
        if good_end < size:
            self.dropped_torn_line = True
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        return done

    def append(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:  # a single write normally; loop only on a short write
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to `path` via a temporary file and rename: never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
