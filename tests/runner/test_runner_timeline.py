"""Duration and phases are computed from a recorded status timeline, as Nova really shows it."""

from __future__ import annotations

from novamig.runner.timeline import Observation, Timeline, phases_from


def obs(
    t: float,
    mig: str | None,
    server: str = "MIGRATING",
    host: str = "a",
    task: str | None = "migrating",
    **kw: int,
) -> Observation:
    return Observation(
        t=t, server_status=server, task_state=task, host=host, migration_status=mig, dest_host="b", **kw
    )


def recorded() -> Timeline:
    tl = Timeline(requested_at=1.0, source_host="a")
    for o in [
        obs(1.2, "accepted"),
        obs(1.5, "queued"),
        obs(2.0, "preparing"),
        obs(2.5, "running", memory_total_bytes=100, memory_remaining_bytes=80, memory_processed_bytes=20),
        obs(3.0, "running", memory_total_bytes=100, memory_remaining_bytes=5, memory_processed_bytes=95),
        obs(3.2, "running", host="b"),  # host switched, record still running
        obs(3.4, "completed", host="b"),  # completed, server still MIGRATING
        obs(3.6, "completed", server="ACTIVE", host="b", task=None),
        obs(3.8, "completed", server="ACTIVE", host="b", task=None),
    ]:
        tl.observe(o)
    return tl


def test_duration_ends_when_completed_and_active_on_destination() -> None:
    tl = recorded()
    assert tl.arrived_at() == 3.6
    assert tl.duration_s() == 2.6  # not 2.2 (host change) nor 2.4 (record completed)


def test_phases_partition_the_migration() -> None:
    phases = recorded().phases_s()
    assert phases == {
        "request": 0.2,
        "accepted": 0.3,
        "queued": 0.5,
        "preparing": 0.5,
        "running": 0.9,
        "settle": 0.2,
    }
    assert abs(sum(phases.values()) - 2.6) < 1e-9


def test_transitions_are_events_and_memory_changes_are_progress() -> None:
    tl = recorded()
    whats = [e.what for e in tl.events]
    assert "migration: accepted → queued" in whats
    assert "host: a → b" in whats
    assert "ACTIVE on destination b" in whats
    assert sum(1 for w in whats if w.startswith("ACTIVE on destination")) == 1
    running = [p for p in tl.progress if p.status == "running"]
    assert [p.memory_remaining_bytes for p in running] == [80, 5, None]


def test_near_end_speeds_up_polling() -> None:
    tl = Timeline(requested_at=0.0, source_host="a")
    tl.observe(obs(0.1, "running", memory_total_bytes=100, memory_remaining_bytes=50))
    assert not tl.near_end()
    tl.observe(obs(0.2, "running", memory_total_bytes=100, memory_remaining_bytes=5))
    assert tl.near_end()


def test_no_duration_without_arrival() -> None:
    tl = Timeline(requested_at=0.0, source_host="a")
    tl.observe(obs(0.5, "running"))
    tl.observe(obs(1.0, "cancelled", server="ACTIVE", host="a", task=None))
    assert tl.duration_s() is None
    assert phases_from(0.0, tl.observations) == {"request": 0.5, "running": 0.5}
