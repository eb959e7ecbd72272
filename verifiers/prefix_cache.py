"""A per-problem cache of step-prefix scores, shared by every call within one solve.

A step-level search scores the same prefix again and again: A* re-scores nothing but
its siblings share parents, beam search and particle filtering score a path at every
step, and `ProcessVerifier.score` re-scores every step of a finished candidate. The
score of a prefix depends only on the problem and the step texts, so it is computed
once per problem: the key is `(verifier, problem id, step texts)`.

The cache lives as long as the problem's ledger (one `Ledger` per `solve`), held in a
`WeakKeyDictionary`, so nothing leaks from one problem to the next and problems in
flight at the same time never see each other's entries. A hit costs nothing and is not
charged to the ledger; `stats(ctx)` reports hits and misses for `Result.stats`.

`CachedProcessVerifier` is the base the process scorers build on. A subclass says how it
computes scores:

- `granularity = "sequence"` (PRMs): one forward pass over a whole path gives every
  step's score, so a path with any prefix missing is scored whole (`_score_paths`) and
  every prefix of it is stored;
- `granularity = "step"` (judges, checkers): each prefix is scored on its own
  (`_score_prefixes`, the score of the last step of each prefix), so only missing
  prefixes are computed.

Identical paths in one batch (k samples that agree) are computed once either way, and with
"sequence" granularity a path that is a prefix of another path of the same batch is not
scored on its own: the longer path's pass gives its scores (the PRM is causal: the score
at a step's separator depends only on the tokens before it).
"""

from __future__ import annotations

import weakref
from typing import Sequence

from ttscale.context import SolveContext
from ttscale.segment import STEP_DELIMITER
from ttscale.types import Problem
from ttscale.verifier import ProcessVerifier

Key = tuple[str, str, tuple[str, ...]]


class PrefixScoreCache:
    """Scores of step prefixes for one problem (see the module doc)."""

    def __init__(self) -> None:
        self._scores: dict[Key, float] = {}
        self.hits = 0  # prefix scores served from the cache
        self.misses = 0  # prefix scores that had to be computed

    def get(self, owner: str, problem_id: str, prefix: Sequence[str]) -> float | None:
        return self._scores.get((owner, problem_id, tuple(prefix)))

    def put(self, owner: str, problem_id: str, prefix: Sequence[str], score: float) -> None:
        self._scores[(owner, problem_id, tuple(prefix))] = float(score)

    def __len__(self) -> int:
        return len(self._scores)


_CACHES: "weakref.WeakKeyDictionary[object, PrefixScoreCache]" = weakref.WeakKeyDictionary()


def cache_for(ctx: SolveContext) -> PrefixScoreCache:
    """The cache of this solve (keyed by its ledger: one per problem)."""
    cache = _CACHES.get(ctx.ledger)
    if cache is None:
        cache = _CACHES[ctx.ledger] = PrefixScoreCache()
    return cache


def stats(ctx: SolveContext) -> dict[str, int]:
    """Cache counters of this solve, for `Result.stats`."""
    cache = _CACHES.get(ctx.ledger)
    if cache is None:
        return {"verifier_cache_hits": 0, "verifier_cache_misses": 0}
    return {"verifier_cache_hits": cache.hits, "verifier_cache_misses": cache.misses}


class CachedProcessVerifier(ProcessVerifier):
    """A process scorer whose prefix scores go through the per-problem cache."""

    granularity: str = "sequence"  # "sequence" | "step" (see the module doc)

    def __init__(self, aggregation: str = "last", use_cache: bool = True, step_delimiter: str = STEP_DELIMITER) -> None:
        super().__init__(aggregation, step_delimiter)
        self.use_cache = use_cache
        self._owner = f"{type(self).__name__}@{id(self):x}"

    # ---- what a subclass implements ------------------------------------------
    async def _score_paths(
        self, problem: Problem, paths: Sequence[Sequence[str]], ctx: SolveContext
    ) -> list[list[float]]:
        """One score per step of each path (granularity "sequence"). Charges the ledger."""
        raise NotImplementedError

    async def _score_prefixes(
        self, problem: Problem, prefixes: Sequence[Sequence[str]], ctx: SolveContext
    ) -> list[float]:
        """The score of the last step of each prefix (granularity "step"). Charges the ledger."""
        raise NotImplementedError

    # ---- the ProcessVerifier contract -----------------------------------------
    def step_call_costs(self, problem: Problem, paths: Sequence[Sequence[str]], ctx: SolveContext) -> list[int]:
        """Calls each path would charge given the cache and the paths before it: "step"
        granularity, its prefixes not cached yet (an unscored ancestor costs a call too);
        "sequence", one pass unless every prefix is cached or an earlier path is the same
        (an upper bound: a path covered by a longer one of the batch costs nothing)."""
        cache = cache_for(ctx) if self.use_cache else PrefixScoreCache()
        owner, pid = self._owner, problem.id
        counted: set[tuple[str, ...]] = set()
        out = []
        for p in (tuple(s) for s in paths):
            missing = [p[: j + 1] for j in range(len(p)) if cache.get(owner, pid, p[: j + 1]) is None]
            if self.granularity == "step":
                new = [q for q in missing if q not in counted]
                counted.update(new)
                out.append(len(new))
            else:
                out.append(1 if missing and p not in counted else 0)
                counted.add(p)
        return out

    async def score_steps(
        self, problem: Problem, steps: Sequence[Sequence[str]], ctx: SolveContext
    ) -> list[list[float]]:
        paths = [tuple(s) for s in steps]
        cache = cache_for(ctx) if self.use_cache else PrefixScoreCache()
        owner, pid = self._owner, problem.id
        out: list[list[float | None]] = [[cache.get(owner, pid, p[: j + 1]) for j in range(len(p))] for p in paths]
        for row in out:
            n_hit = sum(v is not None for v in row)
            cache.hits += n_hit
            cache.misses += len(row) - n_hit

        if self.granularity == "sequence":
            todo = list(dict.fromkeys(p for p, row in zip(paths, out) if any(v is None for v in row)))
            # A path that is a prefix of another one in the batch is scored by the longer one.
            longer = {q[:j] for q in todo for j in range(1, len(q))}
            todo = [p for p in todo if p not in longer]
            if todo:
                scored = await self._score_paths(problem, todo, ctx)
                for p, s in zip(todo, scored):
                    if len(s) != len(p):
                        raise ValueError(f"{type(self).__name__} returned {len(s)} scores for {len(p)} steps")
                    for j, v in enumerate(s):
                        cache.put(owner, pid, p[: j + 1], v)
        elif self.granularity == "step":
            todo = list(
                dict.fromkeys(p[: j + 1] for p, row in zip(paths, out) for j, v in enumerate(row) if v is None)
            )
            if todo:
                scored = await self._score_prefixes(problem, todo, ctx)
                for prefix, v in zip(todo, scored):
                    cache.put(owner, pid, prefix, v)
        else:
            raise ValueError(f"granularity must be 'sequence' or 'step', got {self.granularity!r}")

        return [
            [v if v is not None else float(cache.get(owner, pid, p[: j + 1])) for j, v in enumerate(row)]  # type: ignore[arg-type]
            for p, row in zip(paths, out)
        ]
