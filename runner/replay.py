"""Replay: run another selection over a finished run's stored pools, generating nothing.

`replay(SOURCE_DIR, ["strategy=...", "verifier=...", ...])` builds the replay's config from
the source run's resolved config with the strategy (and, when given, the verifier, logger and
any other override) replaced; `strategy.n` defaults to the source's. The strategy's own code
runs as in any run, against `ReplayEngine` (backends/replay.py), which serves the stored
samples of each problem in the order they were drawn; a verifier that needs no model
(`self_certainty`, `arithmetic_checker`, `none`) rescores them. The result is an ordinary run
directory (records, metrics, W&B run, plots), under the source's experiment, whose config
holds `replay.source` (the source run's hash; part of the identity) and `replay.source_dir`
(not hashed). No engine loads. Replayable: every strategy whose requests are whole samples of
the prompt (majority, weighted majority, best-of-N, best-of-majority, the DeepConf offline
voters, adaptive consistency's stopping rule in sample order).

Generated tokens are exactly what the samples used cost when they were generated; prompt
tokens are the source's mean per request, so a replay that uses fewer requests (adaptive
consistency) is charged fewer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ttscale.backends.replay import ReplayEngine
from ttscale.context import derive_seed
from ttscale.results import iter_records
from ttscale.runner.errors import ConfigError
from ttscale.runner.job import run

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
MODEL_FREE_VERIFIERS = ("none", "self_certainty", "arithmetic_checker")


def _group(o: str) -> str:
    return o.lstrip("+").split("=", 1)[0].split(".", 1)[0]


def replay_config(source_dir: Path, overrides: list[str]) -> DictConfig:
    """The replay's config (see module doc). Raises ConfigError naming what is wrong."""
    if not (source_dir / "config.yaml").is_file() or not (source_dir / "identity.json").is_file():
        raise ConfigError(f"replay: {source_dir} is not a run directory (no config.yaml / identity.json)")
    src = OmegaConf.load(source_dir / "config.yaml")
    source_hash = json.loads((source_dir / "identity.json").read_text())["hash"]
    if not any(o.startswith("strategy=") for o in overrides):
        raise ConfigError("replay: give strategy=<name> (the selection to run over the stored pools)")
    verifier = next((o.split("=", 1)[1] for o in overrides if o.startswith("verifier=")), None)
    if verifier is not None and verifier not in MODEL_FREE_VERIFIERS:
        raise ConfigError(f"replay: verifier={verifier} needs a model; replay takes {', '.join(MODEL_FREE_VERIFIERS)}")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = compose("config", overrides=list(overrides))
    except Exception as e:  # noqa: BLE001 - Hydra's own message names the override
        raise ConfigError(f"replay: {e}") from e
    groups = {_group(o) for o in overrides}
    fixed = groups & {"task", "model", "backend", "sampling", "seed", "budget"}
    if fixed:
        raise ConfigError(f"replay: {', '.join(sorted(fixed))} cannot change in a replay (the pools were drawn with the source's)")
    cfg = src.copy()
    with open_dict(cfg):
        for g in groups:
            node = OmegaConf.to_container(composed[g], resolve=False) if composed.get(g) is not None else None
            if g in ("run",):  # run settings: only the keys the user set
                for o in overrides:
                    if _group(o) == "run":
                        k, v = o.lstrip("+").split("=", 1)
                        OmegaConf.update(cfg, k, OmegaConf.select(composed, k), force_add=True)
                continue
            cfg[g] = node
        if "strategy.n" not in {o.split("=", 1)[0] for o in overrides} and src.strategy.get("n") is not None and "n" in cfg.strategy:
            cfg.strategy.n = src.strategy.n
        if "run.dir" not in {o.split("=", 1)[0] for o in overrides}:
            cfg.run.dir = None  # never the source's own directory
        cfg.run.retry = {"attempts": 1, "timeout_s": None, "backoff_s": 0.0}  # nothing to retry: a refusal is final
        cfg.replay = {"source": source_hash, "source_dir": str(source_dir)}
        if not cfg.run.get("dir"):  # beside the source, labelled as the source's task is
            from ttscale.runner.identity import choice, run_identity

            task = json.loads((source_dir / "identity.json").read_text()).get("choices", {}).get("task") or choice(cfg, "task")
            cfg.run.dir = str(source_dir.parent / f"{task}-{choice(cfg, 'strategy')}-{run_identity(cfg)[1]}")
    return cfg


def replay_engine(cfg: DictConfig, source_dir: Path) -> ReplayEngine:
    """The engine serving the source's pools, one per problem of the task."""
    env_path = source_dir / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    params = (env.get("engine") or {}).get("num_parameters") or (cfg.get("model") or {}).get("parameters") or 0
    engine = ReplayEngine(num_parameters=int(params), source=str(cfg.replay.source))
    records = {str(r["problem_id"]): r for r in iter_records(source_dir)}
    task = instantiate(cfg.task)
    items = task.load()
    missing = [p.id for p, _ in items if p.id not in records]
    if missing:
        raise ConfigError(f"replay: the source run has no record of {len(missing)} problem(s), e.g. {missing[0]!r}; finish it first")
    for p, _ in items:
        r = records[p.id]
        u = r.get("usage") or {}
        req = max(1, int(u.get("requests") or 1))
        ids = engine.tokenizer.apply_chat_template(task.messages(p))
        base = derive_seed(cfg.seed, p.id)  # as the runner seeds the problem's requests (runner/solve.py)
        seeds = [derive_seed(base, i) for i in range(1, 4 * len(r.get("candidates") or ()) + 9)]
        engine.register(ids, p.id, r.get("candidates") or [], round((u.get("prompt_tokens") or 0) / req),
                        round((u.get("cached_prompt_tokens") or 0) / req), seeds)
    return engine


def replay(source_dir: str | Path, overrides: list[str]) -> tuple[Path, dict[str, Any]]:
    """Run the replay; returns its run directory and metrics."""
    from ttscale.runner.identity import run_dir_for

    source_dir = Path(source_dir)
    cfg = replay_config(source_dir, overrides)
    engine = replay_engine(cfg, source_dir)
    metrics = run(cfg, engine=engine)
    return run_dir_for(cfg)[0], metrics
