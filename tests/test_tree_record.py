"""The search trees the step searches record (`Result.tree`, strategies/tree_record.py):
the structure matches what the search did, the chosen path ends at the selected candidate,
and the size per problem is bounded."""

from __future__ import annotations

import json

import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.strategies.a_star import AStarDecoding
from ttscale.strategies.beam_search import BeamSearch
from ttscale.strategies.dvts import DVTS
from ttscale.strategies.particle_filter import ParticleFilter
from ttscale.strategies.steps import Node
from ttscale.strategies.tree_record import SearchTree
from ttscale.types import Result
from tests.helpers import make_ctx
from tests.search_helpers import MarkerPRM, solve
from tests.test_a_star import COMPLETIONS, MARKERS, MarkerScores

STEP = {"max_steps": 8, "max_step_tokens": 64, "max_total_tokens": 256}


def rows(tree):
    cols = tree["nodes"]
    return {i: {k: cols[k][j] for k in cols} for j, i in enumerate(cols["id"])}


def path_text(nodes, leaf):
    out = []
    while leaf is not None:
        out.append(nodes[leaf]["text"])
        leaf = nodes[leaf]["parent"]
    return "".join(out[::-1])


def check_tree(result: Result) -> dict:
    """What every recorded tree satisfies; returns its nodes by id."""
    tree = result.tree
    assert tree is not None and tree["dropped"] == 0 and tree["total"] == len(tree["nodes"]["id"])
    nodes = rows(tree)
    assert len(nodes) == len(tree["nodes"]["id"])  # unique ids
    for i, n in nodes.items():
        if n["parent"] is None:
            assert n["step"] == 0 and n["text"] == ""
        else:
            assert n["parent"] < i and n["step"] == nodes[n["parent"]]["step"] + 1
    # one node per candidate, whose path is the candidate's text
    assert len(tree["final"]) == len(result.candidates)
    for j, c in enumerate(result.candidates):
        assert path_text(nodes, tree["final"][j]) == c.text
        assert nodes[tree["final"][j]]["finish"] in (c.finish_reason, None)
    # the chosen path: root to the selected candidate's node, parent by parent
    chosen = tree["chosen"]
    assert nodes[chosen[0]]["parent"] is None and chosen[-1] == tree["final"][result.selected]
    assert all(nodes[b]["parent"] == a for a, b in zip(chosen, chosen[1:]))
    return nodes


def pf_run(seed: int):
    from tests.report_fixtures import ApplesTask, step_responder
    from ttscale.verifiers.arithmetic_checker import ArithmeticChecker

    task = ApplesTask(num_problems=3)
    problem = task.load_all()[2][0]
    ctx = make_ctx(FakeEngine(step_responder), task=task, verifier=ArithmeticChecker(), seed=seed)
    return solve(ParticleFilter(n=4, temperature=1.0, step=STEP), ctx, problem)


@pytest.mark.parametrize("seed", range(6))
def test_particle_filter_tree_is_what_the_resamplings_did(seed):
    result = pf_run(seed)
    nodes = check_tree(result)
    kids: dict[int, list[int]] = {}
    for i, n in nodes.items():
        kids.setdefault(n["parent"], []).append(i)
    resampled = result.stats["resamplings"]
    for i, n in nodes.items():
        if n["parent"] is None:
            assert len(kids.get(i, [])) == 4  # N first steps from the prompt
            continue
        if n["t"] > resampled:  # no resampling after the last step
            assert n["kept"] is None and not kids.get(i)
        elif n["finish"] is None:  # an open particle is extended once per copy the resampling drew
            assert n["kept"] == len(kids.get(i, [])), (i, n)
        else:
            assert n["kept"] >= 0 and not kids.get(i)  # finished: kept as it is, never extended
    # each resampling drew N copies in all: the new particles' and the finished ones'
    for t in range(1, resampled + 1):
        drawn = sum(n["kept"] for n in nodes.values() if n["t"] == t)
        assert drawn <= 4
        assert len([i for i, n in nodes.items() if n["t"] == t + 1]) == sum(
            n["kept"] for n in nodes.values() if n["t"] == t and n["finish"] is None)
    assert {nodes[i]["score"] for i in result.tree["final"]} == {c.score for c in result.candidates}


def test_beam_search_dvts_and_a_star_record_their_trees():
    six = [(f"step [{k}]\n\nso \\boxed{{{k}}}", 1 / 6) for k in range(6)]
    prm = {f"[{k}]": s for k, s in enumerate([0.1, 0.9, 0.4, 0.7, 0.2, 0.6])}
    beam = solve(BeamSearch(n=6, beam_width=2, temperature=1.0, step=STEP),
                 make_ctx(FakeEngine(completions=six), verifier=MarkerPRM(prm, sticky=True), seed=1))
    nodes = check_tree(beam)
    first = [n for n in nodes.values() if n["step"] == 1]
    kept = [n for n in first if n["kept"]]
    assert len(first) == 6 and 1 <= len(kept) <= 3  # the top N/M = 3, fewer after duplicates are dropped
    for n in first:  # a pruned beam scored no higher than the kept ones, or repeats one's text
        if n["kept"] == 0:
            assert n["score"] <= min(k["score"] for k in kept) or n["text"] in {k["text"] for k in kept}

    dvts = solve(DVTS(n=6, beam_width=3, temperature=1.0, step=STEP),
                 make_ctx(FakeEngine(completions=six), verifier=MarkerPRM(prm, sticky=True), seed=2))
    nodes = check_tree(dvts)
    assert len([n for n in nodes.values() if n["parent"] is None]) == 2  # one root per subtree
    for root in (i for i, n in nodes.items() if n["parent"] is None):
        first = [n for n in nodes.values() if n["parent"] == root]
        assert len(first) == 3 and sum(n["kept"] for n in first) == 1  # the subtree keeps its best child
        assert max(first, key=lambda n: n["score"])["kept"] == 1

    astar = solve(AStarDecoding(k=3, max_expansions=6, step=STEP, record_tree=True),
                  make_ctx(FakeEngine(completions=COMPLETIONS), verifier=MarkerScores(MARKERS), seed=0))
    nodes = check_tree(astar)
    full = {e["id"]: e for e in astar.stats["tree"]}
    assert set(nodes) == set(full)  # the same ids as A*'s own tree
    for i, n in nodes.items():
        assert n["parent"] == full[i]["parent"] and n["kept"] == (full[i]["popped_at"] is not None)
    assert [c.extra["node"] for c in astar.candidates] == astar.tree["final"]


def test_a_record_keeps_its_tree_and_a_sampling_record_has_none(tmp_path):
    result = pf_run(0)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["tree"] == result.tree and Result.from_dict(d).tree == result.tree
    assert "tree" not in Result(problem_id="x", answer=None).to_dict()


def chain(depth: int, text: str = "x" * 500) -> list[Node]:
    out = [Node.root()]
    for d in range(depth):
        out.append(Node(parent=out[-1], step_text=text, depth=d + 1))
    return out


def test_the_tree_is_bounded_and_keeps_the_chosen_path_and_the_candidates():
    tree = SearchTree("particle_filter", max_nodes=50, max_text=40)
    main = chain(30)
    tree.grow(main, 1)
    side = []
    for node in main[1:]:  # a dead branch of 3 at every node: 91 + 30 nodes in all
        kid = Node(parent=node, step_text="side " * 30, depth=node.depth + 1)
        side.append(kid)
        tree.grow([kid, Node(parent=kid, depth=node.depth + 2), Node(parent=kid, depth=node.depth + 2)], 2)
    d = tree.to_dict(chosen=main[-1], finals=[main[-1], side[-1]])
    ids = d["nodes"]["id"]
    assert len(ids) == 50 and d["total"] == 121 and d["dropped"] == 71
    assert set(d["chosen"]) <= set(ids) and set(d["final"]) <= set(ids)
    assert len(d["chosen"]) == 31
    parents = dict(zip(ids, d["nodes"]["parent"]))
    assert all(p is None or p in parents for p in parents.values())  # every kept node has its parent
    assert max(len(t) for t in d["nodes"]["text"]) == 41 and d["nodes"]["text"][1].endswith("\u2026")
    # the bound in bytes: 50 nodes of at most 41 characters each, plus the columns
    assert len(json.dumps(d)) < 50 * (41 + 60)


def test_records_stay_small(tmp_path):
    """The tree adds a bounded, modest share to a PF record (the numbers are in the report)."""
    result = pf_run(3)
    rec = result.to_dict()
    with_tree = len(json.dumps(rec))
    rec.pop("tree")
    without = len(json.dumps(rec))
    assert 0 < with_tree - without < without  # smaller than the rest of the record
