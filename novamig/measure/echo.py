"""The UDP echo prober: one process that pings every guest's agent (UDP port 7) at a fixed rate.

Why its own process: in the runner, openstacksdk's threads and the GIL would delay sends and
receive stamps by whatever the runner happens to be doing, and the prober's CPU could not be told
apart from the runner's. As a process of its own it has one job, its own scheduling class (optional
SCHED_FIFO or nice) and a CPU time the kernel accounts to it alone (`getrusage`, in the status file).

    python -m novamig.measure.echo --hz 500 --out DIR/echo.bin --status DIR/echo.json \\
        [--netns NAME] --target 0=10.77.0.2 [--target 1=10.77.0.3 ...] [--sched fifo|nice|none]

What it does, per period (1/hz): at the absolute deadline ``t0 + k × period`` it sends one datagram
to every target (payload: magic, target index, sequence number, send time), then waits in
``select`` for replies until the next deadline and stamps each reply on CLOCK_MONOTONIC (the clock
of the runner's ``time.monotonic()``). Deadlines are absolute, so lateness never accumulates into
drift; a deadline missed by more than one period is skipped (counted as ``skipped``), never made up
with a burst. Replies go to ``--out`` as fixed 22-byte rows (`ROW`), flushed every ``--flush-s``;
``--status`` is a small JSON file rewritten atomically: ``running`` once the socket is up (the
parent waits for it), ``running`` with counters about once a second, and ``stopped`` with the
summary (sent, received, achieved rate, CPU time, send lateness) on SIGTERM/SIGINT, or ``failed``
with the error. The prober also stops on its own when its parent goes away.

Standard library only, and nothing from the rest of novamig: it starts in a few tens of ms and its
memory stays small.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAYLOAD = struct.Struct("!4sHIq")  # magic, target index, seq, send monotonic ns
MAGIC = b"NMEP"
ROW = struct.Struct("<HIqq")  # target index, seq, send ns, receive ns (CLOCK_MONOTONIC)
FILE_MAGIC = b"NMECHO1\n"
_CLONE_NEWNET = 0x40000000
# send lateness histogram: upper bounds in µs (the last bucket is everything above)
LATE_BUCKETS_US = (50, 100, 250, 500, 1000, 2000, 5000, 10000)


@dataclass
class Replies:
    """Every reply from one target, in arrival order (arrays of equal length)."""

    seq: list[int] = field(default_factory=list)
    send_ns: list[int] = field(default_factory=list)
    recv_ns: list[int] = field(default_factory=list)


def read_records(path: Path) -> dict[int, Replies]:
    """The replies in a prober's output file, per target index.

    A trailing partial row (a prober killed in the middle of a write) is ignored. Rows of one target
    are in arrival order already (one socket, one thread).
    """
    data = path.read_bytes()
    if not data.startswith(FILE_MAGIC):
        raise ValueError(f"{path}: not an echo record file")
    body = memoryview(data)[len(FILE_MAGIC) :]
    body = body[: len(body) - len(body) % ROW.size]
    out: dict[int, Replies] = {}
    for idx, seq, sent, received in ROW.iter_unpack(body):
        r = out.get(idx)
        if r is None:
            r = out[idx] = Replies()
        r.seq.append(seq)
        r.send_ns.append(sent)
        r.recv_ns.append(received)
    return out


# ----------------------------------------------------------------------------------- the prober


def _enter_netns(name: str) -> None:
    """Move this (still single-threaded) process into /run/netns/NAME before any socket exists."""
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if lib.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def _set_sched(kind: str, priority: int) -> str:
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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class Prober:
    def __init__(
        self,
        targets: Sequence[tuple[int, str]],
        hz: float,
        out: Path,
        status: Path,
        *,
        port: int = 7,
        flush_s: float = 0.25,
        duration_s: float | None = None,
        sched: str = "other",
    ) -> None:
        self.targets = list(targets)
        self.period_ns = round(1e9 / hz)
        self.hz = hz
        self.out = out
        self.status = status
        self.port = port
        self.flush_ns = int(flush_s * 1e9)
        self.duration_ns = None if duration_s is None else int(duration_s * 1e9)
        self.sched = sched
        self.stop = False
        self.stop_reason = "running"
        n = max(i for i, _ in self.targets) + 1 if self.targets else 0
        self.sent = [0] * n
        self.received = [0] * n
        self.send_errors = 0
        self.last_send_error: str | None = None
        self.stray = 0
        self.skipped = 0
        self.slots = 0
        self.late_hist = [0] * (len(LATE_BUCKETS_US) + 1)
        self.late_max_ns = 0
        self.parent = os.getppid()
        self.started_ns = time.monotonic_ns()
        self.t0_ns = 0

    def _state(self, state: str, **extra: Any) -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        now = time.monotonic_ns()
        wall = (now - self.started_ns) / 1e9
        return {
            "state": state,
            "pid": os.getpid(),
            "hz": self.hz,
            "period_ns": self.period_ns,
            "targets": [{"index": i, "address": a} for i, a in self.targets],
            "sched": self.sched,
            "started_ns": self.started_ns,
            "t0_ns": self.t0_ns,
            "now_ns": now,
            "wall_s": round(wall, 6),
            "slots": self.slots,
            "skipped": self.skipped,
            "achieved_hz": round(self.slots / wall, 3) if wall > 0 else None,
            "sent": self.sent,
            "received": self.received,
            "send_errors": self.send_errors,
            "last_send_error": self.last_send_error,
            "stray": self.stray,
            "cpu_user_s": ru.ru_utime,
            "cpu_sys_s": ru.ru_stime,
            "max_rss_kib": ru.ru_maxrss,
            "late_buckets_us": list(LATE_BUCKETS_US),
            "late_hist": self.late_hist,
            "late_max_us": round(self.late_max_ns / 1000, 1),
            **extra,
        }

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop = True
        self.stop_reason = signal.Signals(signum).name

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        index_of = {a: i for i, a in self.targets}
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("0.0.0.0", 0))
        sock.setblocking(False)
        dests = [(i, (a, self.port)) for i, a in self.targets]
        seq = [0] * len(self.sent)
        buf = bytearray()
        period = self.period_ns
        pack_payload = PAYLOAD.pack
        unpack_payload = PAYLOAD.unpack
        pack_row = ROW.pack
        mono = time.monotonic_ns
        sendto = sock.sendto
        recvfrom = sock.recvfrom
        fds = [sock]
        bounds = [b * 1000 for b in LATE_BUCKETS_US]
        with open(self.out, "wb", buffering=0) as out:
            out.write(FILE_MAGIC)
            self.t0_ns = mono() + period
            _write_json(self.status, self._state("running"))
            gc.collect()
            gc.disable()  # no collector pauses in the loop; it allocates no reference cycles
            k = 0
            deadline = self.t0_ns
            last_flush = last_status = mono()
            while not self.stop:
                now = mono()
                if now >= deadline:
                    late = now - deadline
                    if late >= period:  # missed whole slots: skip them, never burst
                        missed = late // period
                        self.skipped += missed
                        k += missed
                        deadline += missed * period
                        late = now - deadline
                    b = 0
                    while b < len(bounds) and late > bounds[b]:
                        b += 1
                    self.late_hist[b] += 1
                    self.late_max_ns = max(self.late_max_ns, late)
                    for i, dest in dests:
                        s = seq[i] = seq[i] + 1
                        try:
                            sendto(pack_payload(MAGIC, i, s, mono()), dest)
                            self.sent[i] += 1
                        except OSError as exc:  # no route / ARP failure / buffer full: a lost probe
                            self.send_errors += 1
                            self.last_send_error = f"{dest[0]}: {exc.strerror}"
                    self.slots += 1
                    k += 1
                    deadline = self.t0_ns + k * period
                wait = (deadline - mono()) / 1e9
                if wait > 0:
                    select.select(fds, [], [], wait)  # EINTR is retried (PEP 475)
                while True:
                    try:
                        data, addr = recvfrom(64)
                    except BlockingIOError:
                        break
                    except OSError:  # an ICMP error queued on the socket: nothing to record
                        continue
                    t = mono()
                    if len(data) != PAYLOAD.size:
                        self.stray += 1
                        continue
                    magic, i, s, sent_ns = unpack_payload(data)
                    if magic != MAGIC or index_of.get(addr[0]) != i:
                        self.stray += 1
                        continue
                    self.received[i] += 1
                    buf += pack_row(i, s, sent_ns, t)
                now = mono()
                if now - last_flush >= self.flush_ns:
                    if buf:
                        out.write(buf)
                        buf.clear()
                    last_flush = now
                    if now - last_status >= 1_000_000_000:
                        last_status = now
                        _write_json(self.status, self._state("running"))
                        if os.getppid() != self.parent:
                            self.stop = True
                            self.stop_reason = "parent exited"
                    if self.duration_ns is not None and now - self.started_ns >= self.duration_ns:
                        self.stop = True
                        self.stop_reason = "duration reached"
            if buf:
                out.write(buf)
        sock.close()
        gc.enable()
        _write_json(self.status, self._state("stopped", stop_reason=self.stop_reason))


def _target(text: str) -> tuple[int, str]:
    idx, _, addr = text.partition("=")
    if not idx.isdigit() or not addr:
        raise argparse.ArgumentTypeError(f"expected INDEX=IPV4, got {text!r}")
    socket.inet_aton(addr)
    return int(idx), addr


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m novamig.measure.echo", description=__doc__.split("\n")[0])
    ap.add_argument("--hz", type=float, required=True, help="probes per second per target")
    ap.add_argument("--target", type=_target, action="append", required=True, help="INDEX=IPV4")
    ap.add_argument("--out", type=Path, required=True, help="binary reply records")
    ap.add_argument("--status", type=Path, required=True, help="JSON status and final summary")
    ap.add_argument("--netns", help="enter /run/netns/NETNS before opening the socket")
    ap.add_argument("--port", type=int, default=7)
    ap.add_argument("--flush-s", type=float, default=0.25)
    ap.add_argument("--duration-s", type=float, default=None, help="stop on its own after this long")
    ap.add_argument("--sched", choices=("none", "nice", "fifo"), default="none")
    ap.add_argument("--priority", type=int, default=10, help="SCHED_FIFO priority (with --sched fifo)")
    args = ap.parse_args(argv)
    if not 0 < args.hz <= 100_000:
        ap.error("--hz must be in (0, 100000]")
    try:
        if args.netns:
            _enter_netns(args.netns)
        sched = _set_sched(args.sched, args.priority)
        Prober(
            args.target,
            args.hz,
            args.out,
            args.status,
            port=args.port,
            flush_s=args.flush_s,
            duration_s=args.duration_s,
            sched=sched,
        ).run()
    except Exception as exc:
        _write_json(
            args.status, {"state": "failed", "pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"}
        )
        print(f"novamig echo prober: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
