"""scripts/run.py as a user runs it: a rejected configuration in a sweep fails only itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_runs_the_valid_jobs_and_exits_2_for_the_rejected_one(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run.py"), "-m", "strategy=best_of_n,majority_vote", "verifier=none",
         "strategy.n=2", f"run.root={tmp_path}", "run.dry_run=true", "logger=none"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "strategy best_of_n needs a verifier" in proc.stderr
    assert "1 configuration(s) of the sweep were rejected" in proc.stderr
    # the valid configuration still ran (a dry run prints its plan)
    assert "majority_vote" in proc.stdout and "dry run" in proc.stdout
