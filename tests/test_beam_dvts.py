"""Beam search and DVTS on the fake engine (exact, fast)."""

from __future__ import annotations

import pytest

from ttscale.strategies.beam_search import BeamSearch
from ttscale.strategies.dvts import DVTS
from ttscale.strategies.entropic_particle_filter import EntropicParticleFilter
from ttscale.strategies.particle_filter import ParticleFilter
from tests.helpers import make_ctx
from tests.search_helpers import (
    STEP,
    MarkerPRM,
    RecordingEngine,
    assert_valid_result,
    check_arithmetic_checker_guides_search,
    check_budget_respected,
    check_guided_search_beats_random_choice,
    check_requests_in_flight_together_and_prefix_reuse,
    generated_text,
    prompt_ids,
    solve,
)
from ttscale.budget import Budget

# Six first steps, equally likely, each with its own PRM score; then the answer.
SCORES = [0.1, 0.9, 0.4, 0.7, 0.2, 0.6]
SIX = [(f"step [{k}]\n\nso \\boxed{{{k}}}", 1 / 6) for k in range(6)]
SIX_PRM = {f"[{k}]": s for k, s in enumerate(SCORES)}


def kind(text: str) -> int:
    return int(text.split("[", 1)[1][0])


def waves_of(engine: RecordingEngine, waves: list[int]) -> list[list]:
    """The engine's (request, output) pairs grouped by wave (waves run one after another)."""
    out, i = [], 0
    for size in waves:
        out.append(engine.log[i : i + size])
        i += size
    return out


def test_beam_search_keeps_the_top_scored_beams():
    for seed in range(10):
        engine = RecordingEngine(completions=SIX)
        ctx = make_ctx(engine, verifier=MarkerPRM(SIX_PRM, sticky=True), seed=seed)
        result = solve(BeamSearch(n=6, beam_width=2, temperature=1.0, step=STEP), ctx)
        assert_valid_result(result)
        base = prompt_ids(ctx)
        first, second, *_ = waves_of(engine, result.stats["requests_per_wave"])
        assert [r.n for r, _ in first] == [6]  # N first steps in one request
        sampled = [kind(c.text) for c in first[0][1].completions]
        top = sorted(range(6), key=lambda i: (-SCORES[sampled[i]], i))[:3]  # N/M = 3 kept
        kept = sorted(kind(generated_text(engine, r, base)) for r, _ in second)
        assert kept == sorted(sampled[i] for i in top)
        assert all(r.n == 2 for r, _ in second)  # each kept beam expanded into M
        assert result.stats["kept_per_step"][0] == 3
        # finished beams were collected: the pool is the best N of them, best first
        assert len(result.candidates) == min(6, result.stats["completed"])
        scores = [c.score for c in result.candidates]
        assert scores == sorted(scores, reverse=True)
        assert all(c.finish_reason == "stop" for c in result.candidates)
        assert result.answer == result.candidates[0].answer  # argmax


def test_dvts_subtrees_are_independent():
    dropped_by_beam_search = 0
    for seed in range(15):
        engine = RecordingEngine(completions=SIX)
        ctx = make_ctx(engine, verifier=MarkerPRM(SIX_PRM, sticky=True), seed=seed)
        result = solve(DVTS(n=6, beam_width=2, temperature=1.0, step=STEP), ctx)
        assert_valid_result(result)
        base = prompt_ids(ctx)
        first, second, *_ = waves_of(engine, result.stats["requests_per_wave"])
        # N/M = 3 subtrees, each from its own root, each expanded into M = 2
        assert [r.n for r, _ in first] == [2, 2, 2]
        assert [generated_text(engine, r, base) for r, _ in first] == ["", "", ""]
        # each subtree continues its own best child, whatever the other subtrees found
        best_per_subtree = sorted(
            max((kind(c.text) for c in out.completions), key=lambda k: SCORES[k]) for _, out in first
        )
        continued = sorted(kind(generated_text(engine, r, base)) for r, _ in second)
        assert continued == best_per_subtree
        everything = sorted((kind(c.text) for _, out in first for c in out.completions), key=lambda k: -SCORES[k])
        dropped_by_beam_search += any(SCORES[k] < SCORES[everything[2]] for k in continued)
        # the pool: each subtree's last M children, one of them chosen (its best)
        assert len(result.candidates) == 6
        for j in range(3):
            mine = [c for c in result.candidates if c.extra["subtree"] == j]
            assert len(mine) == 2 and sum(c.extra["chosen"] for c in mine) == 1
            chosen = next(c for c in mine if c.extra["chosen"])
            assert chosen.score == max(c.score for c in mine)
            assert len({c.steps[0] for c in mine}) == 1  # siblings: one parent
    # a low-scoring subtree was kept where a global beam would have pruned it
    assert dropped_by_beam_search > 0


def test_weighted_vote_selection():
    # One-step solutions: the pool is every sample. Answer 1 scores high but is rare,
    # answer 2 scores lower but is frequent.
    completions = [("alpha \\boxed{1}", 0.15), ("beta \\boxed{2}", 0.85)]
    prm = MarkerPRM({"alpha": 0.9, "beta": 0.6})
    for cls in (BeamSearch, DVTS):
        by_rule = {}
        for selection in ("argmax", "weighted_vote"):
            engine = RecordingEngine(completions=completions)
            ctx = make_ctx(engine, verifier=prm, seed=4)
            result = solve(cls(n=8, beam_width=2, temperature=1.0, step=STEP, selection=selection), ctx)
            assert_valid_result(result)
            answers = [c.answer for c in result.candidates]
            assert "1" in answers and answers.count("2") >= 2, answers  # the seed gives a split pool
            totals = {a: sum(c.score for c in result.candidates if c.answer == a) for a in ("1", "2")}
            by_rule[selection] = (result.answer, totals)
        assert by_rule["argmax"][0] == "1"
        answer, totals = by_rule["weighted_vote"]
        assert answer == max(totals, key=totals.get) == "2"


def test_invalid_beam_width_is_refused():
    with pytest.raises(ValueError):
        BeamSearch(n=6, beam_width=4)
    with pytest.raises(ValueError):
        DVTS(n=2, beam_width=4)
    with pytest.raises(ValueError):
        BeamSearch(n=4, beam_width=2, selection="majority")


# ---- (e) budgets, (f) requests in flight together, (g) guided search, (h) prefix reuse ----
VARIANTS = {
    "beam": lambda: BeamSearch(n=4, beam_width=2, temperature=1.0, step=STEP),
    "beam_vote_min": lambda: BeamSearch(
        n=4, beam_width=2, temperature=1.0, step=STEP, selection="weighted_vote", aggregation="min"
    ),
    "dvts": lambda: DVTS(n=4, beam_width=2, temperature=1.0, step=STEP),
    "dvts_vote": lambda: DVTS(n=4, beam_width=2, temperature=1.0, step=STEP, selection="weighted_vote"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_stops_at_budget_with_a_valid_result(variant):
    check_budget_respected(VARIANTS[variant])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_step_requests_in_flight_together_and_prefix_reused(variant):
    check_requests_in_flight_together_and_prefix_reuse(VARIANTS[variant])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_guided_search_beats_random_choice(variant):
    check_guided_search_beats_random_choice(VARIANTS[variant])


@pytest.mark.parametrize("name", ["particle_filter", "entropic_particle_filter", "beam_search", "dvts"])
def test_strategy_configs_instantiate(name):
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf"
    sampling = OmegaConf.load(conf / "config.yaml").sampling
    cfg = OmegaConf.create({"sampling": sampling, "strategy": OmegaConf.load(conf / "strategy" / f"{name}.yaml")})
    cfg.strategy.n = 16
    strategy = instantiate(cfg.strategy)
    assert strategy.name == name and strategy.n == 16 and strategy.requires_verifier
    assert strategy.temperature == cfg.sampling.temperature
    assert strategy.step.delimiter == "\n\n" and strategy.step.max_total_tokens == cfg.sampling.max_tokens


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_arithmetic_checker_guides_the_search(variant):
    check_arithmetic_checker_guides_search(VARIANTS[variant])


# ---- the real vLLM CPU engine (embedded model) --------------------------------------
TINY_STEP = {"delimiter": "\n\n", "max_steps": 3, "max_step_tokens": 24, "max_total_tokens": 48}
REAL = {
    "particle_filter": lambda: ParticleFilter(n=2, temperature=0.7, step=TINY_STEP),
    "entropic_particle_filter": lambda: EntropicParticleFilter(n=2, temperature=0.7, step=TINY_STEP, look_ahead=1),
    "beam_search": lambda: BeamSearch(n=2, beam_width=2, temperature=0.7, step=TINY_STEP),
    "dvts": lambda: DVTS(n=2, beam_width=2, temperature=0.7, step=TINY_STEP),
}


@pytest.mark.engine
@pytest.mark.parametrize("name", sorted(REAL))
def test_step_search_on_the_real_engine(real_engine, name):
    """Token-ID continuations hit vLLM's prefix cache, the step's requests go together,
    the arithmetic checker guides, and a token budget holds on the real engine."""
    from ttscale.tasks.arithmetic import ArithmeticTask
    from ttscale.verifiers.arithmetic_checker import ArithmeticChecker

    task = ArithmeticTask(num_problems=1, phrasing="plain")
    ((problem, ref),) = task.load()
    ctx = make_ctx(real_engine, task=task, verifier=ArithmeticChecker(), seed=0)
    result = solve(REAL[name](), ctx, problem)
    assert_valid_result(result)
    assert result.candidates and result.stats["steps"] >= 1
    u = ctx.ledger.usage
    assert result.stats["generated_tokens"] == u.generated_tokens > 0
    if result.stats["steps"] > 1:  # continuations were sent as token IDs and served from the cache
        assert u.cached_prompt_tokens > 0
    ctx = make_ctx(real_engine, task=task, verifier=ArithmeticChecker(), seed=0, budget=Budget(max_tokens=20))
    result = solve(REAL[name](), ctx, problem)
    assert_valid_result(result)
    assert ctx.ledger.usage.generated_tokens <= 20
