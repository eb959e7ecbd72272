"""Compose a run from its config, keep many problems in flight, resume, record.

Order matters: the task, its data, the strategy and the verifier are built and
checked *before* the engine loads a model, so a bad config costs nothing and leaves
no run directory behind. Each finished problem is graded (the reference is seen only
here and by an explicit oracle verifier) and appended as one JSON line; a rerun
skips the problems already recorded.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tasks.base import Task, cluster_answers
from ttscale.budget import Budget, Ledger
from ttscale.context import SolveContext, derive_seed
from ttscale.results import ResultsStore, iter_records, write_json_atomic, write_text_atomic
from ttscale.types import Problem, Reference, Result

log = logging.getLogger("ttscale")

# Config keys that do not change results: left out of a run's identity (hash).
NON_RESULT_KEYS = (
    "logger", "hydra",
    "run.root", "run.dir", "run.concurrency", "run.progress", "run.shard", "run.num_shards",
    "run.dry_run", "run.fsync", "run.experiment", "run.tags", "run.summary", "run.retry", "run.retry_failed",
)


class ConfigError(ValueError):
    """A problem with the user's config or data, reported as one line before any compute."""


def run_identity(cfg: DictConfig) -> tuple[dict[str, Any], str]:
    """The result-relevant part of the resolved config and its hash (12 hex chars)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    for key in NON_RESULT_KEYS:
        node, *rest = key.split(".")
        if not rest:
            c.pop(node, None)
        elif isinstance(c.get(node), dict):
            c[node].pop(rest[0], None)
    blob = json.dumps(c, sort_keys=True, default=str)
    return c, hashlib.sha256(blob.encode()).hexdigest()[:12]


def _choice(cfg: DictConfig, group: str) -> str:
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
            from hydra.utils import get_class

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
    _, h = run_identity(cfg)
    if cfg.run.get("dir"):
        return Path(cfg.run.dir), h
    label = f"{_choice(cfg, 'task')}-{_choice(cfg, 'strategy')}"
    return Path(cfg.run.root) / str(cfg.run.experiment) / f"{label}-{h}", h


# ---------------------------------------------------------------- engines
_ENGINES: dict[str, Any] = {}


def get_engine(backend_cfg: DictConfig) -> Any:
    """One engine per process: a sweep in one process reuses it while the backend settings stay
    the same, and replaces it (the old one shut down first, freeing its memory) when they change.

    The engine's own `seed` is left out of that comparison: every request carries a seed derived
    from the run seed and the problem, so a sweep over `seed` keeps one engine."""
    settings = OmegaConf.to_container(backend_cfg, resolve=True)
    if isinstance(settings, dict):
        settings.pop("seed", None)
    key = json.dumps(settings, sort_keys=True, default=str)
    if key not in _ENGINES:
        _shutdown_engines()
        _ENGINES[key] = instantiate(backend_cfg)
        # Exit handlers run last-registered first. multiprocessing's own handler joins the engine's
        # worker processes, which only exit once the engine is shut down: registered again here,
        # after the engine started them, the shutdown runs first (else the interpreter hangs at exit).
        atexit.unregister(_shutdown_engines)
        atexit.register(_shutdown_engines)
    return _ENGINES[key]


@atexit.register
def _shutdown_engines() -> None:
    for eng in _ENGINES.values():
        stop = getattr(eng, "shutdown", None)
        if stop is not None:
            try:
                stop()
            except Exception:  # noqa: BLE001
                pass
    _ENGINES.clear()


# ---------------------------------------------------------------- the plan
@dataclass
class Plan:
    cfg: DictConfig
    run_dir: Path
    run_hash: str
    task: Task
    items: list[tuple[Problem, Reference]]
    strategy: Any
    verifier: Any
    budget: Budget
    done: set[str]
    store: ResultsStore


def _build(cfg: DictConfig, group: str) -> Any:
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


def prepare(cfg: DictConfig) -> Plan:
    """Build and check everything except the engine. Raises ConfigError."""
    from ttscale.validate import check_score_range, validate_config

    validate_config(cfg)  # the values themselves, before anything is built
    task = _build(cfg, "task")
    try:
        items = task.load()
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"task: {e}") from e
    ids = [p.id for p, _ in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"task: duplicate problem id {dup!r}")
    items = shard_items(items, int(cfg.run.shard), int(cfg.run.num_shards))
    strategy = _build(cfg, "strategy")
    verifier = _build(cfg, "verifier")
    if getattr(strategy, "requires_verifier", False) and verifier is None:
        raise ConfigError(f"strategy {_choice(cfg, 'strategy')} needs a verifier: set verifier=<name>")
    check_score_range(strategy, verifier)  # a verifier whose scores cannot guide the strategy
    try:
        budget = Budget(**OmegaConf.to_container(cfg.budget, resolve=True)) if cfg.get("budget") else Budget()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"budget: {e}") from e
    run_dir, h = run_dir_for(cfg)
    store = ResultsStore(run_dir, int(cfg.run.shard), int(cfg.run.num_shards), fsync=bool(cfg.run.get("fsync", True)))
    done = store.recover() if run_dir.exists() else set()
    if run_dir.exists():  # records of other shard splits, or of a merge, count as done too
        retry_failed = bool(cfg.run.get("retry_failed", False))
        for r in iter_records(run_dir):  # one record per problem: its success, if it ever had one
            if retry_failed and r.get("error") is not None:
                done.discard(str(r["problem_id"]))  # failed problems run again; their failed records stay
            else:
                done.add(str(r["problem_id"]))
    return Plan(cfg, run_dir, h, task, items, strategy, verifier, budget, done, store)


# ---------------------------------------------------------------- solving
async def solve_and_grade(plan: Plan, engine: Any, problem: Problem, reference: Reference, index: int) -> dict:
    is_oracle = bool(getattr(plan.verifier, "is_oracle", False))
    ledger = Ledger(engine, plan.budget)
    ctx = SolveContext(
        engine=engine, ledger=ledger, task=plan.task, verifier=plan.verifier,
        seed=derive_seed(plan.cfg.seed, problem.id), reference=reference if is_oracle else None,
        problem=problem,
    )
    t0 = time.perf_counter()
    try:
        result = await plan.strategy.solve(problem, ctx)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - one failing problem does not take the run down
        log.warning("problem %s failed: %s: %s", problem.id, type(e).__name__, e)
        result = Result(problem_id=problem.id, answer=None, error=f"{type(e).__name__}: {e}")
    result.usage = ledger.usage
    result.usage.wall_time = time.perf_counter() - t0
    # Strategies that vote set answer classes themselves (behaviour voting leaves crashed
    # programs unclassed on purpose); only a pool with no classes at all is clustered here.
    if result.candidates and all(c.cluster is None for c in result.candidates):
        cluster_answers(plan.task, result.candidates)
    try:
        agrade = getattr(plan.task, "agrade", None)
        if agrade is not None:
            await agrade(problem, reference, result)
        else:
            plan.task.grade(problem, reference, result)
    except Exception as e:  # noqa: BLE001
        result.error = result.error or f"grading failed: {type(e).__name__}: {e}"
    rec = result.to_dict()
    rec["index"] = index
    # Whether the candidates are independent samples: curves over k are computed only then.
    rec["independent_samples"] = bool(getattr(plan.strategy, "independent_samples", False))
    if is_oracle:
        rec["verifier_is_oracle"] = True
    return rec


async def run_items(plan: Plan, engine: Any, todo: list[tuple[int, Problem, Reference]], progress: Any = None) -> None:
    """Solve `todo` with at most `run.concurrency` problems in flight; append each record."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                index, problem, reference = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            rec = await solve_and_grade(plan, engine, problem, reference, index)
            plan.store.append(rec)
            if progress is not None:
                progress.update(1)

    n = max(1, min(int(plan.cfg.run.concurrency), len(todo)))
    await asyncio.gather(*(worker() for _ in range(n)))


def metrics_filename(cfg: DictConfig) -> str:
    k = int(cfg.run.num_shards)
    return "metrics.json" if k <= 1 else f"metrics.shard-{int(cfg.run.shard):03d}-of-{k:03d}.json"


# Per-record grading counters that tasks report (code tasks: public vs hidden tests).
GRADING_COUNTS = ("candidates", "public_all_passed", "hidden_passed", "false_positives")


def grading_metrics(totals: dict[str, int]) -> dict[str, Any]:
    """Run totals of the tasks' grading counters. `grading/false_positive_rate`: of the
    candidates that pass every public test, the share that fails the hidden tests (how
    often a public-test verifier is fooled)."""
    if "false_positives" not in totals:
        return {}
    out: dict[str, Any] = {f"grading/{k}_total": v for k, v in totals.items()}
    passed_public = totals.get("public_all_passed", 0)
    out["grading/false_positive_rate"] = totals["false_positives"] / passed_public if passed_public else None
    return out


def finalize(plan: Plan, wall_time: float, partial: bool = False) -> dict[str, Any]:
    """Metrics from the stored records (this shard's), written atomically."""
    from ttscale.metrics import compute_metrics, problem_entry

    # In problem order, not completion order: the bootstrap CIs then do not depend on which
    # problem finished first, and a merged sharded run gets the same metrics as an unsharded one.
    # Records are streamed from disk; only what the metrics read (a few arrays per problem) is
    # kept to sort them, so memory does not grow with the records' texts.
    ids, entries, verifier_errors = plan_ids(plan), [], 0
    grading: dict[str, int] = {}
    for r in iter_records(plan.run_dir):
        if r["problem_id"] in ids:
            # candidates the verifier raised on (left unscored, marked `extra.verifier_error`)
            verifier_errors += sum(1 for c in r.get("candidates") or () if (c.get("extra") or {}).get("verifier_error"))
            for key in GRADING_COUNTS:
                if isinstance((r.get("grading") or {}).get(key), int):
                    grading[key] = grading.get(key, 0) + r["grading"][key]
            entries.append((r.get("index", 0), str(r["problem_id"]), problem_entry(r)))
    entries.sort(key=lambda x: x[:2])
    metrics = compute_metrics(e for _, _, e in entries)
    metrics.update(grading_metrics(grading))
    metrics["run/verifier_errors"] = verifier_errors
    metrics["run/skipped_rows"] = len(getattr(plan.task, "skipped_rows", None) or ())  # task.on_bad_row=skip
    metrics["run/wall_time"] = wall_time
    metrics["run/problems_expected"] = len(plan.items)
    metrics["run/partial"] = partial
    metrics["run/hash"] = plan.run_hash
    if getattr(plan.verifier, "is_oracle", False):
        metrics["verifier_is_oracle"] = True
    write_json_atomic(plan.run_dir / metrics_filename(plan.cfg), metrics)
    return metrics


def plan_ids(plan: Plan) -> set[str]:
    if not hasattr(plan, "_ids"):
        plan._ids = {p.id for p, _ in plan.items}  # type: ignore[attr-defined]
    return plan._ids  # type: ignore[attr-defined]


def write_run_files(plan: Plan, engine_info: dict[str, Any] | None) -> None:
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(plan.run_dir / "config.yaml", OmegaConf.to_yaml(plan.cfg, resolve=True))
    ident, h = run_identity(plan.cfg)
    choices = {g: _choice(plan.cfg, g) for g in ("task", "strategy", "verifier", "model", "backend") if g in plan.cfg}
    write_json_atomic(plan.run_dir / "identity.json",
                      {"hash": h, "excluded_keys": list(NON_RESULT_KEYS), "choices": choices, "config": ident})
    if engine_info is not None:
        write_json_atomic(plan.run_dir / "environment.json", environment(engine_info))


def environment(engine_info: dict[str, Any]) -> dict[str, Any]:
    import platform

    import ttscale

    env = {
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
        "processor": platform.processor(), "ttscale": ttscale.__version__, "engine": engine_info,
    }
    try:
        import os

        env["cpu_count"] = os.cpu_count()
    except Exception:  # noqa: BLE001
        pass
    env.update(hardware())
    return env


def hardware() -> dict[str, Any]:
    """CPU model, host memory, GPUs (from nvidia-smi: nothing is initialised in this process),
    torch version: what W&B panels group and filter runs by."""
    import os
    import shutil
    import subprocess

    hw: dict[str, Any] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            hw["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        hw["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout
            gpus = [[x.strip() for x in line.split(",")] for line in out.strip().splitlines() if line.strip()]
            hw["gpus"] = [g[0] for g in gpus]
            hw["gpu_count"] = len(gpus)
            if gpus and len(gpus[0]) >= 3:
                hw["gpu_memory"], hw["gpu_driver"] = gpus[0][1], gpus[0][2]
        except (OSError, subprocess.SubprocessError):
            pass
    hw.setdefault("gpu_count", 0)
    torch = sys.modules.get("torch")  # only if the engine already imported it
    if torch is not None:
        hw["torch"] = getattr(torch, "__version__", None)
    return hw


def tracker_for(cfg: DictConfig) -> Any:
    from ttscale.tracking import NullTracker

    if cfg.get("logger") is None:
        return NullTracker()
    try:
        return instantiate(cfg.logger)
    except Exception as e:  # noqa: BLE001
        log.warning("logger could not be built (%s); tracking off", e)
        return NullTracker()


def run(cfg: DictConfig, engine: Any = None) -> dict[str, Any]:
    """Run one configuration end to end; returns its metrics. Raises ConfigError on bad input."""
    plan = prepare(cfg)
    # index = the problem's position in the task's full list (shard i of k holds i, i+k, ...)
    k, s = int(cfg.run.num_shards), int(cfg.run.shard)
    todo = [(s + i * k, p, r) for i, (p, r) in enumerate(plan.items) if p.id not in plan.done]
    if cfg.run.get("dry_run"):
        print(describe(plan, todo))
        return {}
    t0 = time.perf_counter()
    if todo and engine is None:
        engine = get_engine(cfg.backend)
    from backends.retry import with_retry

    engine = with_retry(engine, cfg.run.get("retry"))  # a failing request is retried, then its problem fails
    info = engine.info() if engine is not None else None
    write_run_files(plan, info)
    tracker = tracker_for(cfg)
    ident, h = run_identity(cfg)
    shard_suffix = "" if int(cfg.run.num_shards) <= 1 else f"-s{int(cfg.run.shard)}of{int(cfg.run.num_shards)}"
    tracker.start(
        config={**OmegaConf.to_container(cfg, resolve=True), "environment": environment(info) if info else None},
        run_id=f"{h}{shard_suffix}", name=f"{plan.run_dir.name}{shard_suffix}", group=str(cfg.run.experiment),
        tags=run_tags(cfg) + (["shard"] if shard_suffix else []), run_dir=str(plan.run_dir),
    )
    interrupted = False
    progress = None
    if cfg.run.get("progress", True) and todo:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(plan.items), initial=len(plan.items) - len(todo), desc=plan.run_dir.name,
                        unit="problem", file=sys.stderr)
    try:
        if todo:
            asyncio.run(_run_with_sigint(plan, engine, todo, progress))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if progress is not None:
            progress.close()
        plan.store.close()
        stop = getattr(plan.verifier, "shutdown", None)  # a verifier's own engine (a PRM) frees its memory
        if stop is not None:  # before the next job of a sweep builds another
            try:
                stop()
            except Exception as e:  # noqa: BLE001
                log.warning("verifier shutdown failed: %s", e)
    metrics = finalize(plan, time.perf_counter() - t0, partial=interrupted)
    if int(cfg.run.num_shards) > 1 and not interrupted:  # the last shard to finish merges them
        from ttscale.merge import merge_if_complete

        merged = merge_if_complete(plan.run_dir, int(cfg.run.num_shards))
        if merged is not None:
            print(f"ttscale: all {merged.num_shards} shards done; merged into {plan.run_dir}/records.jsonl, metrics.json",
                  file=sys.stderr)
    tracker.log_results(metrics, (r for r in iter_records(plan.run_dir) if r["problem_id"] in plan_ids(plan)))
    tracker.finish()
    if cfg.run.get("summary", True):
        print(summary_text(plan, metrics))
    if interrupted:
        raise KeyboardInterrupt
    return metrics


async def _run_with_sigint(plan: Plan, engine: Any, todo, progress) -> None:
    """Run; on SIGINT cancel the in-flight problems (records already written stay)."""
    loop = asyncio.get_running_loop()
    main = asyncio.ensure_future(run_items(plan, engine, todo, progress))
    try:
        loop.add_signal_handler(signal.SIGINT, main.cancel)
    except (NotImplementedError, RuntimeError, ValueError):
        pass
    try:
        await main
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError, ValueError):
            pass


def run_tags(cfg: DictConfig) -> list[str]:
    tags = [f"strategy:{_choice(cfg, 'strategy')}", f"task:{_choice(cfg, 'task')}", f"model:{_choice(cfg, 'model')}"]
    n = cfg.strategy.get("n") if cfg.get("strategy") is not None else None
    if n is not None:
        tags.append(f"n:{n}")
    tags.append(f"seed:{cfg.seed}")
    return tags + [str(t) for t in (cfg.run.get("tags") or [])]


def describe(plan: Plan, todo: list) -> str:
    return "\n".join([
        f"run dir:   {plan.run_dir}",
        f"task:      {_choice(plan.cfg, 'task')} ({len(plan.items)} problems, {len(plan.done)} already done, {len(todo)} to run)",
        f"strategy:  {_choice(plan.cfg, 'strategy')} {dict((k, v) for k, v in plan.cfg.strategy.items() if k != '_target_')}",
        f"verifier:  {_choice(plan.cfg, 'verifier')}",
        f"model:     {plan.cfg.model.get('path') if plan.cfg.get('model') else None}",
        f"backend:   {_choice(plan.cfg, 'backend')}",
        f"budget:    {plan.budget}",
        f"seed:      {plan.cfg.get('seed')}",
        "dry run:   no model loaded, no run directory created",
    ])


def summary_text(plan: Plan, m: dict[str, Any]) -> str:
    def pct(x: Any) -> str:
        return "  -  " if x is None else f"{100 * float(x):5.1f}"

    lines = [f"== {plan.run_dir}"]
    acc = m.get("accuracy")
    lo, hi = m.get("accuracy_ci_low"), m.get("accuracy_ci_high")
    lines.append(
        f"problems {m.get('problems', 0)}  failed {m.get('failed', 0)}  accuracy {pct(acc)}%"
        + (f"  (95% CI {pct(lo)}-{pct(hi)})" if lo is not None else "")
        + (f"  verifier errors {m['run/verifier_errors']}" if m.get("run/verifier_errors") else "")
        + (f"  bad data rows skipped {m['run/skipped_rows']}" if m.get("run/skipped_rows") else "")
    )
    curves = m.get("curves") or {}
    ks = sorted({int(k) for c in curves.values() for k in c})
    if ks:
        lines.append("k        " + " ".join(f"{k:>6d}" for k in ks))
        for name, c in curves.items():
            lines.append(f"{name + '@k':<9}" + " ".join(f"{pct(c[str(k)]['mean'] if str(k) in c else (c[k]['mean'] if k in c else None)):>6}" for k in ks))
    from ttscale import finish, pools

    lines += [ln for ln in (pools.summary_line(m), finish.summary_line(m)) if ln]
    tok = {k: v for k, v in m.items() if k.startswith("tokens/")}
    if tok:
        lines.append("  ".join(f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(tok.items())))
    if "grading/false_positive_rate" in m:
        fpr = m["grading/false_positive_rate"]
        lines.append(f"public tests passed by {m.get('grading/public_all_passed_total', 0)} candidates, "
                     f"false positives {m.get('grading/false_positives_total', 0)}"
                     + (f" (rate {100 * fpr:.1f}%)" if fpr is not None else ""))
    lines.append(f"wall time {m.get('run/wall_time', 0):.1f}s")
    return "\n".join(lines)
