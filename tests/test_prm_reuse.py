"""PRM scoring with prefix reuse (verifiers/prm_reuse.py): a path computes only its new
tokens, earlier steps' scores come from the score cache, and the scores equal full-path
scoring. On a stand-in of vLLM's ALL pooling with a block prefix cache, and once on the
real vLLM CPU pooling runner with a tiny Qwen2ForProcessRewardModel."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.helpers import make_ctx
from tests.test_process_verifiers import P, tiny_tokenizer
from ttscale.backends.fake import FakeEngine
from ttscale.verifiers.prm_hf import PRMFormat
from ttscale.verifiers.prm_vllm import VLLMPRM

NUMS = [str(i) for i in range(40)]
# 12 steps of 12 tokens each, like a search's path
PATH = [f"{i} + {i + 1} = {2 * i + 1} , and {2 * i + 1} - 1 = {2 * i} .\n\n" for i in range(1, 13)]


def run(coro):
    return asyncio.run(coro)


def computed(ctx) -> int:
    u = ctx.ledger.usage
    return u.verifier_tokens - u.verifier_cached_tokens


class BlockCachePooler:
    """Stands in for vLLM's ALL pooling with prefix caching: a request that may read the cache
    gets rows only for the tokens after its longest cached prefix in whole blocks (at most
    len - 1, as vLLM recomputes the last token); a row depends on every token up to it
    (causal), so a misaligned row gives a wrong score."""

    def __init__(self, block: int = 8):
        self.block, self.blocks, self.calls = block, set(), []

    @staticmethod
    def row(ids, i):
        return [0.0, ((sum(ids[: i + 1]) * 31 + i) % 97) / 20.0 - 2.0]

    async def encode(self, token_ids, read_cache=False):
        ids = list(token_ids)
        cached = 0
        if read_cache:
            while cached + self.block <= len(ids) - 1 and tuple(ids[: cached + self.block]) in self.blocks:
                cached += self.block
        for end in range(self.block, len(ids) + 1, self.block):
            self.blocks.add(tuple(ids[:end]))
        self.calls.append((len(ids), cached, read_cache))
        return [self.row(ids, i) for i in range(cached, len(ids))], cached


def full_scores(fmt, path):
    ids = fmt.build(P.question, path)
    return fmt.rewards([BlockCachePooler.row(ids, i) for i in range(len(ids))], ids)


def grow(v, ctx, path):
    """Score the path one step longer at a time, as a step search does; computed tokens per call."""
    per_call, scores = [], None
    for k in range(1, len(path) + 1):
        before = computed(ctx)
        scores = run(v.score_steps(P, [path[:k]], ctx))[0]
        per_call.append(computed(ctx) - before)
    return per_call, scores


def test_incremental_scores_equal_full_path_scores_and_computed_tokens_grow_linearly():
    tok = tiny_tokenizer(NUMS)
    fmt = PRMFormat(tok)
    after_v = VLLMPRM(engine=BlockCachePooler(), tokenizer=tok, parameters=1e6)
    after_ctx = make_ctx(FakeEngine())
    after, scores = grow(after_v, after_ctx, PATH)
    before_v = VLLMPRM(engine=BlockCachePooler(), tokenizer=tok, parameters=1e6, prefix_reuse=False)
    before, full = grow(before_v, make_ctx(FakeEngine()), PATH)
    assert scores == pytest.approx(full_scores(fmt, PATH)) and full == pytest.approx(scores)
    step = len(tok.encode(PATH[0].strip())) + 1  # a step's words and its separator
    assert all(c <= step + 8 for c in after[1:])  # each later call: its step, plus at most a block
    assert before == sorted(before) and before[-1] > before[0] + 10 * step  # whole paths: growing
    assert sum(after) < sum(before) / 3
    assert after_ctx.ledger.usage.verifier_calls == 12  # nothing computed twice
    assert after_ctx.ledger.usage.verifier_flops == pytest.approx(2 * 1e6 * sum(after))


def test_a_cached_prefix_with_no_known_score_is_computed_whole():
    tok = tiny_tokenizer(NUMS)
    pooler = BlockCachePooler()
    v = VLLMPRM(engine=pooler, tokenizer=tok, parameters=1e6)
    run(v.score_steps(P, [PATH[:6]], make_ctx(FakeEngine())))
    # another problem's solve (its own score cache) meets the same tokens in the KV cache
    ctx = make_ctx(FakeEngine())
    got = run(v.score_steps(P, [PATH[:7]], ctx))[0]
    assert got == pytest.approx(full_scores(PRMFormat(tok), PATH[:7]))
    assert pooler.calls[-1][2] is False and pooler.calls[-2][2] is True  # read the cache, then whole
    assert ctx.ledger.usage.verifier_calls == 2


def test_paths_of_one_batch_share_their_tails():
    tok = tiny_tokenizer(NUMS)
    v = VLLMPRM(engine=BlockCachePooler(block=4), tokenizer=tok, parameters=1e6)
    ctx = make_ctx(FakeEngine())
    run(v.score_steps(P, [PATH[:3]], ctx))
    sib = [PATH[:3] + [PATH[5]], PATH[:3] + [PATH[6]], PATH[:4]]
    got = run(v.score_steps(P, sib, ctx))
    fmt = PRMFormat(tok)
    assert got == [pytest.approx(full_scores(fmt, p)) for p in sib]


def test_prefix_reuse_needs_the_score_cache():
    tok = tiny_tokenizer(NUMS)
    assert VLLMPRM(engine=BlockCachePooler(), tokenizer=tok, use_cache=False).prefix_reuse is False
    eng = VLLMPRM(model="m", tokenizer=tok).engine
    assert eng.prefix_reuse is True and eng._llm is None


def tiny_qwen_prm(tmp_path):
    """A tiny random Qwen2ForProcessRewardModel checkpoint and a torch function giving its
    step rewards over a whole input (the reference)."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    tok = tiny_tokenizer(NUMS)
    tok.save_pretrained(tmp_path)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    base = Qwen2Model(cfg).eval()
    head0, head2 = torch.nn.Linear(128, 128), torch.nn.Linear(128, 2)
    weights = {f"model.{k}": v for k, v in base.state_dict().items()}
    weights.update({"score.0.weight": head0.weight.data, "score.0.bias": head0.bias.data,
                    "score.2.weight": head2.weight.data, "score.2.bias": head2.bias.data})
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp_path / "model.safetensors"))
    config = cfg.to_dict()
    config.update({"architectures": ["Qwen2ForProcessRewardModel"], "num_labels": 2})
    (tmp_path / "config.json").write_text(json.dumps(config))

    def reference(ids, positions):
        with torch.no_grad():
            logits = head2(torch.relu(head0(base(input_ids=torch.tensor([ids])).last_hidden_state[0])))
        return torch.softmax(logits, -1)[positions, 1].tolist()

    return reference


@pytest.mark.engine
@pytest.mark.slow
def test_prefix_reuse_on_the_real_vllm_cpu_pooling_runner(tmp_path):
    """One engine (ALL pooling, prefix caching): a 12-step path scored one step longer at a
    time computes each step's new tokens only (plus at most one 32-token block), against
    whole paths before (the cache skipped, as STEP pooling does); the incremental scores
    equal the full-path ones and the torch reference."""
    from transformers import AutoTokenizer

    reference = tiny_qwen_prm(tmp_path)
    v = VLLMPRM(model=str(tmp_path), parameters=1e6, engine_kwargs={
        "dtype": "float32", "max_model_len": 512, "enforce_eager": True, "block_size": 32,
        "kv_cache_memory_bytes": 64 * 2**20})
    try:
        fmt = PRMFormat(AutoTokenizer.from_pretrained(tmp_path))
        after_ctx = make_ctx(FakeEngine())
        after, scores = grow(v, after_ctx, PATH)
        whole = VLLMPRM(model=str(tmp_path), parameters=1e6, engine=v.engine, prefix_reuse=False)
        before, full = grow(whole, make_ctx(FakeEngine()), PATH)
        ids = fmt.build(P.question, PATH)
        assert scores == pytest.approx(full, abs=1e-4)
        assert scores == pytest.approx(reference(ids, fmt.positions(ids)), abs=1e-4)
        step = len(fmt.tokenizer.encode(PATH[0].strip(), add_special_tokens=False)) + 1
        print(f"\ncomputed verifier tokens per call, 12-step path: before {before} (total {sum(before)}); "
              f"after {after} (total {sum(after)})")
        assert all(c <= step + 32 for c in after[1:])
        assert before == sorted(before) and before[-1] > before[0] + 10 * step
        assert sum(after) < sum(before) / 2
        assert after_ctx.ledger.usage.verifier_calls == 12
    finally:
        v.shutdown()
