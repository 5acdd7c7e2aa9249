"""Where each migration goes: ``auto`` | ``HOST`` | ``round-robin`` | ``drain:HOST``.

* ``auto`` — the scheduler chooses (no host in the request).
* ``HOST`` — servers boot elsewhere and go to HOST; a server already on HOST is moved wherever the
  scheduler likes (with two hosts: back).
* ``round-robin`` — destinations cycle over the enabled compute hosts in name order, skipping the
  server's current host; one cycle shared by all servers, so concurrent migrations spread out.
* ``drain:HOST`` — the maintenance case: every server boots on HOST and is migrated off it once,
  the scheduler choosing where (``count`` does not apply: a drained server has left).

With ``ping_pong`` (auto or HOST), every migration after a server's first takes it back to the host
it just left, so it alternates between its first two hosts.

Pure and thread-safe; the runner asks for a destination right before each request.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

TargetKind = Literal["auto", "host", "round-robin", "drain"]


class TargetError(ValueError):
    """The target names a host the cloud does not offer, or makes no sense for it."""


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    host: str | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        text = text.strip()
        if text == "auto":
            return cls("auto")
        if text == "round-robin":
            return cls("round-robin")
        if text.startswith("drain:"):
            host = text.removeprefix("drain:").strip()
            if not host:
                raise TargetError("drain: needs a host name (drain:HOST)")
            return cls("drain", host)
        if not text:
            raise TargetError("empty migration target")
        return cls("host", text)

    @property
    def named_hosts(self) -> tuple[str, ...]:
        return (self.host,) if self.host else ()

    def __str__(self) -> str:
        return {"auto": "auto", "round-robin": "round-robin"}.get(
            self.kind, f"drain:{self.host}" if self.kind == "drain" else str(self.host)
        )


class TargetChooser:
    """Decides boot hosts and migration destinations for one case."""

    def __init__(self, target: Target, hosts: Sequence[str], *, ping_pong: bool = False) -> None:
        self.target = target
        self.ping_pong = ping_pong
        if ping_pong and target.kind in ("round-robin", "drain"):
            raise TargetError(f"ping-pong cannot be combined with target {target}")
        self.hosts = sorted(set(hosts))
        if len(self.hosts) < 2:
            raise TargetError(f"live migration needs >= 2 compute hosts; have {self.hosts}")
        for host in target.named_hosts:
            if host not in self.hosts:
                raise TargetError(f"target host {host!r} is not one of the usable hosts {self.hosts}")
        self._cycle = itertools.cycle(self.hosts)
        self._lock = threading.Lock()

    def boot_host(self) -> str | None:
        """Where servers boot: on the drained host, off the target host, else where Nova likes."""
        if self.target.kind == "drain":
            return self.target.host
        if self.target.kind == "host":
            return next(h for h in self.hosts if h != self.target.host)
        return None

    def migrations_per_server(self, count: int) -> int:
        return 1 if self.target.kind == "drain" else count

    def destination(self, current: str | None, previous: str | None = None) -> str | None:
        """The host to request for a server now on `current` that was on `previous` before its
        last migration (None: not migrated yet). None = let the scheduler choose."""
        kind = self.target.kind
        if self.ping_pong and previous is not None and previous != current:
            return previous
        if kind in ("auto", "drain"):
            return None
        if kind == "host":
            return self.target.host if current != self.target.host else None
        with self._lock:
            for _ in range(len(self.hosts)):
                host = next(self._cycle)
                if host != current:
                    return host
        raise TargetError("no destination other than the current host")  # unreachable with >= 2 hosts
