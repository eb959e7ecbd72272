"""The token IDs the policy generated for each text of one problem, for a judge that lays
its prompt over the policy's own tokens so that the engine's prefix cache serves it
(`verifiers/judge_layout.py`).

A strategy records, before its verifier scores them (only one with `needs_policy_tokens`
keeps them), each
path's text with its generated token IDs (a step search: `prompt + node.token_ids()` is
what the engine saw; a sample: its completion's IDs). The store lives as long as the
problem's ledger (one per solve), like the prefix-score cache, so nothing leaks between
problems. It holds token IDs the engine produced, which re-tokenising the text need not
give back (a sampled token sequence is not always the tokenizer's own split).
"""

from __future__ import annotations

import weakref
from typing import Sequence

from ttscale.context import SolveContext

_STORES: "weakref.WeakKeyDictionary[object, dict[str, tuple[int, ...]]]" = weakref.WeakKeyDictionary()


def remember(ctx: SolveContext, text: str, token_ids: Sequence[int]) -> None:
    """Record that the policy generated `token_ids` (after the problem's prompt) as `text`,
    when the solve's verifier reads them (`needs_policy_tokens`); otherwise nothing."""
    if ctx.verifier is None or not ctx.verifier.needs_policy_tokens:
        return
    store = _STORES.get(ctx.ledger)
    if store is None:
        store = _STORES[ctx.ledger] = {}
    store.setdefault(text, tuple(int(t) for t in token_ids))


def covering(ctx: SolveContext, text: str) -> tuple[str, tuple[int, ...]] | None:
    """A recorded (text, token IDs) whose text starts with `text` (the same text first), or None."""
    store = _STORES.get(ctx.ledger) or {}
    if text in store:
        return text, store[text]
    for t, ids in store.items():
        if t.startswith(text):
            return t, ids
    return None
