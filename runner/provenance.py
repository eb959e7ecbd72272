"""Where a run ran: interpreter, platform, engine settings and the hardware, written to
`environment.json` and to the W&B config (what panels group and filter runs by)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from typing import Any

import ttscale


def environment(engine_info: dict[str, Any]) -> dict[str, Any]:
    env = {
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
        "processor": platform.processor(), "ttscale": ttscale.__version__, "engine": engine_info,
        "cpu_count": os.cpu_count(),
    }
    env.update(hardware())
    return env


def hardware() -> dict[str, Any]:
    """CPU model, host memory, GPUs (from nvidia-smi: nothing is initialised in this process),
    torch version."""
    hw: dict[str, Any] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            hw["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        hw["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout
            gpus = [[x.strip() for x in line.split(",")] for line in out.strip().splitlines() if line.strip()]
            hw["gpus"] = [g[0] for g in gpus]
            hw["gpu_count"] = len(gpus)
            if gpus and len(gpus[0]) >= 3:
                hw["gpu_memory"], hw["gpu_driver"] = gpus[0][1], gpus[0][2]
        except (OSError, subprocess.SubprocessError):
            pass
    hw.setdefault("gpu_count", 0)
    torch = sys.modules.get("torch")  # only if the engine already imported it
    if torch is not None:
        hw["torch"] = torch.__version__
    return hw
