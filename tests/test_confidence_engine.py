"""Online DeepConf on the real vLLM CPU engine: the logits processor ends a trace at the
first window under the threshold; nothing after it is generated (one engine: `real_engine`)."""

from __future__ import annotations

import asyncio

import pytest

from ttscale.budget import Ledger
from ttscale.confidence import first_window_below, token_confidence
from ttscale.engine import ConfidenceStop, GenerationRequest

pytestmark = pytest.mark.engine

QUESTION = "What is 17 + 25? Think step by step, then give the answer."


def test_the_processor_stops_at_the_first_window_under_the_threshold(real_engine):
    prompt = real_engine.tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}])
    k, w = 5, 8
    base = dict(prompt_token_ids=prompt, temperature=0.0, max_tokens=96, logprobs=k)
    (free,) = asyncio.run(real_engine.generate(GenerationRequest(**base))).completions
    conf = token_confidence(free.top_logprobs)
    assert len(conf) > 3 * w
    # a threshold between the trace's lowest and highest window: some window falls under it
    from ttscale.confidence import group_confidence

    g = group_confidence(conf, w)
    threshold = float((g.min() + g.max()) / 2)
    t = first_window_below(conf, w, threshold)
    assert t is not None and w - 1 <= t < len(free.token_ids)
    ledger = Ledger(real_engine)
    req = GenerationRequest(**base, confidence_stop=ConfidenceStop(threshold=threshold, window_size=w, conf_topk=k))
    (s,) = asyncio.run(ledger.generate(req)).completions
    # greedy decoding: the same tokens up to the stop (the CPU build is batch-deterministic for one request)
    assert s.token_ids == free.token_ids[:t]
    assert s.stop_reason == "confidence" and s.finish_reason == "stop"
    assert ledger.usage.generated_tokens == t
    # a threshold nothing falls under: the trace runs to its own end (greedy runs may part at a
    # near-tie once the prompt is served from the prefix cache, so only the ending is compared)
    never = GenerationRequest(**base, confidence_stop=ConfidenceStop(threshold=-1.0, window_size=w, conf_topk=k))
    (u,) = asyncio.run(real_engine.generate(never)).completions
    assert u.stop_reason != "confidence" and len(u.token_ids) > t
