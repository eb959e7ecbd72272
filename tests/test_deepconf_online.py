"""Online DeepConf: the engine stops a trace at the first window under the threshold, the
ledger charges only what was generated, and the strategy calibrates its threshold as the
paper does, with many problems in flight."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.confidence import first_window_below, token_confidence
from ttscale.engine import ConfidenceStop, GenerationRequest
from ttscale.runner import run
from ttscale.results import iter_records
from ttscale.strategies.deepconf_online import DeepConfOnline
from ttscale.types import Problem
from tests.helpers import make_ctx
from tests.test_runner import make_cfg

# With vocab_floor=-20 and k=5 a certain position has confidence 16, a 3-way fork 8.66. After
# "ab1" a second fork follows at once (two uncertain positions in a row); after "ab2" the second
# fork comes much later; after "ab3" there is none.
OPTIONS = (
    [(f"ab1{y}cdefgh \\boxed{{1}}", 1 / 9) for y in "456"]
    + [(f"ab2cdefgh{y}ij \\boxed{{2}}", 1 / 9) for y in "456"]
    + [("ab3cdefghij \\boxed{3}", 1 / 3)]
)


def engine():
    return FakeEngine(completions=OPTIONS, vocab_floor=-20.0)


@pytest.mark.parametrize("window,threshold", [(4, 13.5), (2, 12.0), (3, 11.5)])
def test_stops_at_the_first_window_under_the_threshold_and_charges_only_generated_tokens(window, threshold):
    k = 5
    prompt = engine().tokenizer.apply_chat_template([{"role": "user", "content": "q"}])
    stopped_some = kept_some = False
    for seed in range(12):
        free = asyncio.run(engine().generate(GenerationRequest(prompt, seed=seed, max_tokens=64, logprobs=k)))
        (c,) = free.completions
        t = first_window_below(token_confidence(c.top_logprobs), window, threshold)  # from the full trace
        ctx = make_ctx(engine())
        req = GenerationRequest(prompt, seed=seed, max_tokens=64, logprobs=k,
                                confidence_stop=ConfidenceStop(threshold=threshold, window_size=window, conf_topk=k))
        (s,) = asyncio.run(ctx.generate(req)).completions
        if t is None:  # never under the threshold: the same trace in full
            kept_some = True
            assert s.token_ids == c.token_ids and s.stop_reason is None
            assert ctx.ledger.usage.generated_tokens == len(c.token_ids)
        else:
            stopped_some = True
            assert t < len(c.token_ids)
            assert s.token_ids == c.token_ids[:t] and s.stop_reason == "confidence" and s.finish_reason == "stop"
            assert ctx.ledger.usage.generated_tokens == t
            assert c.text.startswith("ab1") and t == 3  # the window that first holds both forks
    assert stopped_some and kept_some


def test_strategy_threshold_is_the_percentile_of_warmup_lowest_groups():
    strat = DeepConfOnline(n=12, warmup_traces=4, eta=90, conf_topk=5, window_size=3)
    strat.check()
    ctx = make_ctx(engine(), seed=3)
    res = asyncio.run(strat.solve(Problem("q0", "q0"), ctx))
    warm = res.candidates[:4]
    lows = [c.extra["confidence"]["scores"]["min_window"] for c in warm]
    assert res.stats["threshold"] == pytest.approx(np.percentile(lows, 10), abs=1e-5)
    stopped = [c for c in res.candidates[4:] if c.extra.get("confidence_stopped")]
    assert res.stats["confidence_stopped"] == len(stopped)
    assert ctx.ledger.usage.generated_tokens == sum(c.num_tokens for c in res.candidates)
    with pytest.raises(ValueError, match="strategy.warmup_traces"):
        DeepConfOnline(n=2, warmup_traces=4).check()


def test_online_saves_tokens_with_many_problems_in_flight(tmp_path):
    def responder(prompt):
        return OPTIONS

    eng = FakeEngine(responder, vocab_floor=-20.0, delay=0.01)
    common = ["strategy.n=12", "strategy.conf_topk=5", "strategy.window_size=3"]
    on = run(make_cfg(tmp_path / "on", "strategy=deepconf_online", "strategy.warmup_traces=4", "strategy.eta=10", *common), engine=eng)
    assert eng.max_in_flight > 1
    off = run(make_cfg(tmp_path / "off", "strategy=deepconf_offline", *common), engine=FakeEngine(responder, vocab_floor=-20.0))
    assert on["tokens/generated_total"] < off["tokens/generated_total"]
    [d] = [p for p in (tmp_path / "on" / "default").iterdir() if p.is_dir()]
    recs = list(iter_records(d))
    for r in recs:
        assert r["usage"]["generated_tokens"] == sum(c["num_tokens"] for c in r["candidates"])
        for c in r["candidates"]:
            assert c["text"].startswith("ab1") if (c.get("extra") or {}).get("confidence_stopped") else True
    assert sum(r["stats"]["confidence_stopped"] for r in recs) >= 3


def test_consensus_stop_ends_sampling_once_the_leader_holds_tau_of_the_weight():
    eng = FakeEngine(completions=[("abc \\boxed{5}", 1.0)], vocab_floor=-20.0)
    strat = DeepConfOnline(n=16, warmup_traces=4, conf_topk=5, window_size=3, consensus_threshold=0.95, wave_size=2)
    strat.check()
    res = asyncio.run(strat.solve(Problem("q0", "q0"), make_ctx(eng)))
    assert res.stats["samples"] == 4 and res.answer == "5"  # unanimous warm-up: no further trace
    split = FakeEngine(completions=[("abc \\boxed{5}", 0.5), ("abd \\boxed{6}", 0.5)], vocab_floor=-20.0)
    res2 = asyncio.run(DeepConfOnline(n=16, warmup_traces=4, conf_topk=5, window_size=3, eta=100,
                                      consensus_threshold=0.95, wave_size=2).solve(Problem("q0", "q0"), make_ctx(split)))
    assert res2.stats["samples"] == 16  # two answers of equal weight never reach 95%
    with pytest.raises(ValueError, match="strategy.consensus_threshold"):
        DeepConfOnline(consensus_threshold=0.3).check()
