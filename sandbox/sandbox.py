"""Run untrusted Python programs (model-written code, dataset tests) in a sandbox.

The framework process never `exec`s or `eval`s generated code. Every program runs in
its own subprocess, with a private temporary directory as its cwd (removed afterwards):

    parent (asyncio) -> python -s -S -B -P sandbox/_launcher.py SPEC   (new session)
                          unshare namespaces, fork:
                          -> child (PID 1 of its namespace): build its filesystem
                             (`_rootfs.py`), limits, drop uid and capabilities, run
                             the script in this fresh interpreter

`sandbox/_launcher.py` is standard library only. What it can set up depends on the
machine; the strongest available *mode* is detected once per process
(`Sandbox.isolation()`), and every result says which mode it ran in:

- ``namespaces`` (running as root): new mount, PID, network, IPC and UTS namespaces;
  a *private root* (an empty tmpfs, pivoted into) holding only /usr, /lib*, the
  interpreter's prefix (read-only, site-packages covered), /dev/{null,zero,full,
  random,urandom}, a fresh /proc of the sandbox's processes, private tmpfs at /tmp,
  /var/tmp, /dev/shm and the work dir: no dataset, checkout, run dir or home dir is
  reachable (``host_files_hidden``; `view.file_view`). The program drops to an
  unprivileged uid/gid of its own (one per run, from ``uid_base``), no groups,
  ``no_new_privs``, rlimits (RLIMIT_NPROC is not enforced for uid 0: the uid switch
  makes the process limit bite); when the launcher dies the program gets SIGKILL
  (PDEATHSIG), and when the program (PID 1 of its namespace) dies the kernel kills
  every process left in the namespace, however it daemonised.
- ``userns`` (unprivileged, where user namespaces are allowed): the same namespaces and
  private root inside a new user namespace, the caller's uid outside (RLIMIT_NPROC
  counts all of that user's processes).
- ``none``: rlimits, a new session, a stripped environment; no network isolation. With
  Landlock (Linux 5.13+, ``landlock``) the program can read only the interpreter's
  trees and its work dir (``host_files_hidden``); without, whatever the caller can,
  and the record says so (``host_files_hidden == False``, a note).

Always: wall-clock timeout (the process group is SIGKILLed), RLIMIT_CPU / AS / NPROC /
FSIZE / NOFILE / CORE, an environment built from an allow-list (no tokens, keys or
secrets of the parent), stdin closed after an optional payload, stdout/stderr tails
kept (``max_output_bytes``) and the run killed past ``kill_output_bytes``, the temp
dir removed afterwards. Runs are asyncio subprocesses limited by a semaphore
(``workers``), so many programs run in parallel without threads.

A script reports structured results on file descriptor 3 (JSON lines); see
`run_tests`, the unit-test harness built on top of `Sandbox.run`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import marshal
import os
import sys
import tempfile
import threading
import time
import weakref
from typing import Any, Mapping

from ttscale.sandbox import _launcher
from ttscale.sandbox._launcher import SETUP_FAILED
from ttscale.sandbox.limits import (
    MODES, Isolation, SandboxLimits, SandboxResult, _mode_isolation, _signal_name, classify,
)
from ttscale.sandbox.view import file_view, view_spec
from ttscale.sandbox.procs import (
    _count_user_processes, _empty_group, _killpg, _memory_hint, _remove_tree, drain_report, run_coroutine_sync,
)

_LAUNCHER = os.path.abspath(_launcher.__file__)

# Environment variables a program may inherit (values are taken from the parent only
# for these names); everything else, tokens and keys included, is dropped.
ENV_ALLOW = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")


# ---------------------------------------------------------------------------
# The parent side

_PROBES: dict[tuple[str, str], Isolation] = {}
_PROBE_LOCK = threading.Lock()
_LOOP_SEMAPHORES: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]]" = (
    weakref.WeakKeyDictionary()
)
_UID_COUNTER = [0]


def _loop_semaphore(workers: int) -> asyncio.Semaphore:
    """One semaphore per event loop and worker count: every Sandbox with the same
    `workers` (task grader, verifier, strategy) shares the limit."""
    loop = asyncio.get_running_loop()
    sems = _LOOP_SEMAPHORES.setdefault(loop, {})
    if workers not in sems:
        sems[workers] = asyncio.Semaphore(workers)
    return sems[workers]


def _interpreter() -> tuple[str, str]:
    """(real path of this Python, its installation prefix)."""
    exe = os.path.realpath(sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


def _child_env(workdir: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env.update({
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONHASHSEED": "0",  # same program, same set/dict order: behaviour comparable
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


class Sandbox:
    """Runs Python scripts in isolated subprocesses, `workers` at a time.

    `isolation`: "auto" (the strongest mode that works here), or one of MODES to
    insist on it (an error if it does not work). `require_network_isolation`: refuse
    to run (raise) when no network namespace can be had. `landlock`: in mode "none",
    limit the program's file access with Landlock where the kernel has it (false: the
    program has the caller's file access, recorded as `host_files_hidden == False`).
    """

    def __init__(
        self,
        workers: int | None = None,
        limits: SandboxLimits | Mapping[str, Any] | None = None,
        isolation: str = "auto",
        require_network_isolation: bool = False,
        landlock: bool = True,
        uid_base: int = 1_900_000_000,
        tmp_root: str | None = None,
        python: str | None = None,
        **limit_overrides: Any,
    ) -> None:
        if isolation != "auto" and isolation not in MODES:
            raise ValueError(f"sandbox.isolation must be 'auto' or one of {MODES}, got {isolation!r}")
        base = limits if isinstance(limits, SandboxLimits) else SandboxLimits(**dict(limits or {}))
        self.limits = dataclasses.replace(base, **limit_overrides) if limit_overrides else base
        self.workers = int(workers or os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"sandbox.workers must be >= 1, got {workers}")
        self.mode_request = isolation
        self.require_network_isolation = require_network_isolation
        self.landlock = bool(landlock)
        self.uid_base = int(uid_base)
        self.tmp_root = tmp_root
        exe, prefix = _interpreter()
        self.python = os.path.realpath(python) if python else exe
        self.python_prefix = prefix if not python else os.path.dirname(os.path.dirname(self.python))

    @classmethod
    def from_config(cls, cfg: "Sandbox | Mapping[str, Any] | None") -> "Sandbox":
        """A Sandbox from a config mapping (Hydra `sandbox:` block) or an instance."""
        if isinstance(cfg, Sandbox):
            return cfg
        d = dict(cfg or {})
        d.pop("_target_", None)
        return cls(**d)

    # ---- isolation ----------------------------------------------------------
    async def isolation(self) -> Isolation:
        """Detect (once per process and interpreter) the strongest mode that works."""
        key = (self.python, self.mode_request, self.landlock)
        if key not in _PROBES:
            iso = await self._probe()
            with _PROBE_LOCK:
                _PROBES.setdefault(key, iso)
        iso = _PROBES[key]
        if self.require_network_isolation and not iso.network:
            raise RuntimeError(
                f"sandbox: network isolation required but unavailable (mode {iso.mode}: {iso.note})"
            )
        return iso

    def candidate_modes(self) -> list[str]:
        """Modes to try, strongest first ("none+landlock": mode none, files limited by Landlock)."""
        none = (["none+landlock"] if self.landlock else []) + ["none"]
        if self.mode_request != "auto":
            return none if self.mode_request == "none" else [self.mode_request]
        return (["namespaces"] if os.geteuid() == 0 else []) + ["userns"] + none

    async def _probe(self) -> Isolation:
        notes = []
        # The probe also looks for the launcher (a file of the project checkout): a mode that
        # claims to hide the host's files and still shows it does not count as working.
        probe = (f"import os\ntry:\n    open({_LAUNCHER!r}, 'rb').close()\n    seen = 1\n"
                 "except OSError:\n    seen = 0\n"
                 "os.write(3, b'{\"uid\": %d, \"sees_host\": %d}\\n' % (os.getuid(), seen))\n")
        for mode in self.candidate_modes():
            iso = _mode_isolation(mode)
            res = await self._run_once(probe, {}, None, self.limits, iso)
            rep = [r for r in res.report if "uid" in r]
            ok = res.exit_code == 0 and bool(rep) and (not iso.uid_switch or rep[0]["uid"] != 0)
            if ok and iso.host_files_hidden and rep[0]["sees_host"]:
                ok, res.reason = False, "the host's files are still visible"
            if ok:
                if notes:
                    iso = dataclasses.replace(iso, note="; ".join(notes + [iso.note] if iso.note else notes))
                return iso
            err = next((r["sandbox_error"] for r in res.report if "sandbox_error" in r), None)
            notes.append(f"{mode} unavailable: {err or res.reason or res.stderr.strip()[-200:]}")
        raise RuntimeError("sandbox: no isolation mode works here: " + "; ".join(notes))

    # ---- running --------------------------------------------------------------
    async def run(
        self,
        script: str,
        files: Mapping[str, str | bytes] | None = None,
        stdin: bytes | None = None,
        limits: SandboxLimits | None = None,
    ) -> SandboxResult:
        """Run `script` (Python source) with `files` beside it in a fresh temp dir.

        `stdin` is written to the program's stdin, which is then closed. JSON lines the
        script writes to fd 3 come back in `result.report`."""
        iso = await self.isolation()
        async with _loop_semaphore(self.workers):
            return await self._run_once(script, files or {}, stdin, limits or self.limits, iso)

    def run_sync(self, script: str, **kw: Any) -> SandboxResult:
        return run_coroutine_sync(self.run(script, **kw))

    def _next_uid(self) -> int:
        with _PROBE_LOCK:
            _UID_COUNTER[0] = (_UID_COUNTER[0] + 1) % 100_000
            return self.uid_base + _UID_COUNTER[0]

    async def _run_once(
        self,
        script: str,
        files: Mapping[str, str | bytes],
        stdin: bytes | None,
        limits: SandboxLimits,
        iso: Isolation,
    ) -> SandboxResult:
        t0 = time.monotonic()
        workdir = tempfile.mkdtemp(prefix="ttscale-sbx-", dir=self.tmp_root)
        proc = None
        report_r = report_w = None
        try:
            uid = gid = None
            names = {"__main__.py": script, **dict(files)}
            for name, content in names.items():
                if "/" in name or name in ("", ".", ".."):
                    raise ValueError(f"sandbox file names must be plain names, got {name!r}")
                mode_ = "wb" if isinstance(content, bytes) else "w"
                with open(os.path.join(workdir, name), mode_, **({} if mode_ == "wb" else {"encoding": "utf-8"})) as f:
                    f.write(content)
            nproc = limits.max_processes
            if iso.mode == "namespaces":
                uid = gid = self._next_uid()
                for name in [*names, ""]:
                    os.chown(os.path.join(workdir, name), uid, gid)
                os.chmod(workdir, 0o700)
            elif iso.mode in ("userns", "none") and os.geteuid() != 0:
                # RLIMIT_NPROC counts every process of this user: leave room for those.
                nproc += _count_user_processes(os.getuid())
            report_r, report_w = os.pipe()
            spec = {
                "mode": iso.mode, "parent": os.getpid(),  # launcher and program die with this process
                "workdir": workdir,
                "script": os.path.join(workdir, "__main__.py"),
                "uid": uid,
                "gid": gid,
                **view_spec(iso, file_view(self.python, self.python_prefix, os.getcwd())),
                "report_fd": report_w,
                "cpu": limits.cpu,
                "nproc": nproc,
                **{k: getattr(limits, k) for k in ("memory_mb", "max_file_mb", "max_open_files", "tmpfs_mb")},
            }
            # The launcher becomes the program (fork, no exec): it starts with the
            # program's stripped environment (PYTHONHASHSEED=0 included) and without
            # site-packages, user site or the script's directory on sys.path.
            flags = ["-s", "-S", "-B"] + (["-P"] if sys.version_info >= (3, 11) else [])
            proc = await asyncio.create_subprocess_exec(
                self.python, *flags, _LAUNCHER, marshal.dumps(spec).hex(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=workdir,
                env=_child_env(workdir),
                start_new_session=True,
                pass_fds=(report_w,),
            )
            os.close(report_w)
            report_w = None
            pipe = os.fdopen(report_r, "rb", buffering=0)  # owns the fd from here on
            report_r = None
            return await self._supervise(proc, pipe, stdin, limits, iso, t0)
        finally:
            if proc is not None:
                # Whatever is left in the sandbox's process group (mode "none": children
                # of a program whose launcher died, a fork bomb still forking) goes too.
                await _empty_group(proc.pid)
                if proc.returncode is None:
                    try:
                        await asyncio.wait_for(proc.wait(), 5)
                    except (asyncio.TimeoutError, ProcessLookupError):  # pragma: no cover
                        pass
            for fd in (report_r, report_w):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            _remove_tree(workdir)

    async def _supervise(self, proc, pipe, stdin: bytes | None, limits: SandboxLimits,
                         iso: Isolation, t0: float) -> SandboxResult:
        loop = asyncio.get_running_loop()
        total = [0]
        output_killed = [False]

        async def feed() -> None:
            try:
                if stdin:
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                try:
                    proc.stdin.close()
                except Exception:  # noqa: BLE001
                    pass

        async def drain(stream: asyncio.StreamReader, keep: int) -> bytes:
            buf = bytearray()
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return bytes(buf)
                total[0] += len(chunk)
                buf += chunk
                if len(buf) > keep:
                    del buf[: len(buf) - keep]
                if total[0] > limits.kill_output_bytes and not output_killed[0]:
                    output_killed[0] = True
                    _killpg(proc.pid)

        report_reader = asyncio.StreamReader(limit=2 ** 20)
        try:
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(report_reader), pipe)
        except BaseException:
            pipe.close()
            raise
        report_task = asyncio.ensure_future(drain_report(report_reader, 4 * limits.max_output_bytes + 2 ** 20))
        out_task = asyncio.ensure_future(drain(proc.stdout, limits.max_output_bytes))
        err_task = asyncio.ensure_future(drain(proc.stderr, limits.max_output_bytes))
        feed_task = asyncio.ensure_future(feed())
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), limits.timeout)
        except asyncio.TimeoutError:
            timed_out = True
            _killpg(proc.pid)
            await proc.wait()
        # The program is gone; a grandchild that escaped (mode "none") may still hold a
        # pipe open: give the readers a moment, then stop reading.
        done, pending = await asyncio.wait([out_task, err_task, report_task, feed_task], timeout=1.0)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        transport.close()
        stdout = out_task.result() if out_task in done else b""
        stderr = err_task.result() if err_task in done else b""
        report = report_task.result() if report_task in done else []
        duration = time.monotonic() - t0
        rc = proc.returncode
        exit_code, sig = (None, _signal_name(-rc)) if rc is not None and rc < 0 else (rc, None)
        out_s = stdout.decode("utf-8", "replace")
        err_s = stderr.decode("utf-8", "replace")
        reason = classify(exit_code, sig, err_s, timed_out, output_killed[0])
        setup_error = next((r["sandbox_error"] for r in report if "sandbox_error" in r), None)
        if setup_error and exit_code == SETUP_FAILED:  # the run fails, with the cause on record
            reason = f"error: sandbox setup failed ({iso.mode}): {setup_error}"[:300]
        if reason == "killed" and sig == "SIGKILL" and not timed_out and _memory_hint(err_s):
            reason = "memory"
        return SandboxResult(
            passed=reason is None,
            timed_out=timed_out,
            exit_code=exit_code,
            signal=sig,
            reason=reason,
            stdout=out_s,
            stderr=err_s,
            duration=duration,
            isolation=iso.to_dict(),
            output_bytes=total[0],
            report=report,
        )


