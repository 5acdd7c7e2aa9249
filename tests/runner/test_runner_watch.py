"""The migration watcher against an in-memory Nova: outcomes, policies, stop requests."""

from __future__ import annotations

import threading

from fakenova import FakeNova, FakeServer

from novamig.results import MigrationRecord
from novamig.runner.clock import CaseClock
from novamig.runner.watch import MigrationWatcher, Policy

POLL = 0.005


def watch(
    nova: FakeNova,
    policy: Policy | None = None,
    stop: threading.Event | None = None,
    destination: str | None = None,
) -> MigrationRecord:
    nova.servers["s1"] = FakeServer("s1", "srv", "compute1")
    return MigrationWatcher(
        nova,
        CaseClock(),
        server_id="s1",
        server_name="srv",
        source_host="compute1",
        destination=destination,
        block_migration="auto",
        policy=policy or Policy(timeout_s=10),
        stop=stop or threading.Event(),
        poll_s=POLL,
        fast_poll_s=POLL,
    ).run()


def whats(record: MigrationRecord) -> list[str]:
    return [e.what for e in record.events]


def test_completed_with_duration_and_progress() -> None:
    nova = FakeNova()
    record = watch(nova, destination="compute2")
    assert nova.requests == [("s1", "compute2")]
    assert record.status == "completed"
    assert record.dest_host == "compute2"
    assert record.duration_s is not None and record.finished_at is not None
    assert abs(record.finished_at - record.requested_at - record.duration_s) < 1e-6
    # the host switches one phase before the record completes: the duration includes that phase
    assert record.duration_s >= 3 * nova.phase_s + nova.running_s
    statuses = [p.status for p in record.progress]
    assert statuses[0] == "accepted" and statuses[-1] == "completed"
    assert any(p.memory_remaining_bytes is not None for p in record.progress)
    assert any(w.startswith("phases: ") for w in whats(record))


def test_abort_policy_gives_cancelled() -> None:
    nova = FakeNova(stuck=True)
    record = watch(nova, Policy(abort_after_s=0.1, timeout_s=10))
    assert record.status == "cancelled"
    assert record.duration_s is None
    assert len(nova.aborts) == 1
    assert "aborted (policy)" in whats(record)


def test_timeout_aborts_and_records_timeout() -> None:
    nova = FakeNova(stuck=True)
    record = watch(nova, Policy(timeout_s=0.15))
    assert record.status == "timeout"
    assert len(nova.aborts) == 1


def test_post_copy_policy_force_completes_once() -> None:
    nova = FakeNova(stuck=True)
    record = watch(nova, Policy(post_copy_after_s=0.1, timeout_s=10))
    assert record.status == "completed"
    assert len(nova.force_completes) == 1
    assert any(p.status == "running (post-copy)" for p in record.progress)


def test_abort_waits_until_the_migration_can_be_aborted() -> None:
    # abort wanted at once, while the record is still `accepted` (not abortable): retried later
    nova = FakeNova(stuck=True, phase_s=0.05)
    record = watch(nova, Policy(abort_after_s=0.001, timeout_s=10))
    assert record.status == "cancelled"
    assert any(w.startswith("abort not possible yet") for w in whats(record))


def test_error_and_refusal_are_errors() -> None:
    assert watch(FakeNova(fail=True)).status == "error"
    refused = watch(FakeNova(refuse=True))
    assert refused.status == "error"
    assert any("request refused" in w for w in whats(refused))


def test_stop_request_aborts_the_migration_in_flight() -> None:
    nova = FakeNova(stuck=True)
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    record = watch(nova, Policy(timeout_s=10), stop=stop)
    assert record.status == "cancelled"
    assert "aborted (interrupted)" in whats(record)
