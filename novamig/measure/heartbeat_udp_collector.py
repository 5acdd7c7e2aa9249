"""The UDP heartbeat collector: one process that receives the guest agents' beats over the network.

With ``novamig.hb_udp=<ipv4>:<port>`` the agent sends every heartbeat also as one UDP datagram,
the text ``H <seq> <guest_mono_ns>\\n`` (docs/guest-agent.md, "Heartbeat over UDP"). This process
binds that address, stamps every datagram's arrival on CLOCK_MONOTONIC (the clock of the runner's
``time.monotonic()`` and of the case clock) and records it; `novamig.measure.heartbeat_udp` turns
the records into figures. Why its own process: the same as the echo prober's (novamig.measure.echo)
— the runner's threads and GIL would delay the stamps, and its CPU is accounted to it alone.

    python -m novamig.measure.heartbeat_udp_collector --bind 10.77.0.1:7070 --out DIR/beats.bin \\
        --status DIR/beats.json [--netns NAME] [--sched fifo|nice|none]

It waits in ``select`` and drains the socket on every wake-up, so a beat is stamped as soon as the
process runs after its arrival. Records go to ``--out`` as fixed 28-byte rows (`ROW`: the sender's
IPv4 address, seq, the guest's timestamp, the arrival time), flushed every ``--flush-s``; datagrams
that are not beats are counted (``stray``, with the last sender) and not recorded. ``--status`` is a
small JSON file rewritten atomically: ``running`` once the socket is bound (the parent waits for it),
``running`` with counters about once a second, ``stopped`` with the summary (beats per sender, CPU
time) on SIGTERM/SIGINT, or ``failed`` with the error. It also stops when its parent goes away.

Standard library only, and nothing from the rest of novamig, like the echo prober.
"""

from __future__ import annotations

import argparse
import gc
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

from novamig.measure.echo import _enter_netns, _set_sched, _write_json

ROW = struct.Struct("<4sQqq")  # sender IPv4 (network order), seq, guest monotonic ns, arrival ns
FILE_MAGIC = b"NMHBUDP1\n"


@dataclass
class Beats:
    """Every beat from one sender, in arrival order (arrays of equal length)."""

    seq: list[int] = field(default_factory=list)
    guest_ns: list[int] = field(default_factory=list)
    recv_ns: list[int] = field(default_factory=list)


def read_records(path: Path) -> dict[str, Beats]:
    """The beats in a collector's output file, per sender address (a trailing partial row is ignored)."""
    data = path.read_bytes()
    if not data.startswith(FILE_MAGIC):
        raise ValueError(f"{path}: not a UDP heartbeat record file")
    body = memoryview(data)[len(FILE_MAGIC) :]
    body = body[: len(body) - len(body) % ROW.size]
    out: dict[str, Beats] = {}
    names: dict[bytes, str] = {}
    for raw, seq, guest, received in ROW.iter_unpack(body):
        name = names.get(raw)
        if name is None:
            name = names[raw] = socket.inet_ntoa(raw)
        b = out.get(name)
        if b is None:
            b = out[name] = Beats()
        b.seq.append(seq)
        b.guest_ns.append(guest)
        b.recv_ns.append(received)
    return out


def parse_beat(data: bytes) -> tuple[int, int] | None:
    """(seq, guest_ns) of one datagram ``H <seq> <guest_ns>[\\n]``; None when it is not a beat."""
    parts = data.split()
    if len(parts) != 3 or parts[0] != b"H" or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    seq, guest = int(parts[1]), int(parts[2])
    if seq >= 1 << 64 or guest >= 1 << 63:
        return None
    return seq, guest


class Collector:
    MAX_SENDERS_IN_STATUS = 256

    def __init__(
        self,
        bind: tuple[str, int],
        out: Path,
        status: Path,
        *,
        flush_s: float = 0.25,
        duration_s: float | None = None,
        sched: str = "other",
    ) -> None:
        self.bind = bind
        self.out = out
        self.status = status
        self.flush_ns = int(flush_s * 1e9)
        self.duration_ns = None if duration_s is None else int(duration_s * 1e9)
        self.sched = sched
        self.stop = False
        self.stop_reason = "running"
        self.received: dict[str, int] = {}
        self.stray = 0
        self.last_stray: str | None = None
        self.recv_errors = 0
        self.parent = os.getppid()
        self.started_ns = time.monotonic_ns()
        self.bound: str | None = None

    def _state(self, state: str, **extra: Any) -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        now = time.monotonic_ns()
        total = sum(self.received.values())
        wall = (now - self.started_ns) / 1e9
        senders = dict(sorted(self.received.items())[: self.MAX_SENDERS_IN_STATUS])
        return {
            "state": state,
            "pid": os.getpid(),
            "bind": self.bound or f"{self.bind[0]}:{self.bind[1]}",
            "sched": self.sched,
            "started_ns": self.started_ns,
            "now_ns": now,
            "wall_s": round(wall, 6),
            "received": total,
            "received_hz": round(total / wall, 3) if wall > 0 else None,
            "senders": senders,
            "stray": self.stray,
            "last_stray": self.last_stray,
            "recv_errors": self.recv_errors,
            "cpu_user_s": ru.ru_utime,
            "cpu_sys_s": ru.ru_stime,
            "max_rss_kib": ru.ru_maxrss,
            **extra,
        }

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop = True
        self.stop_reason = signal.Signals(signum).name

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(self.bind)
        host, port = sock.getsockname()
        self.bound = f"{host}:{port}"
        sock.setblocking(False)
        mono = time.monotonic_ns
        recvfrom = sock.recvfrom
        pack_row = ROW.pack
        inet_aton = socket.inet_aton
        received = self.received
        fds = [sock]
        buf = bytearray()
        with open(self.out, "wb", buffering=0) as out:
            out.write(FILE_MAGIC)
            _write_json(self.status, self._state("running"))
            gc.collect()
            gc.disable()  # no collector pauses while stamping; the loop makes no reference cycles
            last_flush = last_status = mono()
            while not self.stop:
                select.select(fds, [], [], 0.1)  # EINTR is retried (PEP 475); the signal sets stop
                while True:
                    try:
                        data, addr = recvfrom(256)
                    except BlockingIOError:
                        break
                    except OSError:
                        self.recv_errors += 1
                        continue
                    t = mono()
                    beat = parse_beat(data)
                    if beat is None:
                        self.stray += 1
                        self.last_stray = f"{addr[0]}:{addr[1]}"
                        continue
                    sender = addr[0]
                    received[sender] = received.get(sender, 0) + 1
                    buf += pack_row(inet_aton(sender), beat[0], beat[1], t)
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


def parse_bind(text: str) -> tuple[str, int]:
    """``IPV4:PORT`` → (address, port); ValueError when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected IPV4:PORT, got {text!r}")
    socket.inet_aton(host)  # OSError (a ValueError for argparse's purposes below) when not IPv4
    if host.count(".") != 3:
        raise ValueError(f"expected a dotted IPv4 address, got {host!r}")
    return host, int(port)


def _bind_arg(text: str) -> tuple[str, int]:
    try:
        return parse_bind(text)
    except (ValueError, OSError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m novamig.measure.heartbeat_udp_collector", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--bind", type=_bind_arg, required=True, help="IPV4:PORT the agents send to")
    ap.add_argument("--out", type=Path, required=True, help="binary beat records")
    ap.add_argument("--status", type=Path, required=True, help="JSON status and final summary")
    ap.add_argument("--netns", help="enter /run/netns/NETNS before opening the socket")
    ap.add_argument("--flush-s", type=float, default=0.25)
    ap.add_argument("--duration-s", type=float, default=None, help="stop on its own after this long")
    ap.add_argument("--sched", choices=("none", "nice", "fifo"), default="none")
    ap.add_argument("--priority", type=int, default=10, help="SCHED_FIFO priority (with --sched fifo)")
    args = ap.parse_args(argv)
    try:
        if args.netns:
            _enter_netns(args.netns)
        sched = _set_sched(args.sched, args.priority)
        Collector(
            args.bind, args.out, args.status, flush_s=args.flush_s, duration_s=args.duration_s, sched=sched
        ).run()
    except Exception as exc:
        _write_json(
            args.status, {"state": "failed", "pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"}
        )
        print(f"novamig UDP heartbeat collector: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
