"""The search tree a step search leaves in its record (`Result.tree`), for the report's
tree view and the W&B panel (`ttscale.report.tree`).

Each step search (particle filtering, entropic PF, beam search, DVTS, A*) keeps one
`SearchTree`: it registers every node it generates (`grow`), says which nodes survived each
selection (`selected` / `mark`), and at the end writes a compact, column-oriented dict:

    {"kind": "particle_filter",
     "nodes": {"id": [...], "parent": [...], "step": [...], "t": [...], "score": [...],
               "kept": [...], "finish": [...], "text": [...]},
     "chosen": [ids of the chosen path, root first],
     "final": [the node id of each candidate, in candidate order],
     "total": nodes generated, "dropped": nodes left out, "max_nodes": .., "max_text": ..}

- `id`: the node's number in creation order (the root, the prompt, is 0; DVTS has one root
  per subtree); `parent`: its parent's id (null for a root); `step`: its depth (steps on the
  path); `t`: the iteration (A*: the expansion) that generated it; `score`: its process
  score (null when unscored), rounded to 4 decimals; `finish`: its finish reason (null while
  open); `text`: its step text, cut at `max_text` characters (an ellipsis marks the cut).
- `kept`: what the first selection after the node's creation made of it: particle filtering,
  the copies the resampling drew (0: dropped); beam search, 1 when it is among the N/M kept
  beams, 0 when dropped (or a duplicate); DVTS, 1 for the subtree's kept leaf; A*, 1 when
  it was popped, 0 when it was left in the frontier. null: no selection came after it (a finished beam collected into the
  pool, the last iteration, a search stopped by its budget).

The bound: at most `max_nodes` nodes per problem (default 256) and `max_text` characters of
step text per node (default 120). Over the bound, the chosen path and the paths of the
final candidates are kept first, then the other nodes in creation order (a node only with
its parent); `dropped` counts what was left out. A PF run of n=4 particles on the
arithmetic task stays well under the bound.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ttscale.strategies.steps import Node

MAX_NODES = 256
MAX_TEXT = 120


class SearchTree:
    """Recorder of one search's tree (see the module doc)."""

    def __init__(self, kind: str, max_nodes: int = MAX_NODES, max_text: int = MAX_TEXT) -> None:
        self.kind, self.max_nodes, self.max_text = kind, int(max_nodes), int(max_text)
        self._ids: dict[int, int] = {}  # id(node) -> record id (the nodes are held, ids stay unique)
        self._nodes: list[Node] = []
        self._t: list[int] = []
        self._kept: dict[int, int] = {}

    def id_of(self, node: Node, t: int = 0) -> int:
        """The record id of `node`, registering it (and unregistered ancestors) if new."""
        key = id(node)
        if key in self._ids:
            return self._ids[key]
        if node.parent is not None:
            self.id_of(node.parent, t)
        self._ids[key] = len(self._nodes)
        self._nodes.append(node)
        self._t.append(t)
        return self._ids[key]

    def grow(self, nodes: Iterable[Node], t: int) -> None:
        """Register the nodes generated at iteration `t` (in their order)."""
        for n in nodes:
            self.id_of(n, t)

    def selected(self, pool: Sequence[Node], survivors: Sequence[Node]) -> None:
        """A selection: each node of `pool` not yet decided is kept `survivors.count(node)` times."""
        counts: dict[int, int] = {}
        for s in survivors:
            counts[id(s)] = counts.get(id(s), 0) + 1
        for n in pool:
            i = self.id_of(n)
            if i not in self._kept:
                self._kept[i] = counts.get(id(n), 0)

    def mark(self, node: Node, kept: int) -> None:
        """Set the node's `kept` (A*: 1 when popped)."""
        self._kept[self.id_of(node)] = int(kept)

    def _clip(self, text: str) -> str:
        return text if len(text) <= self.max_text else text[: self.max_text] + "\u2026"

    def _chosen_ids(self, chosen: Node | None) -> list[int]:
        out, n = [], chosen
        while n is not None:
            out.append(self.id_of(n))
            n = n.parent
        return out[::-1]

    def _kept_ids(self, must: Iterable[int]) -> list[int]:
        """The ids written: all of them, or, over the bound, `must` (closed under parents) first."""
        total = len(self._nodes)
        if total <= self.max_nodes:
            return list(range(total))
        parent = [None if n.parent is None else self._ids[id(n.parent)] for n in self._nodes]
        keep: set[int] = set()
        for i in must:
            while i is not None and i not in keep:
                keep.add(i)
                i = parent[i]
        for i in range(total):
            if len(keep) >= self.max_nodes:
                break
            if i not in keep and (parent[i] is None or parent[i] in keep):
                keep.add(i)
        return sorted(keep)

    def to_dict(self, chosen: Node | None, finals: Sequence[Node]) -> dict[str, Any]:
        """The record's tree: `chosen` is the selected candidate's node (None: no answer),
        `finals` the node of each candidate, in candidate order."""
        chosen_path = self._chosen_ids(chosen)
        final = [self.id_of(n) for n in finals]
        ids = self._kept_ids([*chosen_path, *final])
        cols: dict[str, list] = {k: [] for k in ("id", "parent", "step", "t", "score", "kept", "finish", "text")}
        for i in ids:
            n = self._nodes[i]
            cols["id"].append(i)
            cols["parent"].append(None if n.parent is None else self._ids[id(n.parent)])
            cols["step"].append(n.depth)
            cols["t"].append(self._t[i])
            cols["score"].append(None if n.score is None else round(float(n.score), 4))
            cols["kept"].append(self._kept.get(i))
            cols["finish"].append(n.finish_reason)
            cols["text"].append(self._clip(n.step_text))
        return {
            "kind": self.kind, "nodes": cols, "chosen": chosen_path, "final": final,
            "total": len(self._nodes), "dropped": len(self._nodes) - len(ids),
            "max_nodes": self.max_nodes, "max_text": self.max_text,
        }
