"""A quiet terminal: the engine's own output goes to `engine.log` in the run directory.

vLLM logs at INFO from this process and from the processes it starts (EngineCore, its
workers), and libraries print warnings while it loads. By default ttscale sends all of it to
`<run dir>/engine.log`: vLLM's loggers through `VLLM_LOGGING_CONFIG_PATH` (read by every
vLLM process as it imports vLLM), and, while the engine starts, this process's file
descriptors 1 and 2 (which the engine's processes inherit, so what they print themselves goes
there too). The terminal keeps ttscale's own lines: one when the engine is ready, the progress
bar, warnings that matter (one line each) and the summary. `run.verbose=true` or
`TTSCALE_VERBOSE=1` leaves the engine's output on the terminal.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

ENV_VERBOSE = "TTSCALE_VERBOSE"


def verbose(cfg: DictConfig) -> bool:
    return bool(cfg.run.get("verbose", False)) or os.environ.get(ENV_VERBOSE, "").lower() in ("1", "true", "yes")


def vllm_logging_config(log_path: Path) -> dict:
    """vLLM's loggers (and those of the libraries it loads) to one file, INFO and up."""
    handler = {"class": "logging.FileHandler", "filename": str(log_path), "mode": "a", "formatter": "plain",
               "level": "INFO"}
    loggers = {name: {"handlers": ["engine_log"], "level": "INFO", "propagate": False}
               for name in ("vllm", "torch", "transformers", "huggingface_hub")}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"engine_log": handler}, "loggers": loggers}


def _config_file(log_path: Path) -> str:
    fd, path = tempfile.mkstemp(prefix="ttscale-vllm-logging-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(vllm_logging_config(log_path), fh)
    atexit.register(lambda: os.path.exists(path) and os.unlink(path))  # an engine built later reads it too
    return path


@contextmanager
def engine_output_to(log_path: Path) -> Iterator[None]:
    """While the block runs (the engine starting), fds 1 and 2 write to `log_path`; vLLM's
    loggers write there for the rest of the process (see the module doc)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = _config_file(log_path)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)
