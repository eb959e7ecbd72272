"""What a run prints: the plan of a dry run, the progress bar, and the summary."""

from __future__ import annotations

import sys
from typing import Any

from ttscale import finish, pools
from ttscale.runner.identity import choice
from ttscale.runner.plan import Plan


def describe(plan: Plan) -> str:
    cfg = plan.cfg
    return "\n".join([
        f"run dir:   {plan.run_dir}",
        f"task:      {choice(cfg, 'task')} ({len(plan.items)} problems, {len(plan.done)} already done, {len(plan.todo)} to run)",
        f"strategy:  {choice(cfg, 'strategy')} {dict((k, v) for k, v in cfg.strategy.items() if k != '_target_')}",
        f"verifier:  {choice(cfg, 'verifier')}",
        f"model:     {cfg.model.get('path') if cfg.get('model') else None}",
        f"backend:   {choice(cfg, 'backend')}",
        f"budget:    {plan.budget}",
        f"seed:      {cfg.get('seed')}",
        "dry run:   no model loaded, no run directory created",
    ])


def progress_bar(plan: Plan) -> Any:
    """A tqdm bar over the shard's problems (None when `run.progress=false` or nothing to run)."""
    if not plan.cfg.run.get("progress", True) or not plan.todo:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=len(plan.items), initial=len(plan.items) - len(plan.todo), desc=plan.run_dir.name,
                unit="problem", file=sys.stderr)


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


def say(line: str) -> None:
    print(f"ttscale: {line}", file=sys.stderr)
