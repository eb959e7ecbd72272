"""Process scorers: the arithmetic checker, the prefix-score cache, the step judge and the
PRM input building / output parsing (vLLM pooling and HF transformers) on stand-ins."""

from __future__ import annotations

import asyncio
import builtins
import math
import os

import pytest

from ttscale.backends.fake import FakeEngine
from tests.helpers import make_ctx
from ttscale.budget import Budget
from ttscale.types import Candidate, Problem
from ttscale.verifiers import prefix_cache
from ttscale.verifiers.arith_parse import find_equations
from ttscale.verifiers.arithmetic_checker import ArithmeticChecker

P = Problem(id="p1", question="What is 12 + 7?")


def run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------- arithmetic checker
@pytest.mark.parametrize(
    "step",
    [
        "12 + 7 = 19",
        "First, 12 + 7 = 19 apples.",
        "3 x 4 = 12",
        "3 X 4 = 12",
        "3 * 4 = 12",
        "3 × 4 = 12",
        "We get $3 \\times 4 = 12$.",
        "(2.5 + 0.5) * 2 = 6",
        "10 - 2 - 3 = 5",
        "2 + 3 * 4 = 14",
        "(2 + 3) * 4 = 20",
        "12 / 4 = 3",
        "10 / 3 = 3.33",
        "5 - 8 = -3",
        "-3 + 5 = 2",
        "1,000 + 2 = 1,002",
        "1) 5 + 3 = 8",
        "2 + 2 = 4 = 4",
        "0.1 + 0.2 = 0.3",
        "Step 1 12 + 7 = 19",
    ],
)
def test_right_equations_score_high(step):
    assert ArithmeticChecker().check_step(step) == 1.0


@pytest.mark.parametrize(
    "step",
    [
        "12 + 7 = 20",
        "So 12 + 7 = 18 apples.",
        "3 x 4 = 13",
        "2 + 3 * 4 = 20",  # precedence
        "10 / 3 = 3",  # integers must be exact
        "2 + 2 = 4 = 5",  # a chain is checked link by link
        "5 / 0 = 0",  # undefined is not equal to anything
        "12 + 7 = 19 and 5 - 1 = 3",  # one wrong equation is enough
        "0.1 + 0.2 = 0.4",
    ],
)
def test_wrong_equations_score_low(step):
    assert ArithmeticChecker().check_step(step) == 0.0


@pytest.mark.parametrize(
    "step",
    [
        "Let's think about the apples.",
        "x = 5",  # a variable, not arithmetic
        "a - 3 = 5",
        "2 * y + 3 = 7",
        "3 + 4 = 7 + x",
        "The list is 1, 2, 3.",
        "5 = 5",  # no operator: not a claim
        "",
        "))((==++--**//",
        "\\frac{1}{2} = 0.5",
        "9" * 200 + " + 1 = 2",  # over-long literal: not checked
    ],
)
def test_steps_without_checkable_equations_are_neutral(step):
    assert ArithmeticChecker().check_step(step) == 0.5
    assert ArithmeticChecker(neutral_score=0.3).check_step(step) == 0.3


def test_the_checker_never_evaluates_code(monkeypatch):
    called = []

    def boom(*a, **k):
        called.append(a)
        raise AssertionError("evaluated code")

    monkeypatch.setattr(os, "system", boom)
    for name in ("eval", "exec", "compile", "__import__"):
        monkeypatch.setattr(builtins, name, boom)
    nasty = [
        "__import__('os').system('x') = 0",
        "__import__('os').system('echo pwned') + 1 = 1",
        "eval('1+1') = 2",
        "(lambda: 0)() = 0",
        "1 + 1 = 2; import os; os.system('x') = 0",
        "2 ** 1000000 = 0",
        "9 ^ 9 ^ 9 ^ 9 = 1",
        "(" * 5000 + "1" + ")" * 5000 + " + 1 = 2",
        "-" * 5000 + "1 + 1 = 0",
        "1e308 * 1e308 = 1",
        "\x00\x01\ufffd = \u202e 1 + 1",
    ]
    checker = ArithmeticChecker()
    scores = [checker.check_step(s) for s in nasty]
    monkeypatch.undo()
    assert not called
    assert scores[0] == scores[1] == scores[2] == scores[3] == 0.5
    assert scores[4] == 1.0  # only "1 + 1 = 2" is arithmetic there
    assert all(s in (0.0, 0.5, 1.0) for s in scores)


def test_deep_nesting_and_long_inputs_are_bounded():
    import time

    t0 = time.perf_counter()
    ArithmeticChecker().check_step(("(" * 3000 + "1" + ")" * 3000 + " = 1 ") * 20)
    ArithmeticChecker().check_step("1 + " * 20000 + "1 = 20001")
    assert time.perf_counter() - t0 < 5


def test_boxed_answer_is_checked_against_the_last_equation_of_the_path():
    c = ArithmeticChecker()
    assert c.check_step("The answer is \\boxed{19}", ["12 + 7 = 19"]) == 1.0
    assert c.check_step("The answer is \\boxed{18}", ["12 + 7 = 19"]) == 0.25
    assert c.check_step("12 + 7 = 19, so \\boxed{19}") == 1.0
    assert c.check_step("12 + 7 = 19, so \\boxed{20}") == 0.25
    assert c.check_step("\\boxed{7}") == 0.5  # nothing to compare with
    assert ArithmeticChecker(boxed_mismatch_score=None).check_step("\\boxed{18}", ["12 + 7 = 19"]) == 0.5
    # a wrong equation dominates
    assert c.check_step("12 + 7 = 20, so \\boxed{20}") == 0.0


def test_equations_about_numbers_from_nowhere_are_ungrounded():
    c = ArithmeticChecker()
    q = "Leo has 10 stamps. A friend gives him 5 stamps. How many stamps does Leo have now?"
    assert c.check_step("10 + 5 = 15", [], q) == 1.0
    assert c.check_step("20 + 5 = 25", [], q) == 0.1  # true, but 20 is not a given
    assert c.check_step("20 + 5 = 25", [], None) == 1.0  # no problem text: operands unchecked
    # values produced earlier on the path (or earlier in the step) are known
    assert c.check_step("15 - 3 = 12", ["10 + 5 = 15"], q) == 0.1  # 3 is not known
    path = ["10 + 5 = 15\n\n", "10 - 5 = 5 and 5 - 3 = 2"]  # the second step is the ungrounded one
    assert c.check_step("15 * 2 = 30", path, q) == 1.0  # 2 was produced on the path
    assert c.check_step("15 * 4 = 60", path, q) == 0.1
    assert c.check_step("10 + 5 = 15, then 15 - 10 = 5", [], q) == 1.0
    assert c.check_step("15 - 5 = 10", ["10 + 5 = 15"], q) == 1.0
    # a false equation still scores 0; grounding can be turned off
    assert c.check_step("20 + 5 = 26", [], q) == 0.0
    assert ArithmeticChecker(ungrounded_score=None).check_step("20 + 5 = 25", [], q) == 1.0
    # the verifier passes the problem's text when it scores a path
    ctx = make_ctx(FakeEngine())
    prob = Problem(id="g", question=q)
    assert run(c.score_steps(prob, [["10 + 5 = 15\n\n", "15 + 2 = 17"]], ctx)) == [[1.0, 0.1]]


def test_find_equations_reports_sides_and_values():
    eqs = find_equations("First 3 x 4 = 12, then 12 - 5 = 8.")
    assert [(e.sides, e.ok) for e in eqs] == [(["3 * 4", "12"], True), (["12 - 5", "8"], False)]
    # a line break ends an equation: the second line is a claim of its own, and false
    eqs = find_equations("18 + 21 = 39\n39 - 21 = 22")
    assert [(e.sides, e.ok) for e in eqs] == [(["18 + 21", "39"], True), (["39 - 21", "22"], False)]


def test_checker_scores_paths_counts_calls_and_caches_prefixes():
    ctx = make_ctx(FakeEngine())
    c = ArithmeticChecker()
    paths = [["12 + 7 = 19\n\n", "19 - 1 = 17\n\n"], ["12 + 7 = 19\n\n", "\\boxed{19}"]]
    scores = run(c.score_steps(P, paths, ctx))
    assert scores == [[1.0, 0.0], [1.0, 1.0]]
    # three distinct prefixes were computed; the shared first step once
    assert ctx.ledger.usage.verifier_calls == 3
    assert ctx.ledger.usage.verifier_flops == 0.0
    assert prefix_cache.stats(ctx) == {"verifier_cache_hits": 0, "verifier_cache_misses": 4}
    # the same prefixes again: served from the cache, nothing charged
    again = run(c.score_steps(P, [paths[0][:1], paths[1]], ctx))
    assert again == [[1.0], [1.0, 1.0]]
    assert ctx.ledger.usage.verifier_calls == 3
    assert prefix_cache.stats(ctx)["verifier_cache_hits"] == 3
    # aggregation for outcome scoring (min by default)
    cands = [Candidate(text="".join(p), steps=list(p)) for p in paths]
    assert run(c.score(P, cands, ctx)) == [0.0, 1.0]
    assert cands[0].step_scores == [1.0, 0.0]


def test_prefix_cache_is_per_problem_and_per_solve():
    c = ArithmeticChecker()
    ctx1, ctx2 = make_ctx(FakeEngine()), make_ctx(FakeEngine())
    run(c.score_steps(P, [["1 + 1 = 2"]], ctx1))
    run(c.score_steps(P, [["1 + 1 = 2"]], ctx2))  # another solve: computed again
    assert ctx1.ledger.usage.verifier_calls == ctx2.ledger.usage.verifier_calls == 1
    other = Problem(id="p2", question="?")
    run(c.score_steps(other, [["1 + 1 = 2"]], ctx1))  # another problem id: computed again
    assert ctx1.ledger.usage.verifier_calls == 2
    nocache = ArithmeticChecker(use_cache=False)
    run(nocache.score_steps(P, [["1 + 1 = 2"]], ctx1))
    run(nocache.score_steps(P, [["1 + 1 = 2"]], ctx1))
    assert ctx1.ledger.usage.verifier_calls == 4


def test_score_nodes_respects_the_verifier_budget_with_the_checker():
    from ttscale.strategies.steps import Node, score_nodes

    ctx = make_ctx(FakeEngine(), verifier=ArithmeticChecker(), budget=Budget(max_verifier_calls=2))
    root = Node.root()
    nodes = []
    for text in ("12 + 7 = 19\n\n", "12 + 7 = 20\n\n", "no math\n\n"):
        n = Node(parent=root, step_text=text, depth=1)
        nodes.append(n)
    scores = run(score_nodes(ctx, P, nodes))
    assert scores == [1.0, 0.0, 0.0]  # the third is not covered by the budget
    assert nodes[2].score is None
    assert ctx.ledger.usage.verifier_calls == 2


# ---------------------------------------------------------------- LLM judge of steps
from ttscale.engine import Completion, GenerationOutput  # noqa: E402
from ttscale.verifiers.judge_steps import JudgeSteps  # noqa: E402


class WordTokenizer:
    """Token id -> word, for a stub judge engine."""

    words = {1: "Yes", 2: " yes", 3: "YES", 4: "No", 5: " no", 6: "Maybe", 7: "\n"}

    def decode(self, ids):
        return "".join(self.words[i] for i in ids)

    def encode(self, text):
        return [7] * len(text.split())

    def apply_chat_template(self, messages):
        return self.encode(messages[-1]["content"])


class StubJudge:
    """Answers every judge request with fixed top-k log-probabilities for its one token."""

    num_parameters = 1000

    def __init__(self, top):
        self.tokenizer = WordTokenizer()
        self.top = top
        self.prompts = []

    async def generate(self, request):
        assert request.max_tokens == 1 and request.temperature == 0.0 and request.logprobs >= 1
        self.prompts.append(request.prompt_token_ids)
        best = max(self.top, key=self.top.get) if self.top else 6
        comp = Completion(token_ids=[best], text=self.tokenizer.decode([best]), finish_reason="length",
                          token_logprobs=[self.top.get(best, 0.0)], top_logprobs=[dict(self.top)] if self.top else None)
        return GenerationOutput([comp], prompt_tokens=len(request.prompt_token_ids), cached_prompt_tokens=2)


def test_judge_steps_reads_p_yes_from_the_top_logprobs():
    top = {1: math.log(0.3), 2: math.log(0.2), 3: math.log(0.1), 4: math.log(0.15), 5: math.log(0.05),
           6: math.log(0.2)}
    judge = StubJudge(top)
    ctx = make_ctx(FakeEngine(), verifier=None)
    v = JudgeSteps(backend=judge)
    scores = run(v.score_steps(P, [["12 + 7 = 19\n\n", "\\boxed{19}"]], ctx))
    assert scores == [[pytest.approx(0.6 / 0.8), pytest.approx(0.6 / 0.8)]]
    assert ctx.ledger.usage.verifier_calls == 2  # one per step prefix
    tokens = sum(len(p) for p in judge.prompts) + 2  # prompt tokens + one generated token each
    assert ctx.ledger.usage.verifier_tokens == tokens
    assert ctx.ledger.usage.verifier_cached_tokens == 4
    assert ctx.ledger.usage.verifier_flops == pytest.approx(2 * 1000 * (tokens - 4))
    assert ctx.ledger.usage.generated_tokens == 0  # the judge does not spend the policy budget
    # a prefix judged before is not judged again
    run(v.score_steps(P, [["12 + 7 = 19\n\n", "\\boxed{19}", "done"]], ctx))
    assert ctx.ledger.usage.verifier_calls == 3
    # no Yes/No among the top tokens, or no log-probabilities at all: 0.5
    assert run(JudgeSteps(backend=StubJudge({6: 0.0})).score_steps(P, [["a"]], make_ctx(FakeEngine()))) == [[0.5]]
    assert run(JudgeSteps(backend=StubJudge({})).score_steps(P, [["a"]], make_ctx(FakeEngine()))) == [[0.5]]


def test_judge_steps_prompt_shows_question_previous_steps_and_the_latest_one():
    v = JudgeSteps()
    text = v.prompt(P, ["12 + 7 = 19\n\n", "19 - 1 = 18\n\n", "\\boxed{18}"])
    assert P.question in text and "12 + 7 = 19\n\n19 - 1 = 18" in text
    assert text.index("19 - 1 = 18") < text.index("Latest step:\n\\boxed{18}")
    assert "Previous steps:\n(none)" in v.prompt(P, ["12 + 7 = 19"])
    with pytest.raises(ValueError):
        JudgeSteps(template="{question} {step}")


def test_judge_steps_runs_on_the_policy_engine_by_default():
    # the char-level fake engine has no "Yes" token: the judge is neutral, but it runs and charges
    ctx = make_ctx(FakeEngine(completions=[("Yes", 1.0)]))
    v = JudgeSteps(top_k=5)
    assert run(v.score_steps(P, [["a\n\n", "b"]], ctx)) == [[0.5, 0.5]]
    assert ctx.ledger.usage.verifier_calls == 2


# ---------------------------------------------------------------- PRM format (vLLM / HF)
from ttscale.verifiers.prm_hf import HFPRM, PRMFormat  # noqa: E402
from ttscale.verifiers.prm_vllm import VLLMPRM  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "<extra_0>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}")


def tiny_tokenizer(words=()):
    """A word-level HF tokenizer with the Qwen PRM's special tokens and a Qwen-like chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = ["system", "user", "assistant", "Please", "reason", "step", "by", ",", "and", "12", "+", "7", "=",
            "19", "-", "1", "18", "What", "is", "?", "\\boxed{19}", "\\boxed{18}", "."]
    vocab = {w: i for i, w in enumerate(SPECIALS + list(dict.fromkeys(base + list(words))))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   chat_template=CHAT_TEMPLATE)


STEPS = ["12 + 7 = 19\n\n", "19 - 1 = 18\n\n", "\\boxed{18}"]


def test_prm_format_places_one_separator_after_each_step():
    tok = tiny_tokenizer()
    fmt = PRMFormat(tok)
    ids = fmt.build(P.question, STEPS)
    sep = tok.convert_tokens_to_ids("<extra_0>")
    assert fmt.sep_id == sep
    pos = fmt.positions(ids)
    assert len(pos) == 3
    # each separator follows its step's tokens exactly
    for step, end in zip(STEPS, pos):
        words = step.split()
        assert tok.convert_ids_to_tokens(ids[end - len(words): end]) == words
    assert tok.convert_ids_to_tokens([ids[pos[-1] + 1]]) == ["<|im_end|>"]
    msgs = fmt.messages(P.question, STEPS)
    assert msgs[0]["role"] == "system" and msgs[1]["content"] == P.question
    assert msgs[2]["content"] == "12 + 7 = 19<extra_0>19 - 1 = 18<extra_0>\\boxed{18}<extra_0>"
    # a separator written inside a step cannot shift the positions
    assert len(fmt.positions(fmt.build(P.question, ["12 <extra_0> + 7", "= 19"]))) == 2
    assert fmt.messages(P.question, ["a"]) == fmt.messages(P.question, ["a\n\n"])
    assert PRMFormat(tok, system=None).messages(P.question, ["a"])[0]["role"] == "user"
    with pytest.raises(ValueError):
        PRMFormat(tok, step_separator="two words")
    with pytest.raises(ValueError):
        fmt.build(P.question, [])


def test_prm_rewards_from_all_token_or_step_pooled_outputs():
    tok = tiny_tokenizer()
    fmt = PRMFormat(tok)
    ids = fmt.build(P.question, STEPS)
    pos = fmt.positions(ids)
    logits = [[0.0, 0.0] for _ in ids]
    for p, (a, b) in zip(pos, [(0.0, 2.0), (1.0, -1.0), (3.0, 3.0)]):
        logits[p] = [a, b]
    want = [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(2.0)), 0.5]
    assert fmt.rewards(logits, ids) == pytest.approx(want)  # one row per token
    assert fmt.rewards([logits[p] for p in pos], ids) == pytest.approx(want)  # one row per separator
    import numpy as np
    import torch

    assert fmt.rewards(np.array(logits), ids) == pytest.approx(want)
    assert fmt.rewards(torch.tensor(logits), ids) == pytest.approx(want)
    probs = [[0.3, 0.7], [0.9, 0.1], [0.5, 0.5]]
    assert fmt.rewards(probs, ids, activation="none") == pytest.approx([0.7, 0.1, 0.5])
    assert fmt.rewards([[0.0]] * 3, ids) == pytest.approx([0.5] * 3)  # one logit: sigmoid
    with pytest.raises(ValueError):
        fmt.rewards(logits[:5], ids)


class StandInPooler:
    """Stands in for the vLLM pooling engine: logits (0, id / 10) for every token, like ALL
    pooling, or only the separator rows, like STEP pooling."""

    def __init__(self, sep_id, step_pooling):
        self.sep_id, self.step_pooling, self.inputs = sep_id, step_pooling, []

    async def encode(self, token_ids):
        self.inputs.append(list(token_ids))
        rows = [[0.0, t / 10] for t in token_ids if not self.step_pooling or t == self.sep_id]
        return rows, 3


@pytest.mark.parametrize("step_pooling", [False, True])
def test_vllm_prm_scores_paths_through_the_pooler_and_charges_the_ledger(step_pooling):
    tok = tiny_tokenizer()
    sep = tok.convert_tokens_to_ids("<extra_0>")
    pooler = StandInPooler(sep, step_pooling)
    v = VLLMPRM(engine=pooler, tokenizer=tok, parameters=7e9, prefix_reuse=False)  # whole paths (tests/test_prm_reuse.py: reuse)
    ctx = make_ctx(FakeEngine())
    scores = run(v.score_steps(P, [STEPS, STEPS[:2], STEPS[:1] + ["12 + 7 = 18"]], ctx))
    r = 1 / (1 + math.exp(-sep / 10))
    assert scores == [pytest.approx([r, r, r]), pytest.approx([r, r]), pytest.approx([r, r])]
    assert len(pooler.inputs) == 2  # STEPS[:2] was covered by STEPS' prefixes
    assert ctx.ledger.usage.verifier_calls == 2
    n = sum(len(x) for x in pooler.inputs)
    assert ctx.ledger.usage.verifier_tokens == n and ctx.ledger.usage.verifier_cached_tokens == 6
    assert ctx.ledger.usage.verifier_flops == pytest.approx(2 * 7e9 * (n - 6))
    assert pooler.inputs[0] == PRMFormat(tok).build(P.question, STEPS)
    # a path that is a prefix of another in the same batch was scored by the longer one's pass;
    # later calls are served from the cache
    assert run(v.score_steps(P, [STEPS[:2]], ctx)) == [pytest.approx([r, r])]
    assert len(pooler.inputs) == 2 and prefix_cache.stats(ctx)["verifier_cache_hits"] == 2


def test_vllm_prm_builds_its_pooling_engine_from_config_only():
    tok = tiny_tokenizer()
    v = VLLMPRM(model="some/prm", tokenizer=tok, engine_kwargs={"dtype": "bfloat16", "max_model_len": 4096})
    eng = v.engine  # not started: nothing is loaded until the first request
    assert eng.model == "some/prm" and eng.step_tag_id == tok.convert_tokens_to_ids("<extra_0>")
    assert eng.engine_kwargs == {"trust_remote_code": True, "dtype": "bfloat16", "max_model_len": 4096}
    assert eng._llm is None


def tiny_hf_prm(tmp_path):
    """A tiny random Llama token classifier (2 labels) and the tiny tokenizer, saved locally."""
    import torch
    from transformers import LlamaConfig, LlamaForTokenClassification

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, num_labels=2, pad_token_id=0)
    model = LlamaForTokenClassification(cfg)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return model.eval(), tok


def test_hf_prm_reads_the_positive_class_at_each_separator(tmp_path):
    import torch

    model, tok = tiny_hf_prm(tmp_path)
    v = HFPRM(model=str(tmp_path), model_class="AutoModelForTokenClassification", device="cpu", batch_size=2)
    ctx = make_ctx(FakeEngine())
    paths = [STEPS, ["12 + 7 = 18\n\n", "\\boxed{18}"], STEPS[:1] + ["What is 19 ?"]]
    scores = run(v.score_steps(P, paths, ctx))
    fmt = PRMFormat(tok)
    for path, got in zip(paths, scores):  # the same numbers as one unpadded forward pass, by hand
        ids = fmt.build(P.question, path)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        probs = torch.softmax(logits, dim=-1)[:, 1]
        want = [float(probs[i]) for i, t in enumerate(ids) if t == fmt.sep_id]
        assert got == pytest.approx(want, abs=1e-5)
        assert len(got) == len(path)
    assert ctx.ledger.usage.verifier_calls == 3
    assert v.parameters == sum(p.numel() for p in model.parameters())
    assert ctx.ledger.usage.verifier_tokens == sum(len(fmt.build(P.question, p)) for p in paths)


@pytest.mark.engine
@pytest.mark.slow
def test_vllm_prm_on_the_real_vllm_cpu_pooling_runner(tmp_path):
    """The whole GPU path on the vLLM CPU build: a tiny random Qwen2ForProcessRewardModel
    checkpoint (the architecture vLLM serves Qwen2.5-Math-PRM-7B with: STEP pooling at the
    separator token, `prefix_reuse=False`), loaded by `VLLMPRM` from config alone; its step
    rewards equal the softmax of the same weights run in torch, at the separator positions.
    (ALL pooling with prefix reuse: tests/test_prm_reuse.py.)"""
    import json

    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    tiny_tokenizer().save_pretrained(tmp_path)
    cfg = Qwen2Config(vocab_size=len(tiny_tokenizer()), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
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

    v = VLLMPRM(model=str(tmp_path), parameters=1e6, prefix_reuse=False, engine_kwargs={
        "dtype": "float32", "max_model_len": 512, "enforce_eager": True, "block_size": 32,
        "kv_cache_memory_bytes": 64 * 2**20})
    try:
        ctx = make_ctx(FakeEngine())
        paths = [STEPS, ["12 + 7 = 18\n\n", "\\boxed{18}"]]
        scores = run(v.score_steps(P, paths, ctx))
        fmt = PRMFormat(AutoTokenizer.from_pretrained(tmp_path))  # the tokenizer VLLMPRM loaded
        for path, got in zip(paths, scores):
            ids = fmt.build(P.question, path)
            with torch.no_grad():
                logits = head2(torch.relu(head0(base(input_ids=torch.tensor([ids])).last_hidden_state[0])))
            want = torch.softmax(logits, -1)[fmt.positions(ids), 1].tolist()
            assert got == pytest.approx(want, abs=1e-4)
        assert ctx.ledger.usage.verifier_calls == 2
        assert ctx.ledger.usage.verifier_tokens == sum(len(fmt.build(P.question, p)) for p in paths)
        # the engine lives on its own loop thread: another event loop can use it
        again = run(v.score_steps(P, [STEPS], make_ctx(FakeEngine())))
        assert again[0] == pytest.approx(scores[0], abs=1e-6)
    finally:
        v.shutdown()


@pytest.mark.parametrize("name", ["arithmetic_checker", "judge_steps", "prm_vllm", "prm_hf"])
def test_verifier_configs_instantiate_without_loading_a_model(name):
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ttscale.verifier import ProcessVerifier

    conf = Path(__file__).resolve().parents[1] / "conf" / "verifier" / f"{name}.yaml"
    v = instantiate(OmegaConf.load(conf))
    # the PRMs aggregate as search-and-learn (agg_strategy="last"); ttscale's own step
    # scorers keep min (a per-step checker has no "score of the prefix" of its own)
    expected = "last" if name in ("prm_vllm", "prm_hf", "arithmetic_checker") else "min"
    assert isinstance(v, ProcessVerifier) and v.name == name and v.aggregation == expected
    if name in ("prm_vllm", "prm_hf"):
        assert v.model_name == "Qwen/Qwen2.5-Math-PRM-7B"
        assert getattr(v, "_model", None) is None and getattr(v, "_format", None) is None  # lazy


def test_a_pooling_engine_that_failed_to_start_is_not_rebuilt_per_request(monkeypatch):
    from ttscale.verifiers.prm_vllm import VLLMPoolingEngine

    eng = VLLMPoolingEngine("no/such-model")
    tries = []

    def fail():
        tries.append(1)
        raise OSError("no weights here")

    monkeypatch.setattr(eng, "_build", fail)
    with pytest.raises(OSError):
        eng.start()
    with pytest.raises(RuntimeError, match="failed to start"):
        run(eng.encode([1, 2, 3]))
    assert len(tries) == 1


# ---------------------------------------------------------------- one scoring contract
from pathlib import Path  # noqa: E402

from ttscale.strategies.best_of_n import BestOfN  # noqa: E402
from ttscale.strategies.dvts import DVTS  # noqa: E402
from ttscale.strategies.particle_filter import ParticleFilter  # noqa: E402
from tests.search_helpers import MarkerPRM  # noqa: E402
from ttscale.segment import STEP_DELIMITER, split_steps  # noqa: E402
from ttscale.verifier import aggregate  # noqa: E402

# Read whole, "GOOD" comes first and scores 0.9; split into steps its min is BAD's 0.1.
MIXED = "GOOD start\n\nBAD step\n\n\\boxed{1}"
PLAIN = "a step\n\nanother\n\n\\boxed{2}"
MARKERS = {"GOOD": 0.9, "BAD": 0.1}


def test_split_steps_cuts_after_each_delimiter_and_keeps_the_text():
    assert split_steps(MIXED) == ["GOOD start\n\n", "BAD step\n\n", "\\boxed{1}"]
    assert split_steps("one\n\n") == ["one\n\n"]
    assert split_steps("no delimiter") == ["no delimiter"] and split_steps("") == [""]
    assert split_steps("a\n\n\n\nb") == ["a\n\n", "\n\n", "b"]
    assert split_steps("x;y;", ";") == ["x;", "y;"]
    for t in (MIXED, PLAIN, "a\n\n\n\nb\n\n", "\n\n"):
        assert "".join(split_steps(t)) == t
    with pytest.raises(ValueError):
        split_steps("a", "")


@pytest.mark.parametrize("search", [
    lambda: ParticleFilter(n=2, aggregation="min", temperature=1.0),
    lambda: DVTS(n=2, beam_width=2, aggregation="min", temperature=1.0),
])
def test_best_of_n_ranks_by_the_step_scores_a_search_sees_for_the_same_text(search):
    """A process verifier scores best-of-N's whole samples as the step-split paths a step
    search builds for the same text (same steps, same step scores, same aggregate), so
    verifier.aggregation decides best-of-N too."""
    prm = MarkerPRM(MARKERS, default=0.5, aggregation="min")
    bon = run(BestOfN(n=8, temperature=1.0, max_tokens=200).solve(
        P, make_ctx(FakeEngine(completions=[(MIXED, 0.5), (PLAIN, 0.5)]), verifier=prm, seed=3)))
    texts = {c.text for c in bon.candidates}
    assert texts == {MIXED, PLAIN}  # seeded: both sampled
    mixed = next(c for c in bon.candidates if c.text == MIXED)
    # Whole, MIXED would score 0.9 and win; split, its min is 0.1 and PLAIN's 0.5 wins.
    assert mixed.step_scores == [0.9, 0.1, 0.5] and mixed.score == 0.1
    assert bon.answer == "2" and bon.candidates[bon.selected].text == PLAIN

    res = run(search().solve(P, make_ctx(FakeEngine(completions=[(MIXED, 1.0)]), verifier=prm, seed=0)))
    c = res.candidates[0]
    assert c.text == MIXED
    assert c.steps == split_steps(MIXED)  # the search cut the text where split_steps cuts it
    assert c.step_scores == mixed.step_scores
    assert c.score == mixed.score == aggregate(mixed.step_scores, prm.aggregation)


def test_arithmetic_checker_scores_a_whole_sample_step_by_step():
    text = "12 + 7 = 19\n\n19 + 1 = 21\n\nSo \\boxed{19}"  # the second step uses a number made earlier
    q = Problem(id="a", question="What is 12 + 7?")
    chk = ArithmeticChecker(aggregation="mean")
    ctx = make_ctx(FakeEngine(completions=[(text, 1.0)]))
    [whole] = run(chk.score(q, [Candidate(text=text)], ctx))
    per_step = run(chk.score_steps(q, [split_steps(text)], ctx))[0]
    assert len(per_step) == 3
    assert whole == pytest.approx(sum(per_step) / 3)
    # a different delimiter cuts differently: one step, one score
    semi = ArithmeticChecker(aggregation="mean", step_delimiter="@@")
    c = Candidate(text=text)
    run(semi.score(q, [c], ctx))
    assert len(c.step_scores) == 1


def test_verifier_step_delimiter_follows_the_strategy_and_defaults_to_the_search_default():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from ttscale.strategies.steps import StepConfig

    assert StepConfig().delimiter == STEP_DELIMITER
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        for v in ("arithmetic_checker", "judge_steps", "prm_vllm", "prm_hf"):
            bon = compose("config", overrides=["strategy=best_of_n", f"verifier={v}"])
            assert bon.verifier.step_delimiter == STEP_DELIMITER, v
            pf = compose("config", overrides=["strategy=particle_filter", f"verifier={v}", "strategy.step.delimiter=@@"])
            assert pf.verifier.step_delimiter == "@@", v
        built = instantiate(compose("config", overrides=["strategy=best_of_n", "verifier=arithmetic_checker"]).verifier)
        assert built.step_delimiter == STEP_DELIMITER


def test_the_checker_scores_a_step_as_the_path_up_to_it():
    """scoring=prefix (the default): a step's score is the worst step so far, so the last
    step's score (the papers' aggregation) sees a wrong equation earlier on the path;
    scoring=step scores each step alone."""
    from ttscale.types import Problem
    from tests.helpers import make_ctx
    from ttscale.backends.fake import FakeEngine

    path = ["2 + 3 = 6", "6 + 1 = 7", "The answer is \\boxed{7}"]
    prob = Problem(id="p", question="What is 2 + 3 + 1?")
    by_prefix = asyncio.run(ArithmeticChecker().score_steps(prob, [path], make_ctx(FakeEngine())))[0]
    by_step = asyncio.run(ArithmeticChecker(scoring="step").score_steps(prob, [path], make_ctx(FakeEngine())))[0]
    assert by_step[0] == 0.0 and by_step[1] == 1.0  # the second equation holds on its own
    assert by_prefix == [0.0, 0.0, 0.0]
    assert [min(by_step[: i + 1]) for i in range(3)] == by_prefix
