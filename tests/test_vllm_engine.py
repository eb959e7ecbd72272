"""The in-process vLLM engine on the real CPU build with the embedded SmolLM2 (one
engine for the session: the `real_engine` fixture)."""

from __future__ import annotations

import asyncio
import math

import pytest

from ttscale.backends.vllm_engine import VLLMEngine
from ttscale.engine import Engine, EngineError, GenerationRequest

pytestmark = pytest.mark.engine

QUESTION = "Write one sentence about the sea, then one sentence about mountains."
# Long enough that a continuation shares several whole 32-token KV blocks with it.
LONG_QUESTION = (
    "You are helping a student with arithmetic. Explain step by step how to add 47 and 38, "
    "carrying the tens digit, and then check the result by subtracting 38 from the sum. "
    "Keep every step short and write the final answer at the end."
)


def chat(engine, text: str) -> list[int]:
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": text}])


def gen(engine, request: GenerationRequest):
    return asyncio.run(engine.generate(request))


def test_engine_protocol_and_info(real_engine):
    assert isinstance(real_engine, VLLMEngine) and isinstance(real_engine, Engine)
    assert real_engine.num_parameters == 134_515_008
    info = real_engine.info()
    assert info["device"] == "cpu" and info["dtype"] == "bfloat16"
    assert info["block_size"] == 32 and info["enforce_eager"] is True
    assert info["enable_prefix_caching"] is True and info["enable_chunked_prefill"] is False
    assert info["max_model_len"] == 2048 and info["seed"] == 0
    assert info["vllm"] and info["max_num_seqs"] >= 64


def test_generation_token_ids_decode_to_text(real_engine):
    prompt = chat(real_engine, QUESTION)
    out = gen(real_engine, GenerationRequest(prompt, temperature=0.0, max_tokens=48))
    assert out.prompt_tokens == len(prompt)
    (c,) = out.completions
    assert c.finish_reason in ("stop", "length") and 0 < len(c.token_ids) <= 48
    assert c.text.strip()
    assert real_engine.tokenizer.decode(c.token_ids) == c.text
    # an end-of-sequence token is neither returned nor scored
    assert real_engine.tokenizer.eos_token_id not in c.token_ids
    assert out.generated_tokens == len(c.token_ids)


def test_n_completions_and_seeds(real_engine):
    prompt = chat(real_engine, "Tell me a short story about a cat.")
    req = GenerationRequest(prompt, n=3, temperature=1.0, max_tokens=24, seed=11)
    gen(real_engine, req)  # warm the prefix cache: later runs see the same cache state
    a, b = gen(real_engine, req), gen(real_engine, req)
    assert len(a.completions) == 3
    assert [c.token_ids for c in a.completions] == [c.token_ids for c in b.completions]
    # the n samples differ from each other (sample i is seeded seed + i) ...
    assert len({tuple(c.token_ids) for c in a.completions}) > 1
    # ... and another seed gives other samples
    other = gen(real_engine, GenerationRequest(prompt, n=3, temperature=1.0, max_tokens=24, seed=1000))
    assert sum(o.token_ids != c.token_ids for o, c in zip(other.completions, a.completions)) >= 2


def test_top_logprobs_per_token(real_engine):
    prompt = chat(real_engine, QUESTION)
    k = 5
    out = gen(real_engine, GenerationRequest(prompt, temperature=0.0, max_tokens=16, logprobs=k))
    (c,) = out.completions
    assert len(c.token_logprobs) == len(c.top_logprobs) == len(c.token_ids) > 0
    for tok, lp, top in zip(c.token_ids, c.token_logprobs, c.top_logprobs):
        assert 1 <= len(top) <= k
        assert all(v <= 0.0 for v in top.values()) and lp <= 0.0
        # greedy: the sampled token is the most likely one, with the same logprob
        best = max(top, key=top.get)
        assert tok == best and math.isclose(lp, top[tok], abs_tol=1e-6)
        assert sum(math.exp(v) for v in top.values()) <= 1.0 + 1e-3
    sampled = gen(real_engine, GenerationRequest(prompt, temperature=1.0, max_tokens=16, logprobs=2, seed=5))
    c = sampled.completions[0]
    for tok, lp, top in zip(c.token_ids, c.token_logprobs, c.top_logprobs):
        assert len(top) <= 2 and lp <= 0.0
        if tok in top:
            assert math.isclose(lp, top[tok], abs_tol=1e-6)
        else:  # sampled outside the top-2: less likely than both
            assert lp <= min(top.values()) + 1e-6


def test_stop_strings(real_engine):
    prompt = chat(real_engine, QUESTION)
    gen(real_engine, GenerationRequest(prompt, temperature=0.0, max_tokens=1))  # same cache state for all below
    free = gen(real_engine, GenerationRequest(prompt, temperature=0.0, max_tokens=40)).completions[0]
    words = free.text.split()
    assert len(words) >= 4, free.text
    stop = " " + words[2]
    cut = free.text.index(stop) + len(stop)
    out = gen(real_engine, GenerationRequest(prompt, temperature=0.0, max_tokens=40, stop=(stop,))).completions[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == free.text[:cut]
    assert len(out.token_ids) < len(free.token_ids)
    hidden = gen(
        real_engine,
        GenerationRequest(prompt, temperature=0.0, max_tokens=40, stop=(stop,), include_stop_str_in_output=False),
    ).completions[0]
    assert hidden.finish_reason == "stop" and hidden.text == free.text[: cut - len(stop)]


def test_continuation_is_served_from_the_prefix_cache(real_engine):
    prompt = chat(real_engine, LONG_QUESTION)
    assert len(prompt) > 64
    first = gen(real_engine, GenerationRequest(prompt, temperature=0.0, max_tokens=40))
    generated = first.completions[0].token_ids
    cont = gen(real_engine, GenerationRequest(list(prompt) + generated, temperature=0.0, max_tokens=8))
    assert cont.prompt_tokens == len(prompt) + len(generated)
    # whole 32-token blocks of the shared prefix come from the cache
    assert cont.cached_prompt_tokens >= 64
    assert cont.cached_prompt_tokens % 32 == 0 and cont.cached_prompt_tokens <= cont.prompt_tokens
    # a new prompt is not served from the cache
    fresh = gen(real_engine, GenerationRequest(chat(real_engine, "Zebra? " * 40), temperature=0.0, max_tokens=1))
    assert fresh.cached_prompt_tokens < 32


def test_many_concurrent_requests_from_two_event_loops(real_engine):
    prompts = [chat(real_engine, f"What is {i} plus {i + 3}?") for i in range(32)]

    async def many():
        return await asyncio.gather(
            *(real_engine.generate(GenerationRequest(p, temperature=0.7, max_tokens=12, seed=i))
              for i, p in enumerate(prompts))
        )

    for _ in range(2):  # a fresh event loop each time
        outs = asyncio.run(many())
        assert len(outs) == 32
        assert all(o.completions and o.completions[0].token_ids for o in outs)
        assert [o.prompt_tokens for o in outs] == [len(p) for p in prompts]


def test_errors_and_cancellation_leave_the_engine_usable(real_engine):
    with pytest.raises(EngineError, match="vLLM request"):
        gen(real_engine, GenerationRequest(list(range(100, 2200)), max_tokens=4))  # longer than max_model_len

    async def cancelled():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                real_engine.generate(GenerationRequest(chat(real_engine, QUESTION), max_tokens=1000, temperature=1.0)),
                timeout=0.5,
            )

    asyncio.run(cancelled())
    out = gen(real_engine, GenerationRequest(chat(real_engine, QUESTION), temperature=0.0, max_tokens=4))
    assert len(out.completions[0].token_ids) == 4
