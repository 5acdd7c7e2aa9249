"""Why the vantage points of a migration differ: a known cause when a rule fits, "unexplained" when
none does, nothing when the figures agree within their resolutions and noise floors."""

from __future__ import annotations

import datetime as dt
from typing import Any

from novamig.report.explain import explain
from novamig.report.render import render_index
from novamig.results import (
    CaseResult,
    EchoDetails,
    Environment,
    Event,
    HypervisorFigures,
    LocustDetails,
    MigrationRecord,
    PerProbe,
    ProbeDetails,
    Results,
)

CASE = CaseResult(id="c#r1", passed=True, noise_floor_ms=PerProbe(guest=12.0, network=13.0, locust=40.0))


def _m(downtime: dict[str, float], **extra: Any) -> MigrationRecord:
    return MigrationRecord(
        server="s0",
        source_host="h1",
        dest_host="h2",
        status="completed",
        requested_at=1.0,
        finished_at=5.0,
        duration_s=4.0,
        downtime_ms=PerProbe(**downtime),
        resolution_ms=PerProbe(guest=1.0, network=2.0, locust=10.0, hypervisor=1.0),
        **extra,
    )


def test_figures_within_resolutions_and_noise_floors_agree() -> None:
    # guest vs network: 27 ms apart, against 1 + 2 + 12 + 13 = 28 ms they cannot resolve
    assert explain(_m({"guest": 117.0, "network": 144.0}), CASE) == []
    assert len(explain(_m({"guest": 117.0, "network": 146.0}), CASE)) == 1


def test_qemu_below_the_others_is_source_side_only_with_stop_resume() -> None:
    hv = HypervisorFigures(stop_resume_ms=18.0)
    lines = explain(_m({"guest": 80.0, "network": 75.0, "hypervisor": 15.0}, hypervisor=hv), CASE)
    assert len(lines) == 1
    assert lines[0].startswith(
        "QEMU's 15 ms is below guest 80 ms, network 75 ms: QEMU measures on the source"
    )
    assert "STOP→RESUME across both hosts: 18 ms; the rest comes after the resume" in lines[0]
    near = explain(
        _m({"guest": 40.0, "hypervisor": 15.0}, hypervisor=HypervisorFigures(stop_resume_ms=35)), CASE
    )
    assert near and "STOP→RESUME across both hosts: 35 ms)" in near[0], "the resume accounts for it"


def test_qemu_above_the_others_is_unexplained() -> None:
    lines = explain(_m({"network": 35.0, "hypervisor": 136.0}), CASE)
    assert lines == [
        "QEMU's 136 ms is above network 35 ms, beyond their resolutions and noise floors: unexplained "
        "(QEMU's figure leaves out the resume, so it is usually the smallest)."
    ]


def test_post_copy_faults_explain_a_guest_figure_above_the_network() -> None:
    m = _m(
        {"guest": 400.0, "network": 150.0},
        hypervisor=HypervisorFigures(postcopy=True, postcopy_blocktime_ms=230.0),
    )
    (line,) = explain(m, CASE)
    assert line.startswith("guest 400 ms is above network 150 ms: post-copy:")
    assert "(vCPUs blocked 230 ms in all)" in line
    from_events = _m(
        {"guest": 400.0, "network": 150.0}, events=[Event(t=3.0, what="post-copy switch requested")]
    )
    assert "post-copy" in explain(from_events, CASE)[0]


def test_auto_converge_explains_a_guest_figure_above_the_network() -> None:
    m = _m({"guest": 300.0, "network": 120.0}, hypervisor=HypervisorFigures(throttle_max_percent=99))
    (line,) = explain(m, CASE)
    assert "auto-converge throttled the vCPUs up to 99 % before the stop" in line


def test_locust_in_the_guest_and_on_the_runner() -> None:
    inside = ProbeDetails(locust=LocustDetails(where="guest", guest_clock_lost_ms=60.0))
    lines = explain(_m({"guest": 127.0, "network": 144.0, "locust": 747.0}, details=inside), CASE)
    assert len(lines) == 2  # locust against guest, and against network
    assert all(
        "Locust runs inside the guest" in line and "60 ms of it is the guest clock's step" in line
        for line in lines
    )
    runner = ProbeDetails(locust=LocustDetails(where="runner"))
    (line,) = explain(_m({"network": 100.0, "locust": 361.0}, details=runner), CASE)
    assert "retransmission timeout (at least 200 ms) — a likely cause, not verified" in line


def test_no_rule_fits_is_said_plainly() -> None:
    (line,) = explain(_m({"guest": 100.0, "network": 300.0}), CASE)
    assert line == (
        "network 300 ms is above guest 100 ms, beyond the 28 ms of their resolutions and noise floors: "
        "unexplained (no known cause fits)."
    )


def test_the_page_says_why_per_migration_or_that_they_agree() -> None:
    env = Environment(cloud="c", novamig_version="0", started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    differ = CASE.model_copy(update={"id": "d#r1", "migrations": [_m({"guest": 100.0, "network": 300.0})]})
    agree = CASE.model_copy(update={"id": "a#r1", "migrations": [_m({"guest": 100.0, "network": 110.0})]})
    html = render_index(Results(scenario={"name": "x"}, environment=env, cases=[differ, agree], passed=True))
    assert "<h4>Why the vantage points differ</h4>" in html
    assert "<li>#1 s0: network 300 ms is above guest 100 ms" in html
    assert html.count("The vantage points agree within their resolutions and noise floors.") == 1


def test_network_above_the_heartbeat_is_the_echo_thread_within_its_slowest_round_trip() -> None:
    # guest 138, network 330 (a real locust-web migration): 192 ms apart; the window's slowest echo
    # took 132 ms, and 1 + 2 + 12 + 13 = 28 ms cannot be resolved: 132 + 0.4 + 28 < 192 ...
    beyond = ProbeDetails(network=EchoDetails(protocol="udp", rtt_max_ms=132.0))
    (line,) = explain(_m({"guest": 138.0, "network": 330.0}, details=beyond), CASE)
    assert line == (
        "network 330 ms is above guest 138 ms by 192 ms, more than the window's slowest echo (132 ms), "
        "the bridge's MAC move (0.4 ms at most) and the 28 ms of their resolutions and noise floors "
        "together: unexplained (no known cause fits)."
    )
    # ... while an echo that answered 170 ms late in the window covers it
    within = ProbeDetails(network=EchoDetails(protocol="udp", rtt_max_ms=170.0))
    (line,) = explain(_m({"guest": 138.0, "network": 330.0}, details=within), CASE)
    assert line.startswith("network 330 ms is above guest 138 ms: the echo is answered by another guest")
    assert "as late as 170 ms in this window, which covers the 192 ms" in line
    assert "MAC move after QEMU's announce is 0.1–0.4 ms" in line
    # the heartbeat above the network is not this rule's: no echo-thread sentence for it
    (other,) = explain(_m({"guest": 330.0, "network": 138.0}, details=within), CASE)
    assert "echo is answered" not in other and other.endswith("unexplained (no known cause fits).")


def test_locust_above_the_network_is_told_by_its_own_breakdown() -> None:
    """Figures of a real locust-web migration: Locust 1037 ms, network 120 ms, a request outstanding
    the whole gap, which began 565 ms before the network's blackout and ended 351 ms after it."""
    locust = LocustDetails(where="guest", blackout_s=[127.269, 128.305])
    for key, value in (
        ("longest_gap_ms", 1036.0),
        ("waiting_ms", 1036.0),
        ("failing_ms", 0.0),
        ("idle_ms", 0.0),
    ):
        locust[key] = value
    details = ProbeDetails(locust=locust, network=EchoDetails(gap_from_s=127.834, gap_to_s=127.954))
    (line,) = explain(_m({"network": 120.0, "locust": 1030.0}, details=details), CASE)
    assert line == (
        "locust 1030 ms is above network 120 ms: no request to the web application inside the guest was "
        "answered for 1036 ms: for 1036 ms of it a request was outstanding (the service answering late); "
        "it began 565 ms before the network's blackout and ended 351 ms after it; the application ran too "
        "slowly to answer around the switchover."
    )
    # a gap away from the blackout, mostly idle, with failures: said as such
    locust["blackout_s"], locust["waiting_ms"], locust["failing_ms"], locust["idle_ms"] = (
        [120.0, 121.0],
        100.0,
        300.0,
        600.0,
    )
    (line,) = explain(_m({"network": 120.0, "locust": 1030.0}, details=details), CASE)
    assert "for 300 ms only failing requests (time-outs, resets, reconnects)" in line
    assert "for 600 ms none (Locust's own scheduling, not the service)" in line
    assert "is not at the network's blackout (127.83–127.95 s)" in line
    assert "too slowly" not in line


def test_locust_above_two_figures_is_one_sentence_placed_against_the_network() -> None:
    locust = LocustDetails(where="runner", blackout_s=[115.67, 117.12])
    for key, value in (
        ("longest_gap_ms", 1457.0),
        ("waiting_ms", 1457.0),
        ("failing_ms", 0.0),
        ("idle_ms", 0.0),
    ):
        locust[key] = value
    details = ProbeDetails(locust=locust, network=EchoDetails(gap_from_s=111.83, gap_to_s=112.04))
    lines = explain(_m({"guest": 190.0, "network": 208.0, "locust": 1450.0}, details=details), CASE)
    assert len(lines) == 1, lines  # guest and network agree; Locust above both, said once
    assert lines[0].startswith(
        "locust 1450 ms is above guest 190 ms and network 208 ms: no request to the web application was "
        "answered for 1457 ms"
    )
    assert "is not at the network's blackout (111.83–112.04 s)" in lines[0]
    assert lines[0].endswith("the application ran too slowly to answer.")
