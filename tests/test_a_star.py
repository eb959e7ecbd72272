"""A*-decoding on the fake engine: pops in f order, stops at the first goal, exact f, budgets."""

from __future__ import annotations

import asyncio

import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.strategies.a_star import AStarDecoding
from tests.helpers import make_ctx
from ttscale.budget import Budget
from ttscale.types import Problem
from ttscale.verifier import ProcessVerifier

P = Problem(id="a1", question="q")


class MarkerScores(ProcessVerifier):
    """Scores each step by the first marker it contains (0.5 otherwise); one call per path."""

    def __init__(self, markers):
        super().__init__("last")
        self.markers = markers

    def one(self, step):
        return next((v for m, v in self.markers.items() if m in step), 0.5)

    async def score_steps(self, problem, steps, ctx):
        ctx.ledger.charge_verifier(calls=len(steps))
        return [[self.one(s) for s in path] for path in steps]


def run(coro):
    return asyncio.run(coro)


def expected_pops(tree):
    """Replay the search from the recorded tree: before each pop, the node with the lowest
    (f, id) among those generated so far and not yet popped must be the one popped."""
    popped = sorted((n for n in tree if n["popped_at"] is not None), key=lambda n: n["popped_at"])
    order = []
    expansions = 0
    gone: set[int] = set()
    for j, _ in enumerate(popped):
        avail = [n for n in tree if n["created_at"] <= expansions and n["id"] not in gone]
        best = min(avail, key=lambda n: (n["f"], n["id"]))
        order.append(best["id"])
        gone.add(best["id"])
        if not best["finished"]:
            expansions += 1
    return [n["id"] for n in popped], order


COMPLETIONS = [
    ("alpha\n\nbeta\n\n\\boxed{1}", 0.2),
    ("alpha\n\ngamma\n\n\\boxed{2}", 0.15),
    ("delta\n\nbeta\n\n\\boxed{3}", 0.25),
    ("delta\n\nepsilon\n\nzeta\n\n\\boxed{4}", 0.2),
    ("eta\n\n\\boxed{5}", 0.2),
]
MARKERS = {"alpha": 0.7, "beta": 0.3, "gamma": 0.8, "delta": 0.55, "epsilon": 0.9, "zeta": 0.65, "eta": 0.4,
           "boxed{1}": 0.2, "boxed{2}": 0.95, "boxed{3}": 0.6, "boxed{4}": 0.85, "boxed{5}": 0.1}


@pytest.mark.parametrize("cost", ["mean", "sum", "none"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pops_follow_f_order_and_stop_at_the_first_goal(cost, seed):
    eng = FakeEngine(completions=COMPLETIONS)
    ctx = make_ctx(eng, verifier=MarkerScores(MARKERS), seed=seed)
    res = run(AStarDecoding(k=3, max_expansions=50, cost=cost, temperature=1.0, record_tree=True).solve(P, ctx))
    tree = res.stats["tree"]
    got, want = expected_pops(tree)
    assert got == want
    assert res.stats["stopped"] == "goal" and res.stats["goal_found"]
    last = max((n for n in tree if n["popped_at"] is not None), key=lambda n: n["popped_at"])
    assert last["finished"] and last["finish_reason"] == "stop"
    # nothing was expanded after the goal: one engine request per expansion, n = k each
    assert res.stats["expansions"] == sum(1 for n in tree if n["popped_at"] is not None and not n["finished"])
    assert len(eng.requests) == res.stats["expansions"]
    assert all(r.n == 3 for r in eng.requests)
    # the answer is the goal's
    chosen = res.candidates[res.selected]
    assert chosen.extra["node"] == last["id"]
    assert res.answer == chosen.answer is not None
    assert res.stats["prm_passes"] == ctx.ledger.usage.verifier_calls == sum(1 for n in tree) - 1
    assert res.stats["generated_tokens"] == ctx.ledger.usage.generated_tokens


def test_f_values_on_a_single_chain_match_the_definition():
    eng = FakeEngine(completions=[("A\n\nB\n\n\\boxed{1}", 1.0)])
    markers = {"A": 0.8, "B": 0.6, "boxed": 0.9}
    for cost, fs in {
        "mean": [0.2 + 0.2, (0.2 + 0.4) / 2 + 0.4, (0.2 + 0.4 + 0.1) / 3 + 0.1],
        "sum": [0.2 + 0.2, 0.6 + 0.4, 0.7 + 0.1],
        "none": [0.2, 0.4, 0.1],
    }.items():
        ctx = make_ctx(eng, verifier=MarkerScores(markers))
        res = run(AStarDecoding(k=1, cost=cost, record_tree=True).solve(P, ctx))
        tree = sorted(res.stats["tree"], key=lambda n: n["id"])[1:]
        assert [n["f"] for n in tree] == pytest.approx(fs)
        assert [n["parent"] for n in tree] == [0, 1, 2]
        assert res.answer == "1" and res.stats["stopped"] == "goal"
        assert res.candidates[res.selected].steps == ["A\n\n", "B\n\n", "\\boxed{1}"]


def test_backtracks_from_a_promising_start_that_goes_wrong():
    eng = FakeEngine(completions=[("good\n\nbad\n\n\\boxed{1}", 0.5), ("fine\n\nok\n\n\\boxed{2}", 0.5)])
    markers = {"good": 0.9, "bad": 0.05, "fine": 0.6, "ok": 0.7, "boxed": 0.9}
    ctx = make_ctx(eng, verifier=MarkerScores(markers))
    res = run(AStarDecoding(k=8, temperature=1.0, record_tree=True).solve(P, ctx))
    tree = res.stats["tree"]
    assert {n["depth"] for n in tree if n["popped_at"] == 1} == {1}  # "good" first ...
    assert res.answer == "2"  # ... then back to "fine", whose path ends well
    assert not any(n["finished"] and n["depth"] == 3 and n["f"] > 1 for n in tree)


def test_token_budget_is_never_exceeded_and_a_valid_result_comes_back():
    eng = FakeEngine(completions=COMPLETIONS)
    for max_tokens in (1, 3, 5, 12, 20):
        ctx = make_ctx(eng, verifier=MarkerScores(MARKERS), budget=Budget(max_tokens=max_tokens))
        res = run(AStarDecoding(k=3, temperature=1.0).solve(P, ctx))
        assert ctx.ledger.usage.generated_tokens <= max_tokens
        if res.stats["stopped"] != "goal":
            assert res.stats["stopped"] == "budget"
        if max_tokens < 3:
            assert res.stats["expansions"] == 0 and res.answer is None and res.candidates == []
        else:
            assert res.selected is not None  # the best state found, partial or complete


def test_verifier_budget_and_max_expansions_stop_the_search():
    eng = FakeEngine(completions=COMPLETIONS)
    ctx = make_ctx(eng, verifier=MarkerScores(MARKERS), budget=Budget(max_verifier_calls=4))
    res = run(AStarDecoding(k=3, temperature=1.0).solve(P, ctx))
    assert ctx.ledger.usage.verifier_calls <= 4
    assert res.stats["stopped"] in ("budget", "goal")
    ctx = make_ctx(eng, verifier=MarkerScores(MARKERS))
    res = run(AStarDecoding(k=2, max_expansions=1, temperature=1.0).solve(P, ctx))
    assert res.stats["expansions"] == 1 and res.stats["stopped"] in ("max_expansions", "goal")
    assert res.selected is not None


def test_expansion_requests_continue_from_the_node_token_ids():
    eng = FakeEngine(completions=[("A\n\nB\n\n\\boxed{1}", 1.0)])
    ctx = make_ctx(eng, verifier=MarkerScores({}))
    run(AStarDecoding(k=1).solve(P, ctx))
    prompt = ctx.prompt_ids(P)
    tok = eng.tokenizer
    assert [list(r.prompt_token_ids) for r in eng.requests] == [
        prompt, prompt + tok.encode("A\n\n"), prompt + tok.encode("A\n\nB\n\n")]


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError):
        AStarDecoding(k=0)
    with pytest.raises(ValueError):
        AStarDecoding(cost="max")
    with pytest.raises(ValueError):
        AStarDecoding(max_expansions=0)


@pytest.mark.parametrize("name", ["a_star", "entropy_branching", "best_of_majority"])
def test_strategy_configs_instantiate_with_the_shared_sampling_settings(name):
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf"
    sampling = OmegaConf.load(conf / "config.yaml").sampling
    cfg = OmegaConf.create({"sampling": sampling, "strategy": OmegaConf.load(conf / "strategy" / f"{name}.yaml")})
    strategy = instantiate(cfg.strategy)
    assert strategy.name == name
    assert strategy.temperature == sampling.temperature
    if name == "a_star":
        assert strategy.requires_verifier and strategy.step.delimiter == "\n\n"
        assert strategy.step.max_total_tokens == sampling.max_tokens
    elif name == "entropy_branching":
        assert not strategy.requires_verifier and strategy.max_tokens == sampling.max_tokens
        assert strategy.adapt_max_extra == 3 * strategy.M  # the reference's eager_adapt cap
    else:
        assert strategy.requires_verifier and strategy.max_tokens == sampling.max_tokens


@pytest.mark.parametrize("strategy", ["a_star", "best_of_majority"])
def test_through_the_runner_with_the_arithmetic_checker(tmp_path, strategy):
    """Hydra config -> runner -> graded records for the verifier-guided strategies."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from ttscale.results import iter_records
    from ttscale.runner import run as run_config

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=[
            "logger=none", f"run.root={tmp_path}", "run.progress=false", "run.summary=false",
            f"strategy={strategy}", "verifier=arithmetic_checker", "strategy.temperature=1.0"])
    with open_dict(cfg):
        cfg.task = OmegaConf.create({"_target_": "tests.helpers.ToyTask", "num_problems": 3, "modulo": 3})

    def responder(prompt):  # the right answer's path writes a true equation, the wrong one a false one
        i = int(prompt.strip()[1:])
        right = i % 3
        return [(f"{right} + 0 = {right}\n\n\\boxed{{{right}}}", 0.5), (f"{right} + 0 = 7\n\n\\boxed{{7}}", 0.5)]

    metrics = run_config(cfg, engine=FakeEngine(responder))
    recs = list(iter_records(next(p for p in (tmp_path / "default").iterdir() if p.is_dir())))
    assert len(recs) == 3 and metrics["problems"] == 3
    for r in recs:
        assert r["error"] is None and r["correct"] is True  # the checker steers to the true equation
        assert r["usage"]["verifier_calls"] > 0
        assert all(c["correct"] == (c["answer"] == str(int(r["problem_id"][1:]) % 3)) for c in r["candidates"])
