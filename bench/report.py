"""Rows of the benchmark table, the machine it ran on, the table and the JSON file."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ttscale.results import write_json_atomic

CONF = str(Path(__file__).resolve().parents[1] / "conf")


@dataclass
class Row:
    part: str
    metric: str
    value: float | None
    target: str = ""  # e.g. "<= 1.10"; empty: reported, not judged
    passed: bool | None = None
    unit: str = ""

    def cell(self) -> str:
        if self.value is None:
            return "-"
        v = self.value
        s = f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{s} {self.unit}".strip()


def check(value: float | None, op: str, bound: float) -> bool | None:
    if value is None:
        return None
    return {"<=": value <= bound, ">=": value >= bound}[op]


def judged(part: str, metric: str, value: float | None, op: str, bound: float, unit: str = "") -> Row:
    return Row(part, metric, value, f"{op} {bound:g}", check(value, op, bound), unit)


def table(rows: list[Row]) -> str:
    head = ("part", "metric", "value", "target", "pass")
    body = [(r.part, r.metric, r.cell(), r.target or "", "" if r.passed is None else ("PASS" if r.passed else "FAIL"))
            for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = "  ".join("{:<%d}" % w for w in widths)
    out = [line.format(*head), line.format(*("-" * w for w in widths))]
    out += [line.format(*b) for b in body]
    return "\n".join(out)


def load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def machine() -> dict[str, Any]:
    cpu = None
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"nproc": usable, "cpu_count": os.cpu_count(), "cpu": cpu, "memory_gb": mem, "python": platform.python_version(),
            "platform": platform.platform(), "load_at_start": load(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def write(path: str | Path, payload: dict[str, Any], rows: list[Row]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {**payload, "rows": [asdict(r) for r in rows]})
    return path


def compose(overrides: list[str]):
    """The run config the CLI would build from these overrides (Hydra compose, no job dir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return hydra_compose("config", overrides=overrides)
