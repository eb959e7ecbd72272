"""The plan of a run: everything built and checked before the engine loads a model.

Order matters: the config values, the strategy (its counts and request shape), the
task and its data, and the verifier are built and checked *before* the engine loads,
so a bad config costs nothing and leaves no run directory behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ttscale.budget import Budget
from ttscale.results import ResultsStore, iter_records
from ttscale.runner.errors import ConfigError
from ttscale.runner.identity import choice, run_dir_for
from ttscale.runner.validation import check_request_shape, check_score_range, validate_config
from ttscale.strategy import Strategy
from ttscale.task import Task
from ttscale.types import Problem, Reference
from ttscale.verifier import Verifier


@dataclass
class Plan:
    cfg: DictConfig
    run_dir: Path
    run_hash: str
    task: Task
    items: list[tuple[Problem, Reference]]  # this shard's problems
    strategy: Strategy
    verifier: Verifier | None
    budget: Budget
    done: set[str]  # problem ids already recorded
    store: ResultsStore
    todo: list[tuple[int, Problem, Reference]] = field(default_factory=list)  # (index in the task, ...)

    @property
    def ids(self) -> set[str]:
        return {p.id for p, _ in self.items}


def build(cfg: DictConfig, group: str) -> Any:
    """`instantiate(cfg.<group>)`; a component's own error becomes a one-line ConfigError."""
    node = cfg.get(group)
    if node is None:
        return None
    try:
        return instantiate(node)
    except Exception as e:  # noqa: BLE001 - surface the component's own message
        cause = e.__cause__ or e
        raise ConfigError(f"{group}: {cause}") from e


def shard_items(items: list, shard: int, num_shards: int) -> list:
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ConfigError(f"run.shard must be in [0, run.num_shards) and run.num_shards >= 1, got {shard}/{num_shards}")
    return items[shard::num_shards]


def build_strategy(cfg: DictConfig) -> Strategy:
    strategy = build(cfg, "strategy")
    try:
        strategy.check()
    except ValueError as e:
        raise ConfigError(str(e)) from e
    check_request_shape(cfg, strategy.request_shape())
    return strategy


def load_problems(cfg: DictConfig, task: Task) -> list[tuple[Problem, Reference]]:
    try:
        items = task.load()
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"task: {e}") from e
    ids = [p.id for p, _ in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"task: duplicate problem id {dup!r}")
    return shard_items(items, int(cfg.run.shard), int(cfg.run.num_shards))


def recorded(run_dir: Path, store: ResultsStore, retry_failed: bool) -> set[str]:
    """Problem ids already done: this shard's records (a torn last line dropped), plus the
    records of other shard splits or of a merge. With `retry_failed`, failed ones run again
    (their failed records stay as history)."""
    if not run_dir.exists():
        return set()
    done = store.recover()
    for r in iter_records(run_dir):  # one record per problem: its success, if it ever had one
        if retry_failed and r.get("error") is not None:
            done.discard(str(r["problem_id"]))
        else:
            done.add(str(r["problem_id"]))
    return done


def budget_of(cfg: DictConfig) -> Budget:
    try:
        return Budget(**OmegaConf.to_container(cfg.budget, resolve=True)) if cfg.get("budget") else Budget()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"budget: {e}") from e


def prepare(cfg: DictConfig) -> Plan:
    """Build and check everything except the engine. Raises ConfigError."""
    validate_config(cfg)  # the values themselves, before anything is built
    strategy = build_strategy(cfg)
    task = build(cfg, "task")
    items = load_problems(cfg, task)
    verifier = build(cfg, "verifier")
    if strategy.requires_verifier and verifier is None:
        raise ConfigError(f"strategy {choice(cfg, 'strategy')} needs a verifier: set verifier=<name>")
    check_score_range(strategy, verifier)  # a verifier whose scores cannot guide the strategy
    budget = budget_of(cfg)
    run_dir, h = run_dir_for(cfg)
    store = ResultsStore(run_dir, int(cfg.run.shard), int(cfg.run.num_shards), fsync=bool(cfg.run.get("fsync", True)))
    done = recorded(run_dir, store, bool(cfg.run.get("retry_failed", False)))
    plan = Plan(cfg, run_dir, h, task, items, strategy, verifier, budget, done, store)
    # index = the problem's position in the task's full list (shard i of k holds i, i+k, ...)
    k, s = int(cfg.run.num_shards), int(cfg.run.shard)
    plan.todo = [(s + i * k, p, r) for i, (p, r) in enumerate(items) if p.id not in done]
    return plan
