"""The echo prober: one process that pings every guest at a fixed rate, by UDP echo to the guest
agent (port 7) or by ICMP echo, which any guest's kernel answers (images without the agent).

Why its own process: in the runner, openstacksdk's threads and the GIL would delay sends and
receive stamps by whatever the runner happens to be doing, and the prober's CPU could not be told
apart from the runner's. As a process of its own it has one job, its own scheduling class (optional
SCHED_FIFO or nice) and a CPU time the kernel accounts to it alone (`getrusage`, in the status file).

    python -m novamig.measure.echo --hz 500 --out DIR/echo.bin --status DIR/echo.json \\
        [--netns NAME] --target 0=10.77.0.2 [--target 1=10.77.0.3 ...] [--sched fifo|nice|none] \\
        [--protocol udp|icmp]

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

Standard library only, and nothing from the rest of novamig but its scaffolding
(`novamig.measure.probe_process`, shared with the UDP heartbeat collector and standard library only
too): it starts in a few tens of ms and its memory stays small.

ICMP: the same payload travels in an echo request. The socket is an unprivileged ping socket
(``SOCK_DGRAM``/``IPPROTO_ICMP``, when ``net.ipv4.ping_group_range`` admits the process's group;
the kernel then owns the identifier and hands back only this socket's replies) or else a raw
socket (root or CAP_NET_RAW; replies are told apart by identifier). The status says which
(``socket``); when neither can be opened the prober fails with both reasons.
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

PAYLOAD = struct.Struct("!4sHIq")  # magic, target index, seq, send monotonic ns
MAGIC = b"NMEP"
ROW = struct.Struct("<HIqq")  # target index, seq, send ns, receive ns (CLOCK_MONOTONIC)
FILE_MAGIC = b"NMECHO1\n"
PROTOCOLS = ("udp", "icmp")
ICMP = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence (16 bits)
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
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
    out: dict[int, Replies] = {}
    for idx, seq, sent, received in record_rows(path, FILE_MAGIC, ROW, "an echo record file"):
        r = out.get(idx)
        if r is None:
            r = out[idx] = Replies()
        r.seq.append(seq)
        r.send_ns.append(sent)
        r.recv_ns.append(received)
    return out


# ----------------------------------------------------------------------------------- ICMP


def icmp_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = ICMP.pack(ICMP_ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF)
    return ICMP.pack(ICMP_ECHO_REQUEST, 0, icmp_checksum(header + payload), ident, seq & 0xFFFF) + payload


def icmp_socket() -> tuple[socket.socket, str]:
    """(socket, kind): a ping socket when the kernel allows this process one, else a raw socket."""
    errors = []
    for kind, sock_type in (("icmp-dgram", socket.SOCK_DGRAM), ("icmp-raw", socket.SOCK_RAW)):
        try:
            sock = socket.socket(socket.AF_INET, sock_type, socket.IPPROTO_ICMP)
        except OSError as e:
            errors.append(f"{kind}: {e.strerror or e}")
            continue
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setblocking(False)
        return sock, kind
    raise PermissionError(
        "no ICMP socket (" + "; ".join(errors) + "): ping sockets need net.ipv4.ping_group_range "
        "to admit this process's group, raw sockets need root or CAP_NET_RAW"
    )


# ----------------------------------------------------------------------------------- the prober


class Prober(ProbeProcess):
    FILE_MAGIC = FILE_MAGIC

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
        protocol: str = "udp",
    ) -> None:
        super().__init__(out, status, flush_s=flush_s, duration_s=duration_s, sched=sched)
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.protocol = protocol
        self.socket_kind = protocol
        self.ident = os.getpid() & 0xFFFF
        self.targets = list(targets)
        self.period_ns = round(1e9 / hz)
        self.hz = hz
        self.port = port
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
        self.t0_ns = 0

    def state(self, state: str, **extra: Any) -> dict[str, Any]:
        now = time.monotonic_ns()
        wall = (now - self.started_ns) / 1e9
        return {
            "state": state,
            "pid": os.getpid(),
            "hz": self.hz,
            "protocol": self.protocol,
            "socket": self.socket_kind,
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
            **rusage(),
            "late_buckets_us": list(LATE_BUCKETS_US),
            "late_hist": self.late_hist,
            "late_max_us": round(self.late_max_ns / 1000, 1),
            **extra,
        }

    def open_socket(self) -> socket.socket:
        if self.protocol == "icmp":
            sock, self.socket_kind = icmp_socket()
            return sock
        return udp_socket(("0.0.0.0", 0))

    def _unwrap(self, data: bytes) -> bytes | None:
        """The echo payload of an ICMP echo reply to this prober, or None."""
        if self.socket_kind == "icmp-raw":
            data = data[(data[0] & 0x0F) * 4 :] if data else data  # raw sockets see the IP header
        if len(data) < ICMP.size:
            return None
        kind, _code, _sum, ident, _seq = ICMP.unpack_from(data)
        if kind != ICMP_ECHO_REPLY or (self.socket_kind == "icmp-raw" and ident != self.ident):
            return None  # a raw socket sees every ICMP message on the host: not ours
        return data[ICMP.size :]

    def recording_started(self) -> None:
        self.t0_ns = time.monotonic_ns() + self.period_ns

    # The prober's hot loop, deliberately one function: at 500-2000 Hz per target, names bound to
    # locals and no call per reply keep its CPU inside the probe budget (bench/network_probe.py).
    def loop(self, sock: socket.socket, out: IO[bytes], buf: bytearray) -> None:  # noqa: PLR0912, PLR0915
        index_of = {a: i for i, a in self.targets}
        icmp = self.protocol == "icmp"
        dests = [(i, (a, 0 if icmp else self.port)) for i, a in self.targets]
        ident = self.ident
        seq = [0] * len(self.sent)
        period = self.period_ns
        pack_payload = PAYLOAD.pack
        unpack_payload = PAYLOAD.unpack
        pack_row = ROW.pack
        mono = time.monotonic_ns
        sendto = sock.sendto
        recvfrom = sock.recvfrom
        fds = [sock]
        bounds = [b * 1000 for b in LATE_BUCKETS_US]
        k = 0
        deadline = self.t0_ns
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
                        payload = pack_payload(MAGIC, i, s, mono())
                        sendto(icmp_echo_request(ident, s, payload) if icmp else payload, dest)
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
                    data, addr = recvfrom(256)
                except BlockingIOError:
                    break
                except OSError:  # an ICMP error queued on the socket: nothing to record
                    continue
                t = mono()
                if icmp:
                    unwrapped = self._unwrap(data)
                    if unwrapped is None:
                        if self.socket_kind != "icmp-raw":
                            self.stray += 1  # (a raw socket's other ICMP traffic is not stray)
                        continue
                    data = unwrapped
                if len(data) != PAYLOAD.size:
                    self.stray += 1
                    continue
                magic, i, s, sent_ns = unpack_payload(data)
                if magic != MAGIC or index_of.get(addr[0]) != i:
                    self.stray += 1
                    continue
                self.received[i] += 1
                buf += pack_row(i, s, sent_ns, t)
            self.housekeeping(mono(), out, buf)


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
    add_output_arguments(ap, "binary reply records")
    ap.add_argument("--port", type=int, default=7, help="UDP echo port (udp only)")
    ap.add_argument("--protocol", choices=PROTOCOLS, default="udp")
    add_loop_arguments(ap)
    args = ap.parse_args(argv)
    if not 0 < args.hz <= 100_000:
        ap.error("--hz must be in (0, 100000]")
    return run_main(
        "novamig echo prober",
        args,
        lambda sched: Prober(
            args.target,
            args.hz,
            args.out,
            args.status,
            port=args.port,
            flush_s=args.flush_s,
            duration_s=args.duration_s,
            sched=sched,
            protocol=args.protocol,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
