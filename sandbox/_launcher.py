"""The sandbox launcher: the process `ttscale.sandbox.sandbox.Sandbox` starts for each program.

    python -s -S -B [-P] sandbox/_launcher.py SPEC      (SPEC: marshal, hex-encoded)

Standard library only, and only cheap modules at start-up (no json, no asyncio): it
runs once per sandboxed program. Steps, for mode "namespaces" (root) / "userns":

1. unshare(2) new mount, PID, network, IPC, UTS (+ user, for "userns") namespaces;
2. fork: the child is PID 1 of the new PID namespace. It gets SIGKILL when the
   launcher dies (PDEATHSIG), then builds its filesystem (`_rootfs.setup_filesystem`): an
   empty tmpfs with the interpreter's trees bound read-only (site-packages covered),
   device nodes, its own /proc, private scratch tmpfs and the work dir, and pivots
   into it (the host's tree is detached); sets no_new_privs and the rlimits, closes
   every other fd, drops to the run's unprivileged uid/gid (namespaces mode), drops
   every capability, and runs the script in this interpreter (no second interpreter
   start-up: the launcher itself was started with PYTHONHASHSEED=0 and the program's
   stripped environment);
3. the launcher waits and exits with the child's status (or dies of its signal).

Mode "none" skips the namespaces, the private root and the uid switch; given
`readable` it limits the child's file access with Landlock instead (`_rootfs.landlock`).
A setup failure exits with status 125 after writing {"sandbox_error": ...} to the
report pipe (fd 3 in the program).
"""

from __future__ import annotations

import os
import signal
import sys

if __package__:  # imported by the parent, as ttscale.sandbox._launcher
    from ttscale.sandbox._rootfs import PR_SET_NO_NEW_PRIVS, _check, _libc, landlock, setup_filesystem, under
else:  # run as a script (the launcher itself): the module beside it
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _rootfs import PR_SET_NO_NEW_PRIVS, _check, _libc, landlock, setup_filesystem, under  # noqa: E402
    del sys.path[0]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522

REPORT_FD = 3  # the program's structured-report pipe
SETUP_FAILED = 125  # exit status when the sandbox could not be set up


def json_line(obj: dict) -> bytes:
    """A JSON line for a flat dict of str/int/float/bool/None (no json import: start-up cost)."""
    def enc(v) -> str:
        if v is None:
            return "null"
        if v is True or v is False:
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v) if v == v and v not in (float("inf"), float("-inf")) else "null"
        s = str(v)
        out = ['"']
        for ch in s:
            o = ord(ch)
            if ch == '"' or ch == "\\":
                out.append("\\" + ch)
            elif o < 0x20 or 0xD800 <= o <= 0xDFFF:
                out.append("\\u%04x" % o)
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)

    return ("{" + ",".join(enc(str(k)) + ":" + enc(v) for k, v in obj.items()) + "}\n").encode("utf-8", "replace")


def _set_limits(spec: dict) -> None:
    import resource

    mib = 1024 * 1024

    def setl(res: int, soft: int, hard=None) -> None:
        hard = soft if hard is None else hard
        cur_hard = resource.getrlimit(res)[1]
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(res, (soft, hard))

    setl(resource.RLIMIT_CPU, int(spec["cpu"]), int(spec["cpu"]) + 1)
    setl(resource.RLIMIT_AS, int(spec["memory_mb"]) * mib)
    setl(resource.RLIMIT_FSIZE, int(spec["max_file_mb"]) * mib)
    setl(resource.RLIMIT_NOFILE, int(spec["max_open_files"]))
    setl(resource.RLIMIT_CORE, 0)
    setl(resource.RLIMIT_NPROC, int(spec["nproc"]))


def _drop_capabilities(libc) -> None:
    """No capability left, in any namespace (userns mode keeps a full set otherwise)."""
    import ctypes

    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(libc.capset(header, data), "capset")


def _run_script(path: str) -> None:
    """Run `path` as __main__ in this (fresh, isolated) interpreter, like `python path`."""
    import builtins
    import types

    with open(path, "rb") as f:
        source = f.read()
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [path]
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    try:
        exec(compile(source, path, "exec", dont_inherit=True), main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - report as `python path` would, minus our frames
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        sys.excepthook(type(e), e, tb)
        raise SystemExit(1) from None


def main(spec: dict) -> None:
    mode = spec["mode"]
    report_fd = spec["report_fd"]

    def fail(msg: str) -> None:
        try:
            os.write(report_fd, json_line({"sandbox_error": msg}))
        except OSError:
            pass
        sys.stderr.write("sandbox setup failed: %s\n" % msg)
        sys.stderr.flush()
        os._exit(SETUP_FAILED)

    libc = None
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if mode in ("namespaces", "userns"):
            libc = _libc()
            outer_uid, outer_gid = os.getuid(), os.getgid()
            flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
            if mode == "userns":
                flags |= CLONE_NEWUSER
            _check(libc.unshare(flags), "unshare")
            if mode == "userns":
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write("1000 %d 1" % outer_uid)
                with open("/proc/self/gid_map", "w") as f:
                    f.write("1000 %d 1" % outer_gid)
    except Exception as e:  # noqa: BLE001 - reported; the parent falls back to a weaker mode
        fail("%s: %s" % (type(e).__name__, e))

    pid = os.fork()
    if pid == 0:
        try:
            if report_fd != REPORT_FD:
                os.dup2(report_fd, REPORT_FD)
                os.close(report_fd)
            if libc is not None:
                # Launcher gone (killed on timeout) -> the program dies, and with it, as
                # PID 1, everything left in its namespace.
                _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
                setup_filesystem(libc, spec)  # as PID 1: its /proc shows only the sandbox
                _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
            elif spec.get("readable"):
                landlock(_libc(), spec)
            os.closerange(REPORT_FD + 1, 1 << 20)  # no handle on anything of the host's
            _set_limits(spec)
            if mode == "namespaces":
                os.setgroups([])
                os.setresgid(spec["gid"], spec["gid"], spec["gid"])
                os.setresuid(spec["uid"], spec["uid"], spec["uid"])
                _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")  # the uid change cleared it
            if libc is not None:
                _drop_capabilities(libc)
            os.chdir(spec["workdir"])
        except BaseException as e:  # noqa: BLE001
            try:
                os.write(REPORT_FD, json_line({"sandbox_error": "%s: %s" % (type(e).__name__, e)}))
            except OSError:
                pass
            os._exit(SETUP_FAILED)
        _run_script(spec["script"])  # exceptions/SystemExit: the interpreter's usual exit
        return
    os.close(report_fd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:  # pragma: no cover
            continue
    if os.WIFSIGNALED(status):  # die of the same signal, so the parent sees it
        sig = os.WTERMSIG(status)
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def die_with_parent(parent: int) -> None:
    """The launcher, and the program it forks, are SIGKILLed when the framework process
    `parent` dies, however it dies (nobody else would end a program that sleeps)."""
    if not sys.platform.startswith("linux"):
        return
    libc = _libc()

    def arm(expected: int) -> None:
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        ppid = os.getppid()  # 0: the parent is outside our PID namespace (the program, PID 1)
        if ppid not in (expected, 0):  # it died before the signal was set
            os.kill(os.getpid(), signal.SIGKILL)

    arm(parent)
    launcher, first = os.getpid(), [True]

    def after_fork() -> None:  # the program only (the first fork), not the program's own children
        if first[0]:
            first[0] = False
            arm(launcher)

    os.register_at_fork(after_in_child=after_fork)


if __name__ == "__main__":
    import marshal

    _spec = marshal.loads(bytes.fromhex(sys.argv[1]))
    die_with_parent(_spec.get("parent", os.getppid()))
    main(_spec)
