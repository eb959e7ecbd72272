"""What `scripts/run.py` does with a composed config: run it, turn bad input into one
clear line and exit status 2, SIGINT into status 130.

In a sweep (`-m`) a rejected configuration fails only its own job: its error line is
printed, the other configurations still run, and `SweepFailures` (a Hydra callback in
conf/config.yaml) exits with status 2 at the end if any job was rejected. (In a submitit job --
hydra/launcher=slurm, local -- the error goes back to the sweep's launcher, which counts it:
hydra_plugins/ttscale_launcher.)"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ttscale.runner.errors import ConfigError
from ttscale.runner.estimate import ESTIMATES, sweep_total
from ttscale.runner.job import run

_REJECTED: list[str] = []


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001
        return False


def _bare(d: Path) -> bool:
    """Only Hydra's sweep record and empty job folders: nothing of a run."""
    return all(p.name == "multirun.yaml" or (p.is_dir() and _bare(p)) for p in d.iterdir())


class SweepFailures(Callback):
    """Exit with status 2 after a sweep in which some configuration was rejected. A sweep whose
    folder holds nothing of its runs (a dry run, every configuration rejected, runs recorded in
    their own run directories by the basic launcher) leaves no folder: the sweep folder and the
    parents it created are removed (submitit's logs keep theirs)."""

    def __init__(self) -> None:
        self._new: list[Path] = []  # folders this sweep created (its sweep folder and parents)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(str(config.hydra.sweep.dir)).absolute()
        self._new = [p for p in [sweep, *sweep.parents] if not p.exists()]

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        import shutil

        if ESTIMATES:  # a dry-run sweep: every run's estimate added up
            print("\n".join(sweep_total(ESTIMATES)))
        for d in self._new:  # deepest first
            if d.is_dir() and _bare(d):
                shutil.rmtree(d, ignore_errors=True)
        if _REJECTED:
            print(f"ttscale: {len(_REJECTED)} configuration(s) of the sweep were rejected:", file=sys.stderr)
            for line in _REJECTED:
                print(f"  {line}", file=sys.stderr)
            sys.exit(2)


def reject(line: str) -> None:
    """Count a rejected configuration of this sweep (SweepFailures reports them at its end)."""
    _REJECTED.append(one_line(line))


def one_line(message: str) -> str:
    """A message as one line (OmegaConf's errors add `full_key:` / `object_type=` lines)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return lines[0] if lines else message


def main_entry(cfg: DictConfig) -> float | None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        metrics = run(cfg)
    except ConfigError as e:
        line = one_line(str(e))
        print(f"ttscale: error: {line}", file=sys.stderr)
        if _in_multirun():  # nothing was written: the run directory comes only after the checks
            if os.environ.get("SUBMITIT_EXECUTOR"):  # a submitit job: its launcher hands this to the sweep
                raise
            reject(line)
            return None
        sys.exit(2)
    except KeyboardInterrupt:
        print("ttscale: interrupted; finished problems are saved and the run resumes where it stopped",
              file=sys.stderr)
        sys.exit(130)
    return metrics.get("accuracy") if metrics else None
