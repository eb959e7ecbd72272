"""Online DeepConf in vLLM: a v1 logits processor that ends a sequence whose windowed token
confidence falls below its request's threshold.

Decision (issue 14): a logits processor forcing end of sequence, not a request abort. The
processor sees every decoding step of the request in the engine's own loop, so the sequence
ends at exactly the first position whose window is below the threshold (an abort from the
client side would land some steps later, with those tokens generated and streamed, and
needs streaming outputs); the finished sequence comes back as an ordinary output with its
log-probabilities, and the tokens after it are never generated. This is how the paper's
reference code does it (facebookresearch/deepconf `processors.py`, `ConfPerReqLogitsProcessor`).

Per request (`SamplingParams.extra_args["ttscale_confidence_stop"]` = threshold, window_size,
conf_topk, eos_token_id): at each position the token confidence -mean(top-k log-softmax of
the raw logits) (the log-probabilities vLLM returns: both come before temperature) joins a
window of the last `window_size`; once the window is full and its mean is below the
threshold, every logit but end-of-sequence is set to -inf, so that position samples EOS.
Requests without the argument are untouched. `VLLMEngine` installs the processor at start
(`logits_processors`); the CPU and CUDA builds both load custom processors (vLLM 0.32).
A preempted and rescheduled request restarts its window (the processor's state is per
scheduling of the request).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

EXTRA_ARG = "ttscale_confidence_stop"
FQCN = "ttscale.backends.confidence_stop:ConfidenceStopProcessor"


class _RequestWindow:
    def __init__(self, threshold: float, window_size: int, conf_topk: int, eos_token_id: int) -> None:
        self.threshold, self.window_size, self.k, self.eos = float(threshold), int(window_size), int(conf_topk), int(eos_token_id)
        self.window: deque[float] = deque(maxlen=self.window_size)
        self.total = 0.0

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=-1)
        conf = -float(torch.topk(logp, self.k).values.mean())
        if len(self.window) == self.window_size:
            self.total -= self.window[0]
        self.window.append(conf)
        self.total += conf
        if len(self.window) == self.window_size and self.total / self.window_size < self.threshold:
            keep = logits[self.eos].clone()
            logits.fill_(float("-inf"))
            logits[self.eos] = keep
        return logits


class ConfidenceStopProcessor(AdapterLogitsProcessor):
    """vLLM v1 logits processor (see module doc)."""

    def is_argmax_invariant(self) -> bool:
        return False  # it changes what greedy decoding picks

    def new_req_logits_processor(self, params: SamplingParams) -> Any:
        args = (params.extra_args or {}).get(EXTRA_ARG)
        if not args:
            return None
        return _RequestWindow(args["threshold"], args["window_size"], args["conf_topk"], args["eos_token_id"])
