"""MCTS over steps on the fake engine: UCT picks the highest bound, values reach the root."""

from __future__ import annotations

import math

import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.strategies.mcts import MCTS, MCTSNode
from ttscale.strategies.steps import Node
from tests.helpers import make_ctx
from tests.search_helpers import (
    GUIDED,
    GUIDED_PRM,
    STEP,
    MarkerPRM,
    assert_valid_result,
    check_arithmetic_checker_guides_search,
    check_budget_respected,
    check_guided_search_beats_random_choice,
    solve,
)


def tree(rewards, histories, parent_visits):
    root = MCTSNode(node=Node.root(), cum_rewards=[0.0] * parent_visits)
    root.children = [MCTSNode(node=Node(parent=root.node, depth=1), parent=root, reward=r, cum_rewards=list(h), id=i + 1)
                     for i, (r, h) in enumerate(zip(rewards, histories))]
    return root


def bound(q, w, n_parent, n):
    return q + w * math.sqrt(math.log(n_parent) / max(1, n))


def test_uct_picks_the_child_with_the_highest_bound():
    # exploitation wins with little exploration, exploration wins with a large weight
    rewards = [0.9, 0.2, 0.5]
    histories = [[0.8, 0.6, 0.7, 0.9], [], [0.4, 0.3]]
    for w_exp, calc_q in ((0.1, "mean"), (3.0, "mean"), (0.5, "max"), (1.0, "sum")):
        m = MCTS(w_exp=w_exp, calc_q=calc_q)
        root = tree(rewards, histories, parent_visits=5)
        reduce = {"mean": lambda h: sum(h) / len(h), "max": max, "sum": sum}[calc_q]
        qs = [reduce(h) if h else r for r, h in zip(rewards, histories)]
        bounds = [bound(q, w_exp, 5, len(h)) for q, h in zip(qs, histories)]
        best = max(range(3), key=lambda i: bounds[i])
        assert m.uct_select(root) is root.children[best], (w_exp, calc_q, bounds)
        assert [m.uct(c) for c in root.children] == pytest.approx(bounds)
    assert MCTS(w_exp=0.1).uct_select(tree(rewards, histories, 5)).id == 1
    assert MCTS(w_exp=3.0).uct_select(tree(rewards, histories, 5)).id == 2  # the unvisited child


def test_back_propagation_reaches_the_root():
    for how, expect in (("mean", [(0 + 0.6 + 0.8) / 3, 0.7, 0.8]), ("sum", [1.4, 1.4, 0.8]), ("max", [0.8, 0.8, 0.8])):
        root = MCTSNode(node=Node.root())
        a = MCTSNode(node=Node(parent=root.node, depth=1), parent=root, reward=0.6)
        b = MCTSNode(node=Node(parent=a.node, depth=2), parent=a, reward=0.8)
        value = MCTS(cum_reward=how).back_propagate([root, a, b])
        assert [n.cum_rewards for n in (root, a, b)] == [[pytest.approx(v)] for v in expect]
        assert value == pytest.approx(expect[0])


SIX = [(f"step [{k}]\n\nthen [{k}]\n\nso \\boxed{{{k}}}", 1 / 6) for k in range(6)]
SIX_PRM = {f"[{k}]": s for k, s in enumerate([0.1, 0.9, 0.4, 0.7, 0.2, 0.6])}


@pytest.mark.parametrize("simulate", ["max", "none"])
def test_every_simulation_follows_uct_and_backs_up_its_value(simulate):
    """Replayed from the recorded tree: every selection step took the child with the highest
    UCT bound given the visits before that simulation, every rollout step the best-rewarded
    child, and the root got one value per simulation: the path's reduced rewards."""
    for seed in range(6):
        m = MCTS(n_iters=8, n_actions=3, w_exp=1.0, simulate_strategy=simulate, temperature=1.0, step=STEP,
                 record_tree=True)
        ctx = make_ctx(FakeEngine(completions=SIX), verifier=MarkerPRM(SIX_PRM), seed=seed)
        result = solve(m, ctx)
        assert_valid_result(result)
        nodes = {n["id"]: n for n in result.stats["tree"]}
        kids: dict[int, list[int]] = {}
        for n in result.stats["tree"]:
            if n["parent"] is not None:
                kids.setdefault(n["parent"], []).append(n["id"])
        paths = result.stats["paths"]
        assert len(paths) == result.stats["iterations"] == 8 == result.stats["root_visits"]
        seen: dict[int, int] = {}  # visits so far
        selections = 0
        for i, path in enumerate(paths):
            for u, v in zip(path, path[1:]):
                siblings = kids[u]
                if nodes[v]["born"] < i:  # u was expanded before: selection by UCT
                    def ucb(c):
                        h = nodes[c]["cum_rewards"][: seen.get(c, 0)]
                        q = max(h) if h else nodes[c]["reward"]
                        return q + 1.0 * math.sqrt(math.log(max(1, seen.get(u, 0))) / max(1, len(h)))
                    assert v == max(siblings, key=ucb), (seed, i, path)
                    selections += 1
                else:  # expanded in this simulation: the rollout follows the best reward
                    assert simulate == "max"
                    assert v == max(siblings, key=lambda c: (nodes[c]["reward"], -c))
            for u in path:
                seen[u] = seen.get(u, 0) + 1
            rewards = [0.0] + [nodes[u]["reward"] for u in path[1:]]
            assert nodes[0]["cum_rewards"][i] == pytest.approx(sum(rewards) / len(rewards))
            for j, u in enumerate(path):  # every node on the path got the value from it down
                tail = rewards[j:]
                assert nodes[u]["cum_rewards"][seen[u] - 1] == pytest.approx(sum(tail) / len(tail))
        assert all(len(n["cum_rewards"]) == seen.get(n["id"], 0) for n in nodes.values())
        assert selections >= 7  # every simulation after the first selected at the root at least
        # the answer is the terminal path with the best mean reward: [1] scores 0.9
        assert result.answer == "1" or "1" not in {c.answer for c in result.candidates}


def test_the_vote_is_an_option():
    ctx = make_ctx(FakeEngine(completions=SIX), verifier=MarkerPRM(SIX_PRM), seed=0)
    result = solve(MCTS(n_iters=6, n_actions=3, aggregate="uniform", temperature=1.0, step=STEP), ctx)
    answers = [c.answer for c in result.candidates if c.finish_reason == "stop"]
    top = max(set(answers), key=answers.count)
    assert answers.count(result.answer) == answers.count(top)
    assert result.candidates[result.selected].answer == result.answer
    with pytest.raises(ValueError, match="strategy.aggregate"):
        MCTS(aggregate="majority")
    with pytest.raises(ValueError, match="strategy.simulate_strategy"):
        MCTS(simulate_strategy="greedy")


def test_guided_search_beats_random_choice():
    check_guided_search_beats_random_choice(lambda: MCTS(n_iters=6, n_actions=4, temperature=1.0, step=STEP))


def test_budget_respected():
    check_budget_respected(lambda: MCTS(n_iters=50, n_actions=4, temperature=1.0, step=STEP))


def test_arithmetic_checker_guides_search():
    check_arithmetic_checker_guides_search(lambda: MCTS(n_iters=4, n_actions=4, temperature=1.0, step=STEP))


def test_not_independent_and_first_request_shape():
    m = MCTS(n_actions=3, step=STEP)
    assert m.independent_samples is False and m.count_params == ("n_iters", "n_actions")
    assert (m.request_shape().sequences, m.request_shape().unit_tokens) == (3, STEP["max_step_tokens"])
    assert GUIDED and GUIDED_PRM
