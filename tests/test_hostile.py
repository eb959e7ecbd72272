"""Hostile programs, run as candidates through the unit-test harness, must be contained:
this process survives, the candidate fails with a reason, nothing outside the sandbox
changes, no process of the sandbox is left, and its temp dir is gone.

These need real isolation (namespaces, or a user namespace). Where the sandbox can only
run in mode "none" they are skipped locally and fail in CI.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT
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
