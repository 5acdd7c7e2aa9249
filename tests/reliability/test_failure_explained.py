"""What a failed migration's record says, from Nova's answers as Nova writes them.

Fast tier, no cloud: Nova's instance action JSON in the shape its API returns (an admin's view at
2.84: events with ``host``, ``details`` and ``traceback``), and the server states after a failure
that decide whether the server is lost. The cloud end of both is in the slow tests
(`test_api_faults.py` for a compute service down, `test_qemu_faults.py` for a killed QEMU).
"""

from __future__ import annotations

from novamig.cloud.compute import ServerState, server_from_json
from novamig.cloud.instance_actions import REASON_MAX_CHARS, action_from_json
from novamig.results import MigrationRecord, ServerAfter
from novamig.runner.migration_failure import lost_because

TRACEBACK = """Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/nova/conductor/manager.py", line 513, in _live_migrate
    task.execute()
nova.exception.ComputeServiceUnavailable: Compute service of compute2 is unavailable at this time.
"""


def _event(name: str, result: str, start: str, **extra: str) -> dict[str, str]:
    return {"event": name, "result": result, "start_time": start, "finish_time": start, **extra}


def test_the_reason_is_the_first_failed_step_in_the_order_they_ran() -> None:
    action = action_from_json(
        {
            "action": "live-migration",
            "request_id": "req-1",
            "message": "Error",
            "events": [  # listed out of order, as Nova may
                _event("compute_rollback_live_migration_at_destination", "Error", "2026-12-06T04:00:03"),
                _event("conductor_live_migrate_instance", "Error", "2026-12-06T04:00:01",
                       host="controller", traceback=TRACEBACK),
                _event("compute_check_can_live_migrate_source", "Success", "2026-12-06T04:00:00"),
            ],
        }
    )  # fmt: skip
    assert [e.event for e in action.events] == [
        "compute_check_can_live_migrate_source",
        "conductor_live_migrate_instance",
        "compute_rollback_live_migration_at_destination",
    ]
    assert action.reason() == (
        "conductor_live_migrate_instance on controller: nova.exception.ComputeServiceUnavailable: "
        "Compute service of compute2 is unavailable at this time."
    )


def test_details_win_over_the_traceback_and_a_reason_stays_one_short_line() -> None:
    short = action_from_json(
        {
            "events": [
                _event("compute_pre_live_migration", "Error", "t", details="Disk full", traceback=TRACEBACK)
            ]
        }
    )
    assert short.reason() == "compute_pre_live_migration: Disk full"
    long = action_from_json({"events": [_event("e", "Error", "t", details="x\ny " * 400)]})
    reason = long.reason()
    assert reason is not None and "\n" not in reason and len(reason) == REASON_MAX_CHARS
    fine = action_from_json({"events": [_event("compute_live_migration", "Success", "t")]})
    assert fine.reason() is None  # a rollback without an exception: Nova has no reason to give


def _server(status: str, power_state: int | None) -> ServerState:
    return server_from_json(
        {
            "id": "s",
            "status": status,
            "OS-EXT-SRV-ATTR:host": "compute1",
            "OS-EXT-STS:power_state": power_state,
        }
    )


def test_a_server_is_lost_only_when_its_guest_no_longer_runs() -> None:
    active = _server("ACTIVE", 1)
    assert active.power_state == 1
    assert lost_because(active, "running", True) is None
    assert lost_because(active, "running", None) is None  # not asked: not lost on a guess
    assert lost_because(active, "running", False) == (
        "its guest no longer runs on compute1 (Nova still says running)"
    )
    assert lost_because(_server("ACTIVE", 4), "shutdown", None) == "Nova's power state is shutdown"
    assert lost_because(_server("ERROR", 1), "running", None) == "Nova has it ERROR"
    assert lost_because(_server("PAUSED", 3), "paused", None) is None  # paused is not lost


def test_the_failure_fields_are_written_only_when_set() -> None:
    record = MigrationRecord(server="s", source_host="compute1", status="error", requested_at=0.0)
    plain = record.model_dump(mode="json")
    assert not {"error", "server_after", "server_lost"} & set(plain)
    record.error = "Nova: x"
    record.server_after = ServerAfter(status="ACTIVE", host="compute1", guest_running=False)
    record.server_lost = True
    written = record.model_dump(mode="json")
    assert written["server_lost"] is True and written["server_after"]["guest_running"] is False
    assert MigrationRecord.model_validate(written) == record
