"""The report's per-problem browser: for each problem, each run's final answer and every
candidate (answer, correctness, score, finish reason, tokens, its node in the tree, its
text), and the search tree of a step or tree search (`report.tree`).

Sections are plain HTML, one `<section class="problem" data-problem=ID>` per problem (the
page's script shows one at a time), so the page reads without a server or network.
"""

from __future__ import annotations

from html import escape
from typing import Any, Mapping, Sequence

from ttscale.report.tree import tree_html

STAR = " \u2605"  # the selected candidate


def _mark(value: bool | None, failed: bool = False) -> str:
    if failed:
        return '<span class="bad" title="failed">!</span>'
    if value is None:
        return '<span class="na" title="not graded">?</span>'
    return '<span class="ok" title="right">\u2713</span>' if value else '<span class="bad" title="wrong">\u2717</span>'


def _num(v: Any) -> str:
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else escape(str(v)))


def candidates_table(record: Mapping[str, Any]) -> str:
    """Every candidate of one record; the selected one is marked."""
    cands = record.get("candidates") or []
    if not cands:
        return '<p class="none">no candidates</p>'
    tree = record.get("tree") or {}
    nodes = tree.get("final") or []
    sel = record.get("selected")
    rows = []
    for j, c in enumerate(cands):
        steps = c.get("step_scores")
        step_txt = ", ".join(f"{s:.2f}" for s in steps[-6:]) if steps else ""
        if steps and len(steps) > 6:
            step_txt = "\u2026, " + step_txt
        text = c.get("text") or ""
        node = nodes[j] if j < len(nodes) else (c.get("extra") or {}).get("node")
        unfinished = (c.get("extra") or {}).get("unfinished_answer")
        answer = c.get("answer")
        ans = escape(str(answer)) if answer is not None else (
            f'<span class="na" title="unfinished: not graded">({escape(str(unfinished))})</span>' if unfinished else "")
        rows.append(
            f'<tr class="cand{" selected" if j == sel else ""}" data-cand="{j}" data-node="{"" if node is None else node}">'
            f"<td>{j}{STAR if j == sel else ''}</td><td>{ans}</td><td>{_mark(c.get('correct'))}</td>"
            f"<td>{_num(c.get('score'))}</td><td class=\"small\">{escape(step_txt)}</td>"
            f"<td>{escape(str(c.get('finish_reason') or ''))}</td><td>{_num(c.get('num_tokens'))}</td>"
            f"<td>{'' if node is None else '#' + str(node)}</td>"
            f"<td><details><summary>{len(text)} chars</summary><pre>{escape(text)}</pre></details></td></tr>"
        )
    head = ("<tr><th>#</th><th>answer</th><th>right</th><th>score</th><th>step scores</th><th>finish</th>"
            "<th>tokens</th><th>node</th><th>text</th></tr>")
    return f'<table class="cands">{head}{"".join(rows)}</table>'


def run_block(label: str, key: str, record: Mapping[str, Any] | None) -> str:
    """One run's view of one problem."""
    if record is None:
        return f'<div class="runblock" data-run="{key}"><h4>{escape(label)}</h4><p class="none">not in this run</p></div>'
    failed = record.get("error") is not None
    head = (f'<h4>{escape(label)} {_mark(record.get("correct"), failed)} '
            f'<span class="small">answer: {escape(str(record.get("answer")))}'
            f' \u00b7 {(record.get("usage") or {}).get("generated_tokens", 0)} generated tokens</span></h4>')
    err = f'<p class="bad">error: {escape(str(record["error"]))}</p>' if failed else ""
    tree = ""
    if record.get("tree"):
        pid = str(record.get("problem_id"))
        uid = f"tree-{key}-{''.join(ch if ch.isalnum() else '_' for ch in pid)}"
        tree = f"<h5>search tree</h5>{tree_html(record['tree'], uid)}"
    return (f'<div class="runblock" data-run="{key}">{head}{err}{candidates_table(record)}{tree}</div>')


def problem_browser(
    problem_ids: Sequence[str],
    runs: Sequence[tuple[str, str, Mapping[str, Mapping[str, Any]]]],
    questions: Mapping[str, tuple[str, str | None]],
) -> str:
    """The browser: a list of problems (a mark per run) and one section per problem.

    runs: (label, key, {problem id: record}); questions: {problem id: (question, reference answer)}."""
    items, sections = [], []
    for n, pid in enumerate(problem_ids):
        marks = "".join(
            _mark((recs.get(pid) or {}).get("correct"), (recs.get(pid) or {}).get("error") is not None)
            if pid in recs else '<span class="na">\u00b7</span>'
            for _, _, recs in runs
        )
        active = " active" if n == 0 else ""
        items.append(f'<li class="plink{active}" data-problem="{escape(pid)}"><span class="pid">{escape(pid)}</span> {marks}</li>')
        q, ref = questions.get(pid, (None, None))
        qhtml = f'<pre class="question">{escape(q)}</pre>' if q else '<p class="none">question not available</p>'
        refhtml = f'<p>reference answer: <b>{escape(str(ref))}</b></p>' if ref is not None else ""
        blocks = "".join(run_block(label, key, recs.get(pid)) for label, key, recs in runs)
        sections.append(f'<section class="problem{active}" data-problem="{escape(pid)}"><h3>problem {escape(pid)}</h3>'
                        f"{qhtml}{refhtml}{blocks}</section>")
    order = " \u00b7 ".join(f"{n + 1}: {label}" for n, (label, _, _) in enumerate(runs))
    head = f'<li class="phead small">marks, in order \u2014 {escape(order)}</li>'
    return (f'<div class="browser"><ul class="plist">{head}{"".join(items)}</ul>'
            f'<div class="pview">{"".join(sections)}</div></div>')


BROWSER_JS = """
function showProblem(pid) {
  document.querySelectorAll('.plink, .problem').forEach(function (el) {
    el.classList.toggle('active', el.dataset.problem === pid);
  });
}
document.addEventListener('click', function (e) {
  var li = e.target.closest && e.target.closest('.plink');
  if (li) { showProblem(li.dataset.problem); history.replaceState(null, '', '#p=' + encodeURIComponent(li.dataset.problem)); }
});
document.addEventListener('mouseover', function (e) {
  var tr = e.target.closest && e.target.closest('tr.cand');
  document.querySelectorAll('.tnode.hl').forEach(function (el) { el.classList.remove('hl'); });
  if (!tr || !tr.dataset.node) return;
  var block = tr.closest('.runblock');
  var box = block && block.querySelector('.tnode[data-node="' + tr.dataset.node + '"]');
  while (box) {
    box.classList.add('hl');
    var p = box.dataset.parent;
    box = p === '' ? null : block.querySelector('.tnode[data-node="' + p + '"]');
  }
});
(function () {
  var m = location.hash.match(/^#p=(.+)$/);
  if (m) showProblem(decodeURIComponent(m[1]));
})();
"""
