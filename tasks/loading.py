"""Load a dataset's rows through `datasets`: a Hub name, or a local JSON/JSONL/
Parquet/CSV file (JSONL is read line by line, see `tasks.rows`, so a bad line is
reported with its number). Both give `Rows` (a list of plain dicts); errors are
`ValueError`s that name the config key to change (`task.path=`, `task.problem_field=`, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ttscale.tasks.rows import Rows, read_jsonl

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _offline_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the Hub could not be reached" (no network, offline mode)."""
    errs: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

        errs += [LocalEntryNotFoundError, OfflineModeIsEnabled]
    except ImportError:  # pragma: no cover - old huggingface_hub
        pass
    try:
        import requests

        errs.append(requests.exceptions.ConnectionError)
        errs.append(requests.exceptions.Timeout)
    except ImportError:  # pragma: no cover
        pass
    try:
        import httpx

        errs.append(httpx.TransportError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def _not_found_errors() -> tuple[type[BaseException], ...]:
    try:
        from datasets.exceptions import DatasetNotFoundError

        return (DatasetNotFoundError,)
    except ImportError:  # pragma: no cover
        return ()


def load_local(path: str | Path, *, task: str, on_bad_row: str = "error") -> Rows:
    """Rows of a local JSON / JSONL / Parquet / CSV file: JSONL line by line (`read_jsonl`:
    errors name the line), the others with `datasets`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"task={task}: task.path={path} does not exist (resolved to {p.resolve()})")
    fmt = LOCAL_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"task={task}: task.path={path}: unsupported file type {p.suffix!r}; "
            f"use one of {sorted(LOCAL_FORMATS)}"
        )
    if p.suffix.lower() == ".jsonl":
        return read_jsonl(p, task=task, on_bad_row=on_bad_row)
    import datasets

    try:
        ds = datasets.load_dataset(fmt, data_files=str(p.resolve()), split="train")
    except Exception as e:  # noqa: BLE001 - an unreadable file is the user's input: one line
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"task={task}: task.path={path}: cannot read it as {fmt}: {type(e).__name__}: {first}") from e
    return Rows(ds.to_list(), source=str(path))


def load_hub(
    name: str,
    *,
    task: str,
    split: str,
    config: str | None = None,
    revision: str | None = None,
    local_hint: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of a Hub dataset split. Unreachable Hub -> ValueError suggesting `task.path=`."""
    import datasets

    hint = f"task.path={local_hint}" if local_hint else "task.path=<a local .jsonl/.json/.parquet file>"
    where = f"{name!r}" + (f" (config {config!r})" if config else "") + f", split {split!r}"
    try:
        ds = datasets.load_dataset(name, config, split=split, revision=revision)
    except _offline_errors() as e:
        raise ValueError(
            f"task={task}: cannot load Hub dataset {where}: the Hugging Face Hub is unreachable "
            f"(offline? {type(e).__name__}: {e}). Load a local copy instead: {hint}"
        ) from e
    except _not_found_errors() as e:
        raise ValueError(
            f"task={task}: Hub dataset {where} not found ({e}). Check task.hub / task.hub_config "
            f"/ task.split, or load a local file: {hint}"
        ) from e
    return Rows(ds.to_list(), source=name)


def load_rows(
    *,
    task: str,
    path: str | Path | None = None,
    hub: str | None = None,
    split: str = "test",
    config: str | None = None,
    revision: str | None = None,
    on_bad_row: str = "error",
) -> Rows:
    """A task's rows: the local `path` when set (it wins over `hub`), else the Hub dataset."""
    if path:
        return load_local(path, task=task, on_bad_row=on_bad_row)
    if hub:
        return load_hub(hub, task=task, split=split, config=config, revision=revision)
    raise ValueError(f"task={task}: set task.hub=<Hub dataset> or task.path=<local file>")


def pick_field(
    columns: Sequence[str], wanted: str | Sequence[str] | None, *, key: str, task: str, required: bool = True
) -> str | None:
    """The first of `wanted` (one name or alternatives) among `columns`.

    Missing and required -> ValueError naming the config key and the columns there are.
    """
    if wanted is None:
        if required:
            raise ValueError(f"task={task}: task.{key} must be set")
        return None
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    for n in names:
        if n in columns:
            return n
    if required:
        shown = names[0] if len(names) == 1 else names
        raise ValueError(
            f"task={task}: field {shown!r} (task.{key}) is not in the dataset; its fields are "
            f"{sorted(columns)}. Set task.{key}=<field>"
        )
    return None
