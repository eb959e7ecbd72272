"""An engine that generates nothing: it serves a finished run's stored samples, so another
selection (`scripts/replay.py`) runs the strategies' own code over the same pools.

Each problem's prompt (its token IDs under this engine's character tokenizer) is registered
with its record's candidates in sample order; a request for n samples of that prompt gets
the next n stored ones (so adaptive consistency's waves see the pool in the order it was
drawn). A completion carries the stored text, finish reason, `num_tokens` placeholder token
IDs (the ledger charges the tokens the sample cost when it was generated), its mean
log-probability (as one value: the mean is exact), and the stored candidate itself
(`Completion.stored`: its confidence summary is reused). Prompt tokens are the source's mean
per request. Problems with the same prompt (a generated task may repeat a question) are told
apart by the request's seed: the runner seeds each problem's requests from its id
(`derive_seed(derive_seed(seed, problem id), i)`, see `ttscale.context`), so each problem
registers the seeds its first requests carry. What cannot be served is an `EngineError` naming why: a continuation of a
partial solution (step searches need generation), a request for more samples than the pool
holds, a sample longer than the request allows, an online confidence stop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ttscale.backends.fake import CharTokenizer
from ttscale.engine import Completion, EngineError, GenerationOutput, GenerationRequest


class ReplayEngine:
    def __init__(self, num_parameters: int = 0, source: str = "") -> None:
        self.tokenizer = CharTokenizer()
        self.num_parameters = int(num_parameters)
        self.source = source
        self._pools: dict[tuple[int, ...], list[dict[str, Any]]] = {}
        self.requests = 0

    def register(self, prompt_ids: Sequence[int], problem_id: str, candidates: Sequence[Mapping[str, Any]],
                 prompt_tokens: int = 0, cached_prompt_tokens: int = 0, seeds: Sequence[int] = ()) -> None:
        key = tuple(int(t) for t in prompt_ids)
        self._pools.setdefault(key, []).append({"id": problem_id, "cands": list(candidates), "next": 0, "seeds": set(seeds),
                                                "prompt": int(prompt_tokens), "cached": int(cached_prompt_tokens)})

    def _pool(self, request: GenerationRequest) -> dict[str, Any]:
        pools = self._pools.get(tuple(int(t) for t in request.prompt_token_ids))
        if not pools:
            raise EngineError("replay serves whole samples of a problem's prompt only (this strategy continues partial solutions)")
        if len(pools) == 1:
            return pools[0]
        mine = [p for p in pools if request.seed in p["seeds"]]
        if len(mine) != 1:
            raise EngineError(f"replay: problems {[p['id'] for p in pools]} share a prompt and the request's seed names none of them")
        return mine[0]

    async def generate(self, request: GenerationRequest) -> GenerationOutput:
        self.requests += 1
        pool = self._pool(request)
        if request.confidence_stop is not None:
            raise EngineError("replay cannot stop a stored sample online (confidence_stop)")
        start, end = pool["next"], pool["next"] + request.n
        if end > len(pool["cands"]):
            raise EngineError(f"replay: problem {pool['id']!r} has {len(pool['cands'])} stored samples, {end} asked")
        pool["next"] = end
        out = []
        for c in pool["cands"][start:end]:
            n = int(c.get("num_tokens") or 0)
            if n > request.max_tokens:
                raise EngineError(f"replay: a stored sample of {pool['id']!r} has {n} tokens, the request allows {request.max_tokens}")
            lp = c.get("mean_logprob")
            stopped = bool((c.get("extra") or {}).get("confidence_stopped"))
            out.append(Completion(token_ids=[1] * n, text=str(c.get("text") or ""), finish_reason=c.get("finish_reason") or "stop",
                                  stop_reason="confidence" if stopped else None,
                                  token_logprobs=None if lp is None else [float(lp)], stored=dict(c)))
        return GenerationOutput(out, prompt_tokens=pool["prompt"], cached_prompt_tokens=min(pool["cached"], pool["prompt"]))

    async def close(self) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def info(self) -> dict[str, Any]:
        return {"engine": "replay", "source": self.source, "num_parameters": self.num_parameters}
