"""The Locust vantage point: downtime as the clients of a web service see it — the longest span
without a successful request — from Locust's per-request records.

Two places Locust can run (``workload.locust.where``):

* ``guest``: inside each full guest, against its own web application, started and collected
  through the app's control endpoint (``/_novamig/locust/*``); a user's own locustfile travels
  as text in the start request. The records carry the guest's
  CLOCK_MONOTONIC and are mapped to the case clock by ``locust_guest.ClockMap``. The guest's
  clock stands still while the VM is stopped (measured: docs/measurement.md, "## locust"), so in
  guest time the blackout is invisible; the map puts the lost time back at the switchover, and
  the figure's ``details`` state how much of the downtime is that clock step.
* ``runner``: one Locust process on the runner (``locust_runner``), inside the guest network
  namespace when there is one, loading every guest; records on the runner's own clock.

Figure of one migration (all times case seconds):

* window = [requested_at − 0.5 s, finished_at + 1 s] (finished_at is when the runner saw Nova
  report the end; the switchover is before it);
* ``downtime_ms`` = the longest interval between consecutive successful completions to that
  server that overlaps the window (a gap still open at the end of the records counts to the
  last record, with ``details.open_ended``);
* ``resolution_ms`` = the median interval between consecutive successful completions to that
  server over the whole run (how finely the records sample the service), plus, for guest
  Locust, the uncertainty of the clock step put into the gap;
* ``brownout_ms`` = slow-but-answering time: baseline = p99 latency of that server's successful
  requests completing in the 10 s before the window (after Locust's first 3 s); every request
  in the window slower than that contributes [its start + baseline, its end]; the union of
  those intervals, clipped to the window, minus the blackout interval itself;
* ``details``: latency spike (max latency in the window), baseline p99, requests and failures
  in the window, the blackout interval, the clock step (guest).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from novamig.measure.locust_guest import ClockMap, ClockSampler, GuestLocustError, GuestWeb
from novamig.measure.locust_runner import RunnerLocust
from novamig.results import MigrationRecord, ProbeCost
from novamig.runner.clock import CaseClock
from novamig.runner.probes import ProbeFigure, ServerInfo
from novamig.scenario.models import LocustLoad
from novamig.workload.guest_web_app import DEFAULT_PORT
from novamig.workload.guest_web_app import VERSION as WEB_APP_VERSION

WINDOW_BEFORE_S = 0.5
WINDOW_AFTER_S = 1.0
BASELINE_S = 10.0
WARMUP_S = 3.0  # Locust's first requests (imports, connection set-up) are slow, most of all under TCG
#: A guest-side user locustfile goes to the guest in one JSON request (the app takes ≤ 1 MiB).
USER_LOCUSTFILE_MAX_BYTES = 512 * 1024
GUEST_RUN_TIME_S = 86_400  # guest Locust needs a run time; the probe stops it at the end of the case


class LocustUnsupported(ValueError):
    """The scenario asks for a Locust set-up this probe cannot run (the reason says why)."""


# ------------------------------------------------------------------------------------------------
# records and the figure math (pure)


@dataclass(frozen=True)
class Req:
    t_s: float  # completion, case seconds
    latency_ms: float
    ok: bool


@dataclass(frozen=True)
class Gap:
    start_s: float
    end_s: float
    open_ended: bool = False

    @property
    def ms(self) -> float:
        return (self.end_s - self.start_s) * 1000.0


def longest_gap(reqs: Sequence[Req], start_s: float, end_s: float) -> Gap | None:
    """The longest interval between consecutive successful completions that overlaps
    [start_s, end_s]; a gap from the last success to the last record counts when no success
    follows. None when no record at all overlaps."""
    if not reqs:
        return None
    ok = [r.t_s for r in reqs if r.ok]
    last_t = reqs[-1].t_s
    best: Gap | None = None
    for a, b in itertools.pairwise(ok):
        if b > start_s and a < end_s and (best is None or b - a > best.end_s - best.start_s):
            best = Gap(a, b)
    if ok and ok[-1] < end_s and last_t > ok[-1]:
        tail = Gap(ok[-1], last_t, open_ended=True)
        if best is None or tail.ms > best.ms:
            best = tail
    if not ok and reqs[0].t_s <= end_s and last_t >= start_s:
        best = Gap(reqs[0].t_s, last_t, open_ended=True)
    return best


def median_interval_ms(reqs: Sequence[Req]) -> float | None:
    ok = [r.t_s for r in reqs if r.ok]
    diffs = [b - a for a, b in itertools.pairwise(ok)]
    return statistics.median(diffs) * 1000.0 if diffs else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_a, cur_b = 0.0, None, None
    for a, b in sorted(intervals):
        if cur_b is None or a > cur_b:
            if cur_a is not None and cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


def brownout_ms(
    reqs: Sequence[Req], start_s: float, end_s: float, baseline_ms: float, blackout: Gap | None
) -> float:
    """See the module docstring: union of [start + baseline, end] of the window's slow requests,
    clipped to the window, minus the blackout."""
    slow: list[tuple[float, float]] = []
    for r in reqs:
        if not r.ok or r.latency_ms <= baseline_ms:
            continue
        a = r.t_s - (r.latency_ms - baseline_ms) / 1000.0
        b = r.t_s
        a, b = max(a, start_s), min(b, end_s)
        if blackout is not None:  # cut the blackout out: it is downtime, not brownout
            pieces = [(a, min(b, blackout.start_s)), (max(a, blackout.end_s), b)]
        else:
            pieces = [(a, b)]
        slow += [(x, y) for x, y in pieces if y > x]
    return _union_length(slow) * 1000.0


def window_of(migration: MigrationRecord, last_t_s: float | None) -> tuple[float, float]:
    end = migration.finished_at
    if end is None:
        end = last_t_s if last_t_s is not None else migration.requested_at
    return migration.requested_at - WINDOW_BEFORE_S, end + WINDOW_AFTER_S


def figure_from(
    reqs: Sequence[Req], start_s: float, end_s: float, extra_resolution_ms: float = 0.0
) -> ProbeFigure:
    """The figure for one server's records (sorted by t_s) and one window."""
    if not reqs:
        return ProbeFigure(None, None, "no Locust records for this server")
    first, last = reqs[0].t_s, reqs[-1].t_s
    if first > start_s or last < end_s:
        return ProbeFigure(
            None, None,
            f"Locust records cover [{first:.1f}, {last:.1f}] s, not the whole migration window "
            f"[{start_s:.1f}, {end_s:.1f}] s",
        )  # fmt: skip
    gap = longest_gap(reqs, start_s, end_s)
    if gap is None:
        return ProbeFigure(None, None, "no successful request around the migration")
    resolution = median_interval_ms(reqs)
    in_window = [r for r in reqs if start_s <= r.t_s <= end_s]
    warm = first + WARMUP_S
    base = [r.latency_ms for r in reqs if r.ok and max(start_s - BASELINE_S, warm) <= r.t_s < start_s]
    baseline = percentile(base, 99) if len(base) >= 20 else None
    details: dict[str, Any] = {
        "window_s": [round(start_s, 3), round(end_s, 3)],
        "blackout_s": [round(gap.start_s, 3), round(gap.end_s, 3)],
        "open_ended": gap.open_ended,
        "requests_in_window": len(in_window),
        "failures_in_window": sum(1 for r in in_window if not r.ok),
        "latency_spike_ms": round(max((r.latency_ms for r in in_window), default=0.0), 3),
        "baseline_p99_ms": None if baseline is None else round(baseline, 3),
        "baseline_requests": len(base),
    }
    brown = None if baseline is None else round(brownout_ms(in_window, start_s, end_s, baseline, gap), 3)
    return ProbeFigure(
        round(gap.ms, 3),
        None if resolution is None else round(resolution + extra_resolution_ms, 3),
        None,
        details,
        brown,
    )


# ------------------------------------------------------------------------------------------------
# case statistics (typed inside, plain JSON out)


@dataclass
class Timeline:
    t0_s: float
    step_s: float
    requests: list[int]
    failures: list[int]


@dataclass
class Summary:
    requests: int
    failures: int
    failure_ratio: float | None
    latency_ms: dict[str, float | None]
    rps: Timeline | None
    locust_reported: dict[str, Any] | None = None  # Locust's own statistics: totals, by_name


def summarize(reqs: Sequence[Req], reported: list[dict[str, Any]] | None = None) -> Summary:
    lat = [r.latency_ms for r in reqs if r.ok]
    failures = sum(1 for r in reqs if not r.ok)
    latency: dict[str, float | None] = {
        f"p{p}": (None if (v := percentile(lat, p)) is None else round(v, 3)) for p in (50, 90, 95, 99)
    }
    latency["max"] = round(max(lat), 3) if lat else None
    latency["mean"] = round(statistics.fmean(lat), 3) if lat else None
    timeline = None
    if reqs:
        t0 = math.floor(min(r.t_s for r in reqs))
        n = int(math.floor(max(r.t_s for r in reqs)) - t0) + 1
        counts, fails = [0] * n, [0] * n
        for r in reqs:
            i = int(math.floor(r.t_s) - t0)
            counts[i] += 1
            fails[i] += 0 if r.ok else 1
        timeline = Timeline(float(t0), 1.0, counts, fails)
    own = None
    if reported is not None:
        own = {
            "requests": sum(int(x.get("num_requests", 0)) for x in reported),
            "failures": sum(int(x.get("num_failures", 0)) for x in reported),
            "by_name": _by_name(reported),
        }
    return Summary(len(reqs), failures, round(failures / len(reqs), 6) if reqs else None, latency,
                   timeline, own)  # fmt: skip


def _by_name(reported: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Locust's per-request-name statistics (its ``--json-file`` entries), merged over servers:
    what the locustfile's own endpoints saw, beside novamig's per-request records."""
    out: dict[str, dict[str, Any]] = {}
    for x in reported:
        key = f"{x.get('method') or ''} {x.get('name') or ''}".strip()
        e = out.setdefault(key, {"requests": 0, "failures": 0, "total_ms": 0.0, "max_ms": 0.0})
        e["requests"] += int(x.get("num_requests", 0))
        e["failures"] += int(x.get("num_failures", 0))
        e["total_ms"] += float(x.get("total_response_time", 0.0) or 0.0)
        e["max_ms"] = max(e["max_ms"], float(x.get("max_response_time", 0.0) or 0.0))
    for e in out.values():
        total = e.pop("total_ms")
        e["mean_ms"] = round(total / e["requests"], 3) if e["requests"] else None
        e["max_ms"] = round(e["max_ms"], 3)
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------------------------
# the probe


@dataclass
class _Server:
    info: ServerInfo
    reqs: list[Req] = field(default_factory=list)
    error: str | None = None
    stats: list[dict[str, Any]] | None = None
    sampler: ClockSampler | None = None
    clock: dict[str, Any] | None = None
    step_uncertainty_ms: float = 0.0


def unsupported_reason(settings: LocustLoad, scenario_dir: Path | None) -> str | None:
    """Why this probe cannot run these settings, or None. For the runner's preflight."""
    name = settings.locustfile
    if name.startswith("builtin:"):
        builtin = name.removeprefix("builtin:")
        if not resources.files("novamig.workload").joinpath("locustfiles", f"{builtin}.py").is_file():
            return f"no builtin locustfile {builtin!r} in novamig/workload/locustfiles"
        return None
    path = Path(name) if scenario_dir is None else (scenario_dir / name)
    if not path.is_file():
        return f"locustfile {path} does not exist"
    if settings.where == "guest":
        try:
            size = len(path.read_text(encoding="utf-8").encode())
        except (OSError, UnicodeDecodeError) as e:
            return f"locustfile {path} cannot be read as UTF-8 text: {e}"
        if size > USER_LOCUSTFILE_MAX_BYTES:
            return (
                f"locustfile {path} is {size} bytes; a guest-side locustfile travels in one "
                f"request to the guest and may be at most {USER_LOCUSTFILE_MAX_BYTES} bytes"
            )
    return None


class LocustProbe:
    """``Probe`` (novamig.runner.probes) for ``downtime_ms.locust`` and the case's ``locust``."""

    name = "locust"

    def __init__(
        self,
        settings: LocustLoad,
        netns: str | None,
        workdir: Path,
        scenario_dir: Path | None = None,
        *,
        port: int = DEFAULT_PORT,
        ready_timeout_s: float = 240.0,
    ) -> None:
        reason = unsupported_reason(settings, scenario_dir)
        if reason:
            raise LocustUnsupported(reason)
        self.settings = settings
        self.netns = netns
        self.workdir = Path(workdir).resolve()
        self.scenario_dir = scenario_dir
        self.port = port
        self.ready_timeout_s = ready_timeout_s
        self._clock: CaseClock | None = None
        self._servers: dict[str, _Server] = {}
        self._runner: RunnerLocust | None = None
        self._started_mono = 0.0
        self._stopped_mono = 0.0
        self._cost: ProbeCost | None = None
        self._errors: list[str] = []
        self._stopped = False
        self._runner_stats: list[dict[str, Any]] | None = None

    # -- locustfile

    def _locustfile(self) -> Path:
        name = self.settings.locustfile
        if name.startswith("builtin:"):
            ref = resources.files("novamig.workload").joinpath(
                "locustfiles", f"{name.removeprefix('builtin:')}.py"
            )
            return Path(str(ref))
        return Path(name) if self.scenario_dir is None else (self.scenario_dir / name).resolve()

    # -- start

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None:
        self._clock = clock
        self._started_mono = time.monotonic()
        self._servers = {s.id: _Server(s) for s in servers}
        for srv in self._servers.values():
            if not srv.info.address:
                srv.error = "the server has no fixed IPv4 address to reach its web application"
        live = [s for s in self._servers.values() if s.error is None]
        if not live:
            return
        try:
            _parallel(live, self._wait_web)
            if self.settings.where == "guest":
                _parallel([s for s in live if s.error is None], self._start_guest)
            else:
                self._start_runner([s for s in live if s.error is None])
            time.sleep(2.0)  # past Locust's slowest first requests before the case's noise window
        except BaseException:
            self.stop()
            raise

    def _wait_web(self, srv: _Server) -> None:
        assert srv.info.address
        web = GuestWeb(srv.info.address, self.netns, self.port, timeout_s=5.0)
        deadline = time.monotonic() + self.ready_timeout_s
        last = ""
        try:
            while time.monotonic() < deadline:
                try:
                    status, body = web.request("GET", "/health")
                    if status == 200:
                        self._check_web_version(srv, body)
                        return
                except OSError as e:
                    last = f"{type(e).__name__}: {e}"
                time.sleep(0.5)
        finally:
            web.close()
        srv.error = f"web application at {srv.info.address}:{self.port} not answering ({last})"

    def _check_web_version(self, srv: _Server, health: bytes) -> None:
        """Guest-side Locust needs the web application this novamig was built with (the record
        format and the start request changed with versions); say so rather than misread."""
        if self.settings.where != "guest":
            return
        try:
            version = json.loads(health).get("version")
        except (ValueError, AttributeError):
            version = None
        if str(version) != WEB_APP_VERSION:
            srv.error = (
                f"the guest's web application is version {version}, this novamig needs "
                f"{WEB_APP_VERSION}: rebuild the image (novamig image build full) or upload it "
                "again (novamig image upload full --replace)"
            )

    def _start_guest(self, srv: _Server) -> None:
        assert srv.info.address
        sampler = ClockSampler(srv.info.address, self.netns, self.port)
        sampler.burst()
        if not sampler.samples:
            srv.error = "the guest's clock endpoint does not answer (/_novamig/clock: a full image older "
            srv.error += "than this novamig? rebuild with `novamig image build full`)"
            sampler.web.close()
            return
        srv.sampler = sampler
        sampler.start()
        web = GuestWeb(srv.info.address, self.netns, self.port, timeout_s=15.0)
        run_time = self.settings.run_time_s
        params = {
            "users": self.settings.users,
            "spawn_rate": self.settings.spawn_rate,
            "run_time_s": math.ceil(run_time) if run_time is not None else GUEST_RUN_TIME_S,
            "locustfile": self.settings.locustfile,
        }
        if not self.settings.locustfile.startswith("builtin:"):
            params["locustfile_text"] = self._locustfile().read_text(encoding="utf-8")
        try:
            web.json("POST", "/_novamig/locust/start", params)
            deadline = time.monotonic() + self.ready_timeout_s
            while True:
                status = web.json("GET", "/_novamig/locust/status")
                if status.get("first_request_s") is not None:
                    return
                if status.get("state") not in ("running",):
                    srv.error = f"guest Locust {status.get('state')}: {status.get('error') or ''}"[:2000]
                    return
                if time.monotonic() > deadline:
                    srv.error = f"guest Locust completed no request within {self.ready_timeout_s:.0f} s"
                    return
                time.sleep(0.5)
        except (OSError, ValueError, GuestLocustError) as e:
            srv.error = f"starting guest Locust: {type(e).__name__}: {e}"
        finally:
            web.close()

    def _start_runner(self, live: list[_Server]) -> None:
        hosts = [f"http://{s.info.address}:{self.port}" for s in live]
        users = max(self.settings.users, len(hosts))  # at least one user per guest
        self._runner = RunnerLocust(
            self._locustfile(), hosts, users=users, spawn_rate=self.settings.spawn_rate,
            run_time_s=self.settings.run_time_s, netns=self.netns, workdir=self.workdir / "locust-runner",
        )  # fmt: skip
        self._runner.start(first_request_timeout_s=self.ready_timeout_s)

    # -- stop

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stopped_mono = time.monotonic()
        if self._runner is not None:
            self._stop_runner(self._runner)
        _parallel([s for s in self._servers.values() if s.sampler is not None], self._stop_guest)

    def _stop_runner(self, runner: RunnerLocust) -> None:
        assert self._clock is not None
        outcome = runner.stop()
        by_host = {s.info.address: s for s in self._servers.values()}
        for rec in outcome.records:
            srv = by_host.get(rec.host)
            if srv is not None:
                srv.reqs.append(Req(self._clock.at(rec.mono_s), rec.latency_ms, rec.ok))
        for srv in self._servers.values():
            srv.reqs.sort(key=lambda r: r.t_s)
        self._runner_stats = outcome.stats
        if outcome.exit_code not in (0, None) or outcome.stats is None:
            self._errors.append(f"runner Locust exit code {outcome.exit_code}: {outcome.log_tail[-800:]}")
        if outcome.cpu_s is not None and outcome.wall_s > 0:
            n = len(outcome.records)
            self._cost = ProbeCost(
                cpu_s=round(outcome.cpu_s, 3), wall_s=round(outcome.wall_s, 3),
                cpu_percent=round(outcome.cpu_s / outcome.wall_s * 100, 1),
                rate_hz=round(n / outcome.wall_s, 1),
                note="the runner-side Locust process (rate: requests/s)",
            )  # fmt: skip

    def _stop_guest(self, srv: _Server) -> None:
        assert srv.info.address and srv.sampler is not None and self._clock is not None
        web = GuestWeb(srv.info.address, self.netns, self.port, timeout_s=15.0)
        records_csv = b""
        try:
            if True:  # stop it even if starting went wrong: it may be running
                web.json("POST", "/_novamig/locust/stop")
                deadline = time.monotonic() + 60
                while web.json("GET", "/_novamig/locust/status").get("state") in ("running", "stopping"):
                    if time.monotonic() > deadline:
                        srv.error = srv.error or "guest Locust did not stop within 60 s"
                        break
                    time.sleep(0.5)
                result = web.json("GET", "/_novamig/locust/result")
                stats = result.get("stats")
                srv.stats = [x for x in stats if isinstance(x, dict)] if isinstance(stats, list) else None
                status, records_csv = web.request("GET", "/_novamig/locust/records")
                if status != 200:
                    records_csv = b""
        except (OSError, ValueError, GuestLocustError) as e:
            srv.error = srv.error or f"collecting guest Locust: {type(e).__name__}: {e}"
        finally:
            web.close()
            srv.sampler.stop()
            srv.sampler.burst()
            srv.sampler.web.close()
        self._map_guest_records(srv, records_csv.decode(errors="replace"))

    def _map_guest_records(self, srv: _Server, csv: str) -> None:
        assert srv.sampler is not None and self._clock is not None
        rows: list[tuple[float, float, bool]] = []
        for line in csv.splitlines():  # mono_ns,response_time_ms,ok,host,name (locust_hook.py)
            parts = line.split(",", 4)
            if len(parts) != 5:
                continue  # a line cut short by a kill
            with contextlib.suppress(ValueError):
                rows.append((int(parts[0]) / 1e9, float(parts[1]), parts[2] == "1"))
        rows.sort()
        cmap = ClockMap(srv.sampler.samples)
        if not cmap.usable:
            srv.error = srv.error or "no usable clock samples: guest times cannot be mapped"
            return
        runner_t = cmap.map([g for g, _, _ in rows])
        srv.reqs = [Req(self._clock.at(t), lat, ok) for t, (_, lat, ok) in zip(runner_t, rows, strict=True)]
        srv.reqs.sort(key=lambda r: r.t_s)
        kept = cmap.kept
        lost = sum(s.lost_s for s in cmap.steps)
        span = kept[-1].runner_s - kept[0].runner_s if len(kept) > 1 else 0.0
        drift = (kept[-1].offset_s - kept[0].offset_s + lost) / span * 1e6 if span > 0 else None
        srv.step_uncertainty_ms = max((s.uncertainty_s * 1000 for s in cmap.steps), default=0.0)
        srv.clock = {
            "samples": len(cmap.all),
            "kept": len(kept),
            "sample_errors": srv.sampler.errors,
            "median_rtt_ms": round(statistics.median(s.rtt_s for s in kept) * 1000, 3),
            "offset_start_s": round(kept[0].offset_s, 6),
            "offset_end_s": round(kept[-1].offset_s, 6),
            "uncertainty_ms": round(cmap.uncertainty_s() * 1000, 3),
            "drift_ppm": None if drift is None else round(drift, 1),
            "steps": [
                {
                    "lost_ms": round(s.lost_s * 1000, 3),
                    "uncertainty_ms": round(s.uncertainty_s * 1000, 3),
                    "between_s": [
                        round(self._clock.at(s.runner_from_s), 3),
                        round(self._clock.at(s.runner_to_s), 3),
                    ],
                    "placed_at_s": None
                    if s.at_guest_s is None
                    else round(self._clock.at(s.at_guest_s - (s.guest_from_s - s.runner_from_s)), 3),
                }
                for s in cmap.steps
            ],
        }

    # -- figures

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
        try:
            srv = self._servers.get(server_id)
            if srv is None:
                return ProbeFigure(None, None, "Locust did not load this server")
            if not srv.reqs:
                return ProbeFigure(None, None, srv.error or "no Locust records for this server")
            start, end = window_of(migration, srv.reqs[-1].t_s)
            fig = figure_from(srv.reqs, start, end, srv.step_uncertainty_ms)
            if fig.details is not None and srv.clock is not None:
                steps = [
                    s
                    for s in srv.clock["steps"]
                    if s["placed_at_s"] is not None and start <= s["placed_at_s"] <= end
                ]
                fig.details["where"] = "guest"
                fig.details["guest_clock_lost_ms"] = round(sum(s["lost_ms"] for s in steps), 3)
                fig.details["note"] = (
                    "guest Locust: the guest's clock stood still for guest_clock_lost_ms while the VM was "
                    "stopped; that time is put back at the switchover (part of downtime_ms)"
                    if steps
                    else "guest Locust: no guest clock step seen in this window"
                )
            elif fig.details is not None:
                fig.details["where"] = "runner"
            return fig
        except Exception as e:  # a probe never raises out of figure()
            return ProbeFigure(None, None, f"Locust figure failed: {type(e).__name__}: {e}")

    def noise_floor(self, start_s: float, end_s: float) -> float | None:
        try:
            worst: float | None = None
            for srv in self._servers.values():
                if not srv.reqs or srv.reqs[0].t_s > start_s or srv.reqs[-1].t_s < end_s:
                    continue
                inside = [r for r in srv.reqs if start_s <= r.t_s < end_s]
                ok = [r.t_s for r in inside if r.ok]
                if len(ok) < 2:
                    continue
                gap = max(b - a for a, b in itertools.pairwise(ok)) * 1000.0
                worst = gap if worst is None else max(worst, gap)
            return None if worst is None else round(worst, 3)
        except Exception:
            return None

    def cost(self) -> ProbeCost | None:
        if self.settings.where == "runner":
            return self._cost
        samplers = [s.sampler for s in self._servers.values() if s.sampler is not None]
        wall = (self._stopped_mono or time.monotonic()) - self._started_mono
        if not samplers or wall <= 0:
            return None
        cpu = sum(s.cpu_s for s in samplers)
        n = sum(len(s.samples) for s in samplers)
        return ProbeCost(
            cpu_s=round(cpu, 3), wall_s=round(wall, 3), cpu_percent=round(cpu / wall * 100, 2),
            rate_hz=round(n / wall, 1),
            note="Locust runs inside the guests (its CPU is theirs); this is the runner's clock sampling",
        )  # fmt: skip

    def case_stats(self) -> dict[str, Any] | None:
        try:
            everything = sorted((r for s in self._servers.values() for r in s.reqs), key=lambda r: r.t_s)
            runner_stats = self._runner_stats
            out: dict[str, Any] = {
                "where": self.settings.where,
                "locustfile": self.settings.locustfile,
                "users": self.settings.users,
                "spawn_rate": self.settings.spawn_rate,
                "total": asdict(summarize(everything, runner_stats)),
                "servers": {},
                "errors": list(self._errors),
            }
            if self.settings.where == "guest":
                reported = [x for s in self._servers.values() for x in (s.stats or [])]
                out["total"]["locust_reported"] = asdict(summarize([], reported))["locust_reported"]
            for sid, srv in self._servers.items():
                entry = asdict(summarize(srv.reqs, srv.stats))
                entry["name"] = srv.info.name
                entry["address"] = srv.info.address
                entry["error"] = srv.error
                if srv.clock is not None:
                    entry["clock"] = srv.clock
                out["servers"][sid] = entry
            json.dumps(out)  # plain JSON or nothing
            return out
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}"}


def _parallel(items: Sequence[_Server], fn: Callable[[_Server], None]) -> None:
    """Run fn on every server at once (guest Locust takes 15-25 s to start under TCG); an
    exception becomes that server's error."""

    def run(srv: _Server) -> None:
        try:
            fn(srv)
        except Exception as e:
            srv.error = srv.error or f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=run, args=(s,), name=f"novamig-locust-{s.info.name}") for s in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
