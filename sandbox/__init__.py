"""Isolated execution of untrusted programs (`sandbox.py`, `_launcher.py`) and the unit-test
harness on top of it (`harness.py`): infrastructure beside the engines, used by grading
(tasks), the unit-test verifier and behaviour voting alike."""

from ttscale.sandbox.limits import MODES, Isolation, SandboxLimits, SandboxResult
from ttscale.sandbox.procs import run_coroutine_sync
from ttscale.sandbox.sandbox import Sandbox

__all__ = ["MODES", "Isolation", "Sandbox", "SandboxLimits", "SandboxResult", "run_coroutine_sync"]
