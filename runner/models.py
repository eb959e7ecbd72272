"""Checks that a model reference can be loaded without a download the machine cannot make:
an `embedded:` model whose package is installed, a local checkpoint directory, or a Hub id
(with `HF_HUB_OFFLINE=1`, already in the local cache)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ttscale.runner.errors import ConfigError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_model(value: Any, key: str) -> None:
    """A model reference the engine can load without a download it cannot make. Raises ConfigError."""
    from ttscale.backends.embedded import EMBEDDED_MODELS, PREFIX, WEIGHT_PATTERNS, gguf_path, is_prepared, model_dir

    if value in (None, ""):
        raise ConfigError(f"{key} must be set (a Hub id, a local checkpoint directory, or embedded:<name>)")
    v = str(value)
    if v.startswith(PREFIX):
        name = v[len(PREFIX):]
        if name not in EMBEDDED_MODELS:
            known = ", ".join(PREFIX + k for k in EMBEDDED_MODELS)
            raise ConfigError(f"{key}={v}: no such embedded model; known: {known}")
        if not is_prepared(model_dir(name)):
            try:
                gguf_path(EMBEDDED_MODELS[name])
            except FileNotFoundError as e:
                raise ConfigError(f"{key}={v}: {e}") from e
        return
    p = Path(v).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise ConfigError(f"{key}={v} is a file; give a checkpoint directory (config.json + weights) or a .gguf")
        return
    if p.is_dir() or v.startswith((".", "/", "~")) or v.count("/") > 1 or not HUB_ID.match(v):
        if not p.is_dir():
            raise ConfigError(f"{key}={v}: no such model directory (resolved to {p.resolve()})")
        if not (p / "config.json").is_file():
            raise ConfigError(f"{key}={v}: no config.json in {p.resolve()} (not a Hugging Face checkpoint)")
        if not any(next(p.glob(w), None) is not None for w in WEIGHT_PATTERNS):
            raise ConfigError(f"{key}={v}: no weights ({', '.join(WEIGHT_PATTERNS)}) in {p.resolve()}")
        return
    if offline():  # a Hub id: it has to be in the local cache already
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(v, "config.json")
        except Exception:  # noqa: BLE001
            cached = None
        if not isinstance(cached, str):
            raise ConfigError(
                f"{key}={v}: not in the local Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE): "
                f"download it first (`huggingface-cli download {v}`) or set {key}=<local checkpoint directory>"
            )
