"""The processes an engine starts die with the process that started them, however it dies.

vLLM runs its engine in other processes: `AsyncLLM` starts EngineCore with
multiprocessing, EngineCore starts its worker(s), and multiprocessing starts a resource
tracker. None of them watches the process that started it, so a run killed with SIGKILL
(a crash, the OOM killer, a job killed past its grace period) left all three behind
(measured: still alive 15 s later; on a GPU they keep its memory, and a requeued job
finds the GPU full). `arm()`, called before an engine starts, makes every process that
multiprocessing starts from this process, and from those processes in turn, die with
its parent:

- PR_SET_PDEATHSIG(SIGKILL): the kernel kills the child as soon as its parent dies, by
  any death. It is set first thing in the child. A spawned interpreter (start methods
  "spawn" and "forkserver", both through `multiprocessing.util.spawnv_passfds`) runs a
  prologue before multiprocessing's own `-c` program: it loads this file by its path,
  sets the signal, kills itself if the parent is already gone (it may die between the
  start and the prctl), and arms the child in turn, so grandchildren (vLLM's workers)
  die with their parent too. A forked child (start method "fork", vLLM's default on a
  GPU) does the same in `multiprocessing.util.register_after_fork`.
- The kernel sends the parent-death signal when the *thread* that started the child
  ends, not the process: a child started from a thread that then ends would be killed
  with it. Spawned interpreters are therefore started from one thread of this module
  that lives as long as the process (under the caller's signal mask, which the child
  inherits). A forked child keeps the thread that forked it (it is that thread that runs
  on in the child); vLLM forks from the engine's own loop thread, which lives until the
  engine is shut down.
- The resource tracker gets nothing: it exits by itself once the last process holding
  its pipe is gone (right after the others are killed), after unlinking what they leaked
  (shared memory, semaphores). Killed with them, it would leak those.

Processes started otherwise (`subprocess`) are not covered. Linux only: elsewhere `arm()`
does nothing and returns False. Standard library only, importing nothing of the project:
spawned children load this file by its path.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
_MARK = "_ttscale_reaper"  # set on multiprocessing.util.spawnv_passfds once it is wrapped
_TRACKER = "multiprocessing.resource_tracker"  # its -c program names it; left alone (see module doc)
# The prologue of a spawned interpreter's -c program: arm it, then multiprocessing's program.
_PROLOGUE = (
    "import importlib.util as _u\n"
    "try:\n"
    " _s=_u.spec_from_file_location({name!r},{path!r});_m=_u.module_from_spec(_s);_s.loader.exec_module(_m)\n"
    " _m.child_start({ppid})\n"
    "except Exception as _e:\n"
    " import sys;print('ttscale reaper: child not armed: %r' % (_e,),file=sys.stderr)\n"
    "del _u\n"
)

_forker = [0]  # pid of the process at its last fork (set before each fork, read by the child)
_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()
_arm_lock = threading.Lock()
_libc = None  # loaded by arm(), so a forked child calls prctl without loading anything


def _load_libc():
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _die_with(parent: int) -> None:
    """SIGKILL this process when its parent dies; now, if the parent `parent` is already gone."""
    import ctypes

    if _load_libc().prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        print(f"ttscale reaper: prctl(PR_SET_PDEATHSIG) failed, errno {ctypes.get_errno()}", file=sys.stderr)
        return
    if os.getppid() != parent:  # it died (we were reparented) before the signal was set
        os.kill(os.getpid(), signal.SIGKILL)


def child_start(parent: int) -> None:
    """Run first in a spawned interpreter (the prologue): die with `parent`, arm this process too."""
    _die_with(parent)
    arm()


def _after_fork(_token: object) -> None:
    _die_with(_forker[0])


class _Token:  # what multiprocessing's after-fork registry keeps (it holds weak references)
    pass


_TOKEN = _Token()


def arm() -> bool:
    """Make the processes multiprocessing starts from here (and from those, ...) die with
    their parent. Idempotent; True when armed (Linux), False where not supported."""
    if not sys.platform.startswith("linux"):
        return False
    import multiprocessing.util as mpu

    with _arm_lock:
        if not getattr(mpu.spawnv_passfds, _MARK, False):
            _wrap(mpu)
    return True


def _wrap(mpu) -> None:
    original = mpu.spawnv_passfds

    def spawnv_passfds(path, args, passfds):
        args = list(args)
        i = args.index("-c") + 1 if "-c" in args[1:] else None
        if i is None or i >= len(args) or _TRACKER in args[i]:
            return original(path, args, passfds)
        prologue = _PROLOGUE.format(name=_MARK, path=os.path.abspath(__file__), ppid=os.getpid())
        args[i] = prologue + args[i]
        return _spawn_thread().call(original, path, args, passfds)

    _load_libc()
    setattr(spawnv_passfds, _MARK, True)
    mpu.spawnv_passfds = spawnv_passfds
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    mpu.register_after_fork(_TOKEN, _after_fork)


def _before_fork() -> None:
    _forker[0] = os.getpid()


def _after_fork_in_child() -> None:
    global _spawner_lock, _arm_lock
    _spawner_lock, _arm_lock = threading.Lock(), threading.Lock()  # another thread of the parent may have held them


class _Spawner:
    """One thread, for the life of this process, that starts the spawned interpreters
    (so their parent-death signal does not follow a thread that ends earlier)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="ttscale-reaper-spawner", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            fn, args, mask, done, out = self._jobs.get()
            old = signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            try:
                out.append((True, fn(*args)))
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                out.append((False, e))
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
                done.set()

    def call(self, fn, *args):
        if threading.current_thread() is self._thread:
            return fn(*args)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # the caller's, for the child to inherit
        done, out = threading.Event(), []
        self._jobs.put((fn, args, mask, done, out))
        done.wait()
        ok, value = out[0]
        if not ok:
            raise value
        return value


def _spawn_thread() -> _Spawner:
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner.pid != os.getpid():  # none yet, or a forked copy without its thread
            _spawner = _Spawner()
        return _spawner
