"""The real-engine parts of the benchmark: one vLLM engine, one process, every part.

The engine is the one `ttscale.runner.run` builds for the config (`ttscale.runner.engines.get_engine`,
conf/backend/vllm.yaml with the embedded model) and keeps for the process; the raw
baselines talk to the *same* `AsyncLLM` instance on its own event loop, so both sides
have the same engine settings, weights, KV cache and threads. The prefix cache is
emptied before every timed measurement, so no side is served the other's prompts.

overhead: best-of-N (n samples, arithmetic checker as the verifier) over P problems
    through `runner.run` (everything a run does: config checks, task generation, the
    strategy, ledger, verifier, grading, records, metrics), against one raw batch: the same
    P prompts (token IDs) with the same `SamplingParams` (n, temperature, top_p, max_tokens,
    the seed the framework gives each problem), all submitted at once, awaited together.
    vLLM seeds child i of a request with seed + i, as the framework does, so both sides
    sample the same tokens (checked: `identical_samples`) and do the same engine work.
    Measured in alternating pairs (raw, framework, raw, framework, ...); the ratio is the
    median of the pairs' ratios.
concurrency: particle filtering and A* over P problems with all of them in flight
    (run.concurrency = P), one at a time (run.concurrency = 1; optionally over the first k
    of the same problems: a sequential rate does not depend on how many problems follow),
    and raw batched generation of at least the same number of tokens: P x N sequences from
    the same prompts, `ignore_eos` with min_tokens = max_tokens so every sequence generates
    exactly its share (a uniform batch: the engine's best case); also the same P x N
    sequences sampled to their natural end (plain batched sampling, no search).
prefix: prompt tokens served from the prefix cache over all prompt tokens, as vLLM reports
    them (`num_cached_tokens`), in the step-level runs of `concurrency`.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ttscale.bench.report import Row, compose, judged, load
from ttscale.context import derive_seed
from ttscale.results import iter_records

BASE = ["logger=none", "run.progress=false", "run.summary=false", "backend=vllm", "model=smollm2"]


def config(overrides: list[str], root: str):
    return compose([*BASE, f"run.root={root}", *overrides])


@dataclass(frozen=True)
class RawJob:
    """One raw request: a prompt's token IDs and the sampling parameters."""

    prompt_ids: list[int]
    n: int
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    exact: bool = False  # generate exactly max_tokens (ignore end of sequence)


class Bench:
    """One engine (the runner's, or the one given) and raw access to it.

    On vLLM the raw side is the engine's own `AsyncLLM`, reached on its loop thread; on
    any other engine (the fake one, in tests) it is `engine.generate` without the framework."""

    def __init__(self, backend_overrides: list[str] | None = None, engine: Any = None) -> None:
        from ttscale.runner.engines import get_engine

        self.backend_overrides = list(backend_overrides or [])
        self.given = engine is not None
        t0 = time.perf_counter()
        if engine is None:
            cfg = config(self.backend_overrides, tempfile.mkdtemp(prefix="ttscale-bench-"))
            engine = get_engine(cfg.backend)
        self.engine = engine
        self.startup_s = time.perf_counter() - t0
        self.llm = getattr(engine, "_llm", None)  # vLLM's AsyncLLM when the engine is VLLMEngine
        self.info = engine.info()

    # ---- raw generation ------------------------------------------------------
    def reset_cache(self) -> None:
        if self.llm is not None:
            self.engine._thread.submit(self.llm.reset_prefix_cache()).result()

    def raw(self, jobs: list[RawJob]) -> tuple[float, list[list[tuple[str, int]]]]:
        """Submit every job at once; wall time from submission to the last output, and per job
        its completions as (text, generated tokens)."""
        if self.llm is None:
            return self._raw_engine(jobs)
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        tag = uuid.uuid4().hex[:8]
        params = [SamplingParams(n=j.n, temperature=j.temperature, top_p=j.top_p, max_tokens=j.max_tokens, seed=j.seed,
                                 min_tokens=j.max_tokens if j.exact else 0, ignore_eos=j.exact,
                                 output_kind=RequestOutputKind.FINAL_ONLY) for j in jobs]

        async def one(i: int, ids: list[int], sp: Any) -> Any:
            final = None
            async for out in self.llm.generate(TokensPrompt(prompt_token_ids=ids), sp, f"bench-{tag}-{i}"):
                final = out
            return final

        async def all_of_them() -> list[Any]:
            return await asyncio.gather(*(one(i, j.prompt_ids, sp) for i, (j, sp) in enumerate(zip(jobs, params))))

        t0 = time.perf_counter()
        outs = self.engine._thread.submit(all_of_them()).result()
        wall = time.perf_counter() - t0
        return wall, [[(c.text, len(c.token_ids)) for c in o.outputs] for o in outs]

    def _raw_engine(self, jobs: list[RawJob]) -> tuple[float, list[list[tuple[str, int]]]]:
        from ttscale.engine import GenerationRequest

        async def all_of_them() -> list[Any]:
            return await asyncio.gather(*(self.engine.generate(GenerationRequest(
                prompt_token_ids=j.prompt_ids, n=j.n, temperature=j.temperature, top_p=j.top_p,
                max_tokens=j.max_tokens, seed=j.seed)) for j in jobs))

        t0 = time.perf_counter()
        outs = asyncio.run(all_of_them())
        wall = time.perf_counter() - t0
        return wall, [[(c.text, len(c.token_ids)) for c in o.completions] for o in outs]

    # ---- the framework -------------------------------------------------------
    def run(self, overrides: list[str], engine: Any = None) -> tuple[float, dict[str, Any], list[dict[str, Any]]]:
        """`ttscale.runner.run` in a fresh run directory (no resume); wall time, metrics, records.
        `engine`: a wrapper of this bench's engine to run on (default: the engine itself)."""
        from ttscale.runner import run
        from ttscale.runner.engines import get_engine
        from ttscale.runner.identity import run_dir_for

        root = tempfile.mkdtemp(prefix="ttscale-bench-")
        cfg = config([*self.backend_overrides, *overrides], root)
        self.reset_cache()
        t0 = time.perf_counter()
        # without an engine given, the runner's engine cache hands it the same engine
        metrics = run(cfg, engine=engine or (self.engine if self.given else None))
        wall = time.perf_counter() - t0
        if not self.given and engine is None:
            assert get_engine(cfg.backend) is self.engine, "the runner built a second engine"
        recs = sorted(iter_records(run_dir_for(cfg)[0]), key=lambda r: r.get("index", 0))
        return wall, metrics, recs

    def problems(self, num: int, overrides: list[str] = ()) -> list[tuple[str, list[int]]]:
        """(problem id, prompt token IDs) of the task's first `num` problems, as the strategies build them."""
        from hydra.utils import instantiate

        cfg = config([f"task.num_problems={num}", *overrides], tempfile.mkdtemp(prefix="ttscale-bench-"))
        task = instantiate(cfg.task)
        tok = self.engine.tokenizer
        return [(p.id, list(tok.apply_chat_template(task.messages(p)))) for p, _ in task.load()]


# ---- part 1: overhead ------------------------------------------------------------
def overhead(b: Bench, problems: int, n: int, max_tokens: int, repeats: int = 2) -> tuple[list[Row], dict[str, Any]]:
    seed, temperature, top_p = 0, 0.7, 1.0
    ov = [f"task.num_problems={problems}", "strategy=best_of_n", f"strategy.n={n}", "verifier=arithmetic_checker",
          f"sampling.max_tokens={max_tokens}", f"sampling.temperature={temperature}", f"sampling.top_p={top_p}",
          f"seed={seed}", f"run.concurrency={problems}"]
    prompts = b.problems(problems)
    # the seed the framework gives each problem's first request (SolveContext.next_seed)
    jobs = [RawJob(ids, n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                   seed=derive_seed(derive_seed(seed, pid), 1)) for pid, ids in prompts]
    b.reset_cache()
    b.raw([RawJob(ids, n=1, max_tokens=4) for _, ids in prompts[:2]])  # warm-up
    pairs = []
    for _ in range(repeats):
        b.reset_cache()
        t_raw, outs = b.raw(jobs)
        t_fw, metrics, recs = b.run(ov)
        raw_tokens = sum(k for o in outs for _, k in o)
        fw_tokens = int(metrics.get("tokens/generated_total", 0))
        same = sum(sorted(t for t, _ in o) == sorted(c["text"] for c in r["candidates"]) for o, r in zip(outs, recs))
        pairs.append({"raw_s": t_raw, "framework_s": t_fw, "time_ratio": t_fw / t_raw,
                      # per generated token: the two sides' samples can differ a little (see below)
                      "ratio": (t_fw / max(1, fw_tokens)) / (t_raw / max(1, raw_tokens)),
                      "raw_tokens": raw_tokens, "framework_tokens": fw_tokens, "identical_samples": same,
                      "load_1m": load()["1m"]})
    ratio = statistics.median(p["ratio"] for p in pairs)
    data = {"problems": problems, "n": n, "max_tokens": max_tokens, "pairs": pairs, "ratio": ratio,
            "time_ratio": statistics.median(p["time_ratio"] for p in pairs)}
    last = pairs[-1]
    rows = [
        judged("overhead", f"best-of-N, framework / raw vLLM, time per token (P={problems}, n={n})", ratio, "<=", 1.10, "x"),
        Row("overhead", "best-of-N, framework / raw vLLM, wall time", data["time_ratio"], unit="x"),
        Row("overhead", "raw vLLM batch", last["raw_tokens"] / last["raw_s"], unit="tok/s"),
        Row("overhead", "framework (runner.run end to end)", last["framework_tokens"] / last["framework_s"], unit="tok/s"),
        Row("overhead", f"problems whose samples equal raw vLLM's (of {problems})", float(last["identical_samples"])),
    ]
    return rows, data


# ---- parts 2 and 3: concurrency and prefix reuse -----------------------------------------
class Recorder:
    """The engine, with every request's prompt length, cache hits and whether it opens a problem
    (its prompt is a bare task prompt) written down."""

    def __init__(self, engine: Any, openers: set[tuple[int, ...]]) -> None:
        self._engine, self._openers = engine, openers
        self.log: list[tuple[int, int, bool]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def generate(self, request: Any) -> Any:
        out = await self._engine.generate(request)
        self.log.append((out.prompt_tokens, out.cached_prompt_tokens, tuple(request.prompt_token_ids) in self._openers))
        return out


def _share(log: list[tuple[int, int, bool]], continuations: bool) -> float | None:
    rows = [(p, c) for p, c, opener in log if not (continuations and opener)]
    total = sum(p for p, _ in rows)
    if not total or any(c is None for _, c in rows):  # None: the engine did not report its cache hits
        return None
    return sum(c for _, c in rows) / total


def search(b: Bench, name: str, problems: int, width: int, max_tokens: int, one_at_a_time: int | None = 0,
           expansions: int = 6, step_tokens: int | None = None, natural: bool = True,
           ) -> tuple[list[Row], list[Row], dict[str, Any]]:
    """Step-level search `name` ("pf": particle filtering with `width` particles; "a_star": A*
    with k = `width`) over `problems` problems, all in flight; one at a time over the first
    `one_at_a_time` of them (0: all of them, None: not run); raw batched generation of the same
    tokens. Returns the concurrency rows, the prefix rows and the data."""
    label = {"pf": "particle filtering", "a_star": "A*"}[name]
    step = [f"strategy.step.max_step_tokens={step_tokens}"] if step_tokens else []
    strategy = (["strategy=particle_filter", f"strategy.n={width}", *step] if name == "pf" else
                ["strategy=a_star", f"strategy.k={width}", f"strategy.max_expansions={expansions}", *step])
    common = ["verifier=arithmetic_checker", f"sampling.max_tokens={max_tokens}", "seed=0", *strategy]
    prompts = b.problems(problems)
    openers = {tuple(ids) for _, ids in prompts}
    res: dict[str, Any] = {"problems": problems, "width": width, "max_tokens": max_tokens, "step_tokens": step_tokens}
    modes = [("in_flight", problems, problems)]
    if one_at_a_time is not None:
        modes.append(("one_at_a_time", min(problems, one_at_a_time or problems), 1))
    texts = {}
    for mode, num, c in modes:
        rec = Recorder(b.engine, openers)
        wall, m, recs = b.run([f"task.num_problems={num}", *common, f"run.concurrency={c}"], engine=rec)
        gen = int(m.get("tokens/generated_total", 0))
        res[mode] = {"problems": num, "wall_s": wall, "generated": gen, "tok_s": gen / wall, "requests": len(rec.log),
                     "prompt_tokens": m.get("tokens/prompt_total"), "cached": m.get("tokens/cached_prompt_total"),
                     "cached_share": _share(rec.log, False), "cached_share_continuations": _share(rec.log, True),
                     "opener_share": sum(p for p, _, o in rec.log if o) / max(1, sum(p for p, _, _ in rec.log)),
                     "accuracy": m.get("accuracy"), "load_1m": load()["1m"],
                     "problem_wall_s": sorted(round(r["usage"]["wall_time"], 2) for r in recs)}
        texts[mode] = {r["problem_id"]: [c["text"] for c in r["candidates"]] for r in recs}
    fl = res["in_flight"]
    # raw batched, exact: P x width sequences of the problems' prompts, each generating its share of
    # the search's tokens (end of sequence ignored): a uniform batch, the engine's best case
    per = max(1, math.ceil(fl["generated"] / (problems * width)))
    b.reset_cache()
    t_raw, outs = b.raw([RawJob(ids, n=width, max_tokens=per, seed=i, exact=True) for i, (_, ids) in enumerate(prompts)])
    raw_tokens = sum(k for o in outs for _, k in o)
    raw_rate = raw_tokens / t_raw
    res["raw_batched"] = {"wall_s": t_raw, "generated": raw_tokens, "tok_s": raw_rate,
                          "sequences": problems * width, "tokens_per_sequence": per, "load_1m": load()["1m"]}
    vs_raw = fl["tok_s"] / raw_rate
    targeted = name == "pf"
    rows = [judged("concurrency", f"{label} in flight / raw batched tok/s", vs_raw, ">=", 0.7, "x") if targeted
            else Row("concurrency", f"{label} in flight / raw batched tok/s", vs_raw, unit="x")]
    if natural:
        # raw batched, natural: the same sequences sampled to their end (max_tokens = the trajectory cap)
        b.reset_cache()
        t_nat, outs = b.raw([RawJob(ids, n=width, max_tokens=max_tokens, seed=i) for i, (_, ids) in enumerate(prompts)])
        nat_tokens = sum(k for o in outs for _, k in o)
        res["raw_natural"] = {"wall_s": t_nat, "generated": nat_tokens, "tok_s": nat_tokens / t_nat}
        rows.append(Row("concurrency", f"{label} in flight / raw sampled to the end tok/s",
                        fl["tok_s"] / res["raw_natural"]["tok_s"], unit="x"))
    if "one_at_a_time" in res:
        one = res["one_at_a_time"]
        res["same_texts_both_ways"] = sum(texts["in_flight"].get(k) == v for k, v in texts["one_at_a_time"].items())
        speed = fl["tok_s"] / one["tok_s"]
        metric = f"{label} in flight / one at a time tok/s"
        rows.append(judged("concurrency", metric, speed, ">=", 3.0, "x") if targeted else Row("concurrency", metric, speed, unit="x"))
        rows.append(Row("concurrency", f"{label} one at a time ({one['problems']} problems)", one["tok_s"], unit="tok/s"))
        rows.append(Row("concurrency", f"{label} one at a time: wall time, {one['generated']} tokens", one["wall_s"], unit="s"))
    rows.append(Row("concurrency", f"{label} in flight ({problems} problems x {width})", fl["tok_s"], unit="tok/s"))
    rows.append(Row("concurrency", f"{label} in flight: wall time, {fl['generated']} tokens", fl["wall_s"], unit="s"))
    rows.append(Row("concurrency", f"raw batched ({problems * width} seqs x {per} tokens)", raw_rate, unit="tok/s"))
    if natural:
        rows.append(Row("concurrency", f"raw sampled to the end ({problems * width} seqs, <= {max_tokens} tokens)",
                        res["raw_natural"]["tok_s"], unit="tok/s"))
    # the target is judged on particle filtering, the search of the concurrency target; A*'s few
    # requests per problem (it stops at the first goal) make each problem's own prompt, which no
    # cache can serve, a larger share of its prompt tokens: reported, with that share
    share = f"{label}: prompt tokens served from cache"
    prefix = [
        judged("prefix", share, fl["cached_share"], ">=", 0.8) if targeted else Row("prefix", share, fl["cached_share"]),
        Row("prefix", f"{label}: same, continuation requests only", fl["cached_share_continuations"]),
        Row("prefix", f"{label}: problems' own prompts (first request) / all prompt tokens", fl["opener_share"]),
        Row("prefix", f"{label}: prompt tokens per request", (fl["prompt_tokens"] or 0) / max(1, fl["requests"])),
    ]
    return rows, prefix, res


# ---- the engine's throughput by batch size (what bounds the concurrency gains) ----------
def curve(b: Bench, problems: int, sizes: tuple[int, ...] = (1, 4, 8, 16, 32, 64), tokens: int = 32) -> tuple[list[Row], dict[str, Any]]:
    """Raw tok/s with `size` sequences decoding together (exactly `tokens` each, the problems'
    prompts in turn): how much batching can give on this machine."""
    prompts = b.problems(problems)
    data: dict[str, Any] = {"tokens_per_sequence": tokens, "tok_s": {}}
    rows = []
    for size in sizes:
        jobs = [RawJob(prompts[i % len(prompts)][1], n=1, max_tokens=tokens, seed=i, exact=True) for i in range(size)]
        b.reset_cache()
        wall, outs = b.raw(jobs)
        rate = sum(k for o in outs for _, k in o) / wall
        data["tok_s"][str(size)] = rate
        rows.append(Row("curve", f"raw vLLM, {size} sequences together", rate, unit="tok/s"))
    return rows, data
