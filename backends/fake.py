"""A deterministic toy language model for exact, fast tests of algorithms.

Tokens are characters (id = code point + 1; id 0 is end-of-sequence). A test
gives a *responder*: a function from the user's prompt text to a distribution
over whole completions, e.g. ``[("1 + 1 = 2\\n\\nThe answer is \\boxed{2}", 0.7),
("... \\boxed{3}", 0.3)]``. The engine turns that into exact next-token
distributions with a trie: P(c | generated g) is the mass of completions that
start with g + c over the mass of those that start with g, and end-of-sequence
has the mass of the completion equal to g. So the entropy of the next token is
non-zero exactly where completions diverge, sampling a whole completion has
exactly its given probability, and continuation requests (prompt + generated
so far, as token IDs) continue from the right place.

It also simulates what tests need from a real engine: seeded sampling,
temperature / top-p, stop strings, top-k logprobs, prefix-cache accounting in
blocks (at most `cache_blocks` of them, least recently used evicted), injected
failures, latency, and a count of requests in flight. `keep_requests=False`
keeps only the count of requests (long runs: memory stays flat).

`vocab_floor` (a log-probability, e.g. -20): the top-k lists are padded to k entries with
tokens of that log-probability (ids -1, -2, ...: the rest of a vocabulary, never sampled), so
DeepConf's token confidence behaves as on a real model (a peaked position is confident). A
request's `confidence_stop` ends a sequence at the first position whose windowed confidence
(over the same padded top-k) falls below the threshold, as the vLLM backend's logits
processor does: that position emits end of sequence, `stop_reason == "confidence"`.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator, Sequence

from ttscale.engine import (
    Completion,
    EngineError,
    GenerationOutput,
    GenerationRequest,
)

EOS = 0
USER_TAG = "<|user|>\n"
ASSISTANT_TAG = "\n<|assistant|>\n"

Responder = Callable[[str], Sequence[tuple[str, float]]]


class CharTokenizer:
    eos_token_id = EOS

    def encode(self, text: str) -> list[int]:
        return [ord(c) + 1 for c in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t - 1) for t in token_ids if t != EOS)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        text = "".join(
            (USER_TAG if m["role"] != "system" else "<|system|>\n") + m["content"] for m in messages
        )
        return self.encode(text + ASSISTANT_TAG)


def _split_prompt(text: str) -> tuple[str, str]:
    """(user prompt text, what the assistant has generated so far)."""
    i = text.rfind(ASSISTANT_TAG)
    if i < 0:
        return text, ""
    head = text[:i]
    j = head.rfind(USER_TAG)
    user = head[j + len(USER_TAG) :] if j >= 0 else head
    return user, text[i + len(ASSISTANT_TAG) :]


class FakeEngine:
    """Engine protocol implementation backed by a responder (see module doc)."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        completions: Iterable[tuple[str, float]] | None = None,
        num_parameters: int = 1_000_000,
        block_size: int = 4,
        cache_blocks: int = 100_000,
        keep_requests: bool = True,
        delay: float = 0.0,
        fail: Callable[[GenerationRequest, str], bool] | None = None,
        seed: int = 0,
        vocab_floor: float | None = None,
    ) -> None:
        self.vocab_floor = vocab_floor
        if responder is None:
            fixed = list(completions or [("\\boxed{0}", 1.0)])
            responder = lambda _prompt: fixed  # noqa: E731
        self.responder = responder
        self.tokenizer = CharTokenizer()
        self.num_parameters = num_parameters
        self.block_size = block_size
        self.delay = delay
        self.fail = fail
        self._rng = random.Random(seed)
        self.cache_blocks = cache_blocks
        self._cached_blocks: OrderedDict[int, None] = OrderedDict()  # block keys, least recently used first
        self.requests: list[GenerationRequest] = []  # every request, when keep_requests (tests read them)
        self.keep_requests = keep_requests
        self.num_requests = 0
        self.in_flight = 0
        self.compute_seconds = 0.0  # time spent producing outputs (the simulated model's own cost)
        self.max_in_flight = 0

    # ---- the model ----------------------------------------------------------
    def next_token_distribution(self, user: str, generated: str) -> dict[int, float]:
        """Exact next-token probabilities after `generated` (see module doc)."""
        return self._distribution(self.responder(user), generated)

    @staticmethod
    def _distribution(options: Sequence[tuple[str, float]], generated: str) -> dict[int, float]:
        mass: dict[int, float] = {}
        total = 0.0
        for text, p in options:
            if p <= 0 or not text.startswith(generated):
                continue
            total += p
            tok = EOS if len(text) == len(generated) else ord(text[len(generated)]) + 1
            mass[tok] = mass.get(tok, 0.0) + p
        if total <= 0:
            return {EOS: 1.0}
        return {t: m / total for t, m in mass.items()}

    # ---- sampling -----------------------------------------------------------
    @staticmethod
    def _sample(dist: dict[int, float], temperature: float, top_p: float, rng: random.Random) -> int:
        items = sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))
        if temperature == 0:
            return items[0][0]
        weights = [p ** (1.0 / temperature) for _, p in items]
        z = sum(weights)
        weights = [w / z for w in weights]
        if top_p < 1.0:
            keep, acc = [], 0.0
            for (t, _), w in zip(items, weights):
                keep.append((t, w))
                acc += w
                if acc >= top_p:
                    break
            items = [(t, 0.0) for t, _ in keep]
            weights = [w for _, w in keep]
        return rng.choices([t for t, _ in items], weights=weights, k=1)[0]

    def _block_keys(self, ids: Sequence[int], start: int = 0, key: int = 0) -> Iterator[int]:
        """One key per whole block of `ids`: a hash chained over the blocks before it (as
        vLLM keys its prefix cache), so a key stands for the whole prefix up to that block.
        `start`/`key`: continue a chain whose blocks up to `start` are already keyed."""
        b = self.block_size
        for end in range(start + b, len(ids) + 1, b):
            key = hash((key, tuple(ids[end - b : end])))
            yield key

    def _cached_prefix(self, ids: Sequence[int]) -> int:
        hit = 0
        for key in self._block_keys(ids):
            if key not in self._cached_blocks:
                break
            self._cached_blocks.move_to_end(key)  # most recently used
            hit += self.block_size
        return hit

    def _remember(self, ids: Sequence[int], start: int = 0, key: int = 0) -> list[int]:
        blocks = self._cached_blocks
        keys = list(self._block_keys(ids, start, key))
        for k in keys:
            blocks[k] = None
            blocks.move_to_end(k)
        while len(blocks) > self.cache_blocks:  # evict the least recently used, like a real cache
            blocks.popitem(last=False)
        return keys

    async def generate(self, request: GenerationRequest) -> GenerationOutput:
        self.num_requests += 1
        if self.keep_requests:
            self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            t0 = time.perf_counter()
            prompt_ids = list(request.prompt_token_ids)
            text = self.tokenizer.decode(prompt_ids)
            if self.fail is not None and self.fail(request, text):
                raise EngineError("injected failure")
            user, generated_before = _split_prompt(text)
            cached = self._cached_prefix(prompt_ids)
            prompt_keys = self._remember(prompt_ids)
            whole = len(prompt_keys) * self.block_size  # completions continue the prompt's chain
            last_key = prompt_keys[-1] if prompt_keys else 0
            options = list(self.responder(user))  # asked once per request (a responder is a pure function)
            completions = []
            for i in range(request.n):
                rng = (
                    random.Random(f"{request.seed}:{i}")
                    if request.seed is not None
                    else random.Random(self._rng.random())
                )
                completions.append(self._complete(request, options, generated_before, rng))
                self._remember(prompt_ids + completions[-1].token_ids, whole, last_key)
            self.compute_seconds += time.perf_counter() - t0
            return GenerationOutput(completions, prompt_tokens=len(prompt_ids), cached_prompt_tokens=cached)
        finally:
            self.in_flight -= 1

    def _complete(
        self, req: GenerationRequest, options: Sequence[tuple[str, float]], before: str, rng: random.Random
    ) -> Completion:
        alive = {text for text, p in options if p > 0 and text.startswith(before)}
        if len(alive) <= 1 and req.confidence_stop is None and self.vocab_floor is None:  # one way to go on: every next token has probability 1
            return self._complete_fixed(req, next(iter(alive))[len(before) :] if alive else "")
        return self._complete_sampled(req, options, before, rng)

    def _top(self, dist: dict[int, float], k: int) -> dict[int, float]:
        """The top-k log-probabilities (padded with `vocab_floor` entries when set)."""
        top = {t: math.log(p) for t, p in sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))[: max(1, k)]}
        if self.vocab_floor is not None:
            for j in range(max(1, k) - len(top)):
                top[-(j + 1)] = float(self.vocab_floor)
        return top

    def _complete_sampled(
        self, req: GenerationRequest, options: Sequence[tuple[str, float]], before: str, rng: random.Random
    ) -> Completion:
        """Token by token: sample from the exact next-token distribution, check stop strings."""
        ids: list[int] = []
        gen = ""
        lps: list[float] = []
        tops: list[dict[int, float]] = []
        finish, stop_reason = "length", None
        cs = req.confidence_stop
        window: list[float] = []
        while len(ids) < req.max_tokens:
            dist = self._distribution(options, before + gen)
            if cs is not None:  # DeepConf online: the window ending here, this position included
                top = self._top(dist, cs.conf_topk)
                window = (window + [-sum(top.values()) / len(top)])[-cs.window_size :]
                if len(window) == cs.window_size and sum(window) / cs.window_size < cs.threshold:
                    finish, stop_reason = "stop", "confidence"
                    break
            tok = self._sample(dist, req.temperature, req.top_p, rng)
            if tok == EOS:  # like the real backends: EOS is neither returned nor scored
                finish = "stop"
                break
            if req.logprobs is not None:
                lps.append(math.log(dist[tok]))
                tops.append(self._top(dist, req.logprobs))
            ids.append(tok)
            gen += chr(tok - 1)
            hit = next((s for s in req.stop if gen.endswith(s)), None)
            if hit is not None:
                finish, stop_reason = "stop", hit
                if not req.include_stop_str_in_output:
                    gen = gen[: -len(hit)]
                break
        return Completion(
            token_ids=ids,
            text=gen,
            finish_reason=finish,
            stop_reason=stop_reason,
            token_logprobs=lps if req.logprobs is not None else None,
            top_logprobs=tops if req.logprobs is not None else None,
        )

    @staticmethod
    def _complete_fixed(req: GenerationRequest, rest: str) -> Completion:
        """The token-by-token loop of `_complete` in one go, when only one completion is
        possible (`rest`, then end of sequence): same tokens, stop, finish reason and
        log-probabilities (all 0), without per-character sampling."""
        limit = max(0, req.max_tokens)
        end, stop_reason = None, None
        for s in req.stop:  # the first position where the text so far ends with a stop string
            j = 1 if s == "" else (rest.find(s) + len(s) if s in rest else None)
            if j is not None and (end is None or j < end):
                end = j
        if end is not None and end <= min(limit, len(rest)):
            gen = rest[:end]
            stop_reason = next(s for s in req.stop if gen.endswith(s))
            finish = "stop"
        elif len(rest) < limit:
            gen, finish = rest, "stop"  # end of sequence
        else:
            gen, finish = rest[:limit], "length"
        ids = [ord(c) + 1 for c in gen]
        if stop_reason is not None and not req.include_stop_str_in_output:
            gen = gen[: -len(stop_reason)]  # as the loop does (an empty stop string empties it)
        lp = req.logprobs is not None
        return Completion(
            token_ids=ids,
            text=gen,
            finish_reason=finish,
            stop_reason=stop_reason,
            token_logprobs=[0.0] * len(ids) if lp else None,
            top_logprobs=[{t: 0.0} for t in ids] if lp else None,
        )

    async def close(self) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def info(self) -> dict[str, Any]:
        return {"engine": "fake", "num_parameters": self.num_parameters}
