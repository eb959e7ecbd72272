"""How an LLM judge lays out its prompt: over the policy's own tokens, or as a fresh template.

`layout: policy_prefix` (the default): the judge's prompt is the conversation the policy
had, token for token, with the judging question as the next user turn:

    [policy's chat prompt for the problem] [the path, as the token IDs the policy generated]
    [end of the assistant's turn, user: the judging question, assistant:]

so its longest possible prefix (the prompt and the path) is already in the policy
engine's prefix cache, and only the question is computed. The path's IDs come from
`ttscale.policy_tokens` (what the strategy recorded; where a judged prefix ends inside a
recorded token, or nothing was recorded, the rest is tokenized from the text). The turn
change is the model's own chat template: the template's rendering of
`[..., assistant: X, user: question]` after X; a template whose rendering does not extend
the prompt that way (or a model without one) gets the question after a blank line.

The judge sees what the old layout showed it: the problem (in the policy's prompt), the
steps before and the latest step (the path, and the question names the latest step
again), so its scores keep their meaning; what changes is that the model reads the path as
its own answer rather than quoted text. `layout: template` is the old, self-contained
prompt (`Problem: ... Previous steps: ... Latest step: ...`).

A judge on another engine (`backend`) gets the same layout with its own tokenizer: the
policy's IDs mean nothing there, but the prefix is still shared by every step of a path,
so that engine's own cache serves it.
"""

from __future__ import annotations

from typing import Any, Sequence

from ttscale.context import SolveContext
from ttscale.policy_tokens import covering
from ttscale.types import Problem

LAYOUTS = ("policy_prefix", "template")
_MARK = "Done."  # stands for the path when the template's turn change is read off


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"verifier.layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def turn_suffix(tokenizer: Any, messages: list[dict[str, str]], question: str) -> list[int]:
    """Token IDs that end the assistant's turn and ask `question` as the next user turn, with
    the generation prompt (read off the chat template; a blank line and the question if the
    template does not extend the prompt)."""
    base = list(tokenizer.apply_chat_template(messages))
    mark = list(tokenizer.encode(_MARK))
    full = list(tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": _MARK}, {"role": "user", "content": question}]))
    n, m = len(base), len(mark)
    if full[:n] == base and full[n : n + m] == mark:
        return full[n + m :]
    return list(tokenizer.encode("\n\n" + question))


def path_ids(ctx: SolveContext, tokenizer: Any, text: str, same_engine: bool) -> list[int]:
    """The token IDs of the path `text` after the prompt: the policy's own where recorded
    (on the policy's engine), the longest run of them whose text is a prefix of `text`, then
    the rest tokenized."""
    hit = covering(ctx, text) if same_engine else None
    if hit is None:
        return list(tokenizer.encode(text))
    ids = list(hit[1])
    if hit[0] != text or tokenizer.decode(ids) != text:
        k = _aligned(tokenizer, ids, text)
        ids = ids[:k]
    done = tokenizer.decode(ids)
    return ids + (list(tokenizer.encode(text[len(done) :])) if len(done) < len(text) else [])


def _aligned(tokenizer: Any, ids: Sequence[int], text: str) -> int:
    """The most leading tokens of `ids` whose text is a prefix of `text` (binary search, as
    the decoded text grows with the tokens; checked one by one at the end)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text.startswith(tokenizer.decode(ids[:mid])):
            lo = mid
        else:
            hi = mid - 1
    while lo > 0 and not text.startswith(tokenizer.decode(ids[:lo])):
        lo -= 1
    return lo


def judge_prompt_ids(ctx: SolveContext, engine: Any, problem: Problem, text: str, question: str) -> list[int]:
    """The `policy_prefix` prompt (module doc) for judging the path `text`."""
    tok = engine.tokenizer
    messages = ctx.task.messages(problem)
    same = engine is ctx.engine
    prompt = ctx.prompt_ids(problem) if same else list(tok.apply_chat_template(messages))
    return prompt + path_ids(ctx, tok, text, same) + turn_suffix(tok, messages, question)
