"""One engine per process: a sweep in one process reuses it while the backend settings
stay the same, and replaces it (the old one shut down first, freeing its memory) when
they change."""

from __future__ import annotations

import atexit
import json
from typing import Any

import sys
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ttscale.runner.quiet import engine_output_to

_ENGINES: dict[str, Any] = {}


def get_engine(backend_cfg: DictConfig, log_path: Path | None = None) -> Any:
    """The engine for these backend settings. The engine's own `seed` is left out of the
    comparison: every request carries a seed derived from the run seed and the problem, so
    a sweep over `seed` keeps one engine. A new engine's output goes to `log_path` (the
    run's engine.log, `runner.quiet`) when one is given; its start is announced in one line."""
    settings = OmegaConf.to_container(backend_cfg, resolve=True)
    if isinstance(settings, dict):
        settings.pop("seed", None)
    key = json.dumps(settings, sort_keys=True, default=str)
    if key not in _ENGINES:
        shutdown_engines()
        t0 = time.perf_counter()
        if log_path is None:
            _ENGINES[key] = instantiate(backend_cfg)
        else:
            made = not log_path.parent.exists()
            try:
                with engine_output_to(log_path):
                    _ENGINES[key] = instantiate(backend_cfg)
            except BaseException:
                failed_start(log_path, made)
                raise
        ready(_ENGINES[key], time.perf_counter() - t0, log_path)
        # Exit handlers run last-registered first. multiprocessing's own handler joins the engine's
        # worker processes, which only exit once the engine is shut down: registered again here,
        # after the engine started them, the shutdown runs first (else the interpreter hangs at exit).
        atexit.unregister(shutdown_engines)
        atexit.register(shutdown_engines)
    return _ENGINES[key]


@atexit.register
def shutdown_engines() -> None:
    for eng in _ENGINES.values():
        try:
            eng.shutdown()
        except Exception:  # noqa: BLE001
            pass
    _ENGINES.clear()


def ready(engine: Any, seconds: float, log_path: Path | None) -> None:
    """One line: what engine is up, and how long it took to start."""
    info = engine.info() or {}
    what = ", ".join(str(v) for v in (info.get("model"), info.get("engine"), info.get("device")) if v)
    where = f"; its log: {log_path}" if log_path is not None else ""
    print(f"ttscale: engine ready in {seconds:.0f} s ({what or type(engine).__name__}){where}", file=sys.stderr)


def failed_start(log_path: Path, made_dir: bool) -> None:
    """The engine did not start: its log's last lines go to the terminal (they say why), and the
    run directory made for the log alone is removed again."""
    try:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
    except OSError:
        tail = []
    if tail:
        print("ttscale: the engine did not start; the end of its log:\n  " + "\n  ".join(tail), file=sys.stderr)
    if made_dir and sorted(p.name for p in log_path.parent.iterdir()) == [log_path.name]:
        log_path.unlink()
        log_path.parent.rmdir()
