"""The Strategy contract: `async solve(problem, ctx) -> Result`.

A strategy reads like its paper's pseudocode for *one* problem; the runner keeps
many problems in flight and the engine batches their requests. Costs are charged
to `ctx.ledger` by `ctx.generate` and by the verifier; the runner copies the
ledger's usage into the result.

What the runner asks a built strategy before any model loads (so no other part of
the project needs to know a strategy's key names):

* `requires_verifier`: whether it needs a verifier;
* `count_params`: the names of its hyperparameters that count something (samples,
  beams, expansions), each an integer >= 1 (`check()` verifies them);
* `score_needs`: the verifier scores it can be guided by, against the verifier's
  `score_range`;
* `independent_samples`: whether its candidates are independent samples (curves over k);
* `request_shape()`: the shape of its first request (how many sequences, and the
  smallest unit of work one sequence asks for, with the config key that sets it),
  which the token-budget check reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from ttscale.context import SolveContext
    from ttscale.types import Problem, Result


@dataclass(frozen=True)
class RequestShape:
    """The first request a strategy sends for a problem.

    `sequences`: how many sequences it samples together; `unit_tokens`: the tokens one
    sequence asks for in its smallest unit of work (one step of a step search, one chunk,
    or a whole sample); `unit_key`: the config key (under `strategy.`) that sets it."""

    sequences: int
    unit_tokens: int
    unit_key: str


class Strategy:
    name: str = "strategy"
    # Whether the strategy needs a verifier (checked before any model loads).
    requires_verifier: bool = False
    # Attributes that count something: integers >= 1 (named as in the config, `strategy.<name>`).
    count_params: ClassVar[tuple[str, ...]] = ()
    # Whether `Result.candidates` are independent samples of the policy (best-of-N, voting):
    # only then do curves over k (pass@k, maj@k, best_of@k, weighted@k) estimate anything.
    # A search's pool (resampled particles, kept beams, every finished node) is not; the
    # runner writes this into every record (`independent_samples`) for metrics and merge.
    independent_samples: ClassVar[bool] = False
    # Verifier scores this strategy can be guided by: {"setting=value": (low, high, why)},
    # "" for always. Checked against the built verifier's `score_range` before any model
    # loads (ttscale.runner.validation.check_score_range).
    score_needs: ClassVar[dict[str, tuple[float, float, str]]] = {}

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        raise NotImplementedError

    def check(self) -> None:
        """Raise ValueError naming `strategy.<name>` for a count that is not an integer >= 1."""
        for name in self.count_params:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"strategy.{name} must be an integer >= 1, got {v!r}")

    def applicable_score_needs(self) -> list[tuple[str, float, float, str]]:
        """The `score_needs` entries this built strategy's settings select, as
        (setting, low, high, why): "" always applies, "weighting=logit" when
        `self.weighting == "logit"`."""
        out = []
        for setting, (low, high, why) in self.score_needs.items():
            attr, _, value = setting.partition("=")
            if not attr or str(getattr(self, attr, None)) == value:
                out.append((setting, float(low), float(high), why))
        return out

    def request_shape(self) -> RequestShape | None:
        """The first request's shape (see `RequestShape`); None: nothing to check."""
        return None
