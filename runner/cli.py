"""What `scripts/run.py` does with a composed config: run it, turn bad input into one
clear line and exit status 2, SIGINT into status 130.

In a sweep (`-m`) a rejected configuration fails only its own job: its error line is
printed, the other configurations still run, and `SweepFailures` (a Hydra callback in
conf/config.yaml) exits with status 2 at the end if any job was rejected."""

from __future__ import annotations

import logging
import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ttscale.runner.cleanup import remove_hydra_output_dir
from ttscale.runner.errors import ConfigError
from ttscale.runner.job import run

_REJECTED: list[str] = []


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001
        return False


class SweepFailures(Callback):
    """Exit with status 2 after a sweep in which some configuration was rejected."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if _REJECTED:
            print(f"ttscale: {len(_REJECTED)} configuration(s) of the sweep were rejected:", file=sys.stderr)
            for line in _REJECTED:
                print(f"  {line}", file=sys.stderr)
            sys.exit(2)


def main_entry(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        metrics = run(cfg)
    except ConfigError as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        remove_hydra_output_dir()  # a rejected config leaves nothing behind
        if _in_multirun():
            _REJECTED.append(str(e))
            return None
        sys.exit(2)
    except KeyboardInterrupt:
        print("ttscale: interrupted; finished problems are saved and the run resumes where it stopped",
              file=sys.stderr)
        sys.exit(130)
    return metrics.get("accuracy") if metrics else None
