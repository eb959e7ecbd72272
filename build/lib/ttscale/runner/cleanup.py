"""A rejected configuration leaves nothing behind."""

from __future__ import annotations

import logging
from pathlib import Path

def remove_hydra_output_dir() -> None:
    """After a rejected config: remove the job folder Hydra made for this run (its saved
    config and empty log), so a bad config leaves nothing behind. Only in a single run,
    only a folder that holds nothing but Hydra's own files, and its parents while empty
    up to `<run.root>/.hydra`."""
    import shutil

    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
            return
        out = Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001
        return
    if not out.is_dir() or ".hydra" not in out.parts:
        return
    names = {p.name for p in out.iterdir()}
    if not names <= {".hydra", "run.log", f"{HydraConfig.get().job.name}.log"}:
        return
    if any(p.stat().st_size for p in out.glob("*.log")):
        return  # something was logged: keep it
    logging.shutdown()  # Hydra's file handler holds run.log open
    shutil.rmtree(out, ignore_errors=True)
    parent = out.parent
    while parent.name and not any(parent.iterdir()):
        parent.rmdir()
        if parent.name == ".hydra":
            break
        parent = parent.parent
