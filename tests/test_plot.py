"""Scaling plots from the run directories of a small sweep (fake engine): one line per strategy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ttscale.backends.fake import FakeEngine
from tests.test_merge import make_cfg, responder
from ttscale.report.plotting import make_scaling_plot
from ttscale.report.runs import find_run_dirs, load_run, scaling_points
from ttscale.runner import run

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = {
    "majority_vote": ["strategy=majority_vote"],
    "best_of_n": ["strategy=best_of_n", "verifier=self_certainty"],
}
NS = (1, 2, 4)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """strategy x n on 8 toy problems; majority_vote n=4 also with a second seed."""
    root = tmp_path_factory.mktemp("sweep")
    metrics = {}
    for name, ov in STRATEGIES.items():
        for n in NS:
            for seed in (0, 1) if (name, n) == ("majority_vote", 4) else (0,):
                cfg = make_cfg(root, *ov, f"strategy.n={n}", f"seed={seed}", problems=8)
                metrics[(name, n, seed)] = run(cfg, engine=FakeEngine(responder))
    return root, metrics


def test_one_line_per_strategy_with_runs_as_points(sweep, tmp_path):
    root, metrics = sweep
    assert len(find_run_dirs([root])) == 7
    plot = make_scaling_plot([root / "default"], tmp_path / "scaling.png")
    assert plot.png.exists() and plot.png.stat().st_size > 10_000 and plot.k_png.exists()
    assert set(plot.lines) == {"majority_vote", "best_of_n (self_certainty)"}

    tokens_ax, flops_ax, samples_ax = plot.figure.axes[:3]
    for ax in (tokens_ax, flops_ax, samples_ax):
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert set(lines) == set(plot.lines)  # one line per strategy in every panel
        assert len(ax.collections) == 2  # one CI band per line
        for ln in lines.values():
            assert len(ln.get_xdata()) == len(NS)  # one point per n (the two seeds are pooled)
            assert np.all(np.diff(ln.get_xdata()) > 0)

    mv = {ln.get_label(): ln for ln in samples_ax.get_lines()}["majority_vote"]
    assert list(mv.get_xdata()) == [1.0, 2.0, 4.0]
    # x of the tokens panel = each run's mean generated tokens per problem; y = its accuracy
    bo = {ln.get_label(): ln for ln in tokens_ax.get_lines()}["best_of_n (self_certainty)"]
    want = sorted((metrics[("best_of_n", n, 0)]["tokens/generated_mean"], 100 * metrics[("best_of_n", n, 0)]["accuracy"])
                  for n in NS)
    assert np.allclose(bo.get_xdata(), [x for x, _ in want]) and np.allclose(bo.get_ydata(), [y for _, y in want])
    # the pooled point: mean of the two seeds
    pooled = next(p for p in plot.lines["majority_vote"] if p.n == 4)
    assert pooled.seeds == [0, 1]
    assert pooled.accuracy == pytest.approx(np.mean([metrics[("majority_vote", 4, s)]["accuracy"] for s in (0, 1)]))
    assert pooled.ci[0] <= pooled.accuracy <= pooled.ci[1]
    # band = the CI
    band = tokens_ax.collections[list(plot.lines).index("best_of_n (self_certainty)")]
    ys = band.get_paths()[0].vertices[:, 1]
    pts = plot.lines["best_of_n (self_certainty)"]
    assert ys.min() == pytest.approx(100 * min(p.ci[0] for p in pts))
    assert ys.max() == pytest.approx(100 * max(p.ci[1] for p in pts))

    data = json.loads(plot.data.read_text())
    assert {k: len(v) for k, v in data["lines"].items()} == {"best_of_n (self_certainty)": 3, "majority_vote": 3}


def test_k_curves_come_from_the_stored_pools(sweep, tmp_path, monkeypatch):
    root, metrics = sweep
    import ttscale.runner.job as runner_job

    monkeypatch.setattr(runner_job, "get_engine", lambda *a: pytest.fail("plotting must not load an engine"))
    plot = make_scaling_plot([root], tmp_path / "s.png")
    ax = plot.k_figure.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert "majority_vote: maj@k (n=4)" in lines and "best_of_n (self_certainty): best_of@k (n=4)" in lines
    maj = lines["majority_vote: maj@k (n=4)"]
    assert list(maj.get_xdata()) == [1, 2, 4]
    curve = metrics[("majority_vote", 4, 0)]["curves"]["maj"]
    assert np.allclose(maj.get_ydata(), [100 * curve[str(k)]["mean"] for k in (1, 2, 4)])


def test_unmerged_shards_are_plotted_from_their_records(tmp_path):
    for i in range(2):
        run(make_cfg(tmp_path, "strategy.n=2", f"run.shard={i}", "run.num_shards=2", problems=6), engine=FakeEngine(responder))
    [d] = find_run_dirs([tmp_path])
    (d / "metrics.json").unlink()  # as if not merged yet
    r = load_run(d)
    assert not r.merged and r.metrics["problems"] == 6
    assert list(scaling_points([r])) == ["majority_vote"]


def test_plot_script_writes_png_and_logs_to_wandb_offline(sweep, tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = importlib.util.spec_from_file_location("plot_script", ROOT / "scripts" / "plot_scaling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root, _ = sweep
    out = tmp_path / "fig" / "scaling.png"
    assert mod.main([str(root), "-o", str(out), "--wandb"]) == 0
    assert out.exists() and out.with_name("scaling_k.png").exists() and out.with_suffix(".json").exists()
    runs = list((out.parent / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = [p.name for p in (runs[0] / "files" / "media").rglob("*.png")]
    assert len(media) == 2
    assert mod.main([str(tmp_path / "empty")]) == 2


def test_k_curves_only_for_runs_whose_pools_are_samples(tmp_path):
    """A particle filter's run is a point of the scaling figure but has no accuracy-vs-k
    curve: its final particles are not samples, even if its metrics.json held curves."""
    run(make_cfg(tmp_path, "strategy=majority_vote", "strategy.n=2", problems=6), engine=FakeEngine(responder))
    run(make_cfg(tmp_path, "strategy=particle_filter", "verifier=arithmetic_checker", "strategy.n=2", problems=6),
        engine=FakeEngine(responder))
    plot = make_scaling_plot([tmp_path], tmp_path / "s.png")
    assert set(plot.lines) == {"majority_vote", "particle_filter (arithmetic_checker)"}
    k_labels = [ln.get_label() for ln in plot.k_figure.axes[0].get_lines()]
    assert k_labels and all(lbl.startswith("majority_vote") for lbl in k_labels)
    assert list(json.loads(plot.data.read_text())["k_curves"]) == ["majority_vote"]

    # an older metrics.json of the search with curves in it: still not drawn once it says so
    [pf_dir] = [d for d in find_run_dirs([tmp_path]) if "particle_filter" in d.name]
    mv_dir = next(d for d in find_run_dirs([tmp_path]) if "majority_vote" in d.name)
    m = json.loads((pf_dir / "metrics.json").read_text())
    m["curves"] = json.loads((mv_dir / "metrics.json").read_text())["curves"]
    (pf_dir / "metrics.json").write_text(json.dumps(m))
    again = make_scaling_plot([tmp_path], tmp_path / "s2.png")
    assert all(ln.get_label().startswith("majority_vote") for ln in again.k_figure.axes[0].get_lines())
