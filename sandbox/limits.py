"""What one sandboxed run may use and what it reports: limits, the isolation a mode
gives, the result of a run, and the reason a run failed."""

from __future__ import annotations

import dataclasses
import signal
from dataclasses import dataclass, field
from typing import Any

MODES = ("namespaces", "userns", "none")


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
    filesystem: bool  # only the work dir (and private scratch tmpfs) writable
    uid_switch: bool  # runs as its own unprivileged uid (so RLIMIT_NPROC is enforced)
    # The program sees only the interpreter (its prefix, /usr, /lib*: read-only, site-packages
    # hidden) and its work dir: no dataset, project checkout, run dir or home dir of the host.
    host_files_hidden: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


NONE_NOTE = ("mode none: files readable by the caller stay readable to the program "
             "(datasets with hidden tests, the project checkout, run dirs, home dirs)")
LANDLOCK_NOTE = ("mode none with Landlock: the program can read only the interpreter, system libraries "
                 "and its work dir, and write only its work dir; no private /tmp; stat() of host paths "
                 "still answers (names and sizes, not content)")
NO_ISOLATION = Isolation("none", network=False, pid_namespace=False, filesystem=False, uid_switch=False,
                         host_files_hidden=False, note=NONE_NOTE)


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


def _mode_isolation(mode: str) -> Isolation:
    """What a mode gives ("none+landlock": mode none, file access limited by Landlock)."""
    if mode == "namespaces":
        return Isolation("namespaces", network=True, pid_namespace=True, filesystem=True, uid_switch=True,
                         host_files_hidden=True)
    if mode == "userns":
        return Isolation("userns", network=True, pid_namespace=True, filesystem=True, uid_switch=False,
                         host_files_hidden=True)
    if mode == "none+landlock":
        return Isolation("none", network=False, pid_namespace=False, filesystem=True, uid_switch=False,
                         host_files_hidden=True, note=LANDLOCK_NOTE)
    return NO_ISOLATION
