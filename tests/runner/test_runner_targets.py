from __future__ import annotations

import collections

import pytest

from novamig.runner.targets import Target, TargetChooser, TargetError

HOSTS = ["c1", "c2", "c3"]


def test_parse_forms() -> None:
    assert Target.parse("auto") == Target("auto")
    assert Target.parse("round-robin") == Target("round-robin")
    assert Target.parse("drain:c2") == Target("drain", "c2")
    assert Target.parse("c3") == Target("host", "c3")
    with pytest.raises(TargetError):
        Target.parse("drain:")


def test_auto_leaves_the_choice_to_the_scheduler() -> None:
    chooser = TargetChooser(Target.parse("auto"), HOSTS)
    assert chooser.boot_host() is None
    assert chooser.destination("c1") is None


def test_host_target_boots_elsewhere_and_goes_there() -> None:
    chooser = TargetChooser(Target.parse("c2"), HOSTS)
    assert chooser.boot_host() == "c1"
    assert chooser.destination("c1") == "c2"
    # Already on the target: the scheduler picks (never a request to the same host).
    assert chooser.destination("c2", previous="c1") is None


def test_ping_pong_goes_back_to_where_the_server_came_from() -> None:
    chooser = TargetChooser(Target.parse("c2"), HOSTS, ping_pong=True)
    current, previous, visited = "c1", None, []
    for _ in range(4):
        dest = chooser.destination(current, previous)
        assert dest is not None
        previous, current = current, dest
        visited.append(dest)
    assert visited == ["c2", "c1", "c2", "c1"]


def test_round_robin_cycles_and_never_picks_the_current_host() -> None:
    chooser = TargetChooser(Target.parse("round-robin"), HOSTS)
    picks = [chooser.destination("c1") for _ in range(6)]
    assert "c1" not in picks
    assert collections.Counter(picks) == {"c2": 3, "c3": 3}
    # shared cycle: servers on different hosts spread over all of them
    other = TargetChooser(Target.parse("round-robin"), HOSTS)
    assert [other.destination(h) for h in ("c3", "c3", "c3")] == ["c1", "c2", "c1"]


def test_drain_boots_on_the_host_and_migrates_once_to_the_scheduler_choice() -> None:
    chooser = TargetChooser(Target.parse("drain:c3"), HOSTS)
    assert chooser.boot_host() == "c3"
    assert chooser.migrations_per_server(5) == 1
    assert chooser.destination("c3") is None


def test_unknown_host_and_single_host_are_refused() -> None:
    with pytest.raises(TargetError, match="not one of the usable hosts"):
        TargetChooser(Target.parse("drain:c9"), HOSTS)
    with pytest.raises(TargetError, match=">= 2 compute hosts"):
        TargetChooser(Target.parse("auto"), ["c1"])
    with pytest.raises(TargetError, match="ping-pong"):
        TargetChooser(Target.parse("round-robin"), HOSTS, ping_pong=True)
