"""The cost estimate before the compute (run.dry_run=true) and its comparison with what a run spent."""

from __future__ import annotations

import json

from ttscale.backends.fake import FakeEngine
from ttscale.runner import run
from ttscale.runner.estimate import ESTIMATES, sweep_total
from ttscale.runner.identity import run_dir_for

from tests.test_runner import make_cfg, responder


def test_a_dry_run_estimates_from_earlier_runs_and_a_run_compares(tmp_path, capsys):
    # nothing known yet: the dry run says so and suggests a calibration
    assert run(make_cfg(tmp_path, "strategy.n=2", "run.dry_run=true")) == {}
    assert "no earlier run of this strategy" in capsys.readouterr().out
    # a calibration run: 6 problems of majority voting, n=2
    m0 = run(make_cfg(tmp_path, "strategy.n=2", problems=6), engine=FakeEngine(responder))
    per = m0["tokens/generated_mean"]
    # the same setting on 12 problems: measured figures x 12
    ESTIMATES.clear()
    run(make_cfg(tmp_path, "strategy.n=2", "run.dry_run=true", problems=12))
    out = capsys.readouterr().out
    assert "measured: 1 earlier run(s) of this setting" in out
    assert f"{12 * per:,.0f} generated tokens" in out
    # n=4: scaled by the sequences of the first request (4 / 2)
    run(make_cfg(tmp_path, "strategy.n=4", "run.dry_run=true", problems=12))
    out = capsys.readouterr().out
    assert "scaled" in out and "x 2.00" in out and f"{12 * 2 * per:,.0f} generated tokens" in out
    assert len(ESTIMATES) == 2 and "2 runs, 24 problems" in sweep_total(ESTIMATES)[0]
    # the run itself records the estimate beside what it spent
    m = run(make_cfg(tmp_path, "strategy.n=2", problems=12), engine=FakeEngine(responder))
    saved = json.loads((run_dir_for(make_cfg(tmp_path, "strategy.n=2", problems=12))[0] / "metrics.json").read_text())
    assert saved["estimate/generated_tokens"] == 12 * per
    assert abs(saved["estimate/generated_tokens_ratio"] - m["tokens/generated_mean"] / per) < 1e-9
    assert saved["estimate/source"].startswith("measured")
