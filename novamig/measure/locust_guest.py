"""Guest-side Locust: the control endpoint of the full guest's web application
(``/_novamig/locust/*``, ``/_novamig/clock``) and the mapping of guest clock readings to the
runner's clock.

Why a clock mapping: the guest's records carry the guest's CLOCK_MONOTONIC. The offset between it
and the runner's CLOCK_MONOTONIC is estimated from HTTP round trips to ``/_novamig/clock``: the
guest read its clock somewhere inside the round trip, so ``offset = guest - midpoint`` with an
uncertainty of half the round trip. A sampler thread per guest repeats this every
``SAMPLE_PERIOD_S`` for the whole run, because the offset is not constant: the guest's clock may
stand still while a migration has the VM stopped (measured in docs/measurement.md, "## locust"),
and then every record after the switchover is shifted by that pause. The map finds such steps
between consecutive samples and places each at the longest gap between records inside the step's
bracket (the guest's requests run back to back, so the pause falls between two of them).
"""

from __future__ import annotations

import bisect
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from novamig.hypervisor.netns import socket_in
from novamig.stats import percentile
from novamig.workload.guest_web_app import DEFAULT_PORT

SAMPLE_PERIOD_S = 0.25
BURST = 7  # round trips at start and end; the shortest one gives the offset


class _Connection(http.client.HTTPConnection):
    """HTTP to a guest, from inside the guest network namespace when there is one."""

    def __init__(self, address: str, port: int, timeout: float, netns: str | None) -> None:
        super().__init__(address, port, timeout=timeout)
        self.netns = netns

    def connect(self) -> None:
        if self.netns:
            sock = socket_in(self.netns, kind=socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect((self.host, self.port))
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock


class GuestWeb:
    """The web application of one guest; one keep-alive connection per instance (not thread-safe:
    the sampler thread has its own)."""

    def __init__(self, address: str, netns: str | None, port: int = DEFAULT_PORT, timeout_s: float = 10.0):
        self.address = address
        self.netns = netns
        self.port = port
        self.timeout_s = timeout_s
        self._conn: _Connection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a kept-alive connection the guest closed: reconnect once
            if self._conn is None:
                self._conn = _Connection(self.address, self.port, self.timeout_s, self.netns)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, data = self.request(method, path, json.dumps(body).encode() if body is not None else None)
        if status >= 300:
            raise GuestLocustError(f"{method} {path}: HTTP {status}: {data[:300].decode(errors='replace')}")
        value = json.loads(data)
        if not isinstance(value, dict):
            raise GuestLocustError(f"{method} {path}: not a JSON object")
        return value

    def clock(self) -> ClockSample:
        t0 = time.monotonic()
        status, data = self.request("GET", "/_novamig/clock")
        t1 = time.monotonic()
        if status != 200:
            raise GuestLocustError(
                f"GET /_novamig/clock: HTTP {status} (a full image older than the clock endpoint?)"
            )
        mono_ns = json.loads(data)["mono_ns"]
        return ClockSample(runner_s=(t0 + t1) / 2, guest_s=int(mono_ns) / 1e9, rtt_s=t1 - t0)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None


class GuestLocustError(Exception):
    pass


@dataclass(frozen=True)
class ClockSample:
    runner_s: float  # midpoint of the round trip, runner CLOCK_MONOTONIC
    guest_s: float  # guest CLOCK_MONOTONIC read inside it
    rtt_s: float

    @property
    def offset_s(self) -> float:
        return self.guest_s - self.runner_s


@dataclass(frozen=True)
class ClockStep:
    """The guest clock lost ``lost_s`` against the runner's between two samples."""

    guest_from_s: float
    guest_to_s: float
    runner_from_s: float
    runner_to_s: float
    lost_s: float
    uncertainty_s: float
    at_guest_s: float | None = None  # where the map placed it (a gap between records)


class ClockMap:
    """Guest CLOCK_MONOTONIC → runner CLOCK_MONOTONIC, piecewise from clock samples.

    Samples whose round trip is long (over 3× the median, at least 20 ms) are dropped: they
    straddle a stall, and their midpoint says little. Between two kept samples the offset is
    interpolated linearly (the rates of the two clocks differ slightly) unless it changed by more
    than the two samples' uncertainty plus 2 ms: that is a step.
    """

    STEP_SLACK_S = 0.002

    def __init__(self, samples: list[ClockSample]) -> None:
        self.all = sorted(samples, key=lambda s: s.guest_s)
        median_rtt = percentile([s.rtt_s for s in self.all], 50)
        limit = 0.0 if median_rtt is None else max(0.02, 3 * median_rtt)
        self.kept = [s for s in self.all if s.rtt_s <= limit]
        self.steps: list[ClockStep] = []
        for a, b in zip(self.kept, self.kept[1:], strict=False):
            tol = (a.rtt_s + b.rtt_s) / 2 + self.STEP_SLACK_S
            if abs(b.offset_s - a.offset_s) > tol:
                self.steps.append(
                    ClockStep(a.guest_s, b.guest_s, a.runner_s, b.runner_s, a.offset_s - b.offset_s,
                              (a.rtt_s + b.rtt_s) / 2)
                )  # fmt: skip

    @property
    def usable(self) -> bool:
        return bool(self.kept)

    def median_rtt_s(self) -> float:
        """The median (nearest rank) round trip of the kept samples; NaN with none kept."""
        median = percentile([s.rtt_s for s in self.kept], 50)
        return float("nan") if median is None else median

    def uncertainty_s(self) -> float:
        """Half the median round trip of the kept samples: how far any mapped time may be off."""
        return self.median_rtt_s() / 2

    def ran_ahead(self) -> str | None:
        """Why the guest's clock cannot be mapped, or None: it gained on the runner's.

        A stopped VM only loses time, so a step forward (negative ``lost_s``) beyond its
        uncertainty means the guest's clock runs fast. Seen on locust-web under TCG on a host with
        a load average of 18–77: one guest's CLOCK_MONOTONIC ran ~37× real time (a clocksource
        calibrated wrong at boot), every record's time was then wrong by up to minutes, and its
        figures were nonsense. More than 100 ms gained over the run refuses the map.
        """
        gained = sum(-s.lost_s - s.uncertainty_s for s in self.steps if -s.lost_s > s.uncertainty_s)
        if gained <= 0.1 or len(self.kept) < 2:
            return None
        span = self.kept[-1].runner_s - self.kept[0].runner_s
        return (
            f"the guest's clock ran ahead of the runner's by {gained:.1f} s over {span:.0f} s "
            f"({len(self.steps)} steps): its clocksource is miscalibrated (seen under TCG on a heavily "
            "loaded host), so guest Locust's request times cannot be placed on the case clock"
        )

    def step_uncertainty_ms(self) -> float:
        """The largest uncertainty of a step: what a gap holding a step may be off by."""
        return max((s.uncertainty_s * 1000 for s in self.steps), default=0.0)

    def report(self, at: Callable[[float], float], sample_errors: int) -> dict[str, Any]:
        """The map as results.json's ``locust.servers.<id>.clock`` (times through `at`, case s).

        Call after `map`: the steps' places (``placed_at_s``) are found there. The drift is the
        rate difference of the two clocks over the run with the steps' lost time put back (ppm).
        """
        kept = self.kept
        lost = sum(s.lost_s for s in self.steps)
        span = kept[-1].runner_s - kept[0].runner_s if len(kept) > 1 else 0.0
        drift = (kept[-1].offset_s - kept[0].offset_s + lost) / span * 1e6 if span > 0 else None
        return {
            "samples": len(self.all),
            "kept": len(kept),
            "sample_errors": sample_errors,
            "median_rtt_ms": round(self.median_rtt_s() * 1000, 3),
            "offset_start_s": round(kept[0].offset_s, 6),
            "offset_end_s": round(kept[-1].offset_s, 6),
            "uncertainty_ms": round(self.uncertainty_s() * 1000, 3),
            "drift_ppm": None if drift is None else round(drift, 1),
            "steps": [
                {
                    "lost_ms": round(s.lost_s * 1000, 3),
                    "uncertainty_ms": round(s.uncertainty_s * 1000, 3),
                    "between_s": [round(at(s.runner_from_s), 3), round(at(s.runner_to_s), 3)],
                    "placed_at_s": None
                    if s.at_guest_s is None
                    else round(at(s.at_guest_s - (s.guest_from_s - s.runner_from_s)), 3),
                }
                for s in self.steps
            ],
        }

    def map(self, guest_times: list[float]) -> list[float]:
        """Runner times for sorted guest times."""
        if not self.kept:
            raise ValueError("no clock samples")
        # where each step falls: the longest gap between records inside its bracket
        splits: dict[int, float] = {}
        placed: list[ClockStep] = []
        for step in self.steps:
            lo = bisect.bisect_right(guest_times, step.guest_from_s)
            hi = bisect.bisect_left(guest_times, step.guest_to_s)
            points = [step.guest_from_s, *guest_times[lo:hi], step.guest_to_s]
            best = max(range(len(points) - 1), key=lambda i: points[i + 1] - points[i])
            at = (points[best] + points[best + 1]) / 2
            placed.append(
                ClockStep(step.guest_from_s, step.guest_to_s, step.runner_from_s, step.runner_to_s,
                          step.lost_s, step.uncertainty_s, at)
            )  # fmt: skip
        self.steps = placed
        keys = [s.guest_s for s in self.kept]
        for step in placed:
            i = next(i for i, s in enumerate(self.kept) if s.guest_s == step.guest_from_s)
            splits[i] = step.at_guest_s if step.at_guest_s is not None else step.guest_to_s
        out: list[float] = []
        for g in guest_times:
            j = bisect.bisect_right(keys, g)
            if j == 0:
                off = self.kept[0].offset_s
            elif j == len(keys):
                off = self.kept[-1].offset_s
            else:
                a, b = self.kept[j - 1], self.kept[j]
                if j - 1 in splits:
                    off = a.offset_s if g < splits[j - 1] else b.offset_s
                else:
                    frac = (g - a.guest_s) / (b.guest_s - a.guest_s) if b.guest_s > a.guest_s else 0.0
                    off = a.offset_s + frac * (b.offset_s - a.offset_s)
            out.append(g - off)
        return out


class ClockSampler:
    """A thread that samples one guest's clock every ``period_s`` until stopped."""

    def __init__(
        self, address: str, netns: str | None, port: int = DEFAULT_PORT, period_s: float = SAMPLE_PERIOD_S
    ) -> None:
        self.web = GuestWeb(address, netns, port, timeout_s=5.0)
        self.period_s = period_s
        self.samples: list[ClockSample] = []
        self.errors = 0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"novamig-locust-clock-{address}", daemon=True)

    def burst(self, n: int = BURST) -> None:
        for _ in range(n):
            try:
                self.samples.append(self.web.clock())
            except (OSError, ValueError, KeyError, http.client.HTTPException, GuestLocustError):
                self.errors += 1

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        c0 = time.thread_time()
        try:
            while not self._stop.wait(self.period_s):
                self.burst(1)
        finally:
            self.cpu_s = time.thread_time() - c0

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.web.close()
