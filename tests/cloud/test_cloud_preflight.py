from __future__ import annotations

from novamig.cloud.compute import ComputeService, migration_from_json, server_from_json
from novamig.cloud.preflight import Needs, check_hosts, check_quota
from novamig.cloud.resources import FlavorRequest, resource_name, run_tag


def test_hosts_need_two_enabled_and_up() -> None:
    services = [
        ComputeService("c1", "enabled", "up"),
        ComputeService("c2", "disabled", "up"),
        ComputeService("c3", "enabled", "down"),
    ]
    usable, problems = check_hosts(services, ())
    assert usable == ["c1"]
    assert problems and "c2 (disabled/up)" in problems[0] and "c3 (enabled/down)" in problems[0]
    services.append(ComputeService("c4", "enabled", "up"))
    usable, problems = check_hosts(services, ("c4",))
    assert usable == ["c1", "c4"] and problems == []
    _, problems = check_hosts(services, ("c3",))
    assert problems == ["host 'c3' named by the scenario is not an enabled, up compute service"]


def test_quota_room() -> None:
    needs = Needs(servers=3, images=("i",), flavors=(FlavorRequest(2, 512, 1),))
    limits = {
        "absolute": {
            "maxTotalInstances": 10,
            "totalInstancesUsed": 8,
            "maxTotalCores": -1,
            "maxTotalRAMSize": 1024,
            "totalRAMUsed": 0,
        }
    }
    assert check_quota(limits, needs) == [
        "quota: instances needed 3, room 2",
        "quota: RAM (MB) needed 1536, room 1024",
    ]
    assert check_quota({"absolute": {}}, needs) == []


def test_names_and_tags() -> None:
    assert resource_name("ab12cd", "c1", "s0") == "novamig-ab12cd-c1-s0"
    assert run_tag("ab12cd") == "novamig-run-ab12cd"
    assert len(run_tag("ab12cd")) <= 60  # Nova's tag limit


def test_api_records_are_read_field_by_field() -> None:
    m = migration_from_json(
        {
            "id": 7,
            "status": "running",
            "source_compute": "a",
            "dest_compute": "b",
            "memory_total_bytes": 10,
            "memory_remaining_bytes": 4,
            "memory_processed_bytes": 6,
        }
    )
    assert (m.id, m.status, m.dest_host, m.memory_remaining_bytes, m.final) == (7, "running", "b", 4, False)
    s = server_from_json(
        {
            "id": "x",
            "name": "n",
            "status": "ERROR",
            "OS-EXT-STS:task_state": None,
            "OS-EXT-SRV-ATTR:host": "a",
            "fault": {"message": "No valid host"},
        }
    )
    assert (s.host, s.fault) == ("a", "No valid host")
