"""The solve loop: many problems in flight on one engine, each graded and appended as
one record as it finishes; SIGINT cancels what is in flight (records written stay)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from ttscale.budget import Ledger
from ttscale.context import SolveContext, derive_seed
from ttscale.engine import Engine
from ttscale.runner.plan import Plan
from ttscale.task import cluster_answers, grade_submitted
from ttscale.types import Problem, Reference, Result

log = logging.getLogger("ttscale")


async def solve_and_grade(plan: Plan, engine: Engine, problem: Problem, reference: Reference, index: int) -> dict:
    """One problem: solve (the reference is handed only to an explicit oracle verifier),
    charge the ledger's usage to the result, cluster the answers, grade, as a record."""
    is_oracle = plan.verifier is not None and plan.verifier.is_oracle
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
        await plan.task.agrade(problem, reference, result)
        grade_submitted(result)  # Pass@k when the strategy submits several answers
    except Exception as e:  # noqa: BLE001
        result.error = result.error or f"grading failed: {type(e).__name__}: {e}"
    rec = result.to_dict()
    rec["index"] = index
    # Whether the candidates are independent samples: curves over k are computed only then.
    rec["independent_samples"] = bool(plan.strategy.independent_samples)
    if is_oracle:
        rec["verifier_is_oracle"] = True
    return rec


async def run_items(plan: Plan, engine: Engine, progress: Any = None) -> None:
    """Solve `plan.todo` with at most `run.concurrency` problems in flight; append each record."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan.todo:
        queue.put_nowait(item)
    t0, generated = time.perf_counter(), [0]

    async def worker() -> None:
        while True:
            try:
                index, problem, reference = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            rec = await solve_and_grade(plan, engine, problem, reference, index)
            plan.store.append(rec)
            if progress is not None:
                generated[0] += int((rec.get("usage") or {}).get("generated_tokens") or 0)
                progress.set_postfix_str(f"{generated[0] / max(time.perf_counter() - t0, 1e-9):.0f} generated tok/s",
                                         refresh=False)
                progress.update(1)

    n = max(1, min(int(plan.cfg.run.concurrency), len(plan.todo)))
    await asyncio.gather(*(worker() for _ in range(n)))


async def _run_with_sigint(plan: Plan, engine: Engine, progress: Any) -> None:
    """SIGINT cancels the loop and becomes KeyboardInterrupt. Any other exit is left as it is: a
    signal handler's own exception (submitit's at SLURM's time-limit signal: SystemExit after it
    requeued the job, or its error when no requeue is left) cancels the loop as asyncio.run ends,
    and must reach submitit unchanged, not turn into an interrupt."""
    loop = asyncio.get_running_loop()
    main = asyncio.ensure_future(run_items(plan, engine, progress))
    sigint = []

    def on_sigint() -> None:
        sigint.append(True)
        main.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):
        pass
    try:
        await main
    except asyncio.CancelledError:
        if sigint:
            raise KeyboardInterrupt from None
        raise
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError, ValueError):
            pass


def solve_all(plan: Plan, engine: Engine, progress: Any = None) -> bool:
    """Run the solve loop to its end; False when SIGINT stopped it. Closes the record store
    and frees the verifier's own engine (a PRM) before the next job of a sweep builds another."""
    try:
        if plan.todo:
            asyncio.run(_run_with_sigint(plan, engine, progress))
        return True
    except KeyboardInterrupt:
        return False
    finally:
        if progress is not None:
            progress.close()
        plan.store.close()
        if plan.verifier is not None:
            try:
                plan.verifier.shutdown()
            except Exception as e:  # noqa: BLE001
                log.warning("verifier shutdown failed: %s", e)
