"""Engine over any OpenAI-compatible completions server, e.g. `vllm serve`.

Prompts go out as token IDs (`/v1/completions` accepts a list of ints), built with
the local Hugging Face tokenizer of the same model, so prompts are identical to the
in-process engine's. With `vllm_extensions` (the default) the request asks vLLM for
the generated token IDs (`return_token_ids`) and for logprob tokens as IDs
(`return_tokens_as_token_ids`); the server's `usage.prompt_tokens_details.cached_tokens`
gives the prefix-cache hits (`vllm serve --enable-prompt-tokens-details`, which
scripts/vllm_serve.py turns on), so the ledger, FLOPs and prefix-share figures are the
in-process engine's. A server that does not report them (no `prompt_tokens_details`, or no
`cached_tokens` in it) leaves them unknown: the output's `cached_prompt_tokens` is None, the
ledger counts those tokens as computed and the record says None, not 0 (`ttscale.unreported`);
a warning says so once.

A request for n samples is sent as n requests of one sample each (sample i seeded
with seed + i, as vLLM seeds its own n children) so every sample's cache hits are
seen, exactly as in `backends.vllm_engine`; `split_n=False` sends one request with n.

Connection errors, timeouts, 429 and 5xx answers are retried with exponential
backoff (`max_retries`); then, or on any other error, the request raises
`EngineError` with the server's message.

    python scripts/vllm_serve.py embedded:smollm2-135m-instruct --port 8000 &
    python scripts/run.py backend=openai backend.base_url=http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any, Mapping

from ttscale.backends.common import HFTokenizer, build_completion, count_parameters, eos_token_ids, gather_all
from ttscale.backends.embedded import resolve_model
from ttscale.engine import Completion, EngineError, GenerationOutput, GenerationRequest

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAIServerEngine:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "embedded:smollm2-135m-instruct",
        tokenizer: str | None = None,
        served_model_name: str | None = None,
        api_key: str | None = None,
        parameters: int | None = None,
        timeout: float = 600.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_connections: int = 256,
        vllm_extensions: bool = True,
        split_n: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model_name = str(model)
        # `vllm serve <path>` names the model by its path; scripts/vllm_serve.py serves
        # `embedded:<name>` under that name.
        self.served_model_name = served_model_name or self.model_name
        self.model_path = resolve_model(tokenizer or self.model_name)
        self.tokenizer = HFTokenizer(self.model_path, trust_remote_code=trust_remote_code)
        self._eos_ids = eos_token_ids(self.model_path, self.tokenizer)
        self.num_parameters = int(
            parameters if parameters is not None else count_parameters(self.model_path, trust_remote_code=trust_remote_code)
        )
        self.max_retries = max_retries
        self.backoff = backoff
        self.vllm_extensions = vllm_extensions
        self.split_n = split_n
        self.extra_body = dict(extra_body or {})
        self._warned_cache = False
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY")
        self._headers = {"Authorization": f"Bearer {key}"}
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 30.0))
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        # httpx clients belong to one event loop: one client per loop that uses us.
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}

    # ---- http ---------------------------------------------------------------
    def _client(self) -> Any:
        import httpx

        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is None or entry[0] is not loop:
            for k, (lp, _) in list(self._clients.items()):
                if lp.is_closed():
                    del self._clients[k]
            client = httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers, timeout=self._timeout, limits=self._limits
            )
            self._clients[id(loop)] = entry = (loop, client)
        return entry[1]

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        client = self._client()
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1) * (1 + 0.25 * random.random()))
            try:
                resp = await client.post(path, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:500]}"
                continue
            if resp.status_code >= 400:
                raise EngineError(f"{self.base_url}{path}: HTTP {resp.status_code}: {resp.text[:1000]}")
            try:
                return resp.json()
            except ValueError as e:
                raise EngineError(f"{self.base_url}{path}: answer is not JSON: {resp.text[:500]}") from e
        raise EngineError(f"{self.base_url}{path}: failed after {self.max_retries + 1} attempts: {last}")

    # ---- generation ---------------------------------------------------------
    def _body(self, req: GenerationRequest, n: int, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.served_model_name,
            "prompt": [int(t) for t in req.prompt_token_ids],
            "n": n,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "max_tokens": req.max_tokens,
        }
        if req.stop:
            body["stop"] = list(req.stop)
        if seed is not None:
            body["seed"] = seed
        if req.logprobs is not None:
            body["logprobs"] = max(1, req.logprobs)
        if self.vllm_extensions:
            body.update(
                include_stop_str_in_output=req.include_stop_str_in_output,
                return_token_ids=True,
                return_tokens_as_token_ids=True,
                # the model's generation_config would otherwise fill in what we leave out
                top_k=0,
                min_p=0.0,
                repetition_penalty=1.0,
            )
        body.update(self.extra_body)
        return body

    async def generate(self, request: GenerationRequest) -> GenerationOutput:
        if request.n < 1:
            raise EngineError(f"n must be >= 1, got {request.n}")
        if request.confidence_stop is not None:  # the server would need our logits processor
            raise EngineError("confidence_stop (online DeepConf) runs on the in-process engine: backend=vllm or vllm_gpu")
        if self.split_n and request.n > 1:
            seeds = [None if request.seed is None else request.seed + i for i in range(request.n)]
            bodies = [self._body(request, 1, s) for s in seeds]
        else:
            bodies = [self._body(request, request.n, request.seed)]
        answers = await gather_all(self._post("/completions", b) for b in bodies)
        completions: list[Completion] = []
        cached: list[int | None] = []
        for ans in answers:
            choices = sorted(ans.get("choices") or [], key=lambda c: c.get("index", 0))
            if not choices:
                raise EngineError(f"{self.base_url}/completions returned no choices: {str(ans)[:500]}")
            completions.extend(self._completion(c, request) for c in choices)
            cached.append(self._cached_tokens(ans))
        known = [c for c in cached if c is not None]
        return GenerationOutput(
            completions, prompt_tokens=len(request.prompt_token_ids),
            cached_prompt_tokens=min(known) if len(known) == len(cached) else None,
        )

    def _cached_tokens(self, answer: Mapping[str, Any]) -> int | None:
        """`usage.prompt_tokens_details.cached_tokens`, None when the server does not say."""
        details = (answer.get("usage") or {}).get("prompt_tokens_details") or {}
        value = details.get("cached_tokens") if isinstance(details, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int):
            if not self._warned_cache:
                self._warned_cache = True
                log.warning("%s does not report prompt-token details: cached tokens are recorded as unknown "
                            "(start vllm serve with --enable-prompt-tokens-details)", self.base_url)
            return None
        return value

    def _token_id(self, token: str) -> int:
        if token.startswith("token_id:"):
            return int(token[len("token_id:") :])
        ids = self.tokenizer.encode(token)
        return ids[0] if len(ids) == 1 else -1

    def _completion(self, choice: Mapping[str, Any], req: GenerationRequest) -> Completion:
        text = choice.get("text") or ""
        token_ids = choice.get("token_ids")
        lp = choice.get("logprobs") or None
        if token_ids is None:
            if lp and lp.get("tokens"):
                token_ids = [self._token_id(t) for t in lp["tokens"]]
            else:  # a server without vLLM's extensions: the best we can do
                token_ids = self.tokenizer.encode(text)
        positions = sampled = None
        if req.logprobs is not None and lp:
            positions = [
                {self._token_id(t): float(v) for t, v in (top or {}).items()} for top in lp.get("top_logprobs") or []
            ]
            sampled = lp.get("token_logprobs")
        return build_completion(
            token_ids, text, choice.get("finish_reason"), choice.get("stop_reason"), self._eos_ids,
            positions, sampled, k=max(1, req.logprobs or 0),
        )

    # ---- lifecycle ----------------------------------------------------------
    async def close(self) -> None:
        """Close the HTTP client of the running loop (others close with their loop)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.pop(id(loop), None)
        if entry is not None:
            await entry[1].aclose()

    def shutdown(self) -> None:
        self._clients.clear()

    def info(self) -> dict[str, Any]:
        return {
            "engine": "openai",
            "base_url": self.base_url,
            "model": self.model_name,
            "served_model_name": self.served_model_name,
            "tokenizer": self.model_path,
            "num_parameters": self.num_parameters,
            "vllm_extensions": self.vllm_extensions,
            "split_n": self.split_n,
        }

    async def server_info(self) -> dict[str, Any]:
        """What the server says it serves (`GET /models`)."""
        resp = await self._client().get("/models")
        resp.raise_for_status()
        return resp.json()
