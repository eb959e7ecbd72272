"""What a reasoning step is, as text: the one rule every process verifier reads.

A step-level search generates a step as one engine request that stops at the step
delimiter and keeps it (`stop=(delimiter,)`, `include_stop_str_in_output=True`), so
each of its steps is the text up to and including the next delimiter, and the last
step is whatever follows the last delimiter. `split_steps` cuts a complete text the
same way, so a solution sampled whole (best-of-N, voting) reaches a process verifier
as the same step-split path a search would have built for the same text (as
search-and-learn splits every completion on "\\n\\n" before its PRM scores it).
"""

from __future__ import annotations

# The default of `strategy.step.delimiter` (StepConfig) and of a process verifier's
# `step_delimiter` (conf/verifier/*.yaml interpolate the strategy's when it has one).
STEP_DELIMITER = "\n\n"


def split_steps(text: str, delimiter: str = STEP_DELIMITER) -> list[str]:
    """`text` cut after every `delimiter` (kept at the end of its step); the rest after the
    last delimiter is the last step. `"".join(split_steps(t, d)) == t`; a text without a
    delimiter (or an empty one) is one step."""
    if not delimiter:
        raise ValueError("the step delimiter must not be empty")
    steps: list[str] = []
    start = 0
    while True:
        i = text.find(delimiter, start)
        if i < 0:
            break
        end = i + len(delimiter)
        steps.append(text[start:end])
        start = end
    if start < len(text) or not steps:
        steps.append(text[start:])
    return steps
