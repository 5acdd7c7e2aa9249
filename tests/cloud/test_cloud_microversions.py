from __future__ import annotations

import pytest

from novamig.cloud.microversions import Microversion, abort_allowed, choose, live_migrate_request

V = Microversion.parse


def test_parse_and_order() -> None:
    assert V("2.25") < V("2.100") < V("3.0")
    assert V((2, 104)) == Microversion(2, 104)
    assert str(V(" 2.68 ")) == "2.68"
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR"):
        V("latest")


def test_choose_takes_the_highest_supported_not_above_wanted() -> None:
    assert choose(V("2.104"), V("2.80")) == V("2.80")
    assert choose(V("2.60"), V("2.80")) == V("2.60")


def test_below_2_25_is_refused() -> None:
    with pytest.raises(ValueError, match=r">= 2\.25"):
        live_migrate_request(V("2.24"), None)


@pytest.mark.parametrize(
    ("cloud_max", "sent", "force"),
    [
        ("2.25", "2.25", True),
        ("2.29", "2.29", True),
        ("2.30", "2.30", None),
        ("2.67", "2.67", None),
        ("2.68", "2.68", None),
        ("2.104", "2.80", None),
    ],
)
def test_named_host_body_per_version(cloud_max: str, sent: str, force: bool | None) -> None:
    req = live_migrate_request(V(cloud_max), "compute2")
    body = req.body["os-migrateLive"]
    assert str(req.microversion) == sent
    assert body["host"] == "compute2" and body["block_migration"] == "auto"
    assert body.get("force") == force
    assert "disk_over_commit" not in body


def test_scheduler_choice_never_forces() -> None:
    for version in ("2.25", "2.30", "2.90"):
        body = live_migrate_request(V(version), None, block_migration=False).body["os-migrateLive"]
        assert body == {"host": None, "block_migration": False}


def test_abort_versions() -> None:
    assert abort_allowed(V("2.24"), "running") == V("2.24")
    assert abort_allowed(V("2.24"), "queued") is None
    assert abort_allowed(V("2.65"), "queued") == V("2.65")
    assert abort_allowed(V("2.104"), "preparing") == V("2.80")
    assert abort_allowed(V("2.104"), "running (post-copy)") is None


def test_hypervisor_version_reads_as_people_write_it() -> None:
    """Nova's integer (libvirt's and the embedded driver's QEMU 10.0.2 is 10000002) as major.minor.patch."""
    from novamig.cloud.compute import hypervisor_version_text

    assert hypervisor_version_text(10000002) == "10.0.2"
    assert hypervisor_version_text(11003000) == "11.3.0"
    assert hypervisor_version_text(7002000) == "7.2.0"
    assert hypervisor_version_text(None) == "?"
    assert hypervisor_version_text("unknown") == "unknown"
