"""The HTML report (`scripts/report.py`, report/html.py) of a fake-engine particle-filtering
run and a best-of-N run: one self-contained file with the figures, the table of runs, the
paired comparison and a per-problem browser with the search trees; the W&B tree panels."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.report_fixtures import make_runs
from ttscale.paired import compare_runs
from ttscale.results import iter_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    pf, bon = make_runs(root / "runs", problems=5)
    out = root / "report.html"
    proc = subprocess.run([sys.executable, "scripts/report.py", str(root / "runs"), "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out, pf, bon


class Elements(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def elements(html: str) -> list[tuple[str, dict[str, str]]]:
    p = Elements()
    p.feed(html)
    return p.tags


def test_the_report_is_one_self_contained_file(report):
    out, _, _ = report
    html = out.read_text()
    tags = elements(html)
    for tag, a in tags:  # nothing is fetched when the page is viewed
        for key in ("src", "href"):
            assert not re.match(r"\s*(https?:)?//", a.get(key, "")), (tag, a)
        assert tag != "link" and not (tag == "script" and "src" in a)
    imgs = [a["src"] for t, a in tags if t == "img"]
    assert len(imgs) == 2 and all(s.startswith("data:image/png;base64,") and len(s) > 10_000 for s in imgs)
    assert "<style>" in html and "showProblem" in html


def test_the_table_and_the_paired_comparison(report):
    out, pf, bon = report
    tags = elements(out.read_text())
    in_table = [a for t, a in tags if t == "tr" and a.get("data-strategy")]
    assert {a["data-strategy"] for a in in_table} == {"particle_filter", "best_of_n"}
    html = out.read_text()
    want = compare_runs(list(iter_records(pf)), list(iter_records(bon)))  # PF is the more accurate here
    assert want["mean_diff"] > 0
    row = re.search(r'<table id="paired">.*?</table>', html, re.S).group(0)
    assert f"{100 * want['mean_diff']:+.1f} pts" in row
    assert f"[{100 * want['diff_ci'][0]:+.1f}, {100 * want['diff_ci'][1]:+.1f}] pts" in row
    assert "best_of_n" in row and row.count("<tr") == 2  # the header and the one other run


def test_every_problem_has_its_candidates_and_the_search_has_its_tree(report):
    out, pf, bon = report
    tags = elements(out.read_text())
    sections = [a["data-problem"] for t, a in tags if t == "section"]
    pf_recs = {r["problem_id"]: r for r in iter_records(pf)}
    assert sections == sorted(pf_recs, key=lambda p: pf_recs[p]["index"])
    cand_rows = [a for t, a in tags if t == "tr" and "data-cand" in a]
    n_cands = sum(len(r["candidates"]) for d in (pf, bon) for r in iter_records(d))
    assert len(cand_rows) == n_cands
    boxes = [a for t, a in tags if t == "div" and "data-node" in a]
    assert len(boxes) == sum(len(r["tree"]["nodes"]["id"]) for r in pf_recs.values())  # best-of-N has no tree
    chosen = [a for a in boxes if a.get("data-chosen") == "1"]
    assert len(chosen) == sum(len(r["tree"]["chosen"]) for r in pf_recs.values())
    assert all("chosen" in a["class"].split() for a in chosen)
    # the question comes from the run's task, loaded again
    assert "Ann has 2 apples and buys 3 more" in out.read_text()


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "r.html"
    cases = {
        "no such directory": [str(tmp_path / "missing"), "-o", str(out)],
        "no run directories found": [str(empty), "-o", str(out)],
        "does not exist": [str(empty), "-o", str(tmp_path / "no" / "r.html")],
    }
    for what, args in cases.items():
        proc = subprocess.run([sys.executable, "scripts/report.py", *args], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("report: ") and what in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not list(empty.iterdir())  # nothing left behind


def test_wandb_gets_the_trees_as_html_panels(report):
    import wandb

    from ttscale.runner.tracking import WandbTracker

    _, pf, bon = report
    logged: list[dict] = []

    class Run:
        def log(self, d):
            logged.append(d)

    tracker = WandbTracker(log_table=False, log_trees=2)
    tracker.run = Run()
    tracker._log_trees(list(iter_records(pf)))
    [panels] = logged
    assert set(panels) == {"tree/p0", "tree/p1"}
    assert all(isinstance(v, wandb.Html) for v in panels.values())
    page = panels["tree/p0"].html
    rec = next(r for r in iter_records(pf) if r["problem_id"] == "p0")
    assert page.count('class="tnode') == len(rec["tree"]["nodes"]["id"]) and "http" not in page
    logged.clear()
    tracker._log_trees(list(iter_records(bon)))  # no trees: nothing logged
    assert logged == []
