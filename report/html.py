"""One self-contained HTML report of run directories (`scripts/report.py RUN_DIRS... -o
report.html`): the scaling figures (`report.plotting`, embedded as base64 PNG), the table
of runs with accuracy and 95% CIs, paired comparisons of every run against the most accurate
one on the problems they share (`ttscale.paired.compare_runs`), and the per-problem browser
with every candidate and the search trees (`report.problems`, `report.tree`).

Nothing is fetched when the page is viewed: CSS and script are inline, figures are data
URIs. Nothing is generated again: everything comes from what the runs left on disk. The
browser lists at most `max_problems` problems (the first by problem index; the page says
when some were left out); the table and the comparisons use every problem.
"""

from __future__ import annotations

import base64
import math
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ttscale.report.problems import BROWSER_JS, problem_browser
from ttscale.report.runs import RunData, find_run_dirs, label_dims, load_run, run_label
from ttscale.report.tree import TOGGLE_JS, TREE_CSS

MAX_PROBLEMS = 200

PAGE_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0; color: #1d2430;
  background: #f7f8fa; }
header { background: #1f2937; color: #fff; padding: 14px 24px; }
header h1 { margin: 0; font-size: 20px; } header p { margin: 4px 0 0; color: #cbd5e1; font-size: 13px; }
main { padding: 12px 24px 40px; }
h2 { font-size: 17px; border-bottom: 1px solid #d6dae1; padding-bottom: 4px; margin-top: 26px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; }
th, td { border: 1px solid #e2e5ea; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.small { font-size: 11.5px; color: #5b6472; }
.ok { color: #1a7f37; font-weight: 700; } .bad { color: #cf222e; font-weight: 700; } .na { color: #8b949e; }
.none { color: #8b949e; font-style: italic; }
.figs img { max-width: 100%; background: #fff; border: 1px solid #e2e5ea; margin: 6px 0; }
.browser { display: flex; gap: 14px; align-items: flex-start; }
.plist { list-style: none; margin: 0; padding: 0; width: 190px; max-height: 80vh; overflow-y: auto;
  background: #fff; border: 1px solid #e2e5ea; position: sticky; top: 8px; flex: none; }
.plink { padding: 3px 8px; cursor: pointer; font-size: 13px; border-bottom: 1px solid #f0f2f5; }
.phead { padding: 4px 8px; border-bottom: 1px solid #e2e5ea; }
.plink:hover { background: #eef2f8; } .plink.active { background: #dbe7fb; }
.pid { display: inline-block; min-width: 70px; }
.pview { flex: 1; min-width: 0; }
.problem { display: none; } .problem.active { display: block; }
.question { white-space: pre-wrap; background: #fff; border: 1px solid #e2e5ea; padding: 8px; }
.runblock { background: #fff; border: 1px solid #e2e5ea; border-radius: 6px; padding: 6px 12px; margin: 10px 0; }
.runblock h4 { margin: 6px 0; } .runblock h5 { margin: 10px 0 2px; }
table.cands pre { white-space: pre-wrap; max-width: 640px; margin: 4px 0; }
tr.cand.selected { background: #fff8c5; }
.tnode.hl { outline: 2px solid #7c3aed; }
"""


@dataclass
class ReportRun:
    key: str  # r0, r1, ... (element ids)
    label: str
    data: RunData
    records: list[dict[str, Any]]

    @property
    def by_problem(self) -> dict[str, dict[str, Any]]:
        return {str(r["problem_id"]): r for r in self.records}


def load_report_runs(paths: Iterable[str | Path]) -> list[ReportRun]:
    from ttscale.results import iter_records

    dirs = find_run_dirs(paths)
    if not dirs:
        raise ValueError("no run directories found (a run directory holds config.yaml and records/metrics)")
    datas = [load_run(d) for d in dirs]
    dims = label_dims(datas)
    labels = [run_label(d, dims) for d in datas]
    for extra in (lambda d: f"n={d.n}", lambda d: f"seed={d.seed}", lambda d: d.run_dir.name):
        dup = {lab for lab in labels if labels.count(lab) > 1}
        labels = [f"{lab} {extra(d)}" if lab in dup else lab for lab, d in zip(labels, datas)]
    out = []
    for i, (d, lab) in enumerate(zip(datas, labels)):
        recs = sorted(iter_records(d.run_dir), key=lambda r: (r.get("index", 0), str(r["problem_id"])))
        out.append(ReportRun(f"r{i}", lab, d, recs))
    return out


def _pct(v: Any) -> str:
    return "" if not isinstance(v, (int, float)) or math.isnan(v) else f"{100 * v:.1f}%"


def _n(v: Any, digits: int = 4) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
        return ""
    return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.3g}"


def strategies_table(runs: Sequence[ReportRun]) -> str:
    """One row per run: what it is, its accuracy with the 95% CI, and what it spent."""
    head = ("<tr><th>run</th><th>strategy</th><th>verifier</th><th>n</th><th>seed</th><th>problems</th>"
            "<th>accuracy</th><th>95% CI</th><th>generated tokens / problem</th><th>verifier calls / problem</th>"
            "<th>FLOPs / problem</th><th>candidates / problem</th><th>pool</th><th>directory</th></tr>")
    rows = []
    for r in runs:
        m, c = r.data.metrics, r.data.choices
        indep = m.get("pool/independent_samples")
        pool = "samples" if indep is True else ("search" if indep is False else "")
        rows.append(
            f'<tr data-run="{r.key}" data-strategy="{escape(c.get("strategy", ""))}"><td>{escape(r.label)}</td>'
            f'<td>{escape(c.get("strategy", ""))}</td><td>{escape(c.get("verifier", ""))}</td>'
            f'<td class="num">{escape(str(r.data.n))}</td><td class="num">{escape(str(r.data.seed))}</td>'
            f'<td class="num">{m.get("problems", len(r.records))}</td><td class="num"><b>{_pct(m.get("accuracy"))}</b></td>'
            f'<td class="num">[{_pct(m.get("accuracy_ci_low"))}, {_pct(m.get("accuracy_ci_high"))}]</td>'
            f'<td class="num">{_n(m.get("tokens/generated_mean"))}</td><td class="num">{_n(m.get("verifier/calls_mean"))}</td>'
            f'<td class="num">{_n(m.get("flops/all_mean"))}</td><td class="num">{_n(r.data.samples)}</td>'
            f'<td>{pool}</td><td class="small">{escape(r.data.run_dir.name)}</td></tr>'
        )
    return f'<table id="strategies">{head}{"".join(rows)}</table>'


def paired_table(runs: Sequence[ReportRun], n_boot: int = 1000) -> str:
    """Every run against the most accurate one, on the problems both have (paired bootstrap)."""
    from ttscale.paired import compare_runs

    if len(runs) < 2:
        return '<p class="none">one run: nothing to compare</p>'
    acc = [r.data.metrics.get("accuracy") if isinstance(r.data.metrics.get("accuracy"), (int, float)) else -1.0 for r in runs]
    best = runs[max(range(len(runs)), key=lambda i: (acc[i], -i))]
    head = ("<tr><th>run</th><th>shared problems</th><th>accuracy (best)</th><th>accuracy (run)</th>"
            "<th>best \u2212 run</th><th>95% CI of the difference</th><th>best right, run wrong</th>"
            "<th>run right, best wrong</th></tr>")
    rows = []
    for r in runs:
        if r is best:
            continue
        c = compare_runs(best.records, r.records, n_boot=n_boot)
        ci = c.get("diff_ci")
        ci_txt = f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] pts" if ci else ""
        sig = ci is not None and (ci[0] > 0 or ci[1] < 0)
        diff = c.get("mean_diff")
        rows.append(
            f'<tr data-run="{r.key}"><td>{escape(r.label)}</td><td class="num">{c["problems"]}</td>'
            f'<td class="num">{_pct(c.get("mean_a"))}</td><td class="num">{_pct(c.get("mean_b"))}</td>'
            f'<td class="num">{"" if diff is None else f"{100 * diff:+.1f} pts"}</td>'
            f'<td class="num">{ci_txt}{" *" if sig else ""}</td>'
            f'<td class="num">{c.get("a_right_b_wrong", "")}</td><td class="num">{c.get("a_wrong_b_right", "")}</td></tr>'
        )
    return (f'<p>Against the most accurate run, <b>{escape(best.label)}</b>, on the problems both runs have; '
            f"the CI is a paired bootstrap ({n_boot} resamples of the shared problems); * : the CI excludes 0.</p>"
            f'<table id="paired">{head}{"".join(rows)}</table>')


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def figures_html(runs: Sequence[ReportRun]) -> str:
    """The scaling figure and, when a run has sample pools, the curves over k (base64 PNG)."""
    from ttscale.report.plotting import make_scaling_plot

    with tempfile.TemporaryDirectory() as tmp:
        plot = make_scaling_plot([r.data.run_dir for r in runs], Path(tmp) / "scaling.png", dpi=100)
        html = _img(plot.png, "accuracy against generated tokens, FLOPs and samples per problem")
        import matplotlib.pyplot as plt

        has_k = any(ax.get_lines() for ax in plot.k_figure.axes)
        if has_k:
            html += _img(plot.k_png, "accuracy against k from the stored sample pools")
        plt.close(plot.figure)
        plt.close(plot.k_figure)
    note = "" if has_k else '<p class="small">No curves over k: no run has independent sample pools.</p>'
    return f'<div class="figs">{html}{note}</div>'


def questions_of(runs: Sequence[ReportRun]) -> dict[str, tuple[str, str | None]]:
    """{problem id: (question, reference answer)} from the first run whose task loads again
    (its config's task, instantiated); {} when none does (the browser then shows ids only)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    for r in runs:
        try:
            cfg = OmegaConf.load(r.data.run_dir / "config.yaml")
            task = instantiate(cfg.task)
            return {p.id: (p.question, ref.answer) for p, ref in task.load_all()}
        except Exception:  # noqa: BLE001 - a task that needs what this machine lacks: no questions
            continue
    return {}


def problem_order(runs: Sequence[ReportRun]) -> list[str]:
    seen: dict[str, tuple[int, str]] = {}
    for r in runs:
        for rec in r.records:
            pid = str(rec["problem_id"])
            seen.setdefault(pid, (int(rec.get("index", 0) or 0), pid))
    return sorted(seen, key=lambda p: seen[p])


def render_report(runs: Sequence[ReportRun], title: str | None = None, max_problems: int = MAX_PROBLEMS,
                  questions: Mapping[str, tuple[str, str | None]] | None = None) -> str:
    ids = problem_order(runs)
    shown = ids[:max_problems]
    left_out = len(ids) - len(shown)
    questions = questions_of(runs) if questions is None else questions
    title = title or "ttscale report"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cut = f'<p class="small">The browser shows the first {len(shown)} of {len(ids)} problems (--max-problems).</p>' \
        if left_out else ""
    browser = problem_browser(shown, [(r.label, r.key, r.by_problem) for r in runs], questions)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{PAGE_CSS}{TREE_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{len(runs)} runs \u00b7 {len(ids)} problems \u00b7 made {when} "
        f"from the run directories (nothing generated again)</p></header><main>"
        f'<h2 id="scaling">Scaling</h2>{figures_html(runs)}'
        f'<h2 id="runs">Strategies</h2><p class="small">Accuracy of the final answer (a failed problem counts '
        f"as wrong) with its 95% bootstrap CI over problems; costs are means per problem.</p>{strategies_table(runs)}"
        f'<h2 id="comparisons">Paired comparisons</h2>{paired_table(runs)}'
        f'<h2 id="problems">Problems</h2><p class="small">Pick a problem on the left. Each run shows its '
        f"candidates (\u2605 the selected one) and, for a step or tree search, its search tree; hover a candidate "
        f"to see its path.</p>{cut}{browser}"
        f"</main><script>{BROWSER_JS}{TOGGLE_JS}</script></body></html>"
    )


def build_report(paths: Iterable[str | Path], out: str | Path, *, title: str | None = None,
                 max_problems: int = MAX_PROBLEMS) -> Path:
    """Write the report of the runs under `paths` to `out` (one HTML file); returns its path."""
    from ttscale.results import write_text_atomic

    runs = load_report_runs(paths)
    html = render_report(runs, title=title, max_problems=max_problems)
    out = Path(out)
    write_text_atomic(out, html.encode("ascii", "xmlcharrefreplace").decode("ascii"))  # any locale
    return out
