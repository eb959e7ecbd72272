"""Check a run's resolved config before any compute is spent: one clear line per mistake.

`runner.plan.prepare` calls `validate_config(cfg)` first thing, and `check_request_shape`
once the strategy is built; both raise `ConfigError` (the CLI prints it as one line, exit
status 2). The run directory is created only after this, and only once the engine is up,
so a rejected config leaves nothing behind. (The command line itself is checked earlier,
in `runner.cli_checks`.)

What is checked (each message names the config key to change):

* sampling: `temperature >= 0`, `top_p` in (0, 1], `max_tokens >= 1`, for
  `sampling.*` and for a strategy's own value when it is not the `${sampling.*}` one;
* the strategy (asked, once built, not read by key name): its counts (`count_params`,
  integers >= 1) and its first request's shape against the token budget (below);
* budget: `budget.max_tokens` / `budget.max_verifier_calls` are >= 1 or null;
* run: `run.concurrency >= 1`, `run.retry.*` sane;
* data: `task.path`, when set, is an existing file (a Hub dataset is checked when the
  task loads, next: unreachable offline, its error suggests `task.path=`);
* models: the policy model (`model.path` / `backend.model`) and a verifier's model
  (`verifier.model`, loaded lazily mid-run) can be loaded here (`runner.models`).

The budget rule. The smallest unit of work a strategy sends is one step of one
sequence (`Strategy.request_shape()`: one step for step-level search, one chunk for
entropy branching, the whole sample for parallel sampling). A `budget.max_tokens` below
that unit is rejected: not even one sequence could take its first step (or one complete
sample be drawn), so every strategy would return nothing worth measuring. A budget above
the unit but below what the first request asks for in full (sequences x unit) is
allowed, with a warning: parallel sampling draws complete samples in waves until the
budget cannot pay for one more (fewer than n, none cut); a step search shares what is
left among a wave's sequences and stops expanding when it is spent.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from ttscale.runner.errors import ConfigError
from ttscale.runner.models import check_model
from ttscale.strategy import RequestShape, Strategy
from ttscale.verifier import Verifier

log = logging.getLogger("ttscale")


def _source_key(cfg: DictConfig, key: str) -> str:
    """The key the user sets for `key`: follows a plain `${other.key}` interpolation."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig) and leaf in node and OmegaConf.is_interpolation(node, leaf):
        raw = node._get_node(leaf)._value()  # type: ignore[union-attr]
        m = re.fullmatch(r"\$\{([\w.]+)\}", str(raw))
        if m:
            return _source_key(cfg, m.group(1))
    return key


def _get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception as e:  # noqa: BLE001 - a broken interpolation
        raise ConfigError(f"{key}: {e}") from e


def _number(cfg: DictConfig, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{_source_key(cfg, key)} must be a number, got {value!r}")
    return float(value)


def _count(cfg: DictConfig, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{_source_key(cfg, key)} must be an integer >= 1, got {value!r}")
    return value


def _check_sampling(cfg: DictConfig) -> None:
    for node in ("sampling", "strategy"):
        for leaf in ("temperature", "top_p", "max_tokens"):
            key = f"{node}.{leaf}"
            if node == "strategy" and _source_key(cfg, key) != key:
                continue  # `${sampling.x}`: checked as sampling.x
            value = _get(cfg, key)
            if value is None:
                continue
            if leaf == "max_tokens":
                _count(cfg, key, value)
                continue
            x = _number(cfg, key, value)
            if leaf == "temperature" and x < 0:
                raise ConfigError(f"{key} must be >= 0 (0 = greedy), got {value}")
            if leaf == "top_p" and not 0 < x <= 1:
                raise ConfigError(f"{key} must be in (0, 1], got {value}")


def _check_seed(cfg: DictConfig) -> None:
    v = _get(cfg, "seed")
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {v!r}")


def _check_budget(cfg: DictConfig) -> None:
    b = cfg.get("budget")
    if not isinstance(b, DictConfig):
        return
    for leaf in ("max_tokens", "max_verifier_calls"):
        v = _get(cfg, f"budget.{leaf}")
        if v is not None:
            _count(cfg, f"budget.{leaf}", v)


def check_request_shape(cfg: DictConfig, shape: RequestShape | None) -> None:
    """The budget rule of the module doc, for the built strategy's first request."""
    budget = _get(cfg, "budget.max_tokens") if isinstance(cfg.get("budget"), DictConfig) else None
    if budget is None or shape is None:
        return
    key = _source_key(cfg, f"strategy.{shape.unit_key}")
    tokens = shape.unit_tokens
    if budget < tokens:
        raise ConfigError(
            f"budget.max_tokens={budget} is smaller than one step of one sequence ({key}={tokens}): "
            f"raise budget.max_tokens to at least {tokens} or lower {key}"
        )
    if budget < shape.sequences * tokens and shape.unit_key == "max_tokens":  # whole samples
        log.warning("budget.max_tokens=%d pays for %d complete samples of %s=%d at a time, fewer than n=%d: "
                    "samples are drawn in waves until the budget cannot pay for one more (none is cut)",
                    budget, budget // tokens, key, tokens, shape.sequences)
    elif budget < shape.sequences * tokens:
        log.warning("budget.max_tokens=%d is less than the first request's %d sequences x %s=%d: "
                    "each sequence gets about %d tokens per request", budget, shape.sequences, key, tokens,
                    budget // shape.sequences)


def _check_run(cfg: DictConfig) -> None:
    r = cfg.get("run")
    if not isinstance(r, DictConfig):
        return
    if r.get("concurrency") is not None:
        _count(cfg, "run.concurrency", _get(cfg, "run.concurrency"))
    retry = r.get("retry")
    if isinstance(retry, DictConfig):
        if retry.get("attempts") is not None:
            _count(cfg, "run.retry.attempts", retry.get("attempts"))
        t = retry.get("timeout_s")
        if t is not None and _number(cfg, "run.retry.timeout_s", t) <= 0:
            raise ConfigError(f"run.retry.timeout_s must be > 0 or null, got {t}")
        b = retry.get("backoff_s")
        if b is not None and _number(cfg, "run.retry.backoff_s", b) < 0:
            raise ConfigError(f"run.retry.backoff_s must be >= 0, got {b}")


def _check_task(cfg: DictConfig) -> None:
    t = cfg.get("task")
    if not isinstance(t, DictConfig) or "path" not in t:
        return
    path = _get(cfg, "task.path")
    if path in (None, ""):
        return
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ConfigError(f"task.path={path}: no such file (resolved to {p.resolve()})")
    if p.is_dir():
        raise ConfigError(f"task.path={path} is a directory; give a .jsonl/.json/.parquet/.csv file")


def _check_models(cfg: DictConfig) -> None:
    backend = cfg.get("backend")
    if isinstance(backend, DictConfig) and "model" in backend and "base_url" not in backend:
        # a server backend (base_url) names a served model, not something to load
        check_model(_get(cfg, "backend.model"), _source_key(cfg, "backend.model"))
    verifier = cfg.get("verifier")
    if isinstance(verifier, DictConfig) and isinstance(verifier.get("model"), str):
        # a reward model loads lazily, mid-run: check it now like the policy model
        check_model(_get(cfg, "verifier.model"), _source_key(cfg, "verifier.model"))


CHECKS = (_check_seed, _check_sampling, _check_budget, _check_run, _check_task, _check_models)


def validate_config(cfg: DictConfig) -> None:
    """Every check above, in order; the first failure raises `ConfigError` (one line)."""
    for check in CHECKS:
        check(cfg)


def _interval(r: Sequence[float]) -> str:
    lo, hi = float(r[0]), float(r[1])
    return f"{'(' if lo == -math.inf else '['}{lo:g}, {hi:g}{')' if hi == math.inf else ']'}"


def check_score_range(strategy: Strategy, verifier: Verifier | None) -> None:
    """A strategy guided by verifier scores it cannot read is rejected, not run: each of
    the strategy's `score_needs` its settings select must contain the built verifier's
    `score_range` (undeclared: unbounded). E.g. particle filtering's logit weighting clips
    every negative mean log-probability to the same weight: the resampling is uniform."""
    if verifier is None:
        return
    have = tuple(verifier.score_range)
    for setting, low, high, why in strategy.applicable_score_needs():
        if have[0] < low or have[1] > high:
            attr = setting.partition("=")[0]
            where = f"strategy.{setting}" if attr else f"strategy {strategy.name}"
            raise ConfigError(
                f"{where} needs verifier scores in {_interval((low, high))}, but verifier {verifier.name} scores in "
                f"{_interval(have)} (its score_range): {why}; choose a verifier whose scores fit"
                + (f" ({verifier.bounded_override})" if verifier.bounded_override else "")
                + (f" or another strategy.{attr}" if attr else "")
            )
