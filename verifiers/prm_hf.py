"""Process reward model through HF transformers (CPU or GPU), and the PRM input format
shared with the vLLM scorer (`verifiers/prm_vllm.py`).

Format (Qwen2.5-Math-PRM-7B; Zhang et al. 2025, "The Lessons of Developing Process
Reward Models in Mathematical Reasoning", arXiv:2501.07301): the chat
`[system, user: question, assistant: step_1 <extra_0> step_2 <extra_0> ... <extra_0>]`
rendered with the model's chat template; the model classifies every token into two
classes and the reward of step i is the softmax probability of the positive class at the
i-th separator token. Steps are stripped (our steps end with the "\\n\\n" delimiter) and
any separator text inside a step is removed, so there is exactly one separator per step;
this is checked, and a mismatch (a template that adds separators) raises.

`HFPRM` loads the model lazily on first use (`AutoModel`, `trust_remote_code`, as the
model card does; `model_class` may name another auto class), scores paths in padded
batches in a worker thread (the event loop keeps running), and charges one verifier call
per path forward pass with its token count and the model's parameter count. Scores go
through the per-problem prefix cache: a path whose prefixes are all known costs nothing.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any, Sequence

from ttscale.context import SolveContext
from ttscale.segment import STEP_DELIMITER
from ttscale.types import Problem
from ttscale.verifiers.prefix_cache import CachedProcessVerifier

DEFAULT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
DEFAULT_SEPARATOR = "<extra_0>"


class PRMFormat:
    """Builds PRM inputs (token IDs with one separator per step) and reads step rewards."""

    def __init__(self, tokenizer: Any, step_separator: str = DEFAULT_SEPARATOR,
                 system: str | None = DEFAULT_SYSTEM) -> None:
        self.tokenizer = tokenizer
        self.separator = step_separator
        self.system = system
        ids = tokenizer.encode(step_separator, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"the PRM step separator {step_separator!r} must be one token of the tokenizer, got {ids}")
        self.sep_id = int(ids[0])

    def messages(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        clean = [s.replace(self.separator, "").strip() for s in steps]
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        msgs.append({"role": "user", "content": question})
        msgs.append({"role": "assistant", "content": self.separator.join(clean) + self.separator})
        return msgs

    def build(self, question: str, steps: Sequence[str]) -> list[int]:
        """Token IDs of the PRM input; exactly `len(steps)` separator tokens."""
        if not steps:
            raise ValueError("a PRM input needs at least one step")
        text = self.tokenizer.apply_chat_template(
            self.messages(question, steps), tokenize=False, add_generation_prompt=False)
        ids = [int(t) for t in self.tokenizer.encode(text, add_special_tokens=False)]
        found = ids.count(self.sep_id)
        if found != len(steps):
            raise ValueError(f"PRM input has {found} separator tokens for {len(steps)} steps")
        return ids

    def positions(self, ids: Sequence[int]) -> list[int]:
        return [i for i, t in enumerate(ids) if t == self.sep_id]

    def rewards(self, rows: Any, ids: Sequence[int], positive_index: int = 1,
                activation: str = "softmax") -> list[float]:
        """Step rewards from the model's per-token outputs.

        `rows` is a 2-D array (list, numpy or torch) with one row per input token (all-token
        pooling) or one row per separator (step pooling, as vLLM's STEP pooler returns).
        `activation`: "softmax" over the classes (logits in), "none" (probabilities in);
        with a single column, "softmax" means a sigmoid."""
        data = _to_lists(rows)
        pos = self.positions(ids)
        if len(data) == len(ids):
            data = [data[i] for i in pos]
        elif len(data) != len(pos):
            raise ValueError(f"PRM output has {len(data)} rows; expected {len(ids)} (tokens) or {len(pos)} (steps)")
        out = []
        for row in data:
            if activation == "none":
                out.append(float(row[positive_index if len(row) > 1 else 0]))
            elif len(row) == 1:
                out.append(1.0 / (1.0 + math.exp(-float(row[0]))))
            else:
                m = max(row)
                e = [math.exp(float(v) - m) for v in row]
                out.append(e[positive_index] / sum(e))
        return out


def _to_lists(rows: Any) -> list[list[float]]:
    if hasattr(rows, "detach"):  # torch
        rows = rows.detach().float().cpu().numpy()
    if hasattr(rows, "tolist"):
        rows = rows.tolist()
    return [list(r) if isinstance(r, (list, tuple)) else [r] for r in rows]


class HFPRM(CachedProcessVerifier):
    """A PRM run with HF transformers (see the module doc)."""

    name = "prm_hf"
    granularity = "sequence"
    score_range = (0.0, 1.0)  # P(positive) at each step separator

    def __init__(
        self,
        model: str = "Qwen/Qwen2.5-Math-PRM-7B",
        step_separator: str = DEFAULT_SEPARATOR,
        system: str | None = DEFAULT_SYSTEM,
        model_class: str = "AutoModel",
        dtype: str = "auto",
        device: str = "auto",
        trust_remote_code: bool = True,
        batch_size: int = 8,
        positive_index: int = 1,
        parameters: float | None = None,
        aggregation: str = "min",
        use_cache: bool = True,
        step_delimiter: str = STEP_DELIMITER,
    ) -> None:
        super().__init__(aggregation=aggregation, use_cache=use_cache, step_delimiter=step_delimiter)
        if batch_size < 1:
            raise ValueError(f"verifier.batch_size must be >= 1, got {batch_size}")
        self.model_name, self.step_separator, self.system = model, step_separator, system
        self.model_class, self.dtype, self.device = model_class, dtype, device
        self.trust_remote_code, self.batch_size, self.positive_index = trust_remote_code, batch_size, positive_index
        self.parameters = float(parameters) if parameters is not None else 0.0
        self._count_parameters = parameters is None
        self._model: Any = None
        self._format: PRMFormat | None = None
        self._lock = threading.RLock()

    # ---- model ---------------------------------------------------------------
    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import torch
            import transformers

            tok = transformers.AutoTokenizer.from_pretrained(self.model_name, trust_remote_code=self.trust_remote_code)
            cls = getattr(transformers, self.model_class)
            dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
            model = cls.from_pretrained(self.model_name, trust_remote_code=self.trust_remote_code, dtype=dtype)
            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            model.to(device).eval()
            if self._count_parameters:
                self.parameters = float(sum(p.numel() for p in model.parameters()))
            self._format = PRMFormat(tok, self.step_separator, self.system)
            self._device = device
            self._model = model

    @property
    def format(self) -> PRMFormat:
        self.load()
        assert self._format is not None
        return self._format

    def forward(self, batch: list[list[int]]) -> list[list[float]]:
        """Step rewards of each input (token IDs), one padded forward pass."""
        import torch

        self.load()
        tok = self.format.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        width = max(len(x) for x in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):  # right padding: a causal model's real positions are unaffected
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        with self._lock, torch.no_grad():
            out = self._model(input_ids=ids.to(self._device), attention_mask=mask.to(self._device))
        logits = out.logits if hasattr(out, "logits") else out[0]
        return [self.format.rewards(logits[i, : len(x)], x, self.positive_index) for i, x in enumerate(batch)]

    # ---- the process-scorer contract -------------------------------------------
    async def _score_paths(
        self, problem: Problem, paths: Sequence[Sequence[str]], ctx: SolveContext
    ) -> list[list[float]]:
        await asyncio.to_thread(self.load)
        inputs = [self.format.build(problem.question, p) for p in paths]
        out: list[list[float]] = []
        for i in range(0, len(inputs), self.batch_size):
            out.extend(await asyncio.to_thread(self.forward, inputs[i : i + self.batch_size]))
        ctx.ledger.charge_verifier(calls=len(paths), tokens=sum(len(x) for x in inputs), parameters=self.parameters)
        return out
