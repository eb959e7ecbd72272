"""Dataset rows that remember where they came from, and the bad-row policy.

A JSON Lines file is read line by line (`read_jsonl`), so a line that is not UTF-8,
not JSON, or not a JSON object is reported with its file and line number; tasks then
check each row's fields (problem text, answer, id) and report the same way
(`Rows.where`). `task.on_bad_row=skip` skips such rows instead, and the task keeps
one "file:line: reason" per skipped row, which the run counts in its metrics
(`run/skipped_rows`) and prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

BAD_ROW_POLICIES = ("error", "skip")  # task.on_bad_row


class Rows(list):
    """A dataset's rows (plain dicts) and where each came from, for error messages.

    `where(i)`: "data.jsonl:12" for a JSONL file (line numbers), else "row 11 of <source>".
    `ordinal(i)`: the row's position among all non-blank lines, skipped ones included, so
    row-numbered problem ids do not move when a bad row is skipped. `skipped`: one
    "file:line: reason" per bad row skipped with `task.on_bad_row=skip`."""

    def __init__(self, rows: Iterable[dict[str, Any]] = (), *, source: str | None = None,
                 lines: list[int] | None = None, ordinals: list[int] | None = None,
                 skipped: Iterable[str] = ()) -> None:
        super().__init__(rows)
        self.source, self.lines, self.ordinals = source, lines, ordinals
        self.skipped = list(skipped)

    def where(self, i: int) -> str:
        if self.lines is not None:
            return f"{self.source}:{self.lines[i]}"
        return f"row {i}" + (f" of {self.source}" if self.source else "")

    def ordinal(self, i: int) -> int:
        return self.ordinals[i] if self.ordinals is not None else i


def check_on_bad_row(value: str, *, task: str) -> str:
    if value not in BAD_ROW_POLICIES:
        raise ValueError(f"task={task}: task.on_bad_row must be one of {BAD_ROW_POLICIES}, got {value!r}")
    return value


def bad_row(message: str, *, task: str, on_bad_row: str, skipped: list[str]) -> None:
    """A bad row: ValueError naming it (default), or noted in `skipped` (`task.on_bad_row=skip`)."""
    if on_bad_row == "skip":
        skipped.append(message)
        return
    raise ValueError(f"task={task}: {message} (fix the row, or set task.on_bad_row=skip to skip bad rows)")


def read_jsonl(path: str | Path, *, task: str, on_bad_row: str = "error") -> Rows:
    """Rows of a JSON Lines file, checked line by line: a line that is not UTF-8, not JSON,
    or not a JSON object is an error naming file and line (or skipped, see `bad_row`).
    Blank lines are ignored."""
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    ordinals: list[int] = []
    skipped: list[str] = []
    ordinal = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            problem = None
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                obj = json.loads(text)
            except UnicodeDecodeError as e:
                problem = f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
            except json.JSONDecodeError as e:
                problem = f"malformed JSON ({e.msg} at column {e.colno})"
            else:
                if not isinstance(obj, dict):
                    problem = f"expected a JSON object, got {type(obj).__name__}"
            if problem is None:
                rows.append(obj)
                lines.append(lineno)
                ordinals.append(ordinal)
            else:
                bad_row(f"{path}:{lineno}: {problem}", task=task, on_bad_row=on_bad_row, skipped=skipped)
            ordinal += 1
    return Rows(rows, source=str(path), lines=lines, ordinals=ordinals, skipped=skipped)
