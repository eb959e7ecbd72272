"""Process and file housekeeping around sandboxed runs: kill a process group until it
is gone, count a uid's processes, remove a work dir the program made unwritable, run a
coroutine from sync code."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
from typing import Any


def _memory_hint(stderr: str) -> bool:
    return "MemoryError" in stderr or "Cannot allocate memory" in stderr


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _empty_group(pgid: int, within: float = 1.0) -> None:
    """SIGKILL the process group until it is gone (a forking process can add members
    while one kill is delivered), for at most `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)


def _count_user_processes(uid: int) -> int:
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{d}/task"))
            except OSError:
                pass
    return n


def _remove_tree(path: str) -> None:
    def onerror(func, p, exc_info):  # a directory the program made unwritable
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    for _ in range(3):
        shutil.rmtree(path, onerror=onerror)
        if not os.path.exists(path):
            return
        time.sleep(0.05)


def run_coroutine_sync(coro):
    """Run a coroutine to completion from sync code, also when an event loop is
    already running in this thread (then in a worker thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
async def drain_report(reader: asyncio.StreamReader, cap: int) -> list[dict[str, Any]]:
    """JSON lines from the report pipe (malformed lines and anything past `cap` bytes dropped)."""
    out: list[dict[str, Any]] = []
    seen = 0
    while True:
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):  # a line longer than the reader's limit
            continue
        if not line:
            return out
        seen += len(line)
        if seen > cap:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
