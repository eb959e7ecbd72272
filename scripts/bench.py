"""Performance benchmark: prints a table (part, metric, value, target, pass/fail) and writes JSON.

    .venv/bin/python scripts/bench.py                       # every part (real vLLM CPU engine + fake)
    .venv/bin/python scripts/bench.py --parts orchestration  # fake engine only, no model
    .venv/bin/python scripts/bench.py --parts overhead,concurrency,prefix --problems 8 --n 8

The real-engine parts (overhead, concurrency, prefix) share ONE vLLM engine in this
process: the one the runner builds from conf/backend/vllm.yaml for the embedded model.
On a shared machine start it under the engine lock: `flock /tmp/ttscale-vllm.lock ...`.
See ttscale/bench/ for what each part measures and README "Performance" for results.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARTS = ("orchestration", "curve", "overhead", "concurrency", "prefix")
ENGINE_PARTS = ("curve", "overhead", "concurrency", "prefix")
DEFAULT_PARTS = ("orchestration", "overhead", "concurrency", "prefix")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(DEFAULT_PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--curve-sizes", default="1,4,8,16,32,64", help="batch sizes of the curve part")
    ap.add_argument("--out", default="bench_results/bench.json", help="JSON output file")
    ap.add_argument("--problems", type=int, default=8, help="P: problems of the overhead part")
    ap.add_argument("--n", type=int, default=8, help="best-of-N samples per problem (overhead)")
    ap.add_argument("--max-tokens", type=int, default=64, help="max tokens per sample (overhead)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating raw/framework pairs (overhead)")
    ap.add_argument("--pf-problems", type=int, default=64,
                    help="problems of the particle-filtering runs (64: run.concurrency's default, all in flight)")
    ap.add_argument("--particles", type=int, default=8, help="particle filter N")
    ap.add_argument("--pf-one-at-a-time", type=int, default=8,
                    help="problems run one at a time (the first k of the same problems; 0: all)")
    ap.add_argument("--a-star-problems", type=int, default=8, help="problems of the A* runs (0: no A*)")
    ap.add_argument("--a-star-k", type=int, default=4)
    ap.add_argument("--a-star-expansions", type=int, default=6)
    ap.add_argument("--search-max-tokens", type=int, default=128, help="tokens per trajectory in step search")
    ap.add_argument("--step-tokens", type=int, default=None,
                    help="strategy.step.max_step_tokens in step search (default: the strategy config's)")
    ap.add_argument("--no-one-at-a-time", action="store_true", help="skip the run.concurrency=1 runs")
    ap.add_argument("--orch-problems", type=int, default=10_000, help="problems of the large orchestration run")
    ap.add_argument("--orch-small", type=int, default=1_000, help="problems of the small orchestration run")
    ap.add_argument("--orch-strategies", default="best_of_n,particle_filter")
    ap.add_argument("--backend", action="append", default=[], metavar="KEY=VALUE",
                    help="extra backend override for the real engine, e.g. backend.enforce_eager=false (repeatable)")
    a = ap.parse_args(argv)
    a.parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in a.parts if p not in PARTS]
    if bad:
        ap.error(f"--parts: unknown {bad}; choose from {','.join(PARTS)}")
    return a


def orchestration(a: argparse.Namespace):
    from ttscale.bench.orchestration import run_fresh
    from ttscale.bench.report import Row, judged

    rows, data = [], {}
    for strategy in [s.strip() for s in a.orch_strategies.split(",") if s.strip()]:
        small = run_fresh(a.orch_small, strategy)
        big = run_fresh(a.orch_problems, strategy)
        data[strategy] = {"small": small, "large": big}
        tag = f"{strategy}, fake engine"
        first, last = big["first"]["framework_ms"], big["last"]["framework_ms"]
        rows += [
            Row("orchestration", f"{tag}: framework ms/problem ({big['problems']} problems)", big["framework_ms_per_problem"], unit="ms"),
            Row("orchestration", f"{tag}: framework ms/request", big["framework_ms_per_request"], unit="ms"),
            judged("orchestration", f"{tag}: ms/problem last {big['window']} / first {big['window']}", last / first,
                   "<=", 1.25, "x"),
            judged("orchestration", f"{tag}: RSS after {big['problems']} / after {big['window']} records (solve loop)",
                   big["rss_mb_end_of_solve"] / big["rss_mb_at_window"], "<=", 1.10, "x"),
            Row("orchestration", f"{tag}: peak RSS, {small['problems']} problems", small["peak_rss_mb"], unit="MB"),
            Row("orchestration", f"{tag}: peak RSS, {big['problems']} problems", big["peak_rss_mb"], unit="MB"),
            judged("orchestration", f"{tag}: peak RSS growth per problem, {small['problems']} -> {big['problems']}",
                   1024 * (big["peak_rss_mb"] - small["peak_rss_mb"]) / (big["problems"] - small["problems"]),
                   "<=", 4, "KB"),
            # what holding the records would cost: their size on disk (texts of the fake engine are short)
            Row("orchestration", f"{tag}: record size on disk per problem", big["record_bytes_per_problem"] / 1024, unit="KB"),
        ]
    return rows, data


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    from ttscale.bench.report import load, machine, table, write

    payload = {"machine": machine(), "args": vars(a), "parts": {}}
    rows = []
    t0 = time.perf_counter()
    if "orchestration" in a.parts:
        r, d = orchestration(a)
        rows += r
        payload["parts"]["orchestration"] = d
    if any(p in a.parts for p in ENGINE_PARTS):
        from ttscale.bench.engine_parts import Bench, curve, overhead, search

        b = Bench(a.backend)
        payload["engine"] = {**b.info, "startup_s": b.startup_s}
        if "curve" in a.parts:
            r, d = curve(b, a.problems, tuple(int(x) for x in a.curve_sizes.split(",")))
            rows += r
            payload["parts"]["curve"] = d
        if "overhead" in a.parts:
            r, d = overhead(b, a.problems, a.n, a.max_tokens, a.repeats)
            rows += r
            payload["parts"]["overhead"] = d
        if "concurrency" in a.parts or "prefix" in a.parts:
            one = None if a.no_one_at_a_time or "concurrency" not in a.parts else 0
            searches = [("pf", a.pf_problems, a.particles, a.pf_one_at_a_time if one is not None else None)]
            if a.a_star_problems:
                searches.append(("a_star", a.a_star_problems, a.a_star_k, one))
            for name, problems, width, k in searches:
                conc, prefix, d = search(b, name, problems, width, a.search_max_tokens, one_at_a_time=k,
                                         expansions=a.a_star_expansions, step_tokens=a.step_tokens,
                                         natural=name == "pf")
                if "concurrency" in a.parts:
                    rows += conc
                if "prefix" in a.parts:
                    rows += prefix
                payload["parts"].setdefault("concurrency", {})[name] = d
        b.engine.shutdown()  # its worker processes exit now, not at interpreter exit
    payload["machine"]["load_at_end"] = load()
    payload["wall_s"] = time.perf_counter() - t0
    out = write(a.out, payload, rows)
    m = payload["machine"]
    print(f"\nttscale bench: {m['nproc']} cores ({m['cpu']}), load {m['load_at_start']['1m']} -> {m['load_at_end']['1m']}, "
          f"{payload['wall_s']:.0f} s")
    print(table(rows))
    print(f"\nwritten: {out}")
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":  # vLLM starts its workers with spawn
    sys.exit(main())
