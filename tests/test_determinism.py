"""Same seed, engine and config -> identical records (texts, answers, scores).

Each problem's requests are seeded from (seed, problem id, request number), so what a
problem gets cannot depend on the order problems run in. The engine itself must then
compute each sequence the same way whatever else it is batched with. vLLM's CPU build
does not, by default: measured on the embedded model (6 problems x 3 samples x 40
tokens, the session engine's settings), two runs of one config differed in the
log-probabilities of all 18 samples (float-level) and in the text of 3 of them (a token
flips, the rest of the sample follows); at `run.concurrency=1` 2 of 18 still differed.
One sequence at a time without prefix caching (`backend.max_num_seqs=1
backend.enable_prefix_caching=false`, about 8x slower) is exact. That is the engine
here: two runs of one config into two run directories, the second at another
`run.concurrency` (not part of the run's identity) so the schedules differ on purpose,
must agree to the last bit; a third run with another seed must not (else the comparison
proves nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ttscale.results import iter_records
from ttscale.runner import run
from ttscale.runner.identity import run_identity

CONF = str(Path(__file__).resolve().parents[1] / "conf")
OVERRIDES = ["task.num_problems=4", "strategy=best_of_n", "verifier=self_certainty", "strategy.n=3",
             "sampling.max_tokens=32", "logger=none", "run.progress=false", "run.summary=false"]


def cfg_for(root: Path, *extra: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=[*OVERRIDES, f"run.root={root}", *extra])


def outcome(root: Path) -> dict:
    (d,) = [p for p in (root / "default").iterdir() if p.is_dir()]
    return {
        r["problem_id"]: {
            "answer": r["answer"], "selected": r["selected"], "correct": r["correct"],
            "candidates": [(c["text"], c["answer"], c["score"], c["num_tokens"], c["mean_logprob"])
                           for c in r["candidates"]],
            "generated_tokens": r["usage"]["generated_tokens"],
        }
        for r in iter_records(d)
    }


@pytest.fixture(scope="module")
def one_at_a_time_engine():
    """The embedded model on vLLM's CPU build, one sequence at a time, no prefix cache."""
    from ttscale.backends.vllm_engine import test_engine

    engine = test_engine(max_num_seqs=1, enable_prefix_caching=False)
    yield engine
    engine.shutdown()


@pytest.mark.engine
def test_same_seed_same_records_on_the_cpu_engine(tmp_path, one_at_a_time_engine):
    engine = one_at_a_time_engine
    a_cfg, b_cfg = cfg_for(tmp_path / "a"), cfg_for(tmp_path / "b", "run.concurrency=1")
    assert run_identity(a_cfg)[1] == run_identity(b_cfg)[1]  # the same run, as far as results go
    ma = run(a_cfg, engine=engine)
    mb = run(b_cfg, engine=engine)
    a, b = outcome(tmp_path / "a"), outcome(tmp_path / "b")
    assert len(a) == 4 and all(len(v["candidates"]) == 3 for v in a.values())
    assert all(c[2] is not None for v in a.values() for c in v["candidates"])  # scored
    assert a == b
    for key in ("accuracy", "pass@1", "best_of@3", "tokens/generated_total"):
        if key in ma:
            assert ma[key] == mb[key], key

    run(cfg_for(tmp_path / "c", "seed=1", "task.num_problems=2"), engine=engine)
    c = outcome(tmp_path / "c")
    for pid in c:  # the seed matters: the equality above is not vacuous
        assert [t[0] for t in c[pid]["candidates"]] != [t[0] for t in a[pid]["candidates"]]
