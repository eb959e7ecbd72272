"""What the real backends (in-process vLLM, the OpenAI-compatible client) share:
the tokenizer (the `Tokenizer` protocol of `ttscale.engine`) read from the model's
Hugging Face checkpoint, its parameter count for the ledger's FLOP model, its
end-of-sequence tokens, and one way to turn a finished sequence into a `Completion`.
So a prompt built for one backend is token-for-token the prompt built for the other,
and both report the same completion for the same sequence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import struct
from pathlib import Path
from typing import Any, Awaitable, Iterable, Mapping, Sequence

from ttscale.engine import Completion

log = logging.getLogger(__name__)


class HFTokenizer:
    """encode / decode / apply_chat_template -> token IDs, over `transformers.AutoTokenizer`."""

    def __init__(self, path: str, *, trust_remote_code: bool = False) -> None:
        from transformers import AutoTokenizer

        self.hf = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.path = path

    @property
    def eos_token_id(self) -> int | None:
        return self.hf.eos_token_id

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        """Token IDs of `text` as it stands (no BOS/EOS added)."""
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of `token_ids`; special tokens (end of turn, ...) are left out, as the
        engines leave them out of a completion's text."""
        return self.hf.decode(list(token_ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        """Token IDs of the chat prompt with the generation prompt appended.

        A model without a chat template (a base model) gets the messages' contents as
        plain text, separated by blank lines, with the tokenizer's own BOS if it adds one.
        """
        if self.has_chat_template:
            text = self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            # The template writes the special tokens (BOS, role markers) itself.
            return list(self.hf.encode(text, add_special_tokens=False))
        text = "\n\n".join(m["content"] for m in messages)
        return list(self.hf.encode(text, add_special_tokens=True))


def _safetensors_numel(path: Path) -> int:
    """Elements in a .safetensors file, from its JSON header (no tensor is read)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def count_parameters(model: str, *, trust_remote_code: bool = False) -> int:
    """Parameter count of a checkpoint (local dir or hub id in the local HF cache).

    A local unquantised checkpoint is counted from its safetensors headers (tied
    weights are stored once); anything else by building the model from its config on
    PyTorch's meta device. Returns 0 (and logs why) when neither works: pass the
    count explicitly (`parameters=`) then."""
    p = Path(model)
    try:
        cfg = json.loads((p / "config.json").read_text()) if p.is_dir() else {}
    except (OSError, ValueError):
        cfg = {}
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else []
    if files and "quantization_config" not in cfg:
        return sum(_safetensors_numel(f) for f in files)
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            m = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        return sum(t.numel() for t in m.parameters())
    except Exception as e:  # noqa: BLE001 - any failure means "unknown"
        log.warning("could not count the parameters of %s (%s); set `parameters` for the FLOP model", model, e)
        return 0


def eos_token_ids(model_path: str, tokenizer: HFTokenizer) -> frozenset[int]:
    """The tokens vLLM ends a sequence on: the tokenizer's EOS and generation_config's."""
    ids = {tokenizer.eos_token_id}
    try:
        from transformers import GenerationConfig

        gen = GenerationConfig.from_pretrained(model_path).eos_token_id
        ids.update(gen if isinstance(gen, (list, tuple)) else [gen])
    except Exception:  # noqa: BLE001 - no generation_config.json
        pass
    return frozenset(int(i) for i in ids if i is not None)


def build_completion(
    token_ids: Sequence[int],
    text: str,
    finish_reason: str | None,
    stop_reason: str | int | None,
    eos_ids: frozenset[int],
    positions: Sequence[Mapping[int, float]] | None = None,
    sampled: Sequence[float | None] | None = None,
    k: int = 1,
) -> Completion:
    """A finished sequence as a `Completion`.

    `positions`: per generated token, {token_id: logprob} as the engine returned it
    (top-k, plus the sampled token when it falls outside); `sampled`: the sampled
    token's logprob per position when the engine says it separately. The top list is
    cut to the k best.

    A sequence that ended on an end-of-sequence token (finish "stop", no stop string
    or stop token) has that token dropped, with its logprobs: as in the fake engine,
    EOS is neither returned nor scored, so `token_ids` can be appended to a prompt and
    its decode equals `text`."""
    ids = [int(t) for t in token_ids]
    n = len(ids)
    if finish_reason == "stop" and stop_reason is None and ids and ids[-1] in eos_ids:
        n -= 1
    token_lps = top_lps = None
    if positions is not None:
        token_lps, top_lps = [], []
        for i in range(n):
            pos = positions[i] if i < len(positions) and positions[i] is not None else {}
            lp = sampled[i] if sampled is not None and i < len(sampled) else pos.get(ids[i])
            token_lps.append(float(lp) if lp is not None else float("-inf"))
            best = sorted(pos.items(), key=lambda kv: -kv[1])[: max(1, k)]
            top_lps.append({int(t): float(v) for t, v in best})
    return Completion(
        token_ids=ids[:n],
        text=text,
        finish_reason=finish_reason or "abort",
        stop_reason=stop_reason,
        token_logprobs=token_lps,
        top_logprobs=top_lps,
    )


async def gather_all(aws: Iterable[Awaitable[Any]]) -> list[Any]:
    """`asyncio.gather` that cancels the others when one fails or the caller is cancelled."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
