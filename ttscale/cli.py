"""What `scripts/run.py` does with a composed config: run it, turn bad input into one
clear line and exit status 2, SIGINT into status 130."""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from ttscale.runner import ConfigError, run


def main_entry(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        metrics = run(cfg)
    except ConfigError as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        from ttscale.validate import remove_hydra_output_dir

        remove_hydra_output_dir()  # a rejected config leaves nothing behind
        sys.exit(2)
    except KeyboardInterrupt:
        print("ttscale: interrupted; finished problems are saved and the run resumes where it stopped",
              file=sys.stderr)
        sys.exit(130)
    return metrics.get("accuracy") if metrics else None
