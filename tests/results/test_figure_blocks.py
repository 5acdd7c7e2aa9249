"""results.json's figure blocks (``details``, ``hypervisor``, ``locust``) are typed, and read back
exactly as they were written.

``data/results-v1.json`` was written by novamig before these blocks had models: a real smoke run on
the embedded cloud (four migrations, hypervisor, guest and network figures) with, on its first
migration and its case, what the Locust probe wrote for a real guest-side Locust run against the
web application on loopback (paused 0.6 s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from novamig.results import (
    BeatDetails,
    CaseResult,
    EchoDetails,
    HypervisorFigures,
    LocustDetails,
    LocustStats,
    MigrationRecord,
    ProbeDetails,
    load_results,
    write_results,
)

OLD = Path(__file__).parent / "data" / "results-v1.json"


def test_a_file_written_before_round_trips_byte_for_byte(tmp_path: Path) -> None:
    results = load_results(OLD)
    assert results.to_json() == OLD.read_text()
    write_results(results, tmp_path / "results.json")
    assert (tmp_path / "results.json").read_bytes() == OLD.read_bytes()


def test_a_file_written_before_reads_as_typed_fields() -> None:
    case = load_results(OLD).cases[0]
    m = case.migrations[0]
    assert isinstance(m.hypervisor, HypervisorFigures)
    assert m.hypervisor.status == "completed" and m.hypervisor.postcopy is False
    assert m.hypervisor.bytes is not None and m.hypervisor.bytes.total == 81543680
    assert m.hypervisor.heartbeat is not None and m.hypervisor.heartbeat.hz == 1000
    assert m.hypervisor.integrity is not None and m.hypervisor.integrity.ok is True
    assert m.hypervisor.downtime_steps is not None and m.hypervisor.downtime_steps[0] == [0, 50]
    assert isinstance(m.details.network, EchoDetails) and m.details.network.protocol == "udp"
    assert m.details.network.rtt_p50_ms is not None and m.details.network.replies == 2249
    assert isinstance(m.details.locust, LocustDetails) and m.details.locust.where == "guest"
    assert m.details.locust.blackout_s == [5.01, 5.617] and m.details.locust.open_ended is False
    assert m.details.guest is None  # this cloud's guest probe wrote no details
    locust = case.locust
    assert isinstance(locust, LocustStats) and locust.where == "guest"
    assert locust.total is not None and locust.total.latency_ms is not None
    assert locust.total.latency_ms.p95 == 1.005 and locust.total.failure_ratio == 0.0
    assert locust.servers is not None and locust.servers["srv-1"].clock is not None
    assert locust.servers["srv-1"].name == "one"


def test_every_block_keeps_its_keys_as_written() -> None:
    """Order, absent keys (not turned into nulls), nulls, ints (not turned into floats), extras."""
    raw = json.loads(OLD.read_text())
    results = load_results(OLD)
    again = json.loads(results.to_json())
    for before, after in zip(raw["cases"][0]["migrations"], again["cases"][0]["migrations"], strict=True):
        for key in ("details", "hypervisor"):
            assert json.dumps(after[key]) == json.dumps(before[key])
    assert json.dumps(again["cases"][0]["locust"]) == json.dumps(raw["cases"][0]["locust"])
    m = results.cases[0].migrations[0]
    assert m.details.locust is not None
    assert json.dumps(m.details.locust.guest_clock_lost_ms) == "0"  # written as 0, not 0.0
    assert m.hypervisor is not None and m.hypervisor.postcopy_blocktime_ms is None
    assert "postcopy_blocktime_ms" in m.hypervisor  # a null that was written stays written


def _record(**kw: Any) -> MigrationRecord:
    return MigrationRecord(server="s", source_host="h1", status="completed", requested_at=1.0, **kw)


def test_blocks_a_probe_writes_are_typed_on_assignment() -> None:
    """What the runner does with a probe's figure: plain dicts in, typed blocks out."""
    record = _record()
    assert record.model_dump()["details"] == {} and record.hypervisor is None
    record.details["network"] = {"address": "10.0.0.5", "replies": 10, "rtt_p50_ms": 0.5}
    record.details["libvirt"] = {"time_elapsed_ms": 812}  # a probe without a model here
    record.hypervisor = HypervisorFigures.model_validate({"qemu_downtime_ms": 14, "integrity": {"ok": True}})
    assert isinstance(record.details.network, EchoDetails) and record.details.network.replies == 10
    assert record.details["libvirt"] == {"time_elapsed_ms": 812}
    assert record.hypervisor.integrity is not None and record.hypervisor.integrity.ok is True
    dumped = json.loads(record.model_dump_json())
    assert dumped["details"] == {
        "network": {"address": "10.0.0.5", "replies": 10, "rtt_p50_ms": 0.5},
        "libvirt": {"time_elapsed_ms": 812},
    }
    assert dumped["hypervisor"] == {"qemu_downtime_ms": 14, "integrity": {"ok": True}}


def test_an_attribute_set_later_is_written_and_unset_ones_are_not() -> None:
    beat = BeatDetails.model_validate({"via": "udp 10.0.0.1:5005", "beats": 900})
    beat.lost = 2
    beat["placed_by"] = "test"  # a probe-specific addition
    assert json.loads(beat.model_dump_json()) == {"via": "udp 10.0.0.1:5005", "beats": 900, "lost": 2,
                                                  "placed_by": "test"}  # fmt: skip
    assert "address" not in beat and beat.get("address", "none") == "none"
    with pytest.raises(KeyError):
        beat["address"]


def test_mapping_reads_by_results_json_names() -> None:
    details = ProbeDetails.model_validate({"guest": {"lost": 0, "gap_from_s": 1.25}})
    assert details["guest"]["lost"] == 0 and details.get("network") is None
    assert "guest" in details and "network" not in details and 3 not in details


def test_a_wrong_type_in_a_typed_key_is_refused() -> None:
    with pytest.raises(ValueError, match="replies"):
        EchoDetails.model_validate({"replies": "many"})
    with pytest.raises(ValueError, match="where"):
        LocustDetails.model_validate({"where": "moon"})


def test_locust_statistics_that_failed_hold_only_the_error() -> None:
    case = CaseResult(id="c#r1", passed=False, locust={"error": "KeyError: 'total'"})
    assert case.locust is not None and case.locust.error == "KeyError: 'total'"
    assert case.locust.total is None
    assert json.loads(case.model_dump_json())["locust"] == {"error": "KeyError: 'total'"}


def test_libvirt_figures_of_a_devstack_stay_as_written() -> None:
    """On a DevStack the hypervisor block is libvirt's job statistics: none of its keys are
    QEMU's, and all of them stay (as extras)."""
    written = {
        "job_type": "Completed",
        "operation": "Incoming migration",
        "time_elapsed_ms": 2210,
        "total_downtime_ms": 23,
        "other": {"Compression cache": "64.000 MiB"},
        "libvirt_host": "compute2",
        "format": "human",
    }
    record = _record(hypervisor=written)
    assert record.hypervisor is not None and record.hypervisor["total_downtime_ms"] == 23
    assert record.hypervisor.qemu_downtime_ms is None
    assert json.loads(record.model_dump_json())["hypervisor"] == written


def test_throttle_and_dirty_rate_series_and_locust_breakdown_round_trip(tmp_path: Path) -> None:
    """The fields added to schema 1 since the file above: QEMU's throttle and dirty-rate series
    with where they start on the case clock, and the Locust gap's breakdown — typed, and read
    back exactly as written (ints stay ints, order kept)."""
    results = load_results(OLD)
    m = results.cases[0].migrations[0]
    m.hypervisor = HypervisorFigures.model_validate(
        {
            "qemu_downtime_ms": 14,
            "throttle_max_percent": 50,
            "dirty_pages_rate_max": 8123,
            "throttle_series": [[0.05, 0], [2.1, 20], [3.2, 50], [4.0, 50]],
            "dirty_rate_series": [[0.05, 0], [1.1, 8123], [4.0, 4000]],
            "migrate_at_s": 3.118,
        }
    )
    m.details["locust"] = {
        "longest_gap_ms": 624.922,
        "normal_interval_ms": 5.405,
        "waiting_ms": 600.0,
        "failing_ms": 20.0,
        "idle_ms": 4.922,
        "where": "guest",
    }
    write_results(results, tmp_path / "results.json")
    again = load_results(tmp_path / "results.json")
    assert again.to_json() == results.to_json() == (tmp_path / "results.json").read_text()
    hv = again.cases[0].migrations[0].hypervisor
    assert hv is not None and hv.migrate_at_s == 3.118
    assert hv.throttle_series == [[0.05, 0], [2.1, 20], [3.2, 50], [4.0, 50]]
    assert hv.dirty_rate_series is not None and json.dumps(hv.dirty_rate_series[1]) == "[1.1, 8123]"
    locust = again.cases[0].migrations[0].details.locust
    assert locust is not None
    assert (locust.waiting_ms, locust.failing_ms, locust.idle_ms) == (600.0, 20.0, 4.922)
    assert (locust.longest_gap_ms, locust.normal_interval_ms) == (624.922, 5.405)
    raw = json.loads((tmp_path / "results.json").read_text())["cases"][0]["migrations"][0]
    assert list(raw["details"]["locust"]) == [
        "longest_gap_ms", "normal_interval_ms", "waiting_ms", "failing_ms", "idle_ms", "where"
    ]  # fmt: skip
    untouched = again.cases[0].migrations[1].hypervisor  # written before: no series, none invented
    assert untouched is not None and "throttle_series" not in untouched and untouched.throttle_series is None


def test_series_must_be_pairs_of_numbers() -> None:
    """A writer bug (a series of strings) is refused on load, not drawn as garbage."""
    with pytest.raises(ValueError, match="throttle_series"):
        HypervisorFigures.model_validate({"throttle_series": [["soon", "high"]]})
