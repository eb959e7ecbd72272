"""Particle filtering and entropic particle filtering on the fake engine (exact, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttscale.strategies.entropic_particle_filter import EntropicParticleFilter, annealing_temperature, target_temperature
from ttscale.strategies.particle_filter import (
    ParticleFilter,
    effective_sample_size,
    normalized_entropy,
    resample,
    score_to_log_weight,
    softmax,
)
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

CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52}  # chi-square quantiles, alpha = 0.001


def chi_square(observed, expected) -> float:
    o, e = np.asarray(observed, float), np.asarray(expected, float)
    return float(((o - e) ** 2 / e).sum())


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# ---- (a) resampling follows the softmax weights ----------------------------------
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_multinomial_resampling_follows_softmax_weights(temperature):
    scores = [0.9, 0.6, 0.3, 0.1, 0.75]
    log_w = [score_to_log_weight(s) for s in scores]
    assert log_w == pytest.approx([logit(s) for s in scores])
    probs = softmax(log_w, temperature)
    e = np.exp(np.array(log_w) / temperature)
    assert probs == pytest.approx(e / e.sum())
    counts = np.zeros(len(scores))
    draws = 0
    for seed in range(400):
        idx = resample(probs, 25, np.random.default_rng(seed), "multinomial")
        counts += np.bincount(idx, minlength=len(scores))
        draws += len(idx)
    assert chi_square(counts, draws * probs) < CHI2_999[len(scores) - 1]


def test_systematic_resampling_gives_floor_or_ceil_copies():
    probs = softmax([logit(s) for s in [0.9, 0.6, 0.3, 0.1, 0.75]])
    n = 16
    mean = np.zeros(len(probs))
    for seed in range(300):
        counts = np.bincount(resample(probs, n, np.random.default_rng(seed), "systematic"), minlength=len(probs))
        assert counts.sum() == n
        assert np.all(counts >= np.floor(n * probs)) and np.all(counts <= np.ceil(n * probs))
        mean += counts / 300
    assert mean == pytest.approx(n * probs, abs=0.25)


# One first step of four kinds (equally likely), then the final step.
FOUR_KINDS = [(f"{k} go\n\n\\boxed{{{i}}}", 0.25) for i, k in enumerate(["A", "B", "C", "D"])]
KIND_SCORES = {"A": 0.9, "B": 0.6, "C": 0.3, "D": 0.1}


@pytest.mark.parametrize("softmax_temperature", [1.0, 3.0])
def test_particle_filter_resamples_by_softmax_of_logit_scores(softmax_temperature):
    """Through the strategy: after step 1 the copies each particle gets (the `n` of the
    requests continuing it) follow softmax(logit(score) / temperature), over many seeds."""
    n = 8
    observed, expected = np.zeros(4), np.zeros(4)
    for seed in range(150):
        engine = RecordingEngine(completions=FOUR_KINDS, delay=0)
        ctx = make_ctx(engine, verifier=MarkerPRM(KIND_SCORES), seed=seed)
        pf = ParticleFilter(n=n, temperature=1.0, step=STEP, softmax_temperature=softmax_temperature)
        solve(pf, ctx)
        base = prompt_ids(ctx)
        (req0, out0), *rest = engine.log
        first = [c.text[0] for c in out0.completions]  # the kinds sampled at step 1
        probs = softmax([logit(KIND_SCORES[k]) for k in first], softmax_temperature)
        for kind, p in zip(first, probs):
            expected["ABCD".index(kind)] += n * p
        for req, _ in rest:  # step 2: one request per distinct ancestor, n = its copies
            observed["ABCD".index(generated_text(engine, req, base)[0])] += req.n
    assert observed.sum() == pytest.approx(expected.sum())
    assert chi_square(observed, expected) < CHI2_999[3]


# ---- (b) finished particles are kept, not extended --------------------------------
def test_finished_particles_are_kept_and_not_extended():
    # "A" finishes after one step; "B" needs three more.
    engine = RecordingEngine(completions=[("A \\boxed{1}", 0.5), ("B\n\nC\n\nD\n\n\\boxed{2}", 0.5)])
    ctx = make_ctx(engine, verifier=MarkerPRM({"A": 0.6}, default=0.5), seed=0)
    result = solve(ParticleFilter(n=8, temperature=1.0, step=STEP), ctx)
    base = prompt_ids(ctx)
    for req, _ in engine.log:
        assert "\\boxed" not in generated_text(engine, req, base), "a finished particle was extended"
    finished_early = [c for c in result.candidates if c.text == "A \\boxed{1}"]
    assert finished_early, "the finished particles should survive the later resamplings"
    assert all(c.finish_reason == "stop" and c.score == pytest.approx(0.6) for c in finished_early)
    assert result.stats["resamplings"] >= 2  # they were carried through resamplings
    assert len(result.candidates) == 8 and all(c.finish_reason == "stop" for c in result.candidates)
    assert_valid_result(result)


def test_selection_argmax_and_weighted_vote():
    # Single-step solutions: "one" answers 1 (PRM 0.9), "two" answers 2 (PRM 0.8).
    completions = [("one \\boxed{1}", 0.2), ("two \\boxed{2}", 0.8)]
    prm = {"one": 0.9, "two": 0.8}
    for selection in ("argmax", "weighted_vote"):
        engine = RecordingEngine(completions=completions)
        ctx = make_ctx(engine, verifier=MarkerPRM(prm), seed=11)
        result = solve(ParticleFilter(n=8, temperature=1.0, step=STEP, selection=selection), ctx)
        assert_valid_result(result)
        answers = [c.answer for c in result.candidates]
        assert "1" in answers and answers.count("2") >= 3  # the seed gives a split pool
        weights = [c.extra["weight"] for c in result.candidates]
        assert sum(weights) == pytest.approx(1.0)
        if selection == "argmax":
            assert result.answer == "1"
        else:
            totals = {a: sum(w for b, w in zip(answers, weights) if b == a) for a in set(answers)}
            assert result.answer == max(totals, key=totals.get) == "2"


# ---- (c) entropic annealing -----------------------------------------------------------
def test_annealing_formulas():
    log_w = [logit(s) for s in [0.999, 0.5, 0.2, 0.01]]
    p = softmax(log_w)
    n = len(p)
    ess = effective_sample_size(p)
    assert 1 <= ess <= n
    # the paper's ESS schedule
    assert annealing_temperature(p, log_w, 1.0, 0.25, "ess", 0.5) == pytest.approx(max(1, n / ess * 0.75))
    # the paper's entropy schedule
    h = normalized_entropy(p)
    assert annealing_temperature(p, log_w, 1.0, 0.25, "entropy", 0.5) == pytest.approx(1 / (h + (1 - h) * 0.25))
    # its_hub's base schedule: max(1, 2 - t/T)
    assert annealing_temperature(p, log_w, 1.0, 0.25, "base", 0.5) == pytest.approx(1.75)
    assert annealing_temperature(p, log_w, 1.0, 1.5, "base", 0.5) == 1.0
    # the target: the annealed distribution has ESS / N equal to the threshold
    for threshold in (0.3, 0.5, 0.9):
        tau = target_temperature(log_w, 1.0, threshold)
        assert tau > 1
        assert effective_sample_size(softmax(log_w, tau)) / n == pytest.approx(threshold, abs=1e-6)
    assert target_temperature([0.0, 0.0, 0.0], 1.0, 0.5) == 1.0


@pytest.mark.parametrize("method", ["ess", "entropy", "base", "target"])
def test_epf_anneals_exactly_when_ess_is_low_in_the_early_phase(method):
    epf = EntropicParticleFilter(
        n=4, step={**STEP, "max_steps": 10}, ess_threshold=0.5, early_phase=0.5, temperature_method=method
    )
    collapsed = [logit(s) for s in [0.999, 0.05, 0.05, 0.05]]  # ESS / N ~ 0.25
    balanced = [logit(s) for s in [0.6, 0.5, 0.55, 0.45]]  # ESS / N ~ 1
    plain = softmax(collapsed)
    assert effective_sample_size(plain) / 4 < 0.5 <= effective_sample_size(softmax(balanced)) / 4
    # early and collapsed: annealed, flatter, and (target) exactly at the threshold
    probs, ratio, event = epf.anneal(collapsed, t=1)
    assert ratio == pytest.approx(effective_sample_size(plain) / 4)
    assert event is not None and event["temperature"] > 1
    assert effective_sample_size(probs) > effective_sample_size(plain)
    assert probs == pytest.approx(softmax(collapsed, event["temperature"]), rel=1e-5)
    if method == "ess":
        assert event["temperature"] == pytest.approx(4 / effective_sample_size(plain) * (1 - 1 / 10), rel=1e-5)
    if method == "target":
        assert effective_sample_size(probs) / 4 == pytest.approx(0.5, abs=1e-6)
    # diverse enough: untouched
    probs, _, event = epf.anneal(balanced, t=1)
    assert event is None and probs == pytest.approx(softmax(balanced))
    # past the early phase: untouched however collapsed
    probs, _, event = epf.anneal(collapsed, t=5)
    assert event is None and probs == pytest.approx(plain)


def test_epf_strategy_records_annealing_only_below_threshold():
    # An over-confident PRM on the first step ("A" 0.999 vs 0.02) collapses the weights.
    completions = [("A one\n\ntwo\n\nthree\n\n\\boxed{1}", 0.3), ("B one\n\ntwo\n\nthree\n\n\\boxed{2}", 0.7)]
    step = {**STEP, "max_steps": 10}
    annealed = left_alone = 0
    for seed in range(20):
        engine = RecordingEngine(completions=completions)
        ctx = make_ctx(engine, verifier=MarkerPRM({"A": 0.999, "B": 0.02}), seed=seed)
        epf = EntropicParticleFilter(n=8, temperature=1.0, step=step, temperature_method="target")
        result = solve(epf, ctx)
        assert_valid_result(result)
        before = result.stats["ess_ratio_before"]
        assert len(before) == result.stats["resamplings"]
        annealed_steps = {e["step"] for e in result.stats["annealing"]}
        expected = {t for t, r in enumerate(before, start=1) if r < 0.5 and t / 10 < 0.5}
        assert annealed_steps == expected
        for e in result.stats["annealing"]:
            assert e["ess_ratio"] < 0.5 and e["ess_ratio_after"] == pytest.approx(0.5, abs=1e-5)
        annealed += len(annealed_steps)
        left_alone += sum(t / 10 < 0.5 and r >= 0.5 for t, r in enumerate(before, start=1))
    assert annealed > 0 and left_alone > 0  # both cases happened in the early phase
    # A PRM that scores everything alike never triggers it.
    engine = RecordingEngine(completions=completions)
    ctx = make_ctx(engine, verifier=MarkerPRM({}, default=0.5), seed=0)
    result = solve(EntropicParticleFilter(n=8, temperature=1.0, step=step), ctx)
    assert result.stats["annealings"] == 0 and result.stats["resamplings"] > 0


# ---- look-ahead modulation ----------------------------------------------------------------
def test_look_ahead_modulation_weights_states_by_their_successors():
    # "P" and "Q" score the same, but P's successor is good and Q's is bad.
    completions = [("P\n\ngood\n\n\\boxed{1}", 0.5), ("Q\n\nbad\n\n\\boxed{2}", 0.5)]
    prm = MarkerPRM({"good": 0.95, "bad": 0.05}, default=0.5)

    def share_of_p(look_ahead: int) -> float:
        p_copies = total = 0
        for seed in range(30):
            engine = RecordingEngine(completions=completions)
            ctx = make_ctx(engine, verifier=prm, seed=seed)
            epf = EntropicParticleFilter(
                n=8, temperature=1.0, step=STEP, look_ahead=look_ahead, look_ahead_weight=1.0, ess_threshold=0.01
            )
            result = solve(epf, ctx)
            assert result.stats["annealings"] == 0  # isolate LaM
            assert (result.stats["look_ahead_sequences"] > 0) == bool(look_ahead)
            # everything generated was scored once, look-ahead included
            assert result.stats["verifier_calls"] == result.stats["expansions"]
            # waves: step 1, [look-ahead,] step 2 = the copies each ancestor got
            waves = result.stats["requests_per_wave"]
            w = 2 if look_ahead else 1
            start = sum(waves[:w])
            base = prompt_ids(ctx)
            for req, _ in engine.log[start : start + waves[w]]:
                total += req.n
                p_copies += req.n if generated_text(engine, req, base) == "P\n\n" else 0
        return p_copies / total

    assert share_of_p(0) == pytest.approx(0.5, abs=0.15)
    assert share_of_p(1) > 0.9


# ---- (e) budgets, (f) requests in flight together, (g) guided search, (h) prefix reuse ----
PF_VARIANTS = {
    "pf": lambda: ParticleFilter(n=4, temperature=1.0, step=STEP),
    "pf_vote_systematic": lambda: ParticleFilter(
        n=4, temperature=1.0, step=STEP, selection="weighted_vote", resampling="systematic"
    ),
    "epf": lambda: EntropicParticleFilter(n=4, temperature=1.0, step=STEP),
    "epf_look_ahead": lambda: EntropicParticleFilter(
        n=4, temperature=1.0, step=STEP, look_ahead=2, temperature_method="target"
    ),
}


@pytest.mark.parametrize("variant", sorted(PF_VARIANTS))
def test_stops_at_budget_with_a_valid_result(variant):
    check_budget_respected(PF_VARIANTS[variant])


@pytest.mark.parametrize("variant", sorted(PF_VARIANTS))
def test_step_requests_in_flight_together_and_prefix_reused(variant):
    check_requests_in_flight_together_and_prefix_reuse(PF_VARIANTS[variant])


@pytest.mark.parametrize("variant", sorted(PF_VARIANTS))
def test_guided_search_beats_random_choice(variant):
    check_guided_search_beats_random_choice(PF_VARIANTS[variant])


@pytest.mark.parametrize("variant", sorted(PF_VARIANTS))
def test_arithmetic_checker_guides_the_filter(variant):
    check_arithmetic_checker_guides_search(PF_VARIANTS[variant])


@pytest.mark.parametrize("strategy", ["particle_filter", "entropic_particle_filter", "beam_search", "dvts"])
@pytest.mark.parametrize("verifier", ["prm_vllm", "prm_hf", "arithmetic_checker"])
def test_step_searches_score_a_partial_solution_by_its_last_step(strategy, verifier):
    """The papers' and references' aggregation (Puri et al.: the PRM's score of the latest
    prefix; search-and-learn agg_strategy="last"), whatever the verifier's own aggregation
    for outcome scoring (the arithmetic checker's is min)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=[f"strategy={strategy}", f"verifier={verifier}", "logger=none"])
    assert cfg.strategy.aggregation == "last"
    assert instantiate(cfg.strategy).aggregation == "last"
    assert cfg.verifier.aggregation == "last"


def test_cfg_job_shows_the_papers_aggregation():
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "scripts/run.py", "strategy=particle_filter", "verifier=prm_vllm", "--cfg", "job"],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    job = yaml.safe_load(out)
    assert job["strategy"]["aggregation"] == "last"  # a plain value, not an interpolation
    assert job["verifier"]["aggregation"] == "last"

# ---- self-certainty guides the filter only through its [0, 1] mapping -------------
def test_self_certainty_weights_are_uniform_raw_and_guide_once_mapped():
    """Raw mean log-probs (<= 0) all clip to one logit weight: ESS = N at every resampling
    (the silent no-op the config check refuses). exp(mean log-prob) (output "prob")
    weighs the likely first step higher: ESS < N."""
    from ttscale.verifiers.self_certainty import SelfCertainty

    completions = [("A sure step\n\nB \\boxed{1}", 0.85), ("Z odd step\n\nB \\boxed{2}", 0.15)]

    def ess_of(verifier):
        out = []
        for seed in range(4):
            ctx = make_ctx(RecordingEngine(completions=completions, delay=0), verifier=verifier, seed=seed)
            res = solve(ParticleFilter(n=8, temperature=1.0, step=STEP), ctx)
            out += res.stats["ess"]
        return out

    raw = ess_of(SelfCertainty())
    assert raw and all(e == pytest.approx(8.0) for e in raw)
    mapped = ess_of(SelfCertainty(output="prob"))
    assert mapped and min(mapped) < 7.99
