"""A known pause injected through the whole stack — Nova's pause/unpause API → conductor → compute
→ novamig's driver → QMP stop/cont — measured by the guest heartbeat and the network probe within
their stated error (resolution + noise floor)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from novamig.embedded.controller import EmbeddedCloud
from novamig.measure.contract import CaseClock, ServerInfo
from novamig.measure.network import NetworkProbe
from novamig.results import MigrationRecord

from .conftest import wait_for_status

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

PAUSE_S = 0.5
HEARTBEAT_RESUME_OFFSET_MS = 25.0  # see the last assertion
HZ = 500


def _pause_figures(cloud: EmbeddedCloud, server_id: str) -> dict[str, Any]:
    path = cloud.workdir / "pauses" / f"{server_id}.jsonl"
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = path.read_text().splitlines()
    assert len(lines) == 1, lines
    figures: dict[str, Any] = json.loads(lines[0])
    return figures


class HostLoad(Protocol):
    """The `scheduling_jitter` fixture (tests/conftest.py): the worst stall of a 1 ms timer thread."""

    worst_ms: float


def test_a_nova_pause_is_measured_by_the_guest_and_network_probes(
    embedded_cloud: EmbeddedCloud,
    embedded_conn: Any,
    boot_server: Callable[..., Any],
    tmp_path: Path,
    scheduling_jitter: HostLoad,
) -> None:
    if embedded_cloud.guest_netns is None:
        pytest.skip("the guests' namespace needs root")
    server = boot_server(name="novamig-pause")
    address = next(a["addr"] for net in server.addresses.values() for a in net if a["version"] == 4)
    clock = CaseClock()
    probe = NetworkProbe(HZ, embedded_cloud.guest_netns, tmp_path / "network")
    probe.start([ServerInfo(server.id, server.name, server.compute_host, address)], clock)
    try:
        time.sleep(3.0)  # the noise window: nothing happens to the guest
        quiet_end = clock.now()
        before = clock.now()
        embedded_conn.compute.pause_server(server)
        wait_for_status(embedded_conn, server.id, "PAUSED")
        time.sleep(PAUSE_S)
        embedded_conn.compute.unpause_server(server)
        wait_for_status(embedded_conn, server.id, "ACTIVE")
        time.sleep(1.0)
        after = clock.now()
    finally:
        probe.stop()

    known = _pause_figures(embedded_cloud, server.id)
    noise = probe.noise_floor(0.5, quiet_end)
    assert noise is not None
    # The stop and the cont commands each took a QMP round trip: the pause is known within that.
    # A round trip is a few ms, plus at most one stall of the host (`stop` returns once the vCPU
    # threads have stopped, and the driver reads the answer in the embedded cloud's busy process):
    # the worst stall this run measured bounds it — the noise floors of the quiet window, or the
    # worst stall of a thread of this process during the test (the quiet window alone fell short
    # on a loaded host: `stop` 67 ms and `cont` 107 ms beside floors of 58 and 61 ms). A driver
    # that stamps a command late by more than that fails here.
    stall_ms = max(noise, known["heartbeat_noise_floor_ms"] or 0.0, scheduling_jitter.worst_ms)
    spread_ms = known["pause_max_ms"] - known["pause_min_ms"]
    assert spread_ms < 50 + 2 * stall_ms, (known, noise, scheduling_jitter.worst_ms)
    assert known["pause_min_ms"] >= PAUSE_S * 1000

    window = MigrationRecord(
        server=server.name, source_host="-", status="completed", requested_at=before, finished_at=after
    )
    fig = probe.figure(window, server.id, None)
    assert fig.downtime_ms is not None and fig.resolution_ms is not None, fig.reason
    # the guest's heartbeat, read by the driver over virtio-serial: 1 ms beats
    beat = known["heartbeat_gap_ms"]
    assert beat is not None, known
    # The network gap spans the stop, plus up to one probe period on each side and what the
    # guest's and the host's scheduling add (the noise floor). Lower side: never much shorter than
    # STOP→RESUME — shorter only by the prober's lateness in stamping the last reply before the
    # stop (a late stamp shortens the gap), which the noise floor, beyond one period, bounds.
    # Upper side: the guest is dark from STOP until it runs again, a few ms after QEMU's RESUME on
    # a loaded host (it once answered 1.7 ms past a STOP→RESUME bound); its own heartbeat gap,
    # less one beat, shows that wake-up, so the upper side is judged against it.
    # The heartbeat itself is bounded by the last assertion, so this bound cannot drift.
    guest_dark_ms = max(known["pause_max_ms"], beat - 1.0)
    lo = known["pause_min_ms"] - max(fig.resolution_ms, noise)
    hi = guest_dark_ms + 2 * fig.resolution_ms + max(noise, known["heartbeat_noise_floor_ms"] or 0.0)
    assert lo <= fig.downtime_ms <= hi, (fig.downtime_ms, known, noise)

    print(
        f"pause {known['pause_min_ms']}–{known['pause_max_ms']} ms; network {fig.downtime_ms} ms; "
        f"heartbeat {beat} ms; noise floors: network {noise} ms, "
        f"heartbeat {known['heartbeat_noise_floor_ms']} ms; "
        f"worst thread stall {scheduling_jitter.worst_ms:.1f} ms"
    )
    beat_noise = known["heartbeat_noise_floor_ms"]
    assert beat_noise is not None, known
    # Within its resolution plus the worse noise floor, plus a known offset: under TCG the first
    # beat after `cont` comes 9–18 ms after the command returned (5 runs, quiet and loaded; the
    # noise floors then were 3–55 ms) while the echo thread answers within 1–7 ms. Earlier runs
    # measured the same offset after a migration's RESUME (18–99 ms, the destination also
    # translating the guest's code afresh). Allowed here: 25 ms. Below: one beat, and the driver's
    # lateness in reading the last beat before the stop (its noise floor beyond one beat).
    floor = max(noise, beat_noise)
    hi_beat = known["pause_max_ms"] + 1.0 + floor + HEARTBEAT_RESUME_OFFSET_MS
    lo_beat = known["pause_min_ms"] - max(1.0, beat_noise)
    assert lo_beat <= beat <= hi_beat, (beat, known, floor)
