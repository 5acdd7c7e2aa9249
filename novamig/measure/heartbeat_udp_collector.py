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

Standard library only, and nothing from the rest of novamig but the scaffolding it shares with the
echo prober (`novamig.measure.probe_process`).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from novamig.measure.probe_process import (
    ProbeProcess,
    add_loop_arguments,
    add_output_arguments,
    record_rows,
    run_main,
    rusage,
    udp_socket,
)

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
    out: dict[str, Beats] = {}
    names: dict[bytes, str] = {}
    for raw, seq, guest, received in record_rows(path, FILE_MAGIC, ROW, "a UDP heartbeat record file"):
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


class Collector(ProbeProcess):
    MAX_SENDERS_IN_STATUS = 256
    FILE_MAGIC = FILE_MAGIC

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
        super().__init__(out, status, flush_s=flush_s, duration_s=duration_s, sched=sched)
        self.bind = bind
        self.received: dict[str, int] = {}
        self.stray = 0
        self.last_stray: str | None = None
        self.recv_errors = 0
        self.bound: str | None = None

    def state(self, state: str, **extra: Any) -> dict[str, Any]:
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
            **rusage(),
            **extra,
        }

    def open_socket(self) -> socket.socket:
        sock = udp_socket(self.bind)
        host, port = sock.getsockname()
        self.bound = f"{host}:{port}"
        return sock

    def loop(self, sock: socket.socket, out: IO[bytes], buf: bytearray) -> None:
        mono = time.monotonic_ns
        recvfrom = sock.recvfrom
        pack_row = ROW.pack
        inet_aton = socket.inet_aton
        received = self.received
        fds = [sock]
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
            self.housekeeping(mono(), out, buf)


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
    add_output_arguments(ap, "binary beat records")
    add_loop_arguments(ap)
    args = ap.parse_args(argv)
    return run_main(
        "novamig UDP heartbeat collector",
        args,
        lambda sched: Collector(
            args.bind, args.out, args.status, flush_s=args.flush_s, duration_s=args.duration_s, sched=sched
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
