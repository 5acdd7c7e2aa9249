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

The figure of one migration is computed by `novamig.measure.locust_figure` (what downtime,
resolution and brownout mean there), the case's statistics by `novamig.measure.locust_summary`;
this module runs Locust, collects its records and hands them to those two.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from novamig.measure.contract import CaseClock, ProbeFigure, ServerInfo
from novamig.measure.locust_figure import (
    Req,
    figure_from,
    parse_guest_rows,
    quiet_longest_gap_ms,
    window_of,
)
from novamig.measure.locust_guest import ClockMap, ClockSampler, GuestLocustError, GuestWeb
from novamig.measure.locust_locustfile import (
    USER_LOCUSTFILE_MAX_BYTES,
    LocustUnsupported,
    locustfile_path,
    unsupported_reason,
)
from novamig.measure.locust_runner import RunnerLocust
from novamig.measure.locust_summary import summarize_requests
from novamig.results import MigrationRecord, ProbeCost
from novamig.scenario.models import LocustLoad
from novamig.workload.guest_web_app import DEFAULT_PORT
from novamig.workload.guest_web_app import VERSION as WEB_APP_VERSION

#: What ``novamig.measure.locust`` offers: the probe, and its preflight for the runner.
__all__ = ["USER_LOCUSTFILE_MAX_BYTES", "LocustProbe", "LocustUnsupported", "unsupported_reason"]

GUEST_RUN_TIME_S = 86_400  # guest Locust needs a run time; the probe stops it at the end of the case


@dataclass
class _Server:
    info: ServerInfo
    reqs: list[Req] = field(default_factory=list)
    error: str | None = None
    stats: list[dict[str, Any]] | None = None
    sampler: ClockSampler | None = None
    clock: dict[str, Any] | None = None
    step_uncertainty_ms: float = 0.0
    unmapped: str | None = None  # why this guest's records have no usable times (its clock ran ahead)


class LocustProbe:
    """``Probe`` (novamig.measure.contract) for ``downtime_ms.locust`` and the case's ``locust``."""

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

    def _locustfile(self) -> Path:
        return locustfile_path(self.settings, self.scenario_dir)

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
                srv.reqs.append(Req(self._clock.at(rec.mono_s), rec.latency_ms, rec.ok, rec.name))
        for srv in self._servers.values():
            srv.reqs.sort(key=lambda r: r.t_s)
            self._save_records(srv)
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
        rows = parse_guest_rows(csv)
        cmap = ClockMap(srv.sampler.samples)
        if not cmap.usable:
            srv.error = srv.error or "no usable clock samples: guest times cannot be mapped"
            return
        runner_t = cmap.map([row[0] for row in rows])
        srv.reqs = [
            Req(self._clock.at(t), lat, ok, name)
            for t, (_, lat, ok, name) in zip(runner_t, rows, strict=True)
        ]
        srv.reqs.sort(key=lambda r: r.t_s)
        self._save_records(srv)
        srv.step_uncertainty_ms = cmap.step_uncertainty_ms()
        srv.unmapped = cmap.ran_ahead()
        srv.clock = cmap.report(self._clock.at, srv.sampler.errors)

    def _save_records(self, srv: _Server) -> None:
        """Keep the per-request records (case seconds) beside the other probes' raw data: the
        figures can be re-derived and a surprising gap looked at request by request."""
        if not srv.reqs:
            return
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            lines = ["t_s,latency_ms,ok,name"]
            lines += [f"{r.t_s:.6f},{r.latency_ms:.3f},{int(r.ok)},{r.name}" for r in srv.reqs]
            path = self.workdir / f"requests-{srv.info.name}.csv"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        except OSError as e:
            self._errors.append(f"saving the request records of {srv.info.name}: {e}")

    # -- figures

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
        try:
            srv = self._servers.get(server_id)
            if srv is None:
                return ProbeFigure(None, None, "Locust did not load this server")
            if not srv.reqs:
                return ProbeFigure(None, None, srv.error or "no Locust records for this server")
            if srv.unmapped:
                return ProbeFigure(None, None, srv.unmapped)
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
            usable = [srv for srv in self._servers.values() if not srv.unmapped]
            found = [quiet_longest_gap_ms(srv.reqs, start_s, end_s) for srv in usable]
            worst = max((g for g in found if g is not None), default=None)
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
                "total": asdict(summarize_requests(everything, runner_stats)),
                "servers": {},
                "errors": list(self._errors),
            }
            if self.settings.where == "guest":
                reported = [x for s in self._servers.values() for x in (s.stats or [])]
                out["total"]["locust_reported"] = asdict(summarize_requests([], reported))["locust_reported"]
            for sid, srv in self._servers.items():
                entry = asdict(summarize_requests(srv.reqs, srv.stats))
                entry["name"] = srv.info.name
                entry["address"] = srv.info.address
                entry["error"] = srv.error or srv.unmapped
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
