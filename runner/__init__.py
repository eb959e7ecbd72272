"""The composition root: builds a run from its config and runs it (the top floor below
the entry points). `run(cfg)` is the whole of it; see `runner/job.py` for its steps."""

from ttscale.runner.errors import ConfigError
from ttscale.runner.job import run

__all__ = ["ConfigError", "run"]
