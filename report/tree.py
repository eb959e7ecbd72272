"""A record's search tree (`Result.tree`, written by `ttscale.strategies.tree_record`) as
HTML: nested lists, one box per node with its step text, score, what the selection after it
made of it (copies drawn by a resampling, kept or dropped beam, popped A* state) and how it
ended; the chosen path is highlighted. Used by the HTML report (`report.html`) and, as a
standalone page with its own CSS, by the W&B panel (`tree_page`).

Every node box carries `data-node` (its id in the record), `data-parent`, `data-step`,
`data-kept` and, on the chosen path, `data-chosen="1"` and the class `chosen`, so a test
(or a script) can check the rendered tree against the record.
"""

from __future__ import annotations

from html import escape
from typing import Any, Mapping, Sequence

# what `kept` means, per strategy kind: (label when kept k times, label when 0)
KEPT_WORDS = {
    "particle_filter": ("\u00d7{k} after resampling", "not resampled"),
    "entropic_particle_filter": ("\u00d7{k} after resampling", "not resampled"),
    "beam_search": ("kept", "pruned"),
    "dvts": ("kept (best of the subtree)", "pruned"),
    "a_star": ("expanded", "left in the frontier"),
}

TREE_CSS = """
.tree, .tree ul { list-style: none; margin: 0; padding-left: 18px; }
.tree { padding-left: 0; }
.tree li { position: relative; margin: 3px 0; }
.tree ul > li::before { content: ""; position: absolute; left: -12px; top: 0; bottom: 0;
  border-left: 1px solid #c9ced6; }
.tree ul > li::after { content: ""; position: absolute; left: -12px; top: 14px; width: 10px;
  border-top: 1px solid #c9ced6; }
.tree ul > li:last-child::before { bottom: auto; height: 14px; }
.tnode { display: inline-block; max-width: 720px; border: 1px solid #d6dae1; border-radius: 6px;
  background: #fff; padding: 3px 7px; font-size: 12.5px; vertical-align: top; }
.tnode .meta { color: #5b6472; font-size: 11.5px; }
.tnode .txt { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap;
  word-break: break-word; color: #1d2430; }
.tnode.dropped { opacity: 0.5; background: #f6f7f9; }
.tnode.chosen { border: 2px solid #1a7f37; background: #eefbf1; }
.tnode.root { background: #eef2f8; }
.chip { display: inline-block; border-radius: 9px; padding: 0 6px; margin-right: 4px; font-size: 11px;
  color: #fff; background: #6b7280; }
.chip.score { color: #fff; }
.chip.fin { background: #334155; }
.chip.cand { background: #7c3aed; }
.chip.kept { background: #2563eb; }
.chip.gone { background: #9ca3af; }
.chip.path { background: #1a7f37; }
.tree-wrap.path-only .tnode:not(.chosen) { display: none; }
.tree-wrap.path-only li::before, .tree-wrap.path-only li::after { display: none; }
.tree-legend { font-size: 12px; color: #5b6472; margin: 4px 0 8px; }
"""


def tree_rows(tree: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tree's nodes as dicts (the record stores them column by column)."""
    cols = tree.get("nodes") or {}
    ids = cols.get("id") or []
    return [{k: (v[i] if i < len(v) else None) for k, v in cols.items()} for i in range(len(ids))]


def _score_chip(score: float | None) -> str:
    if score is None:
        return '<span class="chip score" style="background:#9ca3af">unscored</span>'
    s = max(0.0, min(1.0, float(score)))  # colour only; the number is shown as recorded
    return f'<span class="chip score" style="background:hsl({int(120 * s)},55%,38%)">score {score:.3g}</span>'


def _kept_chip(kind: str, kept: int | None) -> str:
    if kept is None:
        return ""
    yes, no = KEPT_WORDS.get(kind, ("kept \u00d7{k}", "dropped"))
    if kept == 0:
        return f'<span class="chip gone">{escape(no)}</span>'
    return f'<span class="chip kept">{escape(yes.format(k=kept))}</span>'


def _node_box(kind: str, row: Mapping[str, Any], chosen: set[int], cands: Mapping[int, list[int]], uid: str) -> str:
    i = row["id"]
    classes = ["tnode"]
    if row.get("parent") is None:
        classes.append("root")
    if i in chosen:
        classes.append("chosen")
    if row.get("kept") == 0:
        classes.append("dropped")
    chips = []
    if row.get("parent") is None:
        chips.append('<span class="chip">prompt</span>')
    else:
        chips.append(_score_chip(row.get("score")))
        chips.append(_kept_chip(kind, row.get("kept")))
    if row.get("finish"):
        chips.append(f'<span class="chip fin">{escape(str(row["finish"]))}</span>')
    if i in cands:
        chips.append(f'<span class="chip cand">candidate {", ".join(str(c) for c in cands[i])}</span>')
    if i in chosen:
        chips.append('<span class="chip path">chosen path</span>')
    meta = f"#{i} \u00b7 step {row.get('step')} \u00b7 iteration {row.get('t')}"
    text = row.get("text") or ""
    attrs = (f'id="{uid}-n{i}" data-node="{i}" data-parent="{"" if row.get("parent") is None else row["parent"]}" '
             f'data-step="{row.get("step")}" data-kept="{"" if row.get("kept") is None else row["kept"]}"')
    if i in chosen:
        attrs += ' data-chosen="1"'
    body = f'<div class="txt">{escape(text)}</div>' if text else ""
    return (f'<div class="{" ".join(classes)}" {attrs}><div class="meta">{escape(meta)} {"".join(chips)}</div>'
            f"{body}</div>")


def tree_html(tree: Mapping[str, Any] | None, uid: str = "t") -> str:
    """The tree as nested `<ul class="tree">`, inside a `div.tree-wrap` with a legend;
    `uid` prefixes the node boxes' element ids (unique per tree on a page)."""
    if not tree or not (tree.get("nodes") or {}).get("id"):
        return '<p class="none">no search tree in this record</p>'
    kind = str(tree.get("kind") or "")
    rows = tree_rows(tree)
    chosen = set(tree.get("chosen") or [])
    cands: dict[int, list[int]] = {}
    for j, nid in enumerate(tree.get("final") or []):
        cands.setdefault(nid, []).append(j)
    children: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        children.setdefault(r.get("parent"), []).append(r)

    def render(nodes: Sequence[Mapping[str, Any]]) -> str:
        items = []
        for r in sorted(nodes, key=lambda r: r["id"] not in chosen):  # the chosen branch first
            kids = children.get(r["id"], [])
            sub = f"<ul>{render(kids)}</ul>" if kids else ""
            items.append(f"<li>{_node_box(kind, r, chosen, cands, uid)}{sub}</li>")
        return "".join(items)

    known = {r["id"] for r in rows}
    roots = [r for r in rows if r.get("parent") is None or r.get("parent") not in known]
    total, dropped = tree.get("total", len(rows)), tree.get("dropped", 0)
    note = f"{len(rows)} nodes" + (f" of {total} (bound: {tree.get('max_nodes')} nodes per problem)" if dropped else "")
    legend = (f'<div class="tree-legend">{escape(kind)} \u00b7 {escape(note)} \u00b7 step texts cut at '
              f'{tree.get("max_text")} characters \u00b7 green: the chosen path \u00b7 faded: dropped by the selection '
              f'after it \u00b7 <label><input type="checkbox" class="path-toggle" data-target="{uid}"> chosen path only'
              f"</label></div>")
    return (f'<div class="tree-wrap" id="{uid}" data-kind="{escape(kind)}" data-chosen="{",".join(map(str, tree.get("chosen") or []))}">'
            f'{legend}<ul class="tree">{render(roots)}</ul></div>')


TOGGLE_JS = """
document.addEventListener('change', function (e) {
  var t = e.target;
  if (t.classList && t.classList.contains('path-toggle')) {
    var w = document.getElementById(t.dataset.target);
    if (w) w.classList.toggle('path-only', t.checked);
  }
});
"""


def tree_page(tree: Mapping[str, Any] | None, title: str = "") -> str:
    """A standalone HTML page of one tree (inline CSS and script, nothing fetched): the W&B panel."""
    head = f"<h3 style=\"font-family:sans-serif\">{escape(title)}</h3>" if title else ""
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>body{{font-family:system-ui,sans-serif}}"
            f"{TREE_CSS}</style></head><body>{head}{tree_html(tree)}<script>{TOGGLE_JS}</script></body></html>")
