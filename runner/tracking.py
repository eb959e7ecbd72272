"""Tracking: Weights & Biases (offline when no API key), console summary, progress.

A tracking failure never stops a run: every W&B call is guarded, and the first
failure is reported once and turns tracking off (or falls back to offline mode when
going online failed).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable

from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger("ttscale")


class NullTracker:
    def start(self, **kwargs: Any) -> None: ...
    def log_results(self, metrics: dict[str, Any], records: Iterable[dict[str, Any]]) -> None: ...
    def finish(self) -> None: ...


def flat_summary(metrics: dict[str, Any]) -> dict[str, float]:
    """Top-level scalar metrics (what W&B's summary, scatter and parallel-coordinates use)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def wandb_base_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"


def server_reachable(timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the W&B server opens within `timeout` seconds."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(wandb_base_url())
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _teardown() -> None:
    import wandb

    wandb.teardown()


class WandbTracker:
    """W&B run per configuration; `mode: auto` means online with a key, offline without."""

    def __init__(
        self,
        project: str = "ttscale",
        entity: str | None = None,
        mode: str = "auto",
        dir: str | None = None,
        tags: list[str] | None = None,
        log_table: bool = True,
        log_trees: int = 4,
    ) -> None:
        self.project, self.entity, self.mode, self.dir = project, entity, mode, dir
        self.extra_tags = list(tags or [])
        self.log_table = log_table
        self.log_trees = int(log_trees)  # search trees logged as HTML panels (the first problems that have one)
        self.run = None
        self._warned = False

    def _mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        if os.environ.get("WANDB_MODE"):
            return os.environ["WANDB_MODE"]
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"

    def _guard(self, what: str, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - tracking must never stop a run
            if not self._warned:  # said once; later failures go to the debug log
                log.warning("W&B %s failed (%s: %s); the run goes on without it", what, type(e).__name__, e)
                self._warned = True
            else:
                log.debug("W&B %s failed (%s: %s)", what, type(e).__name__, e)
            return None

    def start(self, *, config: dict, run_id: str, name: str, group: str, tags: list[str], run_dir: str) -> None:
        def _init(mode: str):
            # W&B's own banners (integrations it detects, products it suggests) stay off the
            # terminal; ttscale says itself when W&B falls back to offline or fails.
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            return wandb.init(
                project=self.project, entity=self.entity, mode=mode, dir=self.dir or run_dir,
                id=run_id, name=name, group=group, tags=[t[:64] for t in tags + self.extra_tags if t], config=config,
                resume="allow", reinit="finish_previous",
                settings=wandb.Settings(init_timeout=60, silent=True),
            )

        mode = self._mode()
        where = self.dir or run_dir
        if mode == "online" and not server_reachable():  # do not wait out init_timeout
            log.warning("W&B server %s unreachable; logging offline to %s/wandb (`wandb sync` uploads it later)",
                        wandb_base_url(), where)
            mode = "offline"
        try:
            self.run = _init(mode)
        except Exception as e:  # noqa: BLE001
            if mode == "online":  # a wrong key, a server error: offline still keeps everything
                log.warning("W&B online init failed (%s: %s); logging offline to %s/wandb (`wandb sync` uploads it later)",
                            type(e).__name__, e, where)
                self._guard("teardown", _teardown)  # the failed online run holds its id
                self._warned = False
                self.run = self._guard("offline init", _init, "offline")
            else:
                log.warning("W&B init failed (%s); tracking off for this run", e)

    def log_results(self, metrics: dict[str, Any], records: Iterable[dict[str, Any]]) -> None:
        if self.run is None:
            return
        records = list(records)  # read twice: the table and the trees
        self._guard("summary", self.run.summary.update, flat_summary(metrics))
        self._guard("curves", self._log_curves, metrics)
        if self.log_table:
            self._guard("table", self._log_table, records)
        if self.log_trees > 0:
            self._guard("trees", self._log_trees, records)

    def _log_curves(self, metrics: dict[str, Any]) -> None:
        import wandb

        for name, curve in (metrics.get("curves") or {}).items():
            rows = [[int(k), float(v["mean"])] for k, v in sorted(curve.items(), key=lambda kv: int(kv[0]))]
            if not rows:
                continue
            table = wandb.Table(data=rows, columns=["k", name])
            self.run.log({f"curve/{name}": wandb.plot.line(table, "k", name, title=f"{name}@k")})

    def _log_table(self, records: Iterable[dict[str, Any]]) -> None:
        import wandb

        cols = ["problem_id", "answer", "correct", "n_candidates", "n_correct", "generated_tokens", "error"]
        table = wandb.Table(columns=cols)
        for r in records:
            cands = r.get("candidates") or []
            table.add_data(
                r["problem_id"], r.get("answer"), r.get("correct"), len(cands),
                sum(1 for c in cands if c.get("correct")), (r.get("usage") or {}).get("generated_tokens", 0),
                r.get("error"),
            )
        self.run.log({"problems": table})

    def _log_trees(self, records: Iterable[dict[str, Any]]) -> None:
        """The search trees of the first `log_trees` problems that have one, as HTML panels
        (`tree/<problem id>`: the report's tree view, standalone, nothing fetched)."""
        import wandb

        from ttscale.report.tree import tree_page

        panels = {}
        for r in sorted(records, key=lambda r: r.get("index", 0)):
            if len(panels) >= self.log_trees:
                break
            if r.get("tree"):
                pid = str(r["problem_id"])
                title = f"{pid}: answer {r.get('answer')} ({'right' if r.get('correct') else 'wrong'})"
                panels[f"tree/{pid}"] = wandb.Html(tree_page(r["tree"], title), inject=False, data_is_not_path=True)
        if panels:
            self.run.log(panels)

    def finish(self) -> None:
        if self.run is not None:
            self._guard("finish", self.run.finish)
            self.run = None


def tracker_for(cfg: DictConfig) -> Any:
    """The run's tracker (`logger=` config); a logger that cannot be built turns tracking off."""
    if cfg.get("logger") is None:
        return NullTracker()
    try:
        return instantiate(cfg.logger)
    except Exception as e:  # noqa: BLE001
        log.warning("logger could not be built (%s); tracking off", e)
        return NullTracker()
