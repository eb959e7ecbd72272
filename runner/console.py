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


CURVE_ORDER = ("best_of", "weighted", "maj", "pass")
CURVE_MEANING = {"best_of": "the verifier's top-scored of k samples is right",
                 "weighted": "the score-weighted vote of k samples is right",
                 "maj": "the majority answer of k samples is right",
                 "pass": "at least one of k samples is right"}


def headline(plan: Plan, m: dict[str, Any]) -> str:
    """What was run, in one line, and its accuracy with the 95% CI."""
    cfg = plan.cfg
    n = cfg.strategy.get("n") if cfg.get("strategy") is not None else None
    verifier = choice(cfg, "verifier")
    what = (f"{choice(cfg, 'strategy')}" + (f" (n={n})" if n is not None else "")
            + (f" with {verifier}" if verifier not in ("none", "None") else "")
            + f" on {m.get('problems', 0)} {choice(cfg, 'task')} problems, {choice(cfg, 'model')}")
    acc, lo, hi = m.get("accuracy"), m.get("accuracy_ci_low"), m.get("accuracy_ci_high")
    line = f"{what}: accuracy {_pct(acc).strip()}%" + (f" [95% CI {_pct(lo).strip()}, {_pct(hi).strip()}]" if lo is not None else "")
    extra = [f"failed {m['failed']}" if m.get("failed") else "",
             f"verifier errors {m['run/verifier_errors']}" if m.get("run/verifier_errors") else "",
             f"bad data rows skipped {m['run/skipped_rows']}" if m.get("run/skipped_rows") else ""]
    return line + "".join(f"  {e}" for e in extra if e)


def _pct(x: Any) -> str:
    return "  -  " if x is None else f"{100 * float(x):5.1f}"


def curve_lines(m: dict[str, Any]) -> list[str]:
    """accuracy@k rows (best_of first: the point of a verifier), each with its meaning."""
    curves = m.get("curves") or {}
    ks = sorted({int(k) for c in curves.values() for k in c})
    if not ks:
        return []
    lines = ["k          " + " ".join(f"{k:>6d}" for k in ks) + "   (% of problems; [95% CI] at the largest k)"]
    for name in sorted(curves, key=lambda x: CURVE_ORDER.index(x) if x in CURVE_ORDER else 99):
        c = curves[name]
        row = " ".join(f"{_pct(c[str(k)]['mean'] if str(k) in c else None):>6}" for k in ks)
        ci = (c.get(str(ks[-1])) or {}).get("ci") or [None, None]
        lines.append(f"{name + '@k':<11}{row}   [{_pct(ci[0]).strip()}, {_pct(ci[1]).strip()}]  "
                     f"{CURVE_MEANING.get(name, '')}")
    lines.append("           each @k: the exact mean over every k-subset of each problem's stored samples")
    return lines


def summary_text(plan: Plan, m: dict[str, Any]) -> str:
    lines = [f"== {plan.run_dir}", headline(plan, m), *curve_lines(m)]
    lines += [ln for ln in (pools.summary_line(m), finish.summary_line(m)) if ln]
    cost = [f"{m[k]:,.0f} {label}" for k, label in (("tokens/generated_mean", "generated tokens"),
                                                    ("tokens/prompt_mean", "prompt tokens"),
                                                    ("verifier/calls_mean", "verifier calls"))
            if isinstance(m.get(k), (int, float))]
    lines.append("per problem: " + ", ".join(cost) + f"; wall time {m.get('run/wall_time', 0):.1f} s"
                 if cost else f"wall time {m.get('run/wall_time', 0):.1f} s")
    if "grading/false_positive_rate" in m:
        fpr = m["grading/false_positive_rate"]
        lines.append(f"public tests passed by {m.get('grading/public_all_passed_total', 0)} candidates, "
                     f"false positives {m.get('grading/false_positives_total', 0)}"
                     + (f" (rate {100 * fpr:.1f}%)" if fpr is not None else ""))
    return "\n".join(lines)


def say(line: str) -> None:
    print(f"ttscale: {line}", file=sys.stderr)
