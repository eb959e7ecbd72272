"""A run's identity: the result-relevant part of its resolved config, its hash, and the
run directory named after them.

The hash covers the resolved config minus the keys that do not change results
(`NON_RESULT_KEYS`). Component targets are hashed by their names inside the project:
`ttscale.strategies.best_of_n.BestOfN` and the `strategies.best_of_n.BestOfN` of run
directories made before the floors were installed under `ttscale.` hash alike, so those
runs keep their directory. `RESULTS_VERSION` is part of the hash: when ttscale changes what the
same config records (grading, budgets, defaults), a run gets a new directory rather than
resuming an old one with records of another meaning; identity.json says which version made it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

# Config keys that do not change results: left out of a run's identity (hash).
NON_RESULT_KEYS = (
    "logger", "hydra",
    "run.root", "run.dir", "run.concurrency", "run.progress", "run.shard", "run.num_shards",
    "run.dry_run", "run.fsync", "run.experiment", "run.tags", "run.summary", "run.retry", "run.retry_failed",
    "replay.source_dir",  # a replay's identity names its source run by hash, not by path
    "run.verbose",
)
# What a record means changes with ttscale itself, not only with the config: bumped when the same
# config would now give different records, so such a run gets a new directory instead of mixing
# old and new records on resume. Version 1 (no key in the hash): up to the floors (issue 11).
# Version 2: strict grading (only a finished solution's answer counts, no last-number fallback,
# unit words), one compute contract (step searches get the sampling allowance; complete samples
# under a token budget; verifier calls granted before scoring), the papers' defaults (last-step
# aggregation, EAGer's forks and threshold, beam refill and duplicate filter, best-of-majority
# graded as Pass@k), process verifiers scoring whole samples split into steps.
RESULTS_VERSION = 2

# Floors installed under `ttscale.` whose targets are hashed without that prefix (see the module doc).
PLUGIN_PACKAGES = ("backends", "sandbox", "tasks", "verifiers", "strategies")


def normalise_target(target: str) -> str:
    head, _, rest = target.partition(".")
    sub = rest.partition(".")[0]
    return rest if head == "ttscale" and sub in PLUGIN_PACKAGES else target


def installed_target(target: str) -> str:
    """A target as hashed (`strategies.best_of_n.BestOfN`) as today's import name."""
    return f"ttscale.{target}" if target.partition(".")[0] in PLUGIN_PACKAGES else target


def _normalise(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: normalise_target(v) if k == "_target_" and isinstance(v, str) else _normalise(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    return node


def run_identity(cfg: DictConfig) -> tuple[dict[str, Any], str]:
    """The result-relevant part of the resolved config (as hashed) and its hash (12 hex chars)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    for key in NON_RESULT_KEYS:
        node, *rest = key.split(".")
        if not rest:
            c.pop(node, None)
        elif isinstance(c.get(node), dict):
            c[node].pop(rest[0], None)
    c = _normalise(c)
    if RESULTS_VERSION > 1:
        c["results_version"] = RESULTS_VERSION
    blob = json.dumps(c, sort_keys=True, default=str)
    return c, hashlib.sha256(blob.encode()).hexdigest()[:12]


def choice(cfg: DictConfig, group: str) -> str:
    """The name of the option chosen for a config group (`particle_filter`), for labels."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            ch = HydraConfig.get().runtime.choices.get(group)
            if ch:
                return str(ch).replace("/", "_")
    except Exception:  # noqa: BLE001
        pass
    node = cfg.get(group)
    if isinstance(node, DictConfig) and "_target_" in node:
        try:  # outside Hydra (a config built in code): the component's own `name`, e.g. "majority_vote"
            name = getattr(get_class(str(node["_target_"])), "name", None)
            if isinstance(name, str) and name:
                return name.replace("/", "_")
        except Exception:  # noqa: BLE001
            pass
        return str(node["_target_"]).rsplit(".", 1)[-1].lower()
    if isinstance(node, DictConfig) and node.get("path"):  # model presets: the checkpoint's name
        return str(node["path"]).rstrip("/").rsplit("/", 1)[-1].split(":")[-1]
    return "none" if node is None else str(node)


def run_dir_for(cfg: DictConfig) -> tuple[Path, str]:
    """`<run.root>/<run.experiment>/<task>-<strategy>-<hash>` (or `run.dir`), and the hash."""
    _, h = run_identity(cfg)
    if cfg.run.get("dir"):
        return Path(cfg.run.dir), h
    label = f"{choice(cfg, 'task')}-{choice(cfg, 'strategy')}"
    return Path(cfg.run.root) / str(cfg.run.experiment) / f"{label}-{h}", h


def run_tags(cfg: DictConfig) -> list[str]:
    """W&B tags: strategy, task, model, n, seed, and the user's `run.tags`."""
    tags = [f"strategy:{choice(cfg, 'strategy')}", f"task:{choice(cfg, 'task')}", f"model:{choice(cfg, 'model')}"]
    n = cfg.strategy.get("n") if cfg.get("strategy") is not None else None
    if n is not None:
        tags.append(f"n:{n}")
    tags.append(f"seed:{cfg.seed}")
    return tags + [str(t) for t in (cfg.run.get("tags") or [])]
