"""The HTML report in a real browser: headless Chromium (Debian's `chromium` package) renders
the report of a fake-engine particle-filtering run and a best-of-N run, takes a screenshot,
and dumps the DOM after the page's script ran. The tree of a particle-filtering problem has
the nodes of its record and the chosen path marked; the table has every strategy.

Without Chromium the test is skipped locally and fails in CI (`CI=true`; `.ci/run` installs
it with apt)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.report_fixtures import make_runs
from tests.test_report_html import elements
from ttscale.results import iter_records

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is missing; CI installs it (`apt-get install -y chromium`, see .ci/run)")
    pytest.skip("chromium is not installed (`apt-get install -y chromium`); CI runs this test")


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_the_report_renders_in_chromium(tmp_path):
    browser = chromium()
    pf, bon = make_runs(tmp_path / "runs", problems=4)
    out = tmp_path / "report.html"
    subprocess.run([sys.executable, "scripts/report.py", str(tmp_path / "runs"), "-o", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    recs = {r["problem_id"]: r for r in iter_records(pf)}
    pid = "p2"  # opened by its link: the page's script shows that problem
    url = f"{out.as_uri()}#p={pid}"

    shot = tmp_path / "report.png"
    headless(browser, tmp_path / "profile1", "--window-size=1280,2000", f"--screenshot={shot}", url)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200  # drawn, not a blank page

    dom = headless(browser, tmp_path / "profile2", "--virtual-time-budget=5000", "--dump-dom", url).stdout
    tags = elements(dom)
    # the script ran: the linked problem is the one shown
    active = [a["data-problem"] for t, a in tags if t == "section" and "active" in a.get("class", "").split()]
    assert active == [pid]
    # the table has every strategy
    assert {a["data-strategy"] for t, a in tags if t == "tr" and a.get("data-strategy")} == {"particle_filter", "best_of_n"}
    # the tree of the PF problem: the record's nodes, parents and chosen path
    tree = recs[pid]["tree"]
    box_id = re.compile(rf"^tree-r\d+-{pid}-n\d+$")  # report/problems.py: tree-<run key>-<problem>-n<node>
    boxes = [a for t, a in tags if t == "div" and "data-node" in a and box_id.match(a.get("id", ""))]
    assert sorted(int(a["data-node"]) for a in boxes) == sorted(tree["nodes"]["id"])
    parents = dict(zip(tree["nodes"]["id"], tree["nodes"]["parent"]))
    for a in boxes:
        p = parents[int(a["data-node"])]
        assert a["data-parent"] == ("" if p is None else str(p))
    marked = [int(a["data-node"]) for a in boxes if a.get("data-chosen") == "1" and "chosen" in a["class"].split()]
    assert sorted(marked) == sorted(tree["chosen"]) and len(marked) >= 2
    assert all(a.get("data-chosen") != "1" for a in boxes if int(a["data-node"]) not in tree["chosen"])
