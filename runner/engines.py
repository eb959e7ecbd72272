"""One engine per process: a sweep in one process reuses it while the backend settings
stay the same, and replaces it (the old one shut down first, freeing its memory) when
they change."""

from __future__ import annotations

import atexit
import json
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

_ENGINES: dict[str, Any] = {}


def get_engine(backend_cfg: DictConfig) -> Any:
    """The engine for these backend settings. The engine's own `seed` is left out of the
    comparison: every request carries a seed derived from the run seed and the problem, so
    a sweep over `seed` keeps one engine."""
    settings = OmegaConf.to_container(backend_cfg, resolve=True)
    if isinstance(settings, dict):
        settings.pop("seed", None)
    key = json.dumps(settings, sort_keys=True, default=str)
    if key not in _ENGINES:
        shutdown_engines()
        _ENGINES[key] = instantiate(backend_cfg)
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
