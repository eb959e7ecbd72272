"""The sandbox for real: isolation detection, limits, failure reasons, output caps,
parallel workers, stripped environment, temp dirs removed, and the unit-test harness."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from ttscale.sandbox import MODES, Sandbox, SandboxLimits
from ttscale.sandbox.harness import TestCase, run_tests

SECRETS = {
    "WANDB_API_KEY": "wandb-fake-0123456789",
    "HF_TOKEN": "hf_fake_token_abcdef",
    "OPENAI_API_KEY": "sk-fake-key",
    "AWS_SECRET_ACCESS_KEY": "aws-fake-secret",
    "MY_SERVICE_PASSWORD_SECRET": "hunter2-fake",
}


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def sb(tmp_path):
    return Sandbox(workers=2, timeout=5, tmp_root=str(tmp_path))


def test_isolation_is_detected_and_is_the_strongest_here():
    iso = run(Sandbox().isolation())
    assert iso.mode in MODES
    if os.geteuid() == 0:  # root (this machine, CI): namespaces + uid switch must work
        assert iso.mode == "namespaces", iso.note
        assert iso.network and iso.pid_namespace and iso.filesystem and iso.uid_switch and iso.host_files_hidden


def test_runs_a_program_with_a_stripped_environment(sb, monkeypatch):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    res = run(sb.run("import os, json\nprint(json.dumps(dict(os.environ)))\nprint(os.getcwd())"))
    assert res.passed and res.exit_code == 0 and res.reason is None
    env_line, cwd = res.stdout.strip().splitlines()
    env = json.loads(env_line)
    assert not set(SECRETS) & set(env)
    assert not any(v in env_line for v in SECRETS.values())
    assert set(env) <= {"LANG", "LC_ALL", "LC_CTYPE", "TZ", "PATH", "HOME", "TMPDIR", "PYTHONHASHSEED",
                        "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE"}
    assert env["PYTHONHASHSEED"] == "0" and cwd.startswith(sb.tmp_root)
    assert res.isolation["mode"] in MODES


def test_files_stdin_and_report_channel(sb):
    script = ("import os, sys\ndata = open('in.txt').read() + sys.stdin.read()\n"
              "os.write(3, ('{\"got\": \"%s\"}\\n' % data).encode())\n")
    res = run(sb.run(script, files={"in.txt": "abc"}, stdin=b"def"))
    assert res.passed and res.report == [{"got": "abcdef"}]


@pytest.mark.parametrize(
    "src, reason",
    [
        ("def f(:\n    pass\n", "syntax"),
        ("assert 1 == 2\n", "assertion"),
        ("raise ValueError('bad value')\n", "error: ValueError: bad value"),
        ("x = bytearray(4 * 1024 ** 3)\n", "memory"),
        ("import sys\nsys.exit(3)\n", "error: exited with a non-zero status"),
    ],
)
def test_failure_reasons(sb, src, reason):
    res = run(sb.run(src))
    assert not res.passed and not res.timed_out
    assert res.reason == reason, (res.reason, res.stderr[-300:])


def test_wall_clock_timeout_kills_the_process_group(sb):
    t0 = time.monotonic()
    res = run(sb.run("import os\nos.fork()\nwhile True:\n    pass\n", limits=SandboxLimits(timeout=1.0)))
    assert res.timed_out and res.reason == "timeout" and res.signal == "SIGKILL"
    assert time.monotonic() - t0 < 4


def test_cpu_limit_applies(sb):
    # RLIMIT_CPU of 1 s under a 20 s wall clock: the kernel stops the busy loop.
    res = run(sb.run("while True:\n    pass\n", limits=SandboxLimits(timeout=20, cpu_seconds=1)))
    assert not res.passed and not res.timed_out and res.reason in ("timeout", "killed")
    assert res.duration < 10


def test_output_is_captured_and_capped(sb):
    res = run(sb.run("import sys\nfor i in range(30000):\n    sys.stdout.write(str(i) + 'x' * 95 + '\\n')\n",
                     limits=SandboxLimits(max_output_bytes=4096)))
    assert res.passed and res.output_bytes > 2_000_000
    assert len(res.stdout) <= 4096 and res.stdout.rstrip().endswith("x")
    assert res.stdout.splitlines()[-1].startswith("29999x")  # the tail is kept
    flood = run(sb.run("while True:\n    print('y' * 100000)\n", limits=SandboxLimits(kill_output_bytes=1_000_000)))
    assert not flood.passed and flood.reason == "output_limit" and len(flood.stdout) <= 65536


def test_many_programs_run_in_parallel_up_to_the_worker_count(tmp_path):
    sb = Sandbox(workers=3, tmp_root=str(tmp_path))
    script = "import os, time\nt0 = time.time()\ntime.sleep(0.4)\nos.write(3, b'{\"t0\": %r, \"t1\": %r}\\n' % (t0, time.time()))\n"

    async def go():
        return await asyncio.gather(*(sb.run(script) for _ in range(9)))

    t0 = time.monotonic()
    results = run(go())
    wall = time.monotonic() - t0
    spans = [(r.report[0]["t0"], r.report[0]["t1"]) for r in results]
    most = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert all(r.passed for r in results)
    assert 2 <= most <= 3  # ran concurrently, never more than `workers` at once
    assert 1.2 <= wall < 9 * 0.4  # 3 waves of 0.4 s, faster than one at a time
    assert list(tmp_path.iterdir()) == []  # every temp dir removed


def test_temp_dir_is_private_and_removed(sb, tmp_path):
    res = run(sb.run("import os\nopen('scratch.txt', 'w').write('x')\nos.mkdir('d')\nos.chmod('d', 0)\n"
                     "print(oct(os.stat('.').st_mode & 0o777), os.getuid())"))
    assert res.passed
    mode, uid = res.stdout.split()
    if res.isolation["uid_switch"]:
        assert mode == "0o700" and int(uid) != 0
    assert list(tmp_path.iterdir()) == []


def test_limits_are_validated():
    with pytest.raises(ValueError, match="sandbox.timeout"):
        SandboxLimits(timeout=0)
    with pytest.raises(ValueError, match="sandbox.isolation"):
        Sandbox(isolation="chroot")


# ---- the unit-test harness ---------------------------------------------------------

def test_harness_counts_tests_and_reports_values(sb):
    prog = "def add(a, b):\n    return a + b if a < 10 else 0\n"
    tests = [TestCase(code="assert add(1, 2) == 3"), TestCase(code="assert add(20, 1) == 21"),
             TestCase(expr="add(1.5, 2.25)", expected="3.75"), TestCase(expr="add(5, 5)"),
             TestCase(expr="add('a', 1)")]
    tr = run(run_tests(sb, prog, tests))
    assert tr.loaded and tr.total == 5 and tr.passed == 3 and not tr.all_passed
    assert tr.reason == "assertion"
    assert tr.values() == ("", "!AssertionError", "3.75", "10", "!TypeError")


def test_harness_catches_early_exit_and_does_not_run_main_blocks(sb):
    for early in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n"):
        tr = run(run_tests(sb, early + "def f():\n    return 1\n", [TestCase(code="assert f() == 1")]))
        assert not tr.all_passed and tr.reason.startswith("error"), (early, tr.reason)
    main = "def f():\n    return 1\nif __name__ == '__main__':\n    input()\n    raise SystemExit(1)\n"
    assert run(run_tests(sb, main, [TestCase(code="assert f() == 1")])).all_passed


def test_harness_hides_the_tests_from_the_program(sb):
    prog = "import os\nSEEN = sorted(os.listdir('.'))\ndef f():\n    return SEEN\n"
    tr = run(run_tests(sb, prog, [TestCase(expr="f()")]))
    assert tr.all_passed and tr.values() == ("['__main__.py']",)


def test_harness_timeout_keeps_the_results_so_far(sb):
    prog = "def f(x):\n    while x > 1:\n        pass\n    return x\n"
    tests = [TestCase(code="assert f(1) == 1"), TestCase(code="assert f(2) == 2")]
    tr = run(run_tests(sb, prog, tests, limits=SandboxLimits(timeout=1)))
    assert tr.passed == 1 and tr.reason == "timeout" and not tr.all_passed


def test_behaviour_values_are_canonical(sb):
    prog = "def f(k):\n    return [{3, 1, 2}, {'b': 1, 'a': 2}, 0.1 + 0.2, (7,), 2.0][k]\n"
    tr = run(run_tests(sb, prog, [TestCase(expr=f"f({i})") for i in range(5)]))
    assert tr.values() == ("{1,2,3}", "{'a':2,'b':1}", "0.3", "(7,)", "2")


def test_weaker_modes_can_be_chosen_and_say_what_they_lack(tmp_path):
    none = Sandbox(isolation="none", landlock=False, tmp_root=str(tmp_path))
    iso = run(none.isolation())
    assert (iso.mode, iso.network, iso.pid_namespace, iso.filesystem, iso.host_files_hidden) == (
        "none", False, False, False, False)
    assert "readable" in iso.note
    res = run(none.run("print('ok')"))
    assert res.passed and res.isolation["network"] is False and res.isolation["host_files_hidden"] is False
    # With Landlock (where the kernel has it), mode none limits what the program can read.
    ll = run(Sandbox(isolation="none", tmp_root=str(tmp_path)).isolation())
    assert ll.mode == "none" and not ll.network
    assert ll.host_files_hidden == ("Landlock" in ll.note) == ll.filesystem
    assert ll.host_files_hidden == (landlock_abi() >= 1), ll.note  # used wherever the kernel has it
    assert run(none.run("while True:\n    pass\n", limits=SandboxLimits(timeout=1))).reason == "timeout"
    with pytest.raises(RuntimeError, match="network isolation required"):
        run(Sandbox(isolation="none", require_network_isolation=True).isolation())


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (< 1: none), asked directly."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1)


def test_a_mode_that_still_shows_the_hosts_files_is_refused(monkeypatch):
    """The probe reads the launcher (a file of the checkout): a private root that lets the
    host's tree through (here: / bound in whole) makes the mode unavailable, not silent."""
    import ttscale.sandbox.sandbox as sbmod

    monkeypatch.setattr(sbmod, "_PROBES", {})
    monkeypatch.setattr(sbmod, "view_spec", lambda iso, view: {"ro": ["/"], "links": [], "hide": []}
                        if iso.mode != "none" else {})
    if os.geteuid() != 0:
        pytest.skip("mode namespaces needs root")
    with pytest.raises(RuntimeError, match="namespaces unavailable: the host's files are still visible"):
        run(Sandbox(isolation="namespaces").isolation())  # work dir in /tmp: the uid can reach it
    # auto falls through to a mode that says what it is
    iso = run(Sandbox(landlock=False).isolation())
    assert (iso.mode, iso.host_files_hidden) == ("none", False) and "still visible" in iso.note
