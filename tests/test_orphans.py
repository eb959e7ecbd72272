"""No process a run starts outlives it, however the run dies (backends/reaper.py).

Each test starts a process, waits until the processes it starts exist, lists them from
/proc (pid and start time, so a reused pid is not mistaken for a survivor), SIGKILLs
that one process (not its group) and checks that every one of them is gone within
`GRACE_S` seconds. Whatever is left is killed afterwards, so a failing test leaves no
orphans.

* Without vLLM: a script that arms the reaper starts children the ways vLLM does (spawn,
  a spawned child that spawns a grandchild, fork, a child started from a thread that then
  ends) plus multiprocessing's resource tracker. Unarmed, the same script leaves them
  alive: the check can fail.
* Sandboxed programs (sandbox/_launcher.py): a program that sleeps, in the strongest
  mode this machine has and in mode "none", dies with the run that started it.
* Real engine (`engine`): `scripts/run.py` with the embedded model on vLLM's CPU build,
  killed after its first record (EngineCore, its worker and the resource tracker up).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 5.0  # how long a process may outlive the killed one
WATCH_S = 15.0  # how long survivors are watched (for the message), when some remain past GRACE_S


# ------------------------------------------------------------------ /proc
def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, start time in clock ticks, state) of every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        table[int(entry)] = (int(fields[1]), int(fields[19]), fields[0])
    return table


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of `root`."""
    table = proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        out[pid] = table[pid][1]
        todo += children.get(pid, ())
    return out


def alive(procs: dict[int, int]) -> dict[int, int]:
    """Those of `procs` still running (same pid and start time; a zombie has ended)."""
    table = proc_table()
    return {pid: st for pid, st in procs.items() if pid in table and table[pid][1] == st and table[pid][2] != "Z"}


def describe(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    return f"{pid} {cmd[:100]}"


def survival(procs: dict[int, int], watch: float = WATCH_S) -> dict[int, float | None]:
    """pid -> seconds it outlived the kill (None: still alive after `watch` s)."""
    t0, left, out = time.monotonic(), dict(procs), {}
    while left and time.monotonic() - t0 < watch:
        now = alive(left)
        for pid in set(left) - set(now):
            out[pid] = time.monotonic() - t0
        left = now
        if left:
            time.sleep(0.05)
    out.update({pid: None for pid in left})
    return out


def kill_all(procs: dict[int, int]) -> None:
    for pid in alive(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_and_watch(p: subprocess.Popen, procs: dict[int, int]) -> tuple[dict[int, float | None], dict[int, str]]:
    names = {pid: describe(pid) for pid in procs}
    os.kill(p.pid, signal.SIGKILL)  # the process only: what the kernel does to it, nothing to the rest
    p.wait(timeout=30)
    try:
        return survival(procs), names
    finally:
        kill_all(procs)


def assert_none_survive(times: dict[int, float | None], names: dict[int, str]) -> None:
    late = {pid: t for pid, t in times.items() if t is None or t > GRACE_S}
    assert not late, "alive after the kill: " + "; ".join(
        f"{names[pid]} ({'> %.0f' % WATCH_S if t is None else '%.1f' % t} s)" for pid, t in late.items())


def wait_until(pred, p: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if p.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def stderr_of(p: subprocess.Popen) -> str:
    p.err_file.seek(0)  # type: ignore[attr-defined]
    return p.err_file.read().decode(errors="replace")[-3000:]  # type: ignore[attr-defined]


def start(cmd: list[str], **kw) -> subprocess.Popen:
    err = tempfile.TemporaryFile()
    kw.setdefault("stdout", subprocess.DEVNULL)
    p = subprocess.Popen(cmd, cwd=ROOT, stderr=err, start_new_session=True, **kw)
    p.err_file = err  # type: ignore[attr-defined]
    return p


# ------------------------------------------------------------------ without vLLM
# Children started the ways vLLM starts them; "arm" arms the reaper first.
CHILDREN = textwrap.dedent("""
    import multiprocessing as mp, sys, threading, time
    sys.path.insert(0, sys.argv[2])

    def sleeper(ready=None):
        if ready is not None:
            ready.set()
        time.sleep(600)

    def start_and_end(ctx):
        ready = ctx.Event()
        ctx.Process(target=sleeper, args=(ready,)).start()
        assert ready.wait(60)  # the child runs (its start-up, the reaper's prologue included, is over)

    def spawns_a_grandchild():
        mp.get_context("spawn").Process(target=sleeper).start()  # as EngineCore starts its worker
        time.sleep(600)

    if __name__ == "__main__":
        if sys.argv[1] == "arm":
            from ttscale.backends.reaper import arm
            assert arm()
        spawn, fork = mp.get_context("spawn"), mp.get_context("fork")
        spawn.Process(target=spawns_a_grandchild).start()  # as AsyncLLM starts EngineCore (CPU build)
        fork.Process(target=sleeper).start()  # the same on a GPU (vLLM's default start method)
        t = threading.Thread(target=start_and_end, args=(spawn,))
        t.start()
        t.join()  # the thread that started this child has ended; the child must live on
        time.sleep(600)
""")
EXPECTED = 5  # spawned child and its grandchild, forked child, thread-started child, resource tracker


def start_children(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, dict[int, int]]:
    script = tmp_path / "children.py"
    script.write_text(CHILDREN)
    p = start([sys.executable, str(script), mode, str(ROOT)])
    try:
        assert wait_until(lambda: len(descendants(p.pid)) >= EXPECTED, p, timeout=60), stderr_of(p)
        time.sleep(1.0)  # a child killed by mistake (e.g. when the thread that started it ended) is gone by now
        procs = descendants(p.pid)
        assert len(alive(procs)) == EXPECTED, [describe(pid) for pid in procs]
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)  # its own session and group (see `start`)
        raise
    return p, procs


def test_armed_children_die_with_a_sigkilled_parent(tmp_path):
    p, procs = start_children(tmp_path, "arm")
    times, names = kill_and_watch(p, procs)
    assert_none_survive(times, names)


def test_unarmed_children_outlive_their_parent(tmp_path):
    """The control: without the reaper the check above fails (multiprocessing's children
    do not watch their parent)."""
    p, procs = start_children(tmp_path, "none")
    names = {pid: describe(pid) for pid in procs}
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    try:
        time.sleep(GRACE_S)
        assert len(alive(procs)) == EXPECTED, [names[pid] for pid in alive(procs)]
    finally:
        kill_all(procs)


def test_arm_is_idempotent_and_spawned_children_still_work():
    from ttscale.backends.reaper import arm

    code = textwrap.dedent("""
        import multiprocessing as mp, sys
        sys.path.insert(0, sys.argv[1])
        from ttscale.backends.reaper import arm
        import multiprocessing.util as mpu
        assert arm() and arm()
        wrapped = mpu.spawnv_passfds
        assert arm() and mpu.spawnv_passfds is wrapped  # wrapped once
        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(2) as pool:
                print(sum(pool.map(abs, range(-10, 0))))
    """)
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "55"
    assert "not armed" not in out.stderr and "failed" not in out.stderr
    assert arm() is sys.platform.startswith("linux")


# ------------------------------------------------------------------ real engine
def record_lines(root: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in root.glob("**/records*.jsonl"))


@pytest.mark.engine
@pytest.mark.slow
def test_real_engine_processes_die_with_a_sigkilled_run(tmp_path):
    """scripts/run.py on the embedded model, SIGKILLed once a record exists (the engine
    is up): EngineCore, its worker and the resource tracker are gone within GRACE_S."""
    root = tmp_path / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    args = ["task.num_problems=200", "strategy.n=2", "sampling.max_tokens=16", "run.concurrency=2",
            "backend.gpu_memory_utilization=0.2", f"run.root={root}", "logger=none", "run.progress=false"]
    p = start([sys.executable, str(ROOT / "scripts" / "run.py"), *args], env=env)
    try:
        assert wait_until(lambda: record_lines(root) >= 1, p, timeout=400), stderr_of(p)
        procs = descendants(p.pid)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    names = {pid: describe(pid) for pid in procs}
    assert any("EngineCore" in n for n in names.values()), names  # what this test is about is running
    times, names = kill_and_watch(p, procs)
    print("outlived the run by:", {names[pid]: t for pid, t in times.items()})
    assert_none_survive(times, names)


@pytest.mark.engine
@pytest.mark.slow
def test_real_vllm_serve_processes_die_with_a_sigkilled_server(tmp_path):
    """scripts/vllm_serve.py (the `vllm serve` launcher) SIGKILLed once it answers:
    its EngineCore, worker and resource tracker are gone within GRACE_S."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = start([sys.executable, str(ROOT / "scripts" / "vllm_serve.py"), "embedded:smollm2-135m-instruct",
               "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16", "--max-model-len", "1024",
               "--enforce-eager", "--kv-cache-memory-bytes", str(256 * 2**20)],
              env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_until(up, p, timeout=420), stderr_of(p)
        procs = descendants(p.pid)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    names = {pid: describe(pid) for pid in procs}
    assert any("EngineCore" in n for n in names.values()), names
    times, names = kill_and_watch(p, procs)
    print("outlived the server by:", {names[pid]: t for pid, t in times.items()})
    assert_none_survive(times, names)


# ------------------------------------------------------------------ sandboxed programs
SANDBOXED = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, sys.argv[1])
    from ttscale.sandbox import Sandbox

    sb = Sandbox(isolation=sys.argv[2], timeout=120)
    print(asyncio.run(sb.isolation()).mode, flush=True)  # the probe's program has ended
    print(sb.run_sync("import time\\ntime.sleep(100)\\n"))
""")


@pytest.mark.parametrize("mode", ["auto", "none"])  # auto: the strongest mode this machine has
def test_a_sandboxed_program_dies_with_a_sigkilled_run(tmp_path, mode):
    """A program that sleeps holds no CPU (RLIMIT_CPU never bites) and its timeout is
    kept by the run: killed, the run leaves the launcher and the program behind unless
    they die with it."""
    script = tmp_path / "sandboxed.py"
    script.write_text(SANDBOXED)
    out = tmp_path / "out"
    with open(out, "wb") as fh:
        p = start([sys.executable, str(script), str(ROOT), mode], stdout=fh)

    def running() -> bool:
        launched = [pid for pid in descendants(p.pid) if "_launcher.py" in describe(pid)]
        return out.read_text().strip() != "" and len(launched) >= 2  # the launcher and its program

    try:
        assert wait_until(running, p, timeout=60), stderr_of(p)
        time.sleep(0.5)
        procs = descendants(p.pid)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    times, names = kill_and_watch(p, procs)
    assert_none_survive(times, names)
