"""The performance benchmark behind `scripts/bench.py` (see the README's "Performance").

Parts:

- `overhead` (real engine): best-of-N through the framework's runner against the same
  prompts and sampling parameters sent straight to the same vLLM `AsyncLLM`.
- `concurrency` (real engine): particle filtering and A* with many problems in flight,
  against the same problems one at a time and against raw batched generation of the same
  number of tokens.
- `prefix` (real engine): the share of prompt tokens served from vLLM's prefix cache in
  step-level search (measured in the `concurrency` runs).
- `orchestration` (fake engine): the framework's own cost per problem and per request and
  its memory over 10,000 synthetic problems.
"""
