"""Host side of the guest agent's virtio-serial channel (protocol: docs/guest-agent.md).

Every line is stamped with the host's `time.monotonic_ns()` the moment its bytes arrive, on a
dedicated reader thread: heartbeat gaps are computed from these stamps, so the reader must never
wait behind anything else (not the QMP loop, not a command caller). Heartbeats go to an append-only
`BeatLog`; replies wake the command that is waiting for them.

Lines are parsed by `novamig.guest.protocol` (the one grammar of the protocol, shared with the
guest tests). A line it rejects (`ProtocolError`) is counted in `AgentChannel.malformed`, kept in
`AgentChannel.unparsed` (the latest few) and logged; it never stops the reader thread, and neither
does an exception from an event callback (counted in `AgentChannel.reader_errors`).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import socket
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from novamig.guest.protocol import (
    DirtyStats,
    Heartbeat,
    IntegrityResult,
    ProtocolError,
    Ready,
    Reply,
    encode_command,
    parse_line,
    split_lines,
)
from novamig.hypervisor.errors import AgentError, AgentTimeout

log = logging.getLogger(__name__)

#: Malformed lines logged at WARNING per channel; later ones are only counted (and logged at DEBUG).
MALFORMED_LOGGED = 5
#: How many of the latest malformed lines a channel keeps for error messages.
MALFORMED_KEPT = 50


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat as the host saw it."""

    seq: int
    guest_ns: int
    host_ns: int


class BeatLog:
    """Append-only, thread-safe record of heartbeats: columns of int64 for a cheap 1 kHz append."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.seq = array("q")
        self.guest_ns = array("q")
        self.host_ns = array("q")

    def append(self, seq: int, guest_ns: int, host_ns: int) -> None:
        with self._lock:
            self.seq.append(seq)
            self.guest_ns.append(guest_ns)
            self.host_ns.append(host_ns)
            self._lock.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self.host_ns)

    def host_times(self, start: int = 0) -> list[int]:
        """Host arrival times (ns) of beats from index `start` on (a copy)."""
        with self._lock:
            return list(self.host_ns[start:])

    def beats(self, start: int = 0) -> list[Beat]:
        with self._lock:
            return [
                Beat(s, g, h)
                for s, g, h in zip(self.seq[start:], self.guest_ns[start:], self.host_ns[start:], strict=True)
            ]

    def since(self, host_ns: int) -> list[Beat]:
        """Beats that arrived at or after host time `host_ns` (arrival times only grow)."""
        with self._lock:
            start = bisect.bisect_left(self.host_ns, host_ns)
        return self.beats(start)

    def last_host_ns(self) -> int | None:
        with self._lock:
            return self.host_ns[-1] if self.host_ns else None

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until at least `count` beats were logged in total; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self.host_ns) >= count, timeout)

    def wait_after(self, host_ns: int, timeout: float) -> bool:
        """Wait for a beat that arrived after host time `host_ns`; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: bool(self.host_ns) and self.host_ns[-1] > host_ns, timeout)


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    reply: Reply | None = None


class AgentChannel:
    """One connection to a guest agent's chardev socket (host side is the client).

    QEMU serves the socket (`server=on,wait=off`); a destination's channel is connected before the
    migration starts so that the first beat after switchover lands here.
    """

    def __init__(self, path: Path, name: str, on_event: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.name = name
        self.beats = BeatLog()
        self.events: list[tuple[int, str]] = []
        self.ready: Ready | None = None
        self.ready_host_ns: int | None = None
        self.connected_host_ns: int | None = None
        self.closed_host_ns: int | None = None
        self._on_event = on_event
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._ready_event = threading.Event()
        self._closing = False
        self.malformed = 0
        self.unparsed: deque[str] = deque(maxlen=MALFORMED_KEPT)
        self.reader_errors = 0

    # ------------------------------------------------------------------ connection

    def connect(self, timeout: float = 10.0) -> None:
        """Connect, retrying while QEMU has not created the socket yet."""
        deadline = time.monotonic() + timeout
        last: OSError | None = None
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                sock.close()
                last = exc
                time.sleep(0.02)
                continue
            self._sock = sock
            self.connected_host_ns = time.monotonic_ns()
            self._thread = threading.Thread(
                target=self._reader, name=f"novamig-agent-{self.name}", daemon=True
            )
            self._thread.start()
            return
        raise AgentError(f"{self.name}: cannot connect to agent socket {self.path} within {timeout}s: {last}")

    def close(self) -> None:
        self._closing = True
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def __enter__(self) -> AgentChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._sock is not None and self.closed_host_ns is None

    # ------------------------------------------------------------------ reading

    def _reader(self) -> None:
        sock = self._sock
        assert sock is not None
        buf = b""
        try:
            while True:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    break
                now = time.monotonic_ns()
                if not chunk:
                    break
                lines, buf = split_lines(buf + chunk)
                for raw in lines:
                    try:
                        self._dispatch(raw, now)
                    except Exception:
                        # A bug in a callback or in this class must not end the reader: beats
                        # after it would be lost and every waiting command would time out.
                        self.reader_errors += 1
                        log.exception("%s: agent line %r could not be handled", self.name, raw[:200])
        finally:
            self.closed_host_ns = time.monotonic_ns()
            with self._lock:
                for pending in self._pending.values():
                    pending.done.set()

    def _dispatch(self, raw: bytes, now: int) -> None:
        if not raw.rstrip(b"\r"):
            return
        try:
            msg = parse_line(raw)
        except ProtocolError as exc:
            self._malformed(exc)
            return
        if isinstance(msg, Heartbeat):
            self.beats.append(msg.seq, msg.guest_ns, now)
        elif isinstance(msg, Reply):
            with self._lock:
                pending = self._pending.get(msg.id)
            if pending is not None:
                pending.reply = msg
                pending.done.set()
        elif isinstance(msg, Ready):
            self.ready = msg
            self.ready_host_ns = now
            self._ready_event.set()
        else:
            line = raw.decode("ascii").rstrip("\r")
            self.events.append((now, line))
            if self._on_event is not None:
                self._on_event(line)

    def _malformed(self, exc: ProtocolError) -> None:
        self.malformed += 1
        self.unparsed.append(exc.line)
        if self.malformed <= MALFORMED_LOGGED:
            more = " (further ones are only counted)" if self.malformed == MALFORMED_LOGGED else ""
            log.warning("%s: malformed agent line #%d: %s%s", self.name, self.malformed, exc, more)
        else:
            log.debug("%s: malformed agent line #%d: %s", self.name, self.malformed, exc)

    # ------------------------------------------------------------------ API

    def wait_ready(self, timeout: float) -> Ready:
        """Wait for the agent's READY line (sent once, when it is up)."""
        if not self._ready_event.wait(timeout):
            raise AgentTimeout(f"{self.name}: guest agent sent no READY within {timeout}s")
        assert self.ready is not None
        return self.ready

    def command(self, text: str, timeout: float = 10.0, *, check: bool = True) -> Reply:
        """Send one command line without its id (`"ping"`, `"dirty 50 64"`) and wait for the reply.

        With `check` an `err` reply raises `AgentError` carrying the agent's message.
        """
        sock = self._sock
        if sock is None or self.closed_host_ns is not None:
            raise AgentError(f"{self.name}: agent channel is not connected")
        cid = str(next(self._ids))
        pending = _Pending()
        with self._lock:
            self._pending[cid] = pending
        try:
            name, *args = text.split()
            sock.sendall(encode_command(cid, name, *args))
            if not pending.done.wait(timeout) or pending.reply is None:
                if self.closed_host_ns is not None:
                    raise AgentError(f"{self.name}: agent channel closed while waiting for {text!r}")
                raise AgentTimeout(f"{self.name}: no reply to agent command {text!r} within {timeout}s")
            reply = pending.reply
        finally:
            with self._lock:
                self._pending.pop(cid, None)
        if check and not reply.ok:
            raise AgentError(f"{self.name}: agent command {text!r} failed: {reply}")
        return reply

    # ------------------------------------------------------------------ typed helpers

    def ping(self, timeout: float = 10.0) -> Reply:
        return self.command("ping", timeout)

    def dirty(self, rate_mib_s: float, working_set_mib: int, timeout: float = 30.0) -> Reply:
        """Start (or with rate 0 stop) the guest's memory dirtier."""
        return self.command(f"dirty {rate_mib_s:g} {working_set_mib}", timeout)

    def dirty_stats(self, timeout: float = 10.0) -> DirtyStats:
        return DirtyStats.from_reply(self.command("dirty-stats", timeout))

    def integrity_start(self, mib: int, timeout: float = 60.0, *, pass_ms: int | None = None) -> Reply:
        """Fill `mib` MiB with the integrity pattern, which the agent then keeps updating (one pass
        over the region every `pass_ms`; the agent's default 1000 when None, 0 = flat out)."""
        args = f"{mib}" if pass_ms is None else f"{mib} {pass_ms}"
        return self.command(f"integrity-start {args}", timeout)

    def integrity_check(self, timeout: float = 60.0) -> IntegrityResult:
        """Verify the pattern (an `err` reply is a result here, not an exception)."""
        return IntegrityResult.from_reply(self.command("integrity-check", timeout, check=False))
