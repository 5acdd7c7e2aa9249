"""Process-wide machinery shared by every QEMU this process starts.

Two long-lived daemon threads, created on first use:

* the **launcher** thread forks every QEMU. `PR_SET_PDEATHSIG` fires when the *thread* that forked
  the child exits, not the process; Nova runs driver calls in short-lived worker threads, so a QEMU
  forked from one of them would be killed when that call returns. Forking from one thread that lives
  as long as the process keeps the guarantee ("QEMU dies with the harness") without that trap.
* the **event loop** thread runs one asyncio loop that owns every QMP connection. qemu.qmp objects are
  bound to the loop that created them; with one shared loop a migration can drive the source and the
  destination together, and synchronous callers (Nova's threads, tests) reach it through `run_sync`.

Every live QEMU process group is also registered here so an `atexit` hook can kill it if the owner
never got to its `shutdown()` (an exception in a fixture, Ctrl-C).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import functools
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000


@functools.cache
def libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


# --------------------------------------------------------------------------- event loop


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="novamig-qmp-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()


_loop_lock = threading.Lock()


@functools.cache
def _loop_thread() -> _LoopThread:
    return _LoopThread()


def event_loop() -> asyncio.AbstractEventLoop:
    """The shared asyncio loop on which every QMP client of this process lives."""
    with _loop_lock:
        return _loop_thread().loop


def in_event_loop() -> bool:
    try:
        return asyncio.get_running_loop() is event_loop()
    except RuntimeError:
        return False


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule `coro` on the shared loop from any thread; returns a thread-safe future."""
    return asyncio.run_coroutine_threadsafe(coro, event_loop())


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    """Run `coro` on the shared loop and wait for it from a plain thread.

    The timeout is enforced inside the loop (`asyncio.wait_for`) so that the coroutine is really
    cancelled, not left running after the caller gave up.
    """
    if in_event_loop():
        raise RuntimeError("run_sync() called from the QMP loop itself: await the coroutine instead")
    fut = submit(asyncio.wait_for(coro, timeout) if timeout is not None else coro)
    return fut.result()


# --------------------------------------------------------------------------- launcher


class _LaunchRequest:
    def __init__(self, fn: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()


class _Launcher:
    def __init__(self) -> None:
        self.requests: queue.Queue[_LaunchRequest] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="novamig-qemu-launcher", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            req = self.requests.get()
            if not req.future.set_running_or_notify_cancel():
                continue
            try:
                req.future.set_result(req.fn())
            except BaseException as exc:
                req.future.set_exception(exc)


_launcher_lock = threading.Lock()


@functools.cache
def _launcher_singleton() -> _Launcher:
    return _Launcher()


def _get_launcher() -> _Launcher:
    with _launcher_lock:
        return _launcher_singleton()


def _child_setup(parent_pid: int, netns_fd: int | None) -> Callable[[], None]:
    """Runs in the forked child before exec: die with the parent, optionally enter a netns.

    Only async-signal-safe-ish work here (ctypes calls, no locks, no allocation-heavy Python).
    The process group is set by Popen's own `process_group=0`.
    """

    def setup() -> None:
        lib = libc()
        lib.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl: then nothing would ever kill us.
        if os.getppid() != parent_pid:
            os._exit(125)
        if netns_fd is not None and lib.setns(netns_fd, _CLONE_NEWNET) != 0:
            os._exit(126)

    return setup


def spawn(
    argv: Sequence[str],
    *,
    stdout: IO[bytes] | int,
    cwd: Path | None = None,
    netns: str | None = None,
    timeout: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start `argv` from the launcher thread in its own process group, with PDEATHSIG(SIGKILL).

    `netns` names a network namespace (as made by `ip netns add`) that the child enters before exec.
    """
    parent = os.getpid()

    def launch() -> subprocess.Popen[bytes]:
        fd: int | None = None
        if netns is not None:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                process_group=0,
                preexec_fn=_child_setup(parent, fd),  # noqa: PLW1509 - launcher thread only
                close_fds=True,
            )
        finally:
            if fd is not None:
                os.close(fd)
        register_process_group(proc.pid)
        return proc

    req = _LaunchRequest(launch)
    _get_launcher().requests.put(req)
    return req.future.result(timeout=timeout)


# --------------------------------------------------------------------------- atexit backstop

_groups_lock = threading.Lock()
_live_groups: set[int] = set()
_spawned: list[int] = []
_exit_hooks: list[Callable[[], None]] = []
_temp_dirs: set[Path] = set()


def register_process_group(pgid: int) -> None:
    with _groups_lock:
        _live_groups.add(pgid)
        _spawned.append(pgid)


def spawned_pids() -> list[int]:
    """Every process this process ever spawned through `spawn` (for leak checks)."""
    with _groups_lock:
        return list(_spawned)


def track_temp_dir(path: Path) -> None:
    """Remember a temporary directory novamig made, so a leak check can find it if not removed."""
    with _groups_lock:
        _temp_dirs.add(path)


def leaked_temp_dirs() -> list[Path]:
    """Tracked temporary directories that still exist."""
    with _groups_lock:
        return sorted(p for p in _temp_dirs if p.exists())


def unregister_process_group(pgid: int) -> None:
    with _groups_lock:
        _live_groups.discard(pgid)


def live_process_groups() -> set[int]:
    with _groups_lock:
        return set(_live_groups)


def add_exit_hook(hook: Callable[[], None]) -> None:
    """Run `hook` at interpreter exit, after every QEMU process group has been killed."""
    with _groups_lock:
        _exit_hooks.append(hook)


def remove_exit_hook(hook: Callable[[], None]) -> None:
    with _groups_lock, contextlib.suppress(ValueError):
        _exit_hooks.remove(hook)


def kill_process_group(pgid: int, grace_s: float = 2.0) -> None:
    """SIGTERM the group, then SIGKILL it if it is still there after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)
            time.sleep(0.02)
        os.killpg(pgid, signal.SIGKILL)


@atexit.register
def _at_exit() -> None:
    for pgid in live_process_groups():
        kill_process_group(pgid, grace_s=1.0)
        unregister_process_group(pgid)
    with _groups_lock:
        hooks = list(reversed(_exit_hooks))
        _exit_hooks.clear()
    for hook in hooks:
        with contextlib.suppress(Exception):
            hook()
