"""The program's view of the files, set up by the launcher (`_launcher.py`) in its child.

Standard library only (it runs in every sandboxed program's launcher). Two mechanisms:

- `setup_filesystem` (modes "namespaces" and "userns", inside a new mount namespace): a
  private root on an empty tmpfs, holding only what the interpreter needs, then
  pivot_root into it; the host's tree is detached, so nothing else of it can be reached.
- `landlock` (mode "none", where the kernel has Landlock): no namespace, but every file
  access outside an allow-list fails (EACCES).

What goes in (the `ro` / `links` / `hide` / `readable` lists) is decided by the parent,
`view.file_view`.
"""

from __future__ import annotations

import os

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MNT_DETACH = 2
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
PR_SET_NO_NEW_PRIVS = 38

# Scratch dirs of the program's filesystem; each is a private size-limited tmpfs.
PRIVATE_SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# pivot_root(2) has no libc wrapper: its system call number per machine.
PIVOT_ROOT_NR = {"x86_64": 155, "aarch64": 41, "arm64": 41, "riscv64": 41, "loongarch64": 41, "ppc64le": 203,
                 "ppc64": 203, "s390x": 217, "i686": 217, "i386": 217, "armv7l": 218, "armv6l": 218}


def under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        import ctypes

        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _mount(libc, src, target: str, fstype, flags: int, data=None) -> None:
    def enc(s):
        return None if s is None else s.encode()

    _check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _mountinfo() -> list:
    """(mount point, flags to keep on a read-only remount) of every mount."""
    keep = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
            "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4]
            for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                mp = mp.replace(esc, ch)
            flags = 0
            for opt in parts[5].split(","):
                flags |= keep.get(opt, 0)
            out.append((mp, flags))
    return out


def _dirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _pivot_root(libc, root: str) -> None:
    """Make `root` the root of this mount namespace and detach the old one: no path to the
    host's tree is left. No chroot fallback: a program able to create a user namespace
    could climb out of a chroot, so where pivot_root is refused (an initramfs root) the
    mode is unavailable and a weaker one, which says what it is, is used."""
    os.chdir(root)
    nr = PIVOT_ROOT_NR.get(os.uname().machine)
    if nr is None:
        raise OSError(0, "pivot_root: no system call number known for %s" % os.uname().machine)
    _check(libc.syscall(nr, b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def setup_filesystem(libc, spec: dict) -> None:
    """Build the program's whole filesystem on an empty tmpfs and pivot into it.

    Visible afterwards, at their usual paths: `spec["ro"]` (the interpreter's prefix, /usr,
    /lib*, ld.so.cache: bound read-only, with `spec["hide"]` -- site-packages -- covered by
    empty read-only tmpfs), `spec["links"]` (merged-usr symlinks), /dev with null, zero,
    full, random, urandom, a fresh /proc of the new PID namespace, private size-limited
    tmpfs at /tmp, /var/tmp, /dev/shm, and the work dir (read-write). Nothing else of the
    host: datasets, project checkout, run dirs, home dirs, the host's /tmp are gone."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    workdir = spec["workdir"]
    work_fd = os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    ro = list(spec["ro"])
    ro += _mapped_files(ro)  # shared libraries this interpreter runs on, wherever they are
    root = workdir  # the new root is mounted over the work dir (reached through work_fd)
    _mount(libc, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    size = "size=%dm,mode=1777" % int(spec["tmpfs_mb"])
    _dirs(root + "/dev")
    _mount(libc, "tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for dev in DEVICES:
        os.close(os.open(root + dev, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        _mount(libc, dev, root + dev, None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, root + "/dev/" + name)
    writable = [root + workdir, root + "/proc"]
    for d in PRIVATE_SCRATCH:
        _dirs(root + d)
        _mount(libc, "tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV, size)
        writable.append(root + d)
    for src in sorted(ro):  # parents before children
        if os.path.isdir(src):
            _dirs(root + src)
        else:
            _dirs(os.path.dirname(root + src))
            os.close(os.open(root + src, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        _mount(libc, src, root + src, None, MS_BIND | MS_REC)
    for path, target in spec["links"]:
        if not os.path.lexists(root + path):
            os.symlink(target, root + path)
    for h in spec["hide"]:
        if os.path.isdir(root + h) and not under(workdir, [h]):
            _mount(libc, "tmpfs", root + h, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0755")
    _dirs(root + workdir)
    _mount(libc, "/proc/self/fd/%d" % work_fd, root + workdir, None, MS_BIND)
    os.close(work_fd)
    _dirs(root + "/proc")
    try:  # a /proc of its own PID namespace (this process is its PID 1)
        _mount(libc, "proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:  # not allowed here: no /proc at all rather than the parent's
        _mount(libc, "tmpfs", root + "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k")
    # Read-only: everything in the new root but the work dir and the scratch tmpfs. A
    # mount that refuses is still protected by the uid switch and the host's permissions.
    for mp, keep in _mountinfo():
        if under(mp, [root]) and mp not in writable and not under(mp, [root + "/proc"]):
            try:
                _mount(libc, None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
            except OSError:
                pass
    _mount(libc, None, root + workdir, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    _pivot_root(libc, root)


# Landlock (Linux 5.13+): the same system call numbers on every architecture.
LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1, 2, 4, 8
LL_TRUNCATE, LL_IOCTL_DEV = 1 << 14, 1 << 15
LL_FILE_RIGHTS = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | LL_IOCTL_DEV


def landlock(libc, spec: dict) -> None:
    """Mode "none" where the kernel has Landlock: the program may read only `spec["readable"]`
    (the interpreter and system libraries, site-packages left out), read and write the
    DEVICES, and do anything in its work dir; every other file access fails with EACCES.
    No namespace or privilege is needed; `stat` of a path still works (names, not content)."""
    import ctypes

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    abi = libc.syscall(LANDLOCK_CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        raise OSError(ctypes.get_errno(), "landlock: " + os.strerror(ctypes.get_errno()))
    handled = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (LL_TRUNCATE if abi >= 3 else 0) \
        | (LL_IOCTL_DEV if abi >= 5 else 0)
    attr = ctypes.c_uint64(handled)
    ruleset = libc.syscall(LANDLOCK_CREATE_RULESET, ctypes.byref(attr), 8, 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock ruleset: " + os.strerror(ctypes.get_errno()))
    rules = [(p, LL_EXECUTE | LL_READ_FILE | LL_READ_DIR) for p in spec["readable"]]
    rules += [(d, LL_READ_FILE | LL_WRITE_FILE | LL_TRUNCATE) for d in DEVICES] + [(spec["workdir"], handled)]
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:  # gone since the list was made
            continue
        if os.fstat(fd).st_mode & 0o170000 != 0o040000:  # not a directory
            access &= LL_FILE_RIGHTS
        rule = PathBeneath(access & handled, fd)
        rc = libc.syscall(LANDLOCK_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0)  # LANDLOCK_RULE_PATH_BENEATH
        os.close(fd)
        if rc != 0:
            raise OSError(ctypes.get_errno(), "landlock rule %s: %s" % (path, os.strerror(ctypes.get_errno())))
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
    _check(libc.syscall(LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)


def _mapped_files(known: list) -> list:
    """Files mapped into this process (the interpreter, libpython, libc, ...) outside `known`."""
    paths = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                paths.add(parts[5].rstrip("\n"))
    return sorted(p for p in paths if not under(p, known) and not p.endswith(")")
                  and not under(p, ("/dev", "/proc", "/sys", "/memfd:")) and os.path.isfile(p))
