"""An engine wrapper that retries a failing or hanging request a bounded number of times.

The runner wraps its engine in `RetryingEngine` (settings `run.retry.attempts`,
`run.retry.timeout_s`, `run.retry.backoff_s`). A request that raises, or takes longer
than `timeout_s` (it is then cancelled, which aborts it in vLLM), is sent again after
`backoff_s`, then 2x, 4x ... that; after `attempts` tries the last error is raised as an
`EngineError` naming the attempts and the cause. The runner records that problem as
failed with the reason and goes on with the others.

A retried request is the same request (same seed), so a retry that succeeds returns
what the first try would have: retries do not change results. Budget exhaustion is
decided by the ledger before a request reaches the engine, and cancellation (SIGINT,
a strategy cancelling a branch) passes straight through; neither is retried.

Everything else (tokenizer, num_parameters, info, shutdown, ...) is the wrapped
engine's; `stats` counts retries, timeouts and requests that failed for good.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

from ttscale.engine import EngineError, GenerationOutput, GenerationRequest

log = logging.getLogger("ttscale")

RETRIED = ("score", "encode")  # besides generate


@dataclass
class RetryStats:
    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    failed: int = 0  # requests that failed every attempt


class RetryingEngine:
    """Engine protocol: `engine` with bounded retries and a per-attempt timeout."""

    def __init__(self, engine: Any, attempts: int = 3, timeout_s: float | None = None, backoff_s: float = 1.0) -> None:
        if attempts < 1:
            raise ValueError(f"run.retry.attempts must be >= 1, got {attempts}")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"run.retry.timeout_s must be > 0 or null, got {timeout_s}")
        if backoff_s < 0:
            raise ValueError(f"run.retry.backoff_s must be >= 0, got {backoff_s}")
        self.engine = engine
        self.attempts = int(attempts)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.backoff_s = float(backoff_s)
        self.stats = RetryStats()

    def __getattr__(self, name: str) -> Any:  # tokenizer, num_parameters, shutdown, ...
        if name == "engine":  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        attr = getattr(self.engine, name)
        if name in RETRIED:  # optional pooling calls, retried like generate when the engine has them
            async def retried(*args: Any) -> Any:
                return await self._call(f"engine {name} request", attr, *args)

            return retried
        return attr

    async def _call(self, what: str, fn: Any, *args: Any) -> Any:
        self.stats.requests += 1
        last: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                if self.timeout_s is None:
                    return await fn(*args)
                return await asyncio.wait_for(fn(*args), self.timeout_s)
            except asyncio.CancelledError:
                raise
            except asyncio.TimeoutError:
                self.stats.timeouts += 1
                last = TimeoutError(f"no answer within run.retry.timeout_s={self.timeout_s:g}s")
            except Exception as e:  # noqa: BLE001 - any engine failure is retried, boundedly
                last = e
            if attempt < self.attempts:
                self.stats.retries += 1
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.info("%s attempt %d/%d failed (%s); retrying in %.1fs", what, attempt, self.attempts, _why(last), delay)
                if delay:
                    await asyncio.sleep(delay)
        self.stats.failed += 1
        raise EngineError(f"{what} failed after {self.attempts} attempt(s): {_why(last)}") from last

    async def generate(self, request: GenerationRequest) -> GenerationOutput:
        return await self._call("engine request", self.engine.generate, request)

    def info(self) -> dict[str, Any]:
        info = dict(self.engine.info())
        info["retry"] = {"attempts": self.attempts, "timeout_s": self.timeout_s, "backoff_s": self.backoff_s}
        return info

    def stats_dict(self) -> dict[str, int]:
        return asdict(self.stats)


def _why(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    if isinstance(e, EngineError) and str(e):
        return str(e)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def with_retry(engine: Any, settings: Any = None) -> Any:
    """`engine` wrapped with `settings` (a mapping: attempts, timeout_s, backoff_s); the engine
    itself when the settings ask for nothing (one attempt, no timeout) or it is already wrapped."""
    if engine is None or isinstance(engine, RetryingEngine):
        return engine
    s = dict(settings or {})
    attempts = int(s.get("attempts") or 1)
    timeout_s = s.get("timeout_s")
    if attempts <= 1 and timeout_s is None:
        return engine
    return RetryingEngine(engine, attempts=attempts, timeout_s=timeout_s, backoff_s=float(s.get("backoff_s") or 0.0))
