"""PRM scoring that reuses the earlier steps: only the newest tokens are computed.

A causal PRM's reward at a step's separator depends only on the tokens before it, so the
path `s_1 <sep> ... s_k <sep>` scored after `s_1 <sep> ... s_{k-1} <sep>` needs only the
forward pass of `s_k <sep>`: the earlier tokens' keys and values are in the pooling
engine's prefix cache, the earlier steps' rewards in the per-problem prefix-score cache
(`verifiers/prefix_cache.py`). What vLLM 0.32 offers for it (read in its source):

- `STEP` token pooling (the Qwen2.5-Math-PRM default: rows at `step_tag_id` only) indexes
  the step tags over the whole prompt, so vLLM turns prefix caching off for it
  (`ModelConfig.is_prefix_caching_supported`) and every path is computed whole: verifier
  tokens grow with the square of the number of steps.
- `ALL` token pooling with prefix caching on returns one row per token *computed* (the
  uncached tail: `AllPool` splits the hidden states by the scheduled tokens). vLLM skips
  the prefix cache for token pooling by default (`PoolingParams.skip_reading_prefix_cache`
  is set for `token_classify`, because the rows are then fewer than the prompt's tokens);
  asking with `skip_reading_prefix_cache=False` gives exactly the tail's rows, which is
  what is wanted here: the rewards of the separators in the tail.
- `LAST` sequence pooling would read the cache too, but the PRM architectures (e.g.
  `Qwen2ForProcessRewardModel`) only build a token-classification pooler, so it is not
  offered.

So with `prefix_reuse` (the default) the PRM engine runs ALL pooling with prefix caching,
an input ends at its last separator (the chat template's end-of-turn after it changes
no reward and would break the shared prefix), and a path's rewards are the tail's rows at
its separators plus, for separators inside the cached part, the scores already known for
those prefixes (the score cache, or another path of the same batch). A separator that is
cached but whose score is known nowhere (a prefix the KV cache holds from a path scored
without the score cache) is computed again with the cache skipped, so the result never
depends on what the engine happened to hold. Verifier tokens are charged as sent, the
cached ones as vLLM reports them (`num_cached_tokens`), so computed verifier tokens and
FLOPs show the saving.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ttscale.verifiers.prm_hf import PRMFormat, _to_lists


def up_to_last_separator(fmt: PRMFormat, ids: Sequence[int]) -> list[int]:
    """The PRM input cut after its last separator (causal: no reward depends on what follows)."""
    pos = fmt.positions(ids)
    return list(ids[: pos[-1] + 1]) if pos else list(ids)


def tail_rewards(fmt: PRMFormat, rows: Any, ids: Sequence[int], positive_index: int = 1) -> dict[int, float]:
    """{step index: reward} for the separators whose rows came back: `rows` holds one row per
    token of the uncached tail of `ids` (all of them when nothing was cached)."""
    data = _to_lists(rows)
    start = len(ids) - len(data)
    if start < 0:
        raise ValueError(f"PRM output has {len(data)} rows for an input of {len(ids)} tokens")
    pos = fmt.positions(ids)
    tail = [(j, p) for j, p in enumerate(pos) if p >= start]
    if not tail:
        return {}
    sep_rows = [data[p - start] for _, p in tail]
    values = fmt.rewards(sep_rows, [fmt.sep_id] * len(sep_rows), positive_index)
    return {j: v for (j, _), v in zip(tail, values)}


def resolve(
    paths: Sequence[tuple[str, ...]],
    got: Sequence[Mapping[int, float]],
    known: Mapping[tuple[str, ...], float],
) -> tuple[list[list[float | None]], dict[tuple[str, ...], float]]:
    """Every path's step scores from its own tail rewards (`got`), the scores `known` before
    (the score cache) and the other paths' tail rewards; None where none has it."""
    seen: dict[tuple[str, ...], float] = dict(known)
    for p, g in zip(paths, got):
        for j, v in g.items():
            seen.setdefault(p[: j + 1], v)
    out = [[g.get(j, seen.get(p[: j + 1])) for j in range(len(p))] for p, g in zip(paths, got)]
    return out, seen
