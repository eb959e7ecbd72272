"""The Engine protocol: the one way strategies and verifiers reach a model.

Requests carry prompt *token IDs*, so a continuation of a partial solution is
sent as `prompt + generated so far` and the engine's prefix cache serves the
shared prefix. Strategies call `await engine.generate(request)` for one problem
at a time; the runner keeps many problems in flight and the engine batches all
pending requests together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable


class EngineError(RuntimeError):
    """A request failed in the engine (after the engine's own retries)."""


@dataclass(frozen=True)
class ConfidenceStop:
    """Online DeepConf (Fu et al. 2025): the engine ends a sequence at the first position
    where the mean token confidence (-mean of the top-`conf_topk` log-probabilities) over the
    last `window_size` positions, that one included, falls below `threshold`; that position
    emits end of sequence instead of a token, and the completion says
    `stop_reason == "confidence"`. See `ttscale.confidence.first_window_below`."""

    threshold: float
    window_size: int
    conf_topk: int = 20


@dataclass(frozen=True)
class GenerationRequest:
    prompt_token_ids: Sequence[int]
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    include_stop_str_in_output: bool = True
    seed: int | None = None
    # Number of top log-probabilities returned per generated token (None: none).
    # The sampled token's log-probability is always returned when this is set.
    logprobs: int | None = None
    # Stop sequences in the engine when their windowed confidence falls below a threshold.
    confidence_stop: ConfidenceStop | None = None


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the stop string / token that ended it
    # log-probability of each sampled token (when the request asked for logprobs)
    token_logprobs: list[float] | None = None
    # per generated token, {token_id: logprob} of the top-k (when asked)
    top_logprobs: list[dict[int, float]] | None = None
    # a stored candidate (a record's dict) this completion replays (backends/replay.py)
    stored: dict[str, Any] | None = None

    @property
    def mean_logprob(self) -> float | None:
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)


@dataclass
class GenerationOutput:
    completions: list[Completion]
    prompt_tokens: int
    # Prompt tokens served from the prefix cache; None when the engine did not report them
    # (an OpenAI-compatible server without prompt-token details): unknown, not 0.
    cached_prompt_tokens: int | None = 0

    @property
    def generated_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.completions)


@dataclass(frozen=True)
class ScoreRequest:
    """A pooling request for a reward model served on the engine (PRM/ORM)."""

    prompt_token_ids: Sequence[int]


@dataclass
class ScoreOutput:
    # One value per position the model pools at (e.g. per step separator).
    values: list[float]
    prompt_tokens: int
    cached_prompt_tokens: int | None = 0  # None: not reported (unknown)


@runtime_checkable
class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        """Token IDs of the chat prompt, with the generation prompt appended."""
        ...


@runtime_checkable
class Engine(Protocol):
    """Anything that generates. See `backends/` for implementations."""

    tokenizer: Tokenizer
    # Parameter count of the served model, for the FLOP model of the ledger.
    num_parameters: int

    async def generate(self, request: GenerationRequest) -> GenerationOutput: ...

    async def close(self) -> None: ...

    def shutdown(self) -> None:
        """Stop the engine's processes and free its memory (called from sync code, at exit)."""
        ...

    def info(self) -> dict[str, Any]:
        """Model, dtype, library versions, batch settings: logged for reproducibility."""
        ...


def entropy_from_logprobs(top: dict[int, float]) -> float:
    """Shannon entropy (nats) of the renormalised top-k distribution."""
    if not top:
        return 0.0
    m = max(top.values())
    ps = [math.exp(v - m) for v in top.values()]
    z = sum(ps)
    return -sum((p / z) * math.log(p / z) for p in ps if p > 0)


@dataclass
class EngineStats:
    requests: int = 0
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
