"""The Locust probe: the figure math on synthetic records, the clock map on a guest clock that
stands still, and the probe end to end with real Locust — against the web application on
loopback (a process paused with SIGSTOP is a blackout of known length), and on the embedded cloud
over real live migrations of a novamig-full server, guest-side (with a user's own locustfile,
which the image does not carry) and runner-side."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from novamig.measure.contract import CaseClock, ServerInfo
from novamig.measure.locust import USER_LOCUSTFILE_MAX_BYTES, LocustProbe, LocustUnsupported
from novamig.measure.locust_figure import (
    Req,
    RequestGap,
    brownout_ms,
    figure_from,
    longest_request_gap,
    parse_guest_records,
    quiet_longest_gap_ms,
)
from novamig.measure.locust_guest import ClockMap, ClockSample
from novamig.measure.locust_summary import summarize_requests
from novamig.results import MigrationRecord
from novamig.scenario.models import LocustLoad

from .conftest import HostLoad, WaitUntil

MS = 1_000_000
WORKLOAD = Path(__file__).resolve().parents[2] / "novamig" / "workload"


def _steady(t0: float, t1: float, every: float, latency_ms: float = 2.0) -> list[Req]:
    n = round((t1 - t0) / every)
    return [Req(round(t0 + i * every, 6), latency_ms, True) for i in range(n + 1)]


# ------------------------------------------------------------------------------------------------
# figure math


def test_longest_gap_is_the_blackout_and_resolution_the_sampling_period() -> None:
    before = _steady(0.0, 10.0, 0.01)
    stalled = Req(10.3, 300.0, True)  # in flight through the blackout, completes after it
    after = _steady(10.31, 20.0, 0.01)
    reqs = [*before, stalled, *after]
    fig = figure_from(reqs, 9.0, 12.0)
    # 300 ms without an answer, less the 10 ms the next answer takes anyway
    assert fig.downtime_ms == pytest.approx(290.0, abs=0.01)
    assert fig.resolution_ms == pytest.approx(10.0, abs=0.01)
    assert fig.details is not None
    assert fig.details["blackout_s"] == [10.0, 10.3]
    assert (fig.details["longest_gap_ms"], fig.details["normal_interval_ms"]) == (300.0, 10.0)
    # the stalled request was outstanding the whole gap: all of it is the service's
    assert (fig.details["waiting_ms"], fig.details["failing_ms"], fig.details["idle_ms"]) == (300.0, 0.0, 0.0)
    assert fig.details["latency_spike_ms"] == 300.0
    assert fig.details["baseline_p99_ms"] == 2.0
    # the stalled request's slowness is the blackout itself: no brownout beside it
    assert fig.brownout_ms == 0.0


def test_brownout_counts_slow_answers_outside_the_blackout() -> None:
    reqs = _steady(0.0, 10.0, 0.01)
    # 1 s of slow answers (each 50 ms, back to back) after the window opens, no gap above 50 ms
    slow = [Req(round(10.0 + 0.05 * i, 6), 50.0, True) for i in range(1, 21)]
    reqs += slow + _steady(11.01, 20.0, 0.01)
    fig = figure_from(reqs, 9.5, 13.0)
    assert fig.downtime_ms == pytest.approx(50.0 - 10.0, abs=0.01)
    # every slow request contributes its last 48 ms (50 − 2 ms baseline); the longest of them is
    # the "blackout" and is cut out: 19 × 48 ms remain
    assert fig.brownout_ms == pytest.approx(19 * 48.0, abs=0.5)


def test_gap_breakdown_tells_the_service_from_failures_and_the_client() -> None:
    """A 700 ms gap: a request outstanding 10.1–10.4 s that failed (a time-out), nothing
    outstanding 10.0–10.1 and 10.4–10.6 (the client not asking), an answered one 10.6–10.7."""
    reqs = [
        *_steady(0.0, 10.0, 0.01),
        Req(10.4, 300.0, False),
        Req(10.7, 100.0, True),
        *_steady(10.71, 20.0, 0.01),
    ]
    fig = figure_from(reqs, 9.5, 12.0)
    assert fig.details is not None and fig.details["blackout_s"] == [10.0, 10.7]
    parts = {k: fig.details[k] for k in ("waiting_ms", "failing_ms", "idle_ms")}
    assert parts == pytest.approx({"waiting_ms": 100.0, "failing_ms": 300.0, "idle_ms": 300.0}, abs=0.01)
    assert sum(parts.values()) == pytest.approx(fig.details["longest_gap_ms"], abs=0.01)
    assert fig.downtime_ms == pytest.approx(690.0, abs=0.01)


def test_a_window_the_records_do_not_cover_has_no_figure_but_a_reason() -> None:
    fig = figure_from(_steady(5.0, 10.0, 0.01), 4.0, 6.0)
    assert fig.downtime_ms is None and fig.reason and "not the whole migration window" in fig.reason


def test_a_server_that_never_answers_again_gives_an_open_ended_gap() -> None:
    reqs = [*_steady(0.0, 5.0, 0.1), Req(6.0, 0.0, False), Req(9.0, 0.0, False)]
    gap = longest_request_gap(reqs, 4.0, 8.0)
    assert gap == RequestGap(5.0, 9.0, open_ended=True)


def test_brownout_union_does_not_double_count_overlaps() -> None:
    reqs = [Req(1.0, 500.0, True), Req(1.1, 500.0, True)]
    # slow intervals [0.5+0.1, 1.0] and [0.6+0.1, 1.1] → union [0.6, 1.1] = 500 ms
    assert brownout_ms(reqs, 0.0, 2.0, 100.0, None) == pytest.approx(500.0)


def test_request_summary() -> None:
    s = summarize_requests([Req(0.2, 1.0, True), Req(0.7, 3.0, False), Req(1.5, 2.0, True)])
    assert (s.requests, s.failures, s.failure_ratio) == (3, 1, pytest.approx(1 / 3, abs=1e-5))
    assert s.rps is not None and s.rps.requests == [2, 1] and s.rps.failures == [1, 0]
    assert s.latency_ms == {"p50": 1.0, "p90": 2.0, "p95": 2.0, "p99": 2.0, "max": 2.0, "mean": 1.5}
    empty = summarize_requests([])
    assert (empty.requests, empty.failure_ratio, empty.rps) == (0, None, None)
    assert set(empty.latency_ms.values()) == {None}


def test_resolution_is_an_observed_interval() -> None:
    """The median interval is nearest rank: with an even count it is one of the two middle
    intervals, not their mean (every figure shown was really observed)."""
    reqs = [Req(t, 1.0, True) for t in (0.0, 0.01, 0.03, 0.06, 0.10)]  # intervals 10, 20, 30, 40 ms
    fig = figure_from(reqs, 0.0, 0.1)
    assert fig.resolution_ms == pytest.approx(20.0)


def test_guest_records_parse_and_noise_floor() -> None:
    csv = "3000000000,2.5,1,h,/\n1000000000,1.0,0,h,/a\n2000000000,x,1,h,/\ncut,short\n"
    assert parse_guest_records(csv) == [(1.0, 1.0, False), (3.0, 2.5, True)]
    # answers every 10 ms, none 0.5–0.9 s (a failure in between): 400 ms less the 10 ms interval
    reqs = [*_steady(0.0, 0.5, 0.01), Req(0.6, 1.0, False), *_steady(0.9, 2.0, 0.01)]
    assert quiet_longest_gap_ms(reqs, 0.0, 1.0) == pytest.approx(390.0)
    assert quiet_longest_gap_ms(reqs, 0.0, 3.0) is None, "records do not cover the window"
    assert quiet_longest_gap_ms(reqs, 0.55, 0.905) is None, "fewer than two successes inside"


def test_clock_map_puts_a_stopped_guest_clock_back_at_the_switchover() -> None:
    """The guest clock stands still for 0.4 s from runner time 5.005 (the VM stopped): in guest
    time the records show no blackout. The map finds the step between two clock samples and puts
    it at the longest record gap in that bracket (the first request after the resume is slower)."""
    offset, stop_at, lost = 100.0, 5.005, 0.4

    def guest(t_runner: float) -> float:
        return t_runner + offset - min(lost, max(0.0, t_runner - stop_at))

    sample_times = [x * 0.25 for x in range(41)]
    samples = [ClockSample(t, guest(t), 0.004) for t in sample_times if not stop_at < t < stop_at + lost]
    cmap = ClockMap(samples)
    assert len(cmap.steps) == 1 and cmap.steps[0].lost_s == pytest.approx(lost)
    runner_times = [i * 0.01 for i in range(501)] + [5.43 + i * 0.01 for i in range(458)]
    mapped = cmap.map([guest(t) for t in runner_times])
    assert mapped == pytest.approx(runner_times, abs=1e-6)
    gaps = [b - a for a, b in itertools.pairwise(mapped)]
    assert max(gaps) == pytest.approx(0.43)

    # equal record gaps around the stop: where the step goes inside the bracket is a guess, but
    # the blackout's length is still the lost time plus one record interval
    runner_times = [i * 0.01 for i in range(501)] + [5.41 + i * 0.01 for i in range(460)]
    mapped = ClockMap(samples).map([guest(t) for t in runner_times])
    gaps = [b - a for a, b in itertools.pairwise(mapped)]
    assert max(gaps) == pytest.approx(0.41) and sorted(gaps)[-2] < 0.02


def test_user_locustfiles_are_checked_before_the_case(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("from locust import User\n")
    for where in ("guest", "runner"):
        LocustProbe(LocustLoad(where=where, locustfile="mine.py"), None, tmp_path, tmp_path)
        with pytest.raises(LocustUnsupported, match="does not exist"):
            LocustProbe(LocustLoad(where=where, locustfile="other.py"), None, tmp_path, tmp_path)
    # a guest-side file travels in one request: too big, or not text, is refused up front
    (tmp_path / "big.py").write_text("#" * (USER_LOCUSTFILE_MAX_BYTES + 1))
    with pytest.raises(LocustUnsupported, match="at most"):
        LocustProbe(LocustLoad(where="guest", locustfile="big.py"), None, tmp_path, tmp_path)
    LocustProbe(LocustLoad(where="runner", locustfile="big.py"), None, tmp_path, tmp_path)
    (tmp_path / "bin.py").write_bytes(b"\xff\xfe")
    with pytest.raises(LocustUnsupported, match="UTF-8"):
        LocustProbe(LocustLoad(where="guest", locustfile="bin.py"), None, tmp_path, tmp_path)


# ------------------------------------------------------------------------------------------------
# real Locust against the web application on loopback


@pytest.fixture
def web_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The guest web application as a host process (its Locust control endpoint runs the host's
    Locust), ended by its process group. Locust on either side waits 5 ms between a user's
    requests: a few hundred requests per second, enough, and light on 2 cores."""
    monkeypatch.setenv("NOVAMIG_WEB_WAIT_S", "0.005")  # the runner side's Locust is our child
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        NOVAMIG_LOCUST_BIN=str(Path(sys.executable).with_name("locust")),
        NOVAMIG_LOCUSTFILE_DIR=str(WORKLOAD / "locustfiles"),
        NOVAMIG_LOCUST_RUN_DIR=str(tmp_path / "guest-run"),
    )
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD / "guest_web_app.py"), "--port", str(port), "--host", "127.0.0.1"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield port, proc
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _pause(
    proc: subprocess.Popen[bytes], clock: CaseClock, seconds: float
) -> tuple[float, float, float, float]:
    """The web application stopped for `seconds`: a fault of known length (its length is the
    stimulus, timed here; the test synchronises on Locust's records around it).

    → (stop sent, stop done, cont sent, cont done), case seconds: each signal is stamped on both
    sides, so however late this thread ran around a signal on a busy host, the pause lasted
    between cont sent − stop done and cont done − stop sent.
    """
    stop_sent = clock.now()
    os.kill(proc.pid, signal.SIGSTOP)
    stop_done = clock.now()
    time.sleep(seconds)
    cont_sent = clock.now()
    os.kill(proc.pid, signal.SIGCONT)
    return stop_sent, stop_done, cont_sent, clock.now()


def _locust_recorded_past(root: Path, t_ns: int) -> bool:
    """A Locust under `root` (runner side: its work directory; guest side: the web application's
    run directory) has recorded a request completed after `t_ns` (CLOCK_MONOTONIC). The records
    file is line-buffered, one ``mono_ns,...`` line per completed request."""
    for path in root.rglob("records.csv"):
        try:
            last = path.read_text(encoding="utf-8", errors="replace").rstrip("\n").rsplit("\n", 1)[-1]
        except OSError:
            continue
        stamp = last.split(",", 1)[0]
        if stamp.isdigit() and int(stamp) > t_ns:
            return True
    return False


@pytest.mark.parametrize("where", ["runner", "guest"])
def test_probe_sees_a_paused_web_app(
    where: Literal["guest", "runner"],
    web_app: tuple[int, subprocess.Popen[bytes]],
    tmp_path: Path,
    wait_until: WaitUntil,
    scheduling_jitter: HostLoad,
) -> None:
    """Locust on this machine, either its own process (runner) or started through the control
    endpoint (guest; the 'guest' clock is then this machine's, so the map finds no step). The app
    is paused 0.6 s: that is the downtime, within the sampling period."""
    port, proc = web_app
    clock = CaseClock()
    probe = LocustProbe(
        LocustLoad(users=2, spawn_rate=2, where=where),
        None,
        tmp_path,
        None,
        port=port,
        ready_timeout_s=60,  # type: ignore[arg-type]
    )
    server = ServerInfo("srv-1", "one", "host1", "127.0.0.1")
    try:
        probe.start([server], clock)
        quiet = clock.now()
        start_ns = time.monotonic_ns()
        wait_until(lambda: _locust_recorded_past(tmp_path, start_ns + 2000 * MS), 60.0, "2 s of requests")
        noise_end = clock.now()
        stop_sent, a, cont_sent, b = _pause(proc, clock, 0.6)
        resumed_ns = time.monotonic_ns()
        wait_until(lambda: _locust_recorded_past(tmp_path, resumed_ns + 2000 * MS), 60.0, "requests after")
    finally:
        probe.stop()
    # How late this host ran a thread at worst during the test: Locust and the web application are
    # processes of this host, as late as that to send or answer on a busy machine.
    load_ms = scheduling_jitter.worst_ms
    migration = MigrationRecord(
        server="one", source_host="host1", status="completed", requested_at=a - 0.5, finished_at=b + 0.5
    )
    fig = probe.figure(migration, "srv-1", 7)
    assert fig.reason is None, fig.reason
    assert fig.downtime_ms is not None and fig.resolution_ms is not None
    # the pause's bounds from the stamps around the signals (a stamp taken after a signal can be
    # late by a stall of this thread: the lower bound must not count that stall as pause)
    paused_min_ms, paused_max_ms = (cont_sent - a) * 1000, (b - stop_sent) * 1000
    # the figure is the longest gap less one normal interval (the resolution here: no clock step)
    low = paused_min_ms - fig.resolution_ms - 5
    high = paused_max_ms + fig.resolution_ms + 50 + load_ms
    assert low <= fig.downtime_ms <= high, (fig, paused_min_ms, paused_max_ms, load_ms)
    assert fig.details is not None
    lo, hi = fig.details["blackout_s"]
    assert stop_sent - 0.05 <= lo and hi <= b + 0.2 + load_ms / 1000, (fig.details, stop_sent, b, load_ms)
    floor = probe.noise_floor(quiet, noise_end)
    assert floor is not None and floor < 200 + load_ms, (floor, load_ms)
    stats = probe.case_stats()
    assert stats is not None
    json.dumps(stats)
    total = stats["total"]
    assert total["requests"] > 100 and total["failures"] == 0 and total["failure_ratio"] == 0
    assert total["locust_reported"]["requests"] >= total["requests"] - 5
    assert stats["servers"]["srv-1"]["latency_ms"]["p50"] is not None
    cost = probe.cost()
    assert cost is not None and cost.wall_s > 4
    if where == "guest":
        clock_info = stats["servers"]["srv-1"]["clock"]
        assert clock_info["steps"] == [] and abs(clock_info["offset_start_s"]) < 0.01, clock_info
    print(f"{where}: downtime {fig.downtime_ms} ms (paused {paused_min_ms:.1f}–{paused_max_ms:.1f} ms), "
          f"resolution {fig.resolution_ms} ms, noise floor {floor} ms, cost {cost}")  # fmt: skip


# ------------------------------------------------------------------------------------------------
# the embedded cloud: a novamig-full server, live-migrated under guest-side and runner-side Locust


@pytest.fixture(scope="module")
def full_server(embedded_cloud: Any, embedded_conn: Any) -> Iterator[tuple[Any, ServerInfo]]:
    from novamig.embedded.layout import FULL_IMAGE_NAME

    conn = embedded_conn
    image = conn.image.find_image(FULL_IMAGE_NAME)
    if image is None:
        pytest.skip("the full image is not in the image cache (novamig image build full)")
    if embedded_cloud.guest_netns is None:
        pytest.skip("guest network namespace needs root")
    flavor = conn.compute.find_flavor("m1.micro", ignore_missing=False)
    server = conn.compute.create_server(
        name="novamig-locust-probe", image_id=image.id, flavor_id=flavor.id, networks="auto"
    )
    try:
        server = conn.compute.wait_for_server(server, wait=240)
        address = next(a["addr"] for net in server.addresses.values() for a in net)
        yield server, ServerInfo(server.id, server.name, server.compute_host, address)
    finally:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, wait=60)


def _migrate(conn: Any, server_id: str, clock: CaseClock) -> tuple[MigrationRecord, int]:
    server = conn.compute.get_server(server_id)
    source = server.compute_host
    dest = "compute2" if source == "compute1" else "compute1"
    requested = clock.now()
    conn.compute.live_migrate_server(server, host=dest, block_migration="auto")
    deadline = time.monotonic() + 180
    while True:
        records = sorted(conn.compute.migrations(instance_uuid=server_id), key=lambda m: m.id)
        if records and records[-1].status in ("completed", "error", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, "the migration did not end within 180 s"
        time.sleep(0.25)
    finished = clock.now()
    record = records[-1]
    assert record.status == "completed", record
    return (
        MigrationRecord(server=server.name, source_host=source, dest_host=dest, status="completed",
                        requested_at=requested, finished_at=finished, migration_id=record.id),
        int(record.id),
    )  # fmt: skip


def _qemu_figures(embedded_cloud: Any, migration: MigrationRecord, migration_id: int) -> dict[str, Any]:
    from novamig.measure.embedded_figures import EmbeddedMigrationFigures

    fig = EmbeddedMigrationFigures(embedded_cloud.workdir).figure(migration, "", migration_id)
    guest = EmbeddedMigrationFigures(embedded_cloud.workdir, "guest").figure(migration, "", migration_id)
    return {"qemu_downtime_ms": fig.downtime_ms, "heartbeat_ms": guest.downtime_ms,
            "details": fig.details or {}}  # fmt: skip


def _check_migration_figure(probe: LocustProbe, migration: MigrationRecord, server: ServerInfo) -> Any:
    fig = probe.figure(migration, server.id, migration.migration_id)
    assert fig.reason is None, fig.reason
    assert fig.downtime_ms is not None and 0 < fig.downtime_ms < 30_000
    assert fig.resolution_ms is not None and fig.resolution_ms > 0
    assert fig.details is not None
    lo, hi = fig.details["blackout_s"]
    start, end = fig.details["window_s"]
    assert start <= hi and lo <= end, fig.details  # the blackout overlaps the migration window
    assert fig.details["latency_spike_ms"] > 0
    return fig


def _over_a_migration(
    probe: LocustProbe, conn: Any, server: ServerInfo, clock: CaseClock
) -> tuple[MigrationRecord, int, float, float]:
    """Probe running: 3 s with no migration (the noise window), one live migration, 3 s more;
    the probe is stopped whatever happens. → (migration, its id, noise window start and end)."""
    try:
        probe.start([server], clock)
        quiet = clock.now()
        time.sleep(3.0)
        noise_end = clock.now()
        migration, mid = _migrate(conn, server.id, clock)
        time.sleep(3.0)
    finally:
        probe.stop()
    return migration, mid, quiet, noise_end


USER_LOCUSTFILE = """
from locust import FastHttpUser, constant, task


class Mine(FastHttpUser):
    wait_time = constant(0)

    @task(3)
    def health(self):
        self.client.get("/health", name="mine /health")

    @task
    def items(self):
        self.client.get("/api/items?n=5", name="mine /api/items")
"""


@pytest.mark.qemu
@pytest.mark.slow
def test_guest_side_locust_over_a_live_migration(
    embedded_cloud: Any, embedded_conn: Any, full_server: tuple[Any, ServerInfo], tmp_path: Path
) -> None:
    _, server = full_server
    clock = CaseClock()
    (tmp_path / "mine.py").write_text(USER_LOCUSTFILE)
    probe = LocustProbe(
        LocustLoad(users=3, spawn_rate=3, where="guest", locustfile="mine.py"),
        embedded_cloud.guest_netns,
        tmp_path,
        tmp_path,
    )
    migration, mid, quiet, noise_end = _over_a_migration(probe, embedded_conn, server, clock)
    stats = probe.case_stats()
    assert stats is not None and stats["servers"][server.id]["error"] is None, stats
    entry = stats["servers"][server.id]
    assert entry["requests"] > 50 and entry["locust_reported"]["requests"] > 50, entry
    assert stats["locustfile"] == "mine.py"
    by_name = entry["locust_reported"]["by_name"]
    assert set(by_name) == {"GET mine /health", "GET mine /api/items"}, by_name
    assert all(e["requests"] > 0 and e["failures"] == 0 and e["mean_ms"] > 0 for e in by_name.values())
    fig = _check_migration_figure(probe, migration, server)
    qemu = _qemu_figures(embedded_cloud, migration, mid)
    floor = probe.noise_floor(quiet, noise_end)
    print(
        f"\nguest Locust: downtime {fig.downtime_ms} ms (of which guest clock lost "
        f"{fig.details['guest_clock_lost_ms']} ms), resolution {fig.resolution_ms} ms, brownout "
        f"{fig.brownout_ms} ms, spike {fig.details['latency_spike_ms']} ms, noise floor {floor} ms; "
        f"QEMU downtime {qemu['qemu_downtime_ms']} ms, heartbeat {qemu['heartbeat_ms']} ms; "
        f"clock {json.dumps(entry['clock'])}; requests {entry['requests']}, failures {entry['failures']}"
    )


@pytest.mark.qemu
@pytest.mark.slow
def test_runner_side_locust_over_a_live_migration(
    embedded_cloud: Any, embedded_conn: Any, full_server: tuple[Any, ServerInfo], tmp_path: Path
) -> None:
    _, server = full_server
    clock = CaseClock()
    probe = LocustProbe(
        LocustLoad(users=2, spawn_rate=2, where="runner"), embedded_cloud.guest_netns, tmp_path
    )
    migration, mid, quiet, noise_end = _over_a_migration(probe, embedded_conn, server, clock)
    stats = probe.case_stats()
    assert stats is not None and stats["servers"][server.id]["error"] is None, stats
    entry = stats["servers"][server.id]
    assert entry["requests"] > 50 and stats["total"]["locust_reported"]["requests"] > 50, stats["total"]
    fig = _check_migration_figure(probe, migration, server)
    qemu = _qemu_figures(embedded_cloud, migration, mid)
    floor = probe.noise_floor(quiet, noise_end)
    cost = probe.cost()
    assert cost is not None and cost.cpu_s > 0
    print(
        f"\nrunner Locust: downtime {fig.downtime_ms} ms, resolution {fig.resolution_ms} ms, brownout "
        f"{fig.brownout_ms} ms, spike {fig.details['latency_spike_ms']} ms, noise floor {floor} ms; "
        f"QEMU downtime {qemu['qemu_downtime_ms']} ms, heartbeat {qemu['heartbeat_ms']} ms; "
        f"requests {entry['requests']}, failures {entry['failures']}, cost {cost}"
    )


def test_per_name_percentiles_come_from_the_records() -> None:
    """Per request name: counts, and nearest-rank percentiles of the successful requests only."""
    reqs = [Req(0.1 * i, float(i), True, "GET /") for i in range(1, 101)]
    reqs += [Req(20.0, 5.0, True, "POST /echo"), Req(21.0, 900.0, False, "POST /echo")]
    s = summarize_requests(reqs)
    assert s.by_name == {
        "GET /": {
            "requests": 100,
            "failures": 0,
            "p50_ms": 50.0,
            "p95_ms": 95.0,
            "p99_ms": 99.0,
            "max_ms": 100.0,
        },
        "POST /echo": {
            "requests": 2,
            "failures": 1,
            "p50_ms": 5.0,
            "p95_ms": 5.0,
            "p99_ms": 5.0,
            "max_ms": 5.0,
        },
    }
    assert summarize_requests([Req(0.1, 1.0, True)]).by_name is None, "records without names"


def test_a_guest_clock_running_ahead_is_refused() -> None:
    """A guest clock that gains on the runner's (seen under TCG on an overloaded host: ~37× real
    time) cannot be mapped; a clock that only stands still while the VM is stopped can."""
    fast = [ClockSample(t, 100.0 + 2.0 * t, 0.004) for t in (x * 0.25 for x in range(41))]
    reason = ClockMap(fast).ran_ahead()
    assert reason is not None and "ran ahead of the runner's by" in reason and "over 10 s" in reason

    def stopping(t: float) -> float:  # stands still 0.4 s from 5.005 s
        return 100.0 + t - min(0.4, max(0.0, t - 5.005))

    times = [x * 0.25 for x in range(41)]
    stopped = [ClockSample(t, stopping(t), 0.004) for t in times if not 5.005 < t < 5.405]
    cmap = ClockMap(stopped)
    assert len(cmap.steps) == 1 and cmap.ran_ahead() is None
