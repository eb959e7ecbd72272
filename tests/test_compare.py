"""scripts/compare.py: paired comparison of two runs (fake engine)."""

from __future__ import annotations

import json

from ttscale.backends.fake import FakeEngine
from scripts.compare import main
from tests.test_merge import make_cfg, responder
from ttscale.results import iter_records
from ttscale.runner import run
from ttscale.runner.identity import run_dir_for


def _run(root, *ov):
    cfg = make_cfg(root, *ov, problems=12)
    run(cfg, engine=FakeEngine(responder))
    return run_dir_for(cfg)[0]


def test_compare_prints_the_paired_difference_and_counts(tmp_path, capsys):
    a = _run(tmp_path, "strategy=majority_vote", "strategy.n=4")
    b = _run(tmp_path, "strategy=majority_vote", "strategy.n=1")
    assert main([str(a), str(b), "--json", "--n-boot", "500"]) == 0
    out = json.loads(capsys.readouterr().out)
    ra = {r["problem_id"]: bool(r["correct"]) for r in iter_records(a)}
    rb = {r["problem_id"]: bool(r["correct"]) for r in iter_records(b)}
    assert out["problems"] == 12
    assert out["mean_a"] == sum(ra.values()) / 12 and out["mean_b"] == sum(rb.values()) / 12
    assert out["a_right_b_wrong"] == sum(ra[i] and not rb[i] for i in ra)
    assert out["a_wrong_b_right"] == sum(rb[i] and not ra[i] for i in ra)
    lo, hi = out["diff_ci"]
    assert lo <= out["mean_diff"] <= hi
    assert main([str(a), str(b), "--metric", "maj@1"]) == 0
    text = capsys.readouterr().out
    assert "maj@1 on 12 shared problems" in text and "paired bootstrap CI" in text


def test_compare_rejects_bad_input_in_one_line(tmp_path, capsys):
    a = _run(tmp_path, "strategy=majority_vote", "strategy.n=2")
    assert main([str(a), str(tmp_path)]) == 2
    assert "no records" in capsys.readouterr().err
    assert main([str(a), str(a), "--metric", "best@2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compare: --metric:") and "\n" not in err
