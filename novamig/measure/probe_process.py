"""What the probe processes share: the scaffolding around their socket loop.

The echo prober (`novamig.measure.echo`) and the UDP heartbeat collector
(`novamig.measure.heartbeat_udp_collector`) are processes of their own for the same reasons (the
runner's threads and GIL would delay their time stamps; their CPU is accounted to them alone), and
everything around their socket loop is the same: entering the guests' network namespace before any
socket exists, SCHED_FIFO or nice, a binary record file with a magic header flushed every
``--flush-s``, a JSON status file rewritten atomically (``running`` once the socket is up — the
parent waits for it —, about once a second with counters, ``stopped`` with the summary on
SIGTERM/SIGINT, ``failed`` with the error), stopping on their own when the parent goes away, no
garbage collector pauses in the loop, and their CPU time from ``getrusage``. It lives here once, so a
fix to one (a status the parent misreads, a prober that outlives the runner) is a fix to both.

Standard library only, and nothing from the rest of novamig: the processes start with ``python -m``
in a few tens of ms and their memory stays small.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import resource
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move this (still single-threaded) process into /run/netns/NAME before any socket exists."""
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if lib.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def set_sched(kind: str, priority: int) -> str:
    """Apply the requested scheduling; returns what is in force (a refusal is reported, not fatal)."""
    if kind == "fifo":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            return f"fifo:{priority}"
        except OSError as exc:
            return f"other (SCHED_FIFO refused: {exc.strerror})"
    if kind == "nice":
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
            return "nice:-10"
        except OSError as exc:
            return f"other (nice -10 refused: {exc.strerror})"
    return "other"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` atomically: the parent polls it and must never read half a status."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def udp_socket(address: tuple[str, int]) -> socket.socket:
    """A non-blocking UDP socket bound to `address`, with a receive buffer (1 MiB) that a burst
    after a stall does not overflow."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(address)
    sock.setblocking(False)
    return sock


def record_rows(path: Path, magic: bytes, row: struct.Struct, what: str) -> Iterator[tuple[Any, ...]]:
    """The rows of a record file that starts with `magic` (ValueError: not `what`); a trailing
    partial row (a process killed in the middle of a write) is ignored."""
    data = path.read_bytes()
    if not data.startswith(magic):
        raise ValueError(f"{path}: not {what}")
    body = memoryview(data)[len(magic) :]
    return row.iter_unpack(body[: len(body) - len(body) % row.size])


def rusage() -> dict[str, Any]:
    """This process's CPU time and peak memory, for the status file (the probe's cost)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_user_s": ru.ru_utime, "cpu_sys_s": ru.ru_stime, "max_rss_kib": ru.ru_maxrss}


class ProbeProcess:
    """A probe process's loop around one UDP socket, recording binary rows to `out`.

    Subclasses say what the record file starts with (`FILE_MAGIC`), how the socket is opened
    (`open_socket`), what one pass of the loop does (`loop`, which calls `housekeeping` on every
    pass) and what the status says (`state`). The rest — signals, the record file, the status
    file's life cycle, the parent watch, the duration limit, the garbage collector — is here.
    """

    FILE_MAGIC = b""

    def __init__(
        self, out: Path, status: Path, *, flush_s: float, duration_s: float | None, sched: str
    ) -> None:
        self.out = out
        self.status = status
        self.flush_ns = int(flush_s * 1e9)
        self.duration_ns = None if duration_s is None else int(duration_s * 1e9)
        self.sched = sched
        self.stop = False
        self.stop_reason = "running"
        self.parent = os.getppid()
        self.started_ns = time.monotonic_ns()
        self.last_status_ns = 0
        self.last_flush_ns = 0

    def state(self, state: str, **extra: Any) -> dict[str, Any]:
        raise NotImplementedError

    def open_socket(self) -> socket.socket:
        raise NotImplementedError

    def recording_started(self) -> None:
        """Called with the record file open, just before the first ``running`` status."""

    def loop(self, sock: socket.socket, out: IO[bytes], buf: bytearray) -> None:
        """Run until `stop`; rows go to `buf`; call `housekeeping` on every pass."""
        raise NotImplementedError

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop = True
        self.stop_reason = signal.Signals(signum).name

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        sock = self.open_socket()
        buf = bytearray()
        with open(self.out, "wb", buffering=0) as out:
            out.write(self.FILE_MAGIC)
            self.recording_started()
            write_json(self.status, self.state("running"))
            gc.collect()
            gc.disable()  # no collector pauses in the loop; it allocates no reference cycles
            self.last_status_ns = self.last_flush_ns = time.monotonic_ns()
            self.loop(sock, out, buf)
            if buf:
                out.write(buf)
        sock.close()
        gc.enable()
        write_json(self.status, self.state("stopped", stop_reason=self.stop_reason))

    def housekeeping(self, now: int, out: IO[bytes], buf: bytearray) -> None:
        """Called on every pass of the loop. Every flush: write the buffered rows; about once a second
        a ``running`` status, and stop when the parent has gone away (the probe must not outlive the
        runner) or the duration is up."""
        if now - self.last_flush_ns < self.flush_ns:
            return
        self.last_flush_ns = now
        if buf:
            out.write(buf)
            buf.clear()
        if now - self.last_status_ns >= 1_000_000_000:
            self.last_status_ns = now
            write_json(self.status, self.state("running"))
            if os.getppid() != self.parent:
                self.stop = True
                self.stop_reason = "parent exited"
        if self.duration_ns is not None and now - self.started_ns >= self.duration_ns:
            self.stop = True
            self.stop_reason = "duration reached"


def add_output_arguments(ap: argparse.ArgumentParser, records: str) -> None:
    """--out (`records`: what the binary rows are), --status and --netns."""
    ap.add_argument("--out", type=Path, required=True, help=records)
    ap.add_argument("--status", type=Path, required=True, help="JSON status and final summary")
    ap.add_argument("--netns", help="enter /run/netns/NETNS before opening the socket")


def add_loop_arguments(ap: argparse.ArgumentParser) -> None:
    """--flush-s, --duration-s, --sched and --priority."""
    ap.add_argument("--flush-s", type=float, default=0.25)
    ap.add_argument("--duration-s", type=float, default=None, help="stop on its own after this long")
    ap.add_argument("--sched", choices=("none", "nice", "fifo"), default="none")
    ap.add_argument("--priority", type=int, default=10, help="SCHED_FIFO priority (with --sched fifo)")


def run_main(title: str, args: argparse.Namespace, make: Callable[[str], ProbeProcess]) -> int:
    """Enter the namespace, set the scheduling, build the process's loop (`make(sched in force)`)
    and run it; any failure becomes a ``failed`` status (what the waiting parent reads) and a line
    on stderr prefixed with `title`. Returns the exit code."""
    try:
        if args.netns:
            enter_netns(args.netns)
        sched = set_sched(args.sched, args.priority)
        make(sched).run()
    except Exception as exc:
        write_json(
            args.status, {"state": "failed", "pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"}
        )
        print(f"{title}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0
