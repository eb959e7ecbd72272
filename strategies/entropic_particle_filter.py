"""Entropic particle filtering (ePF).

Giannone et al. 2025, "Mitigating Premature Exploitation in Particle-based Monte Carlo
for Inference-Time Scaling" (arXiv:2510.05825). Particle filtering (see
`strategies/particle_filter.py`, whose loop this reuses) with two additions:

Entropic Annealing (EA). PRMs are often over-confident early in a solution, so the
resampling collapses onto a few particles (particle impoverishment). Before each
resampling at step t the filter measures the diversity of the normalised weights p,
with the effective sample size ``ESS = 1 / sum p_i^2``. When ``ESS / N`` drops below
`ess_threshold` during the early phase (``t / T < early_phase``, T =
`step.max_steps`), the resampling distribution is annealed: the log-weights are
divided by a temperature ``tau >= 1`` (``p_i ∝ w_i^(1/tau)``, i.e. inverse
temperature ``beta = 1/tau``):

- ``temperature_method: ess`` (the paper): ``tau = max(1, (N / ESS) (1 - t/T))``;
- ``temperature_method: entropy`` (the paper's entropy variant): with H the normalised
  entropy of p, ``beta = H + (1 - H) t/T`` and ``tau = max(1, 1/beta)``;
- ``temperature_method: base`` (its_hub's `TemperatureMethod.BASE`):
  ``tau = max(1, 2 - t/T)`` (its `value_max = 2.0`);
- ``temperature_method: target``: the smallest tau whose annealed distribution has
  ``ESS / N = ess_threshold`` exactly (adaptive tempering as in SMC samplers, found
  by bisection; ESS grows monotonically with tau).

Otherwise the resampling is the plain PF one. The final answer uses the untempered
weights. Defaults as its_hub's `EntropicParticleFiltering` (`its_hub/core/algorithms/
particle_gibbs.py`): systematic resampling, ``ess`` temperature, ``ess_threshold`` 0.5,
``early_phase`` 0.5, T = the step generator's ``max_steps``; its ESS and entropy clip
the probabilities to [1e-7, 1 - 1e-7] first and it does not normalise the entropy for
N <= 2 (negligible differences), and it has no look-ahead modulation.

Look-ahead Modulation (LaM). To judge a state by its potential rather than its
current score alone, each distinct unfinished particle samples `look_ahead`
successor steps (one request with ``n = look_ahead``, all particles together); the
PRM scores them, and the particle's resampling log-weight becomes
``(1 - look_ahead_weight) * w_t + look_ahead_weight * mean_k w(successor_k)``.
The successors are then discarded (the particle is extended afresh after
resampling); their tokens and verifier calls are charged like any other. LaM is off
with ``look_ahead: 0``. The paper's text describing the exact form of the modulation
was not available to us; this convex combination of log-weights is our reading of
"evaluating a state's potential based on its successors".
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ttscale.strategies.particle_filter import (
    FilterRun,
    ParticleFilter,
    effective_sample_size,
    normalized_entropy,
    softmax,
)
from ttscale.strategies.steps import Node, StepConfig, score_nodes
from ttscale.context import SolveContext
from ttscale.types import Problem

TEMPERATURE_METHODS = ("ess", "entropy", "base", "target")
BASE_VALUE_MAX = 2.0  # its_hub ParticleGibbs._temperature_annealing(value_max=2.0)


def annealing_temperature(
    probs: Sequence[float],
    log_weights: Sequence[float],
    base_temperature: float,
    progress: float,
    method: str,
    ess_threshold: float,
) -> float:
    """The annealing temperature tau >= 1 for weights `probs` (= softmax(log_weights /
    base_temperature)) at `progress` = t / T. See the module doc for the methods."""
    n = len(probs)
    if n <= 1:
        return 1.0
    if method == "ess":
        ess = effective_sample_size(probs)
        return max(1.0, (n / ess) * (1.0 - progress))
    if method == "entropy":
        h = normalized_entropy(probs)
        beta = h + (1.0 - h) * progress
        return max(1.0, 1.0 / beta) if beta > 0 else float("inf")
    if method == "base":
        return max(1.0, BASE_VALUE_MAX - progress)
    if method == "target":
        return target_temperature(log_weights, base_temperature, ess_threshold)
    raise ValueError(f"strategy.temperature_method must be one of {TEMPERATURE_METHODS}, got {method!r}")


def target_temperature(log_weights: Sequence[float], base_temperature: float, ess_ratio: float) -> float:
    """The smallest tau >= 1 with ESS(softmax(log_weights / (base_temperature tau))) / N
    >= ess_ratio (bisection on log tau; 1.0 when already met)."""
    n = len(log_weights)

    def ratio(tau: float) -> float:
        return effective_sample_size(softmax(log_weights, base_temperature * tau)) / n

    if ratio(1.0) >= ess_ratio:
        return 1.0
    lo, hi = 0.0, 1.0  # log tau
    while ratio(float(np.exp(hi))) < ess_ratio:
        hi *= 2.0
        if hi > 64:  # tau ~ 6e27: the weights are flat to machine precision
            return float(np.exp(hi))
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if ratio(float(np.exp(mid))) < ess_ratio:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return float(np.exp(hi))


class EntropicParticleFilter(ParticleFilter):
    """Particle filtering with Entropic Annealing and Look-ahead Modulation.

    Besides ParticleFilter's hyperparameters:
    ess_threshold: annealing starts when ESS / N falls below it (paper: 0.5).
    early_phase: annealing only while t / T is below it (T = step.max_steps).
    temperature_method: "ess" (paper), "entropy" (paper), "base" (its_hub) or "target".
    look_ahead: successor steps sampled per particle for LaM (0: LaM off).
    look_ahead_weight: how much of a particle's resampling log-weight comes from its
        successors (0: none, 1: only the successors).
    """

    name = "entropic_particle_filter"

    def __init__(
        self,
        n: int = 8,
        temperature: float = 0.7,
        top_p: float = 1.0,
        step: StepConfig | Mapping[str, Any] | None = None,
        softmax_temperature: float = 1.0,
        weighting: str = "logit",
        aggregation: str = "last",
        resampling: str = "systematic",
        selection: str = "argmax",
        ess_threshold: float = 0.5,
        early_phase: float = 0.5,
        temperature_method: str = "ess",
        look_ahead: int = 0,
        look_ahead_weight: float = 0.5,
    ) -> None:
        super().__init__(
            n=n,
            temperature=temperature,
            top_p=top_p,
            step=step,
            softmax_temperature=softmax_temperature,
            weighting=weighting,
            aggregation=aggregation,
            resampling=resampling,
            selection=selection,
        )
        if not 0.0 < ess_threshold <= 1.0:
            raise ValueError(f"strategy.ess_threshold must be in (0, 1], got {ess_threshold}")
        if not 0.0 <= early_phase <= 1.0:
            raise ValueError(f"strategy.early_phase must be in [0, 1], got {early_phase}")
        if temperature_method not in TEMPERATURE_METHODS:
            raise ValueError(
                f"strategy.temperature_method must be one of {TEMPERATURE_METHODS}, got {temperature_method!r}"
            )
        if look_ahead < 0:
            raise ValueError(f"strategy.look_ahead must be >= 0, got {look_ahead}")
        if not 0.0 <= look_ahead_weight <= 1.0:
            raise ValueError(f"strategy.look_ahead_weight must be in [0, 1], got {look_ahead_weight}")
        self.ess_threshold = float(ess_threshold)
        self.early_phase = float(early_phase)
        self.temperature_method = temperature_method
        self.look_ahead = int(look_ahead)
        self.look_ahead_weight = float(look_ahead_weight)

    # ---- Entropic Annealing ---------------------------------------------------------
    def anneal(self, log_weights: Sequence[float], t: int) -> tuple[np.ndarray, float, dict[str, float] | None]:
        """The resampling distribution at step t, the ESS / N of the plain one, and the
        annealing event (None when the distribution was left as it is)."""
        probs = softmax(log_weights, self.softmax_temperature)
        n = len(probs)
        ratio = effective_sample_size(probs) / n
        progress = t / self.step.max_steps
        if n <= 1 or ratio >= self.ess_threshold or progress >= self.early_phase:
            return probs, ratio, None
        tau = annealing_temperature(
            probs, log_weights, self.softmax_temperature, progress, self.temperature_method, self.ess_threshold
        )
        if tau <= 1.0:
            return probs, ratio, None
        annealed = softmax(log_weights, self.softmax_temperature * tau)
        return (
            annealed,
            ratio,
            {
                "step": t,
                "ess_ratio": round(ratio, 6),
                "temperature": round(tau, 6),
                "ess_ratio_after": round(effective_sample_size(annealed) / n, 6),
            },
        )

    def resampling_distribution(self, log_weights: Sequence[float], t: int, run: FilterRun) -> np.ndarray:
        probs, ratio, event = self.anneal(log_weights, t)
        run.extra.setdefault("ess_ratio_before", []).append(round(ratio, 6))
        if event is not None:
            run.extra.setdefault("annealing", []).append(event)
        return probs

    # ---- Look-ahead Modulation ------------------------------------------------------
    async def resampling_log_weights(
        self, problem: Problem, ctx: SolveContext, particles: list[Node], run: FilterRun
    ) -> list[float]:
        own = [self.log_weight(p) for p in particles]
        if self.look_ahead <= 0 or self.look_ahead_weight == 0.0:
            return own
        distinct: dict[int, Node] = {}
        for p in particles:
            if not p.finished:
                distinct.setdefault(id(p), p)
        nodes = list(distinct.values())
        successors = await run.expand([(p, self.look_ahead) for p in nodes])
        flat = [s for group in successors for s in group]
        if not flat:
            return own
        await score_nodes(ctx, problem, flat)
        run.extra["look_ahead_sequences"] = run.extra.get("look_ahead_sequences", 0) + len(flat)
        ahead: dict[int, float] = {}
        for p, group in zip(nodes, successors):
            scored = [s for s in group if s.score is not None]
            if scored:
                ahead[id(p)] = float(np.mean([self.log_weight(s) for s in scored]))
        lam = self.look_ahead_weight
        return [(1.0 - lam) * w + lam * ahead[id(p)] if id(p) in ahead else w for p, w in zip(particles, own)]

    def extra_stats(self, run: FilterRun) -> dict[str, Any]:
        events = run.extra.get("annealing", [])
        return {
            "annealings": len(events),
            "annealing": events,
            "ess_ratio_before": run.extra.get("ess_ratio_before", []),
            "look_ahead_sequences": run.extra.get("look_ahead_sequences", 0),
        }
