"""The in-process vLLM engine: `vllm.v1.engine.async_llm.AsyncLLM`, GPU or CPU build.

One engine serves every problem in flight: strategies `await engine.generate(req)`
for one problem at a time, and vLLM's scheduler batches all pending requests.

The AsyncLLM lives on an event loop of its own, in a background thread. `generate`
hands each request to that loop (`asyncio.run_coroutine_threadsafe`) and awaits the
answer on the caller's loop (`asyncio.wrap_future`), so the engine can be used from
any event loop: the runner's, or one `asyncio.run` after another in tests. A caller
that is cancelled cancels its request, and vLLM aborts it.

Requests go in as prompt token IDs (`TokensPrompt`), so a continuation
(`prompt + generated so far`) is served from the prefix cache, whose hits come back
as `cached_prompt_tokens` (`RequestOutput.num_cached_tokens`).

The same class runs on a GPU (conf/backend/vllm_gpu.yaml) and on vLLM's CPU build
(conf/backend/vllm.yaml). On the CPU build `gpu_memory_utilization` is the fraction
of *CPU* memory vLLM reserves (weights + KV cache), the attention backend needs a
`block_size` that is a multiple of 32, and prefix caching hits whole blocks only.
vLLM starts worker processes with `spawn`: a script that builds an engine needs an
``if __name__ == "__main__":`` guard. Those processes die with the process that built
the engine, however it dies, SIGKILL included (`ttscale.backends.reaper.arm`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
import uuid
from typing import Any

from ttscale.backends.common import HFTokenizer, build_completion, count_parameters, eos_token_ids, gather_all
from ttscale.backends.embedded import resolve_model
from ttscale.backends.reaper import arm as arm_reaper
from ttscale.confidence import token_confidence
from ttscale.engine import Completion, EngineError, GenerationOutput, GenerationRequest

CONFIDENCE_STOP_FQCN = "ttscale.backends.confidence_stop:ConfidenceStopProcessor"
CONFIDENCE_STOP_ARG = "ttscale_confidence_stop"

log = logging.getLogger(__name__)

# Defaults for vLLM's CPU build, applied only where the user set nothing
# (see `cpu_env_defaults`). vLLM's own CPU knobs are left to vLLM and the user:
# - VLLM_CPU_OMP_THREADS_BIND=auto (vLLM's default) binds the worker's OpenMP threads
#   to all cores but one, which it leaves to the scheduler process. On a 2-core box
#   that is one compute thread; binding both cores ("0-1") was ~10x slower here
#   (the scheduler and the spinning OpenMP threads fight over the cores).
# - VLLM_CPU_KVCACHE_SPACE (GiB), when set, replaces gpu_memory_utilization's sizing
#   of the KV cache (as `kv_cache_memory_bytes` does).
# - VLLM_CPU_NUM_OF_RESERVED_CPU: cores kept away from the worker (auto: 1).
CPU_ENV_DEFAULTS: dict[str, str] = {
    "TOKENIZERS_PARALLELISM": "false",
}


def is_cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def cpu_env_defaults() -> dict[str, str]:
    """Set vLLM CPU-build environment defaults that the user has not set; returns
    what was set. Workers inherit the environment, so this runs before the engine
    starts."""
    applied = {}
    for k, v in CPU_ENV_DEFAULTS.items():
        if k not in os.environ:
            os.environ[k] = v
            applied[k] = v
    return applied


class _LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro):  # -> concurrent.futures.Future
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn, *args, timeout: float | None = None):
        """Run a plain function on the loop thread and wait for its result."""

        async def _call():
            return fn(*args)

        return self.submit(_call()).result(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def stop(self, timeout: float = 30.0) -> None:
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


class VLLMEngine:
    """Engine protocol over vLLM's in-process async engine (see module doc)."""

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        enforce_eager: bool = False,
        block_size: int | None = None,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        max_num_seqs: int | None = None,
        tensor_parallel_size: int = 1,
        trust_remote_code: bool = False,
        parameters: int | None = None,
        max_logprobs: int = 20,
        kv_cache_memory_bytes: int | None = None,
        enable_chunked_prefill: bool | None = None,
        max_num_batched_tokens: int | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        confidence_stop: bool = True,
    ) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs

        self.model_name = str(model)
        self.model_path = resolve_model(self.model_name)
        self.seed = seed
        self._ids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]
        self._llm: Any = None
        self._closed = False

        arm_reaper()  # EngineCore, its workers: killed when this process dies (see backends/reaper.py)
        on_cpu = is_cpu_platform()
        self.env_defaults = cpu_env_defaults() if on_cpu else {}
        if enable_chunked_prefill is None and on_cpu:
            # vLLM 0.32's CPU build crashes the engine (`RuntimeError: CPU Generator does
            # not use offset`) when a *seeded* request's prompt is split over two steps
            # by chunked prefill, which happens as soon as the prompts in flight exceed
            # max_num_batched_tokens. Without chunking a prompt is scheduled whole.
            enable_chunked_prefill = False
        self.engine_args = AsyncEngineArgs(
            model=self.model_path,
            tokenizer=self.model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=kv_cache_memory_bytes,
            enforce_eager=enforce_eager,
            block_size=block_size,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            max_num_seqs=max_num_seqs,
            tensor_parallel_size=tensor_parallel_size,
            trust_remote_code=trust_remote_code,
            max_logprobs=max_logprobs,
            enable_chunked_prefill=enable_chunked_prefill,
            max_num_batched_tokens=max_num_batched_tokens,
            disable_log_stats=True,
            # online DeepConf (GenerationRequest.confidence_stop): backends/confidence_stop.py
            **({"logits_processors": [CONFIDENCE_STOP_FQCN]} if confidence_stop else {}),
            **(engine_kwargs or {}),
        )
        self.confidence_stop = confidence_stop
        self.tokenizer = HFTokenizer(self.model_path, trust_remote_code=trust_remote_code)
        self.num_parameters = int(
            parameters if parameters is not None else count_parameters(self.model_path, trust_remote_code=trust_remote_code)
        )

        self._eos_token_ids = eos_token_ids(self.model_path, self.tokenizer)
        self._thread = _LoopThread(f"vllm-engine-{self._prefix}")
        t0 = time.perf_counter()
        try:
            self._llm = self._thread.call(self._build)
        except Exception as e:
            self._thread.stop()
            raise EngineError(f"vLLM engine for {self.model_name!r} failed to start: {e}") from e
        self.startup_seconds = time.perf_counter() - t0
        log.info("vLLM engine for %s started in %.1f s", self.model_name, self.startup_seconds)

    def _build(self) -> Any:
        """Runs on the engine's loop, so AsyncLLM's output handler lives there."""
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(self.engine_args)

    # ---- generation ---------------------------------------------------------
    def _sampling_params(self, req: GenerationRequest, seed: int | None) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        extra = None
        if req.confidence_stop is not None:
            if not self.confidence_stop:
                raise EngineError("confidence_stop needs the engine started with backend.confidence_stop=true")
            cs = req.confidence_stop
            eos = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else min(self._eos_token_ids)
            extra = {CONFIDENCE_STOP_ARG: {"threshold": cs.threshold, "window_size": cs.window_size,
                                           "conf_topk": cs.conf_topk, "eos_token_id": int(eos)}}
        return SamplingParams(
            extra_args=extra,
            n=1,
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=req.max_tokens,
            stop=list(req.stop) or None,
            include_stop_str_in_output=req.include_stop_str_in_output,
            seed=seed,
            # top-1 at least, so the top list is never empty (as the fake engine does)
            logprobs=None if req.logprobs is None else max(1, req.logprobs),
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def generate(self, request: GenerationRequest) -> GenerationOutput:
        if self._closed or not self._thread.alive:
            raise EngineError("the vLLM engine is shut down")
        fut = self._thread.submit(self._generate(request))
        return await asyncio.wrap_future(fut)

    async def _generate(self, req: GenerationRequest) -> GenerationOutput:
        """n samples as n vLLM requests, exactly as vLLM splits `n` itself (child i
        seeded with seed + i), so each sample's prefix-cache hits are seen: the
        output's `cached_prompt_tokens` is the least of them, i.e. what was cached
        before the request (vLLM's own n>1 output reports whichever child finished
        last, which may have hit blocks its siblings had just computed)."""
        prompt_ids = [int(t) for t in req.prompt_token_ids]
        if req.n < 1:
            raise EngineError(f"n must be >= 1, got {req.n}")
        outs = await gather_all(self._sample(req, prompt_ids, i) for i in range(req.n))
        eos = self._eos_token_ids
        completions = [_completion(c, req.logprobs, eos, req.confidence_stop) for c, _ in outs]
        return GenerationOutput(completions, prompt_tokens=len(prompt_ids), cached_prompt_tokens=min(n for _, n in outs))

    async def _sample(self, req: GenerationRequest, prompt_ids: list[int], index: int) -> tuple[Any, int]:
        from vllm.inputs import TokensPrompt

        request_id = f"ttscale-{self._prefix}-{next(self._ids)}"
        seed = None if req.seed is None else req.seed + index
        final = None
        try:
            params = self._sampling_params(req, seed)
            async for out in self._llm.generate(TokensPrompt(prompt_token_ids=prompt_ids), params, request_id):
                final = out
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every engine failure reaches callers as EngineError
            raise EngineError(f"vLLM request {request_id} failed: {type(e).__name__}: {e}") from e
        if final is None or not final.outputs:
            raise EngineError(f"vLLM request {request_id} returned no output")
        return final.outputs[0], int(final.num_cached_tokens or 0)

    # ---- lifecycle ----------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the engine (its worker processes) and its loop thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        llm, self._llm = self._llm, None
        if llm is not None and self._thread.alive:
            try:
                self._thread.call(llm.shutdown, timeout=120)
            except Exception as e:  # noqa: BLE001
                log.warning("vLLM shutdown: %s", e)
        self._thread.stop()

    async def close(self) -> None:
        await asyncio.to_thread(self.shutdown)

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def info(self) -> dict[str, Any]:
        import vllm
        from vllm.platforms import current_platform

        out: dict[str, Any] = {
            "engine": "vllm",
            "model": self.model_name,
            "model_path": self.model_path,
            "vllm": vllm.__version__,
            "device": current_platform.device_type,
            "num_parameters": self.num_parameters,
            "seed": self.seed,
            "enforce_eager": self.engine_args.enforce_eager,
            "gpu_memory_utilization": self.engine_args.gpu_memory_utilization,
            "tensor_parallel_size": self.engine_args.tensor_parallel_size,
            "startup_seconds": round(self.startup_seconds, 2),
        }
        llm = self._llm
        if llm is not None:  # the settings vLLM resolved (platform defaults applied)
            cfg = llm.vllm_config
            out.update(
                dtype=str(cfg.model_config.dtype).removeprefix("torch."),
                max_model_len=cfg.model_config.max_model_len,
                block_size=cfg.cache_config.block_size,
                enable_prefix_caching=cfg.cache_config.enable_prefix_caching,
                max_num_seqs=cfg.scheduler_config.max_num_seqs,
                max_num_batched_tokens=cfg.scheduler_config.max_num_batched_tokens,
                enable_chunked_prefill=cfg.scheduler_config.enable_chunked_prefill,
            )
        else:
            out.update(dtype=self.engine_args.dtype, block_size=self.engine_args.block_size,
                       max_num_seqs=self.engine_args.max_num_seqs)
        if self.env_defaults:
            out["env_defaults"] = dict(self.env_defaults)
        return out


def _completion(c: Any, logprobs: int | None, eos_ids: frozenset[int], cs: Any = None) -> Completion:
    """vLLM `CompletionOutput` -> `Completion` (see `backends.common.build_completion`). A
    sequence the confidence processor ended is told by its own log-probabilities: it ends on
    EOS and the window ending at that position (the EOS position's top-k included) is below
    the threshold; it gets `stop_reason == "confidence"`."""
    positions = None
    if logprobs is not None and c.logprobs is not None:
        positions = [{int(t): float(v.logprob) for t, v in (pos or {}).items()} for pos in c.logprobs]
    out = build_completion(
        c.token_ids, c.text, c.finish_reason, c.stop_reason, eos_ids, positions, k=max(1, logprobs or 0)
    )
    if cs is not None and positions and c.finish_reason == "stop" and c.stop_reason is None and len(out.token_ids) < len(c.token_ids):
        tops = [dict(sorted(p.items(), key=lambda kv: -kv[1])[: cs.conf_topk]) for p in positions]
        tol = 1e-3 * max(1.0, abs(cs.threshold))  # the processor's float32 vs the returned log-probabilities
        conf = token_confidence(tops)
        if conf.size >= cs.window_size and conf[-cs.window_size :].mean() < cs.threshold + tol:
            out.stop_reason = "confidence"
    return out


def test_engine(**overrides: Any) -> VLLMEngine:
    """The embedded model with settings for tests on a small CPU box.

    enforce_eager: starts in ~30 s instead of ~160 s (no torch.compile).
    block_size=32: the smallest the CPU attention backend takes; prefix caching hits
    whole blocks only, so small blocks make short shared prefixes count.
    gpu_memory_utilization=0.2: 20% of CPU memory for weights + KV cache, leaving room
    for a second engine process (the `vllm serve` test) on a 24 GiB machine."""
    kwargs: dict[str, Any] = dict(
        model="embedded:smollm2-135m-instruct",
        dtype="bfloat16",
        max_model_len=2048,
        gpu_memory_utilization=0.2,
        enforce_eager=True,
        block_size=32,
        enable_prefix_caching=True,
        seed=0,
        max_num_seqs=128,
        parameters=None,
    )
    kwargs.update(overrides)
    return VLLMEngine(**kwargs)


test_engine.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
