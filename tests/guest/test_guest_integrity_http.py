"""The guest's own integrity verdict over HTTP (`GET /integrity`), and the probe that reads it.

A real tiny guest with the agent's HTTP port forwarded to loopback: the region is started over
virtio-serial (as the embedded driver or the user-data would), then asked over the network, as a
runner on a libvirt cloud asks it after each migration. The corruption is the agent's named
test-only fault (`?corrupt=<page>`, the same as the `integrity-corrupt` command).
"""

from __future__ import annotations

import time

import pytest

from novamig.hypervisor import QemuMachine, UserModeNetwork
from novamig.measure.contract import CaseClock, ServerInfo
from novamig.measure.guest_integrity import GuestAnswerError, GuestIntegrityProbe, ask_guest
from novamig.measure.sla import SlaSpec, evaluate
from novamig.results import MigrationRecord
from novamig.runner.probes import apply_figures

pytestmark = pytest.mark.qemu


def _ask(net: UserModeNetwork, query: str = "check=1") -> dict[str, object]:
    assert net.host_port is not None
    return ask_guest("127.0.0.1", port=net.host_port, query=query, timeout_s=15.0)


def _first_answer(net: UserModeNetwork, timeout_s: float = 60.0) -> dict[str, object]:
    """The agent's HTTP thread may start listening a moment after READY (under load, seconds):
    the first question is asked until it is answered."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _ask(net)
        except GuestAnswerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _migrated(at: float) -> MigrationRecord:
    return MigrationRecord(server="s0", source_host="h1", dest_host="h2", status="completed", requested_at=at)


def test_integrity_endpoint_checks_keeps_the_last_verdict_and_finds_a_corruption(
    guest: QemuMachine, guest_net: UserModeNetwork
) -> None:
    none = _first_answer(guest_net)
    assert none["region"] is False and none["ok"] is None and none["checks"] == 0, none
    started = guest.agent.integrity_start(4, pass_ms=100)
    assert started.ok, started.msg
    try:
        assert _ask(guest_net, query="")["ok"] is None  # started, not yet checked
        first = _ask(guest_net)
        assert first["region"] is True and first["ok"] is True and first["pages"] == 4 * 256, first
        last = _ask(guest_net, query="")
        assert last["checks"] == first["checks"] and last["generation"] == first["generation"]
        assert last["checked_at_ms"] == first["checked_at_ms"]
        # the virtio-serial check and the HTTP check share one count and one region
        assert guest.agent.integrity_check().ok
        assert _ask(guest_net, query="")["checks"] == int(str(first["checks"])) + 1

        assert _ask(guest_net, query="corrupt=700") == {"corrupted_page": 700}
        bad = _ask(guest_net)
        assert bad["ok"] is False and bad["first_bad_page"] == 700 and bad["bad_pages"] == 1, bad
        assert bad["word"] == 2 and int(str(bad["found"]), 16) == int(str(bad["expected"]), 16) ^ 1
        with pytest.raises(GuestAnswerError, match=r"409.*page out of range"):
            _ask(guest_net, query="corrupt=99999")
        with pytest.raises(GuestAnswerError, match="400"):
            _ask(guest_net, query="check=yes")
    finally:
        assert guest.agent.command("integrity-stop").ok
    assert _ask(guest_net, query="")["region"] is False


def test_a_corrupted_region_fails_the_memory_integrity_sla(
    guest: QemuMachine, guest_net: UserModeNetwork
) -> None:
    """The probe's verdict goes through the runner's figures into the SLA check: intact passes,
    one flipped bit fails, with the agent's account of where in ``details.integrity``."""
    assert guest_net.host_port is not None
    assert guest.agent.integrity_start(4, pass_ms=100).ok
    try:
        probe = GuestIntegrityProbe(port=guest_net.host_port)
        probe.start([ServerInfo("s0", "s0", "h1", address="127.0.0.1")], CaseClock())
        intact, corrupted = _migrated(1.0), _migrated(2.0)
        probe.capture(intact, "s0", 1)
        assert _ask(guest_net, query="corrupt=3") == {"corrupted_page": 3}
        probe.capture(corrupted, "s0", 2)
        for record, mid in ((intact, 1), (corrupted, 2)):
            apply_figures(record, "s0", mid, [probe])
        assert intact.memory_integrity is True and corrupted.memory_integrity is False
        assert corrupted.details["integrity"]["first_bad_page"] == 3
        assert intact.downtime_ms.guest is None  # a verdict, no downtime figure

        spec = SlaSpec(memory_integrity=True, migrations_completed_ratio=None)
        checks = [evaluate(spec, ms, probes={"integrity": None}) for ms in ([intact], [intact, corrupted])]
        passed, failed = ({c.name: c for c in checked}["memory_integrity"] for checked in checks)
        assert passed.passed and not failed.passed
    finally:
        assert guest.agent.command("integrity-stop").ok


def test_a_guest_that_does_not_answer_leaves_the_verdict_null_with_the_reason() -> None:
    probe = GuestIntegrityProbe(port=9)  # discard: nothing listens on loopback's port 9
    probe.ASK_FOR_S = 1.0
    probe.start([ServerInfo("s0", "s0", "h1", address="127.0.0.1")], CaseClock())
    record = _migrated(1.0)
    probe.capture(record, "s0", 1)
    apply_figures(record, "s0", 1, [probe])
    assert record.memory_integrity is None
    assert "did not answer" in record.details["integrity"]["error"]
