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
        # duplicates kept, the pool sorted: the reference's filter and pool are tested below
        strategy = BeamSearch(n=6, beam_width=2, temperature=1.0, step=STEP, filter_duplicates=False, sort_completed=True)
        result = solve(strategy, ctx)
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
    # the checker scores each step on its own, not the prefix as a PRM does (its "The answer
    # is \boxed{v}" step is neutral whatever came before): a path is as good as its worst
    # step, so a search it guides aggregates by min (the paper's `last` assumes a PRM)
    def make():
        strategy = VARIANTS[variant]()
        strategy.aggregation = "min"
        return strategy

    check_arithmetic_checker_guides_search(make)


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


# ---- the reference's rules (huggingface/search-and-learn) ------------------------------
# Half the first steps end the solution, half go on with the same text "go\n\n".
END_OR_GO = [("end \\boxed{1}", 0.5), ("go\n\nthen \\boxed{2}", 0.5)]
END_OR_GO_PRM = {"end": 0.3, "go": 0.8, "then": 0.7}


def test_beam_search_refills_to_n_and_filters_duplicate_beams():
    filtered = 0
    for seed in range(8):
        per_rule = {}
        for refill in (True, False):
            engine = RecordingEngine(completions=END_OR_GO)
            ctx = make_ctx(engine, verifier=MarkerPRM(END_OR_GO_PRM), seed=seed)
            result = solve(BeamSearch(n=8, beam_width=4, temperature=1.0, step=STEP, refill=refill), ctx)
            assert_valid_result(result)
            first, *rest = waves_of(engine, result.stats["requests_per_wave"])
            goes = sum(c.text == "go\n\n" for c in first[0][1].completions)
            if not 2 <= goes <= 7:
                break  # this seed gives no duplicate to filter or no second step
            # the unfinished first steps are one text: one beam is kept, whatever N/M is
            assert result.stats["duplicates_filtered"][0] == goes - 1
            assert result.stats["kept_per_step"][0] == 1
            (second,) = rest[:1]
            per_rule[refill] = [r.n for r, _ in second]
        if per_rule:
            filtered += 1
            assert per_rule[True] == [8]  # refilled: N next steps of the one beam
            assert per_rule[False] == [4]  # M per kept beam
    assert filtered >= 3


def test_beam_search_duplicate_filter_keeps_distinct_beams():
    dup_kept = 0
    for seed in range(12):
        kept_texts = {}
        for flt in (True, False):
            engine = RecordingEngine(completions=SIX)
            ctx = make_ctx(engine, verifier=MarkerPRM(SIX_PRM, sticky=True), seed=seed)
            result = solve(BeamSearch(n=6, beam_width=2, temperature=1.0, step=STEP, filter_duplicates=flt), ctx)
            first, second, *_ = waves_of(engine, result.stats["requests_per_wave"])
            sampled = [kind(c.text) for c in first[0][1].completions]
            kept = [kind(generated_text(engine, r, prompt_ids(ctx))) for r, _ in second]
            kept_texts[flt] = kept
            if flt:  # the top N/M = 3 distinct first steps, refilled to N = 6
                assert len(set(kept)) == len(kept) == min(3, len(set(sampled)))
                assert sorted(kept) == sorted(sorted(set(sampled), key=lambda k: -SCORES[k])[:3])
                assert sum(r.n for r, _ in second) == 6
        dup_kept += len(set(kept_texts[False])) < len(kept_texts[False])
    assert dup_kept > 0  # without the filter a duplicate beam takes a slot


def test_beam_search_pool_is_the_first_n_to_finish_unless_sorted():
    for seed in range(6):
        pools = {}
        for sort_completed in (False, True):
            engine = RecordingEngine(completions=END_OR_GO)
            ctx = make_ctx(engine, verifier=MarkerPRM(END_OR_GO_PRM), seed=seed)
            result = solve(BeamSearch(n=4, beam_width=2, temperature=1.0, step=STEP, sort_completed=sort_completed), ctx)
            pools[sort_completed] = [len(c.steps) for c in result.candidates], [c.score for c in result.candidates]
        depths, _ = pools[False]
        assert depths == sorted(depths)  # in the order they finished: one-step solutions first
        _, scores = pools[True]
        assert scores == sorted(scores, reverse=True)


# After "A\n\n" the likely next step is bad, after "B\n\n" fine: the first step's own score
# says A, one greedy step of look-ahead says B.
AB = [("A\n\nbad \\boxed{1}", 0.5), ("B\n\nfine \\boxed{2}", 0.5)]
AB_PRM = {"A": 0.9, "B": 0.6, "bad": 0.1, "fine": 0.8}


def test_dvts_lookahead_ranks_children_by_one_greedy_step():
    mixed = 0
    for seed in range(12):
        answers = {}
        for lookahead in (0, 1):
            engine = RecordingEngine(completions=AB)
            ctx = make_ctx(engine, verifier=MarkerPRM(AB_PRM), seed=seed)
            result = solve(DVTS(n=2, beam_width=2, temperature=1.0, step=STEP, lookahead=lookahead), ctx)
            assert_valid_result(result)
            first = engine.log[0][1].completions
            greedy = [r for r, _ in engine.log if r.temperature == 0.0]
            if lookahead:
                assert greedy and all(r.n == 1 for r in greedy)
                # one greedy step past each unfinished child of the first expansion
                base = prompt_ids(ctx)
                assert sorted(generated_text(engine, r, base) for r in greedy[:2]) == sorted(c.text for c in first)
            else:
                assert not greedy
            answers[lookahead] = result.answer
        if {c.text for c in first} == {"A\n\n", "B\n\n"}:
            mixed += 1
            assert answers == {0: "1", 1: "2"}
    assert mixed >= 3


def test_dvts_lookahead_respects_budgets():
    check_budget_respected(lambda: DVTS(n=4, beam_width=2, temperature=1.0, step=STEP, lookahead=1))


def test_beam_and_dvts_config_defaults_are_the_references():
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        beam = instantiate(compose("config", overrides=["strategy=beam_search", "logger=none"]).strategy)
        dvts = instantiate(compose("config", overrides=["strategy=dvts", "logger=none"]).strategy)
    assert (beam.refill, beam.filter_duplicates, beam.sort_completed, beam.aggregation) == (True, True, False, "last")
    assert (dvts.lookahead, dvts.aggregation) == (0, "last")
