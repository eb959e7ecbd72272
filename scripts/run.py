"""Run one configuration (or a sweep with -m): `python scripts/run.py strategy=best_of_n strategy.n=16`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ttscale.runner.cli import main_entry  # noqa: E402


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return main_entry(cfg)


if __name__ == "__main__":
    from ttscale.runner.cli_checks import precheck_argv

    precheck_argv()  # `strategy=nope`: one line listing the valid names, exit status 2
    main()
