"""Process reward model served by vLLM's pooling runner (the GPU path).

For Qwen2.5-Math-PRM-7B style PRMs (Zhang et al. 2025, arXiv:2501.07301): the path is
rendered as `[system, user: question, assistant: step_1 <extra_0> ... step_n <extra_0>]`
(`PRMFormat` in `verifiers/prm_hf.py`, shared with the HF scorer), sent to a vLLM engine
built with `runner="pooling"` as a `token_classify` request with token IDs, and the reward
of step i is the softmax probability of the positive class at the i-th separator.

vLLM 0.32 runs `Qwen2ForProcessRewardModel` with STEP pooling (rows only at the
`step_tag_id` tokens, 151651 = `<extra_0>` by default) and a softmax; other PRMs may pool
ALL tokens. The request asks for raw logits (`use_activation=False`) and the parser
accepts either shape (one row per token: the separator rows are picked; one row per
separator: used as is), then applies the softmax itself, so the result does not depend on
the pooler's defaults. With STEP pooling, the step tag is set to this tokenizer's
separator id (`pooler_config.step_tag_id`), so any one-token separator works.

The PRM has its own engine, started lazily on first use on a dedicated event-loop thread
(so it can be awaited from any loop, like the policy engine), and every request of every
problem in flight is batched by it. A GPU user only changes config:

    python scripts/run.py strategy=a_star verifier=prm_vllm verifier.model=Qwen/Qwen2.5-Math-PRM-7B

One verifier call per path forward pass, charged with its prompt tokens, the cached ones
as vLLM reports them, and `parameters`. Scores go through the per-problem prefix cache.
With `prefix_reuse` (the default) the engine runs ALL pooling with prefix caching and a
path costs only its new tokens (`verifiers/prm_reuse.py`, which says what vLLM 0.32 can
and cannot do); `prefix_reuse: false` is the older STEP pooling over the whole path, whose
computed tokens grow with the square of the number of steps.

Tests run the input building, positions and parsing on stand-ins (a tiny tokenizer and a
stand-in pooler); loading a real PRM needs its weights (a GPU machine with the model).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any, Sequence

from ttscale.context import SolveContext
from ttscale.segment import STEP_DELIMITER
from ttscale.types import Problem
from ttscale.verifiers.prefix_cache import CachedProcessVerifier, cache_for
from ttscale.verifiers.prm_hf import DEFAULT_SEPARATOR, DEFAULT_SYSTEM, PRMFormat
from ttscale.verifiers.prm_reuse import resolve, tail_rewards, up_to_last_separator


class VLLMPoolingEngine:
    """A vLLM `AsyncLLM` with `runner="pooling"` on its own event-loop thread."""

    def __init__(self, model: str, step_tag_id: int | None = None, prefix_reuse: bool = False,
                 **engine_kwargs: Any) -> None:
        """`prefix_reuse`: ALL pooling with prefix caching (rows for the computed tail only,
        `verifiers/prm_reuse.py`); otherwise STEP pooling at `step_tag_id` (whole paths)."""
        self.model = model
        self.step_tag_id = step_tag_id
        self.prefix_reuse = prefix_reuse
        self.engine_kwargs = engine_kwargs
        self._llm: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._failed: BaseException | None = None

    def start(self) -> None:
        with self._lock:
            if self._llm is not None:
                return
            if self._failed is not None:  # do not rebuild a failed engine for every request
                raise RuntimeError(f"the PRM engine for {self.model!r} failed to start") from self._failed
            try:
                self._build()
            except Exception as e:
                self._failed = e
                raise

    def _build(self) -> None:
        from vllm.config import PoolerConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from ttscale.backends.reaper import arm

        arm()  # the PRM's EngineCore and workers die with this process (backends/reaper.py)
        kwargs = dict(self.engine_kwargs)
        kwargs.setdefault("runner", "pooling")
        if self.prefix_reuse:
            kwargs.setdefault("pooler_config", PoolerConfig(tok_pooling_type="ALL"))
            kwargs.setdefault("enable_prefix_caching", True)
        elif self.step_tag_id is not None and "pooler_config" not in kwargs:
            kwargs["pooler_config"] = PoolerConfig(step_tag_id=self.step_tag_id)
        args = AsyncEngineArgs(model=self.model, **kwargs)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="prm-vllm-loop", daemon=True)
        thread.start()

        async def build() -> Any:
            return AsyncLLM.from_engine_args(args)

        try:
            self._llm = asyncio.run_coroutine_threadsafe(build(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            raise
        self._loop, self._thread = loop, thread

    async def encode(self, token_ids: Sequence[int], read_cache: bool = False) -> tuple[Any, int]:
        """(per-row raw outputs as a numpy array, cached prompt tokens) of one input;
        `read_cache`: let the prefix cache serve it (rows for the computed tail only)."""
        await asyncio.to_thread(self.start)
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(self._encode(list(token_ids), read_cache), self._loop)
        return await asyncio.wrap_future(fut)

    async def _encode(self, token_ids: list[int], read_cache: bool) -> tuple[Any, int]:
        from vllm import PoolingParams

        params = PoolingParams(task="token_classify", use_activation=False,
                               skip_reading_prefix_cache=not read_cache)
        final = None
        async for out in self._llm.encode({"prompt_token_ids": token_ids}, params, f"prm-{next(self._ids)}"):
            final = out
        assert final is not None
        return final.outputs.data.float().cpu().numpy(), int(final.num_cached_tokens or 0)

    def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None


class VLLMPRM(CachedProcessVerifier):
    """A PRM on vLLM's pooling runner (see the module doc)."""

    name = "prm_vllm"
    granularity = "sequence"
    score_range = (0.0, 1.0)  # P(positive) at each step separator

    def __init__(
        self,
        model: str = "Qwen/Qwen2.5-Math-PRM-7B",
        step_separator: str = DEFAULT_SEPARATOR,
        system: str | None = DEFAULT_SYSTEM,
        positive_index: int = 1,
        parameters: float | None = None,
        trust_remote_code: bool = True,
        engine_kwargs: dict[str, Any] | None = None,
        aggregation: str = "min",
        use_cache: bool = True,
        step_delimiter: str = STEP_DELIMITER,
        engine: Any = None,
        tokenizer: Any = None,
        prefix_reuse: bool = True,
    ) -> None:
        """`engine` / `tokenizer` replace the vLLM engine and the HF tokenizer (tests, or a
        shared pooling engine): `engine.encode(token_ids, read_cache=...)` returns (rows,
        cached tokens). `prefix_reuse`: see the module doc (needs `use_cache`)."""
        super().__init__(aggregation=aggregation, use_cache=use_cache, step_delimiter=step_delimiter)
        self.prefix_reuse = bool(prefix_reuse and use_cache)
        self.model_name, self.step_separator, self.system = model, step_separator, system
        self.positive_index = positive_index
        self.parameters = float(parameters or 0.0)
        self.trust_remote_code = trust_remote_code
        self.engine_kwargs = dict(engine_kwargs or {})
        self._engine = engine
        self._tokenizer = tokenizer
        self._format: PRMFormat | None = None
        self._lock = threading.Lock()

    @property
    def format(self) -> PRMFormat:
        with self._lock:
            if self._format is None:
                tok = self._tokenizer
                if tok is None:
                    from transformers import AutoTokenizer

                    tok = AutoTokenizer.from_pretrained(self.model_name, trust_remote_code=self.trust_remote_code)
                self._format = PRMFormat(tok, self.step_separator, self.system)
            return self._format

    @property
    def engine(self) -> Any:
        if self._engine is None:
            kwargs = {"trust_remote_code": self.trust_remote_code, **self.engine_kwargs}
            self._engine = VLLMPoolingEngine(self.model_name, step_tag_id=self.format.sep_id,
                                             prefix_reuse=self.prefix_reuse, **kwargs)
        return self._engine

    async def _score_paths(
        self, problem: Problem, paths: Sequence[Sequence[str]], ctx: SolveContext
    ) -> list[list[float]]:
        if self.prefix_reuse:
            return await self._score_paths_reusing(problem, [tuple(p) for p in paths], ctx)
        fmt = await asyncio.to_thread(lambda: self.format)
        inputs = [fmt.build(problem.question, p) for p in paths]
        engine = self.engine
        outs = await asyncio.gather(*(engine.encode(x) for x in inputs))
        scores = [fmt.rewards(rows, x, self.positive_index) for (rows, _), x in zip(outs, inputs)]
        ctx.ledger.charge_verifier(
            calls=len(paths),
            tokens=sum(len(x) for x in inputs),
            cached_tokens=sum(c for _, c in outs),
            parameters=self.parameters,
        )
        return scores

    async def _score_paths_reusing(
        self, problem: Problem, paths: list[tuple[str, ...]], ctx: SolveContext
    ) -> list[list[float]]:
        """Each path computes only its uncached tail; earlier steps' scores come from the
        score cache or a path of the batch, and a path still missing one is computed whole
        (`verifiers/prm_reuse.py`)."""
        fmt = await asyncio.to_thread(lambda: self.format)
        engine = self.engine
        inputs = [up_to_last_separator(fmt, fmt.build(problem.question, p)) for p in paths]
        outs = list(await asyncio.gather(*(engine.encode(x, read_cache=True) for x in inputs)))
        cache = cache_for(ctx)
        known = {p[: j + 1]: v for p in paths for j in range(len(p))
                 if (v := cache.get(self._owner, problem.id, p[: j + 1])) is not None}
        got = [tail_rewards(fmt, rows, x, self.positive_index) for (rows, _), x in zip(outs, inputs)]
        scores, _ = resolve(paths, got, known)
        again = [i for i, row in enumerate(scores) if any(v is None for v in row)]
        if again:
            more = await asyncio.gather(*(engine.encode(inputs[i], read_cache=False) for i in again))
            for i, (rows, cached) in zip(again, more):
                scores[i] = fmt.rewards(rows, inputs[i], self.positive_index)
                outs.append((rows, cached))
        ctx.ledger.charge_verifier(
            calls=len(paths) + len(again),
            tokens=sum(len(x) for x in inputs) + sum(len(inputs[i]) for i in again),
            cached_tokens=sum(c for _, c in outs),
            parameters=self.parameters,
        )
        return scores  # type: ignore[return-value]

    def shutdown(self) -> None:
        stop = getattr(self._engine, "shutdown", None)
        if stop is not None:
            stop()
