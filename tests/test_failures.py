"""A failing part does not take the run down: engine requests are retried a bounded number
of times (then that problem is recorded failed, with the reason), a hanging request
times out, a verifier that raises on one candidate marks that candidate, and W&B that
cannot be reached, or refuses the key, falls back to offline logging."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ttscale.backends.fake import FakeEngine
from ttscale.retry import RetryingEngine, with_retry
from ttscale.strategies.best_of_n import BestOfN
from ttscale.strategies.particle_filter import ParticleFilter
from tests.helpers import ToyTask, make_ctx
from tests.test_runner import make_cfg, only_dir, responder
from ttscale.engine import GenerationRequest
from ttscale.results import iter_records
from ttscale.runner import run
from ttscale.runner.console import summary_text
from ttscale.types import Problem
from ttscale.verifier import ProcessVerifier, Verifier


def problem_of(text: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith("q"))


class Flaky:
    """fail(request, prompt text) for FakeEngine: the first `times` requests of the chosen
    problems fail (times=None: every one), and every attempt is counted."""

    def __init__(self, problems: set[str], times: int | None = None) -> None:
        self.problems, self.times = problems, times
        self.attempts: dict[str, int] = {}

    def __call__(self, req: GenerationRequest, text: str) -> bool:
        pid = problem_of(text)
        self.attempts[pid] = self.attempts.get(pid, 0) + 1
        return pid in self.problems and (self.times is None or self.attempts[pid] <= self.times)


def records(tmp_path) -> dict[str, dict]:
    return {r["problem_id"]: r for r in iter_records(only_dir(tmp_path))}


def test_failing_requests_are_retried_then_the_problem_is_recorded_failed(tmp_path, capsys):
    flaky = Flaky({"q1", "q4"})
    m = run(make_cfg(tmp_path, "strategy.n=2", "run.retry.attempts=3", "run.retry.backoff_s=0", "run.summary=true"),
            engine=FakeEngine(responder, fail=flaky))
    recs = records(tmp_path)
    assert len(recs) == 6 and m["failed"] == 2
    for pid in ("q1", "q4"):
        assert flaky.attempts[pid] == 3  # bounded: 3 tries, not more
        assert recs[pid]["error"] == "EngineError: engine request failed after 3 attempt(s): injected failure"
        assert recs[pid]["correct"] is False and recs[pid]["candidates"] == []
    for pid in ("q0", "q2", "q3", "q5"):
        assert recs[pid]["error"] is None and flaky.attempts[pid] == 1 and len(recs[pid]["candidates"]) == 2
    assert "failed 2" in capsys.readouterr().out  # the console summary counts them
    assert json.loads((only_dir(tmp_path) / "metrics.json").read_text())["failed"] == 2
    env = json.loads((only_dir(tmp_path) / "environment.json").read_text())
    assert env["engine"]["retry"] == {"attempts": 3, "timeout_s": None, "backoff_s": 0.0}


def test_retry_failed_reruns_only_the_failed_problems_and_keeps_their_failed_records(tmp_path):
    ov = ["strategy.n=2", "run.retry.attempts=1", "run.retry.backoff_s=0"]
    first = run(make_cfg(tmp_path, *ov), engine=FakeEngine(responder, fail=Flaky({"q1", "q4"})))
    assert first["failed"] == 2
    # a plain resume leaves them failed: nothing runs
    healthy = Flaky(set())
    again = run(make_cfg(tmp_path, *ov), engine=FakeEngine(responder, fail=healthy))
    assert again["failed"] == 2 and healthy.attempts == {}
    # run.retry_failed=true runs exactly the failed ones again, in the same run directory
    m = run(make_cfg(tmp_path, *ov, "run.retry_failed=true"), engine=FakeEngine(responder, fail=healthy))
    assert sorted(healthy.attempts) == ["q1", "q4"]
    assert m["failed"] == 0 and m["problems"] == 6
    d = only_dir(tmp_path)
    lines = [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()]
    assert len(lines) == 8  # the two failed records are kept as history
    assert [r["problem_id"] for r in lines if r["error"]] == sorted(["q1", "q4"])
    recs = records(tmp_path)
    assert len(recs) == 6 and all(r["error"] is None for r in recs.values())
    assert json.loads((d / "metrics.json").read_text())["failed"] == 0
    # a problem that fails again stays failed, once
    run(make_cfg(tmp_path / "b", *ov), engine=FakeEngine(responder, fail=Flaky({"q2"})))
    m2 = run(make_cfg(tmp_path / "b", *ov, "run.retry_failed=true"), engine=FakeEngine(responder, fail=Flaky({"q2"})))
    assert m2["failed"] == 1 and m2["problems"] == 6
    assert sum(r["problem_id"] == "q2" for r in iter_records(only_dir(tmp_path / "b"))) == 1


def test_retry_failed_in_a_sharded_run_replaces_the_failed_record_in_the_merge(tmp_path):
    ov = ["strategy.n=2", "run.retry.attempts=1", "run.retry.backoff_s=0", "run.num_shards=2"]
    run(make_cfg(tmp_path, *ov, "run.shard=0"), engine=FakeEngine(responder, fail=Flaky({"q0"})))
    m = run(make_cfg(tmp_path, *ov, "run.shard=1"), engine=FakeEngine(responder))
    d = only_dir(tmp_path)
    merged = {r["problem_id"]: r for r in iter_records(d)}
    assert len(merged) == 6 and merged["q0"]["error"] is not None  # the last shard merged, q0 failed
    assert json.loads((d / "metrics.json").read_text())["failed"] == 1 and m["failed"] == 0  # m: shard 1's own
    healthy = Flaky(set())
    run(make_cfg(tmp_path, *ov, "run.shard=0", "run.retry_failed=true"), engine=FakeEngine(responder, fail=healthy))
    assert list(healthy.attempts) == ["q0"]
    lines = [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(r["error"] is None for r in lines)  # the re-merge holds the success
    assert json.loads((d / "metrics.json").read_text())["failed"] == 0


def test_a_retry_that_succeeds_gives_the_same_record_as_no_failure(tmp_path):
    clean = run(make_cfg(tmp_path / "a", "strategy.n=4"), engine=FakeEngine(responder))
    flaky = Flaky({"q0", "q3"}, times=2)  # two failures, then the third try succeeds
    again = run(make_cfg(tmp_path / "b", "strategy.n=4", "run.retry.backoff_s=0"),
                engine=FakeEngine(responder, fail=flaky))
    assert flaky.attempts["q0"] == flaky.attempts["q3"] == 3
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    for pid in a:  # the retried request carries the same seed: same samples
        assert [c["text"] for c in a[pid]["candidates"]] == [c["text"] for c in b[pid]["candidates"]]
        assert b[pid]["error"] is None
    assert clean["accuracy"] == again["accuracy"] and again["failed"] == 0


def test_one_attempt_means_no_retry(tmp_path):
    flaky = Flaky({"q2"})
    m = run(make_cfg(tmp_path, "run.retry.attempts=1"), engine=FakeEngine(responder, fail=flaky))
    assert flaky.attempts["q2"] == 1 and m["failed"] == 1
    assert "injected failure" in records(tmp_path)["q2"]["error"]


class Hanging(FakeEngine):
    """Hangs (until cancelled) on the first `times` requests of problem `pid`."""

    def __init__(self, pid: str, times: int | None, **kw) -> None:
        super().__init__(responder, **kw)
        self.pid, self.times, self.hung, self.cancelled = pid, times, 0, 0

    async def generate(self, request):
        if problem_of(self.tokenizer.decode(request.prompt_token_ids)) == self.pid and (
                self.times is None or self.hung < self.times):
            self.hung += 1
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled += 1  # the timeout cancels the request (vLLM then aborts it)
                raise
        return await super().generate(request)


def test_a_hanging_request_times_out_and_is_retried(tmp_path):
    eng = Hanging("q3", times=1)
    m = run(make_cfg(tmp_path, "run.retry.timeout_s=0.3", "run.retry.backoff_s=0"), engine=eng)
    assert eng.hung == 1 and eng.cancelled == 1
    assert m["failed"] == 0 and records(tmp_path)["q3"]["error"] is None


def test_a_request_that_always_hangs_fails_its_problem_only(tmp_path):
    eng = Hanging("q3", times=None)
    m = run(make_cfg(tmp_path, "run.retry.timeout_s=0.2", "run.retry.attempts=2", "run.retry.backoff_s=0"), engine=eng)
    recs = records(tmp_path)
    assert eng.hung == 2 and eng.cancelled == 2 and m["failed"] == 1
    assert "no answer within run.retry.timeout_s=0.2s" in recs["q3"]["error"]
    assert all(recs[p]["error"] is None for p in recs if p != "q3")


def test_retry_wrapper_passes_cancellation_through_and_delegates():
    eng = Hanging("q0", times=None)
    wrapped = RetryingEngine(eng, attempts=5, timeout_s=None, backoff_s=0)
    assert wrapped.tokenizer is eng.tokenizer and wrapped.num_parameters == eng.num_parameters
    assert with_retry(eng, {"attempts": 1, "timeout_s": None}) is eng  # nothing to do: not wrapped
    assert with_retry(wrapped, {"attempts": 3}) is wrapped  # never wrapped twice

    async def go():
        req = GenerationRequest(prompt_token_ids=eng.tokenizer.apply_chat_template([{"role": "user", "content": "q0"}]))
        t = asyncio.ensure_future(wrapped.generate(req))
        await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(go())
    assert eng.hung == 1 and wrapped.stats.retries == 0  # cancelled once, not retried
    with pytest.raises(ValueError, match="run.retry.attempts"):
        RetryingEngine(eng, attempts=0)


# ------------------------------------------------------------------ verifiers
class PicksyVerifier(Verifier):
    """Scores 1.0, but raises on candidates whose answer is '9'."""

    name = "picky"

    async def score(self, problem, candidates, ctx):
        ctx.ledger.charge_verifier(len(candidates))
        if any(c.answer == "9" for c in candidates):
            raise RuntimeError("cannot parse 9")
        return [1.0] * len(candidates)


class BrokenVerifier(Verifier):
    async def score(self, problem, candidates, ctx):
        raise RuntimeError("verifier is down")


def test_a_verifier_raising_on_one_candidate_marks_that_candidate():
    eng = FakeEngine(completions=[("\\boxed{1}", 0.5), ("\\boxed{9}", 0.5)])
    res = asyncio.run(BestOfN(n=8, temperature=1.0).solve(Problem("q1", "q1"), make_ctx(eng, verifier=PicksyVerifier())))
    nines = [c for c in res.candidates if c.answer == "9"]
    ones = [c for c in res.candidates if c.answer == "1"]
    assert nines and ones
    assert all(c.score is None and c.extra["verifier_error"] == "RuntimeError: cannot parse 9" for c in nines)
    assert all(c.score == 1.0 and "verifier_error" not in c.extra for c in ones)
    assert res.answer == "1"


def test_a_verifier_failing_on_everything_fails_the_problem_not_the_run(tmp_path):
    from omegaconf import OmegaConf, open_dict

    cfg = make_cfg(tmp_path, "strategy=best_of_n", "verifier=oracle")
    with open_dict(cfg):
        cfg.verifier = OmegaConf.create({"_target_": "tests.test_failures.BrokenVerifier"})
    m = run(cfg, engine=FakeEngine(responder))
    recs = records(tmp_path)
    assert m["failed"] == 6 and len(recs) == 6
    assert all(r["error"] == "RuntimeError: verifier is down" for r in recs.values())


class StepPicky(ProcessVerifier):
    """Process scorer that raises on any prefix whose last step mentions 'bad'."""

    async def score_steps(self, problem, steps, ctx):
        ctx.ledger.charge_verifier(len(steps))
        if any("bad" in s[-1] for s in steps if s):
            raise ValueError("unparseable step")
        return [[0.9] * len(s) for s in steps]


def test_a_process_verifier_raising_on_one_prefix_marks_that_path():
    eng = FakeEngine(completions=[("good\n\n\\boxed{1}", 0.5), ("bad\n\n\\boxed{2}", 0.5)])
    pf = ParticleFilter(n=8, temperature=1.0, step={"delimiter": "\n\n", "max_steps": 4, "max_step_tokens": 32,
                                                   "max_total_tokens": 64})
    res = asyncio.run(pf.solve(Problem("q1", "q1"), make_ctx(eng, task=ToyTask(), verifier=StepPicky(), seed=3)))
    assert res.error is None and res.answer == "1"  # unscored paths weigh neutral (0.5) < 0.9
    assert res.candidates
    for c in res.candidates:
        assert ("verifier_error" in c.extra) == c.text.startswith("bad"), c


def test_score_nodes_marks_only_the_failing_nodes():
    from ttscale.strategies.steps import Node, score_nodes
    from ttscale.engine import Completion

    eng = FakeEngine()
    ctx = make_ctx(eng, verifier=StepPicky())
    nodes = [Node.root().child(Completion(token_ids=[1], text=t, finish_reason="stop", stop_reason="\n\n"),
                                _step_cfg()) for t in ("good\n\n", "bad\n\n", "fine\n\n")]
    scores = asyncio.run(score_nodes(ctx, Problem("q", "q"), nodes))
    assert scores == [0.9, 0.0, 0.9]
    assert nodes[1].score is None and nodes[1].extra["verifier_error"] == "ValueError: unparseable step"
    cand = nodes[1].to_candidate(ctx)
    assert cand.extra == {"verifier_error": "ValueError: unparseable step", "verifier_errors": 1}
    assert "verifier_error" not in nodes[0].extra and nodes[0].step_scores == (0.9,)


def _step_cfg():
    from ttscale.strategies.steps import StepConfig

    return StepConfig(delimiter="\n\n", max_steps=4, max_step_tokens=32, max_total_tokens=64)


def test_verifier_errors_are_counted_in_metrics_and_summary(tmp_path):
    from omegaconf import OmegaConf, open_dict

    cfg = make_cfg(tmp_path, "strategy=best_of_n", "verifier=oracle", "strategy.n=4")
    with open_dict(cfg):
        cfg.verifier = OmegaConf.create({"_target_": "tests.test_failures.PicksyVerifier"})
    m = run(cfg, engine=FakeEngine(responder))
    recs = records(tmp_path)
    marked = sum(1 for r in recs.values() for c in r["candidates"] if c["extra"].get("verifier_error"))
    nines = sum(1 for r in recs.values() for c in r["candidates"] if c["answer"] == "9")
    assert marked == nines > 0 and m["run/verifier_errors"] == marked
    assert f"verifier errors {marked}" in summary_text(type("P", (), {"run_dir": "x", "cfg": cfg})(), m)


# ------------------------------------------------------------------ W&B
class _Deny(BaseHTTPRequestHandler):
    def _deny(self):
        body = b'{"errors":[{"message":"user is not logged in"}]}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _deny

    def log_message(self, *a):
        pass


@pytest.fixture
def denying_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Deny)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fresh_wandb():
    """wandb keeps its settings (the server URL) in a process-wide singleton: start and end clean."""
    import wandb

    wandb.teardown()
    yield
    wandb.teardown()


@pytest.mark.parametrize("server", ["unreachable", "wrong_key"])
def test_wandb_unreachable_or_wrong_key_falls_back_to_offline(tmp_path, monkeypatch, caplog, request, server,
                                                               fresh_wandb):
    url = f"http://127.0.0.1:{_free_port()}" if server == "unreachable" else request.getfixturevalue("denying_server")
    monkeypatch.setenv("WANDB_BASE_URL", url)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    caplog.set_level(logging.WARNING, logger="ttscale")
    m = run(make_cfg(tmp_path, "logger=wandb"), engine=FakeEngine(responder))
    assert m["problems"] == 6  # the run finished
    said = [r.getMessage() for r in caplog.records if r.name == "ttscale" and "W&B" in r.getMessage()]
    assert len(said) == 1 and "logging offline" in said[0], said  # said once
    assert list((only_dir(tmp_path) / "wandb").glob("offline-run-*")), "offline run written"
