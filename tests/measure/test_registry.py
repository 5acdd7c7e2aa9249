"""Probe selection: which probe fills each figure on which cloud, and the reason when none can."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from novamig.measure.contract import CapturesEachMigration, Probe, Unavailable
from novamig.measure.embedded_figures import EmbeddedMigrationFigures
from novamig.measure.guest_integrity import GuestIntegrityProbe
from novamig.measure.heartbeat_udp import UdpHeartbeatProbe
from novamig.measure.libvirt_jobstats import DomainPlace, LibvirtJobFigures
from novamig.measure.locust import LocustProbe
from novamig.measure.network import NetworkProbe
from novamig.measure.registry import (
    REGISTRY,
    CloudCapabilities,
    ProbePlan,
    Registration,
    probes_for,
    safe_name,
)
from novamig.measure.sla import SlaSpec
from novamig.runner.plan import plan_from_case
from novamig.scenario import expand_cases, load_scenario
from novamig.scenario.models import Measure, Workload


@dataclass(frozen=True)
class Plan:
    """The few values of a case that probe selection reads (`ProbePlan`)."""

    probes: tuple[str, ...]
    workload: str = "idle"
    measure: Measure = field(default_factory=Measure)
    case_id: str = "memory.dirty_rate_mib_s=64#r1"
    scenario_dir: Path | None = None
    sla: SlaSpec = field(default_factory=SlaSpec)

    @property
    def workload_spec(self) -> Workload:
        return Workload(kind=self.workload)  # type: ignore[arg-type]


def by_name(probes: list[Probe]) -> dict[str, Probe]:
    return {p.name: p for p in probes}


def reason(probe: Probe) -> str:
    assert isinstance(probe, Unavailable), probe
    return probe.reason


ALL = ("guest", "network", "hypervisor")


def test_the_embedded_cloud_as_root_measures_every_figure(tmp_path: Path) -> None:
    caps = CloudCapabilities(tmp_path / "probes", embedded_workdir=tmp_path, guest_netns="novamig-guests")
    probes = by_name(probes_for(Plan(ALL, workload="locust"), caps))
    assert list(probes) == ["guest", "network", "hypervisor", "locust"]  # Locust drives the load
    assert (
        isinstance(probes["guest"], EmbeddedMigrationFigures)
        and probes["guest"].dir == tmp_path / "migrations"
    )
    assert isinstance(probes["hypervisor"], EmbeddedMigrationFigures)
    network = probes["network"]
    assert isinstance(network, NetworkProbe) and network.netns == "novamig-guests"
    assert network.workdir == tmp_path / "probes" / "memory.dirty_rate_mib_s=64_r1" / "network"
    assert isinstance(probes["locust"], LocustProbe) and probes["locust"].netns == "novamig-guests"


def test_the_embedded_cloud_without_a_namespace_cannot_reach_its_guests(tmp_path: Path) -> None:
    caps = CloudCapabilities(tmp_path / "probes", embedded_workdir=tmp_path)
    probes = by_name(probes_for(Plan(ALL, workload="locust"), caps))
    why = "the embedded cloud's guests have no namespace to reach them in (needs root)"
    assert reason(probes["network"]) == why and reason(probes["locust"]) == why
    assert isinstance(probes["guest"], EmbeddedMigrationFigures)  # the driver reads the host's side
    assert isinstance(probes["hypervisor"], EmbeddedMigrationFigures)


def test_a_named_heartbeat_collector_takes_the_guest_figure_on_any_cloud(tmp_path: Path) -> None:
    measure = Measure(heartbeat_collector="192.168.1.1:47000", heartbeat_hz=250)
    for caps in (
        CloudCapabilities(tmp_path, embedded_workdir=tmp_path, guest_netns="ns"),
        CloudCapabilities(tmp_path),
    ):
        guest = probes_for(Plan(("guest",), measure=measure), caps)[0]
        assert isinstance(guest, UdpHeartbeatProbe), caps
        assert guest.bind == ("192.168.1.1", 47000) and guest.netns == caps.guest_netns


def test_another_cloud_says_what_to_set_up(tmp_path: Path) -> None:
    probes = by_name(probes_for(Plan(ALL), CloudCapabilities(tmp_path)))
    assert reason(probes["guest"]) == (
        "no UDP heartbeat collector address was found from the route to the guests (no "
        "Network API, or no route): set measure.heartbeat_collector to an IPV4:PORT of this "
        "machine that the guests reach"
    )
    assert reason(probes["hypervisor"]) == (
        "libvirt's job statistics are read over SSH: set NOVAMIG_SSH_HOSTS to a YAML file "
        "mapping each compute host to user@address"
    )
    network = probes["network"]
    assert isinstance(network, NetworkProbe) and network.netns is None  # addresses reached directly


def test_ssh_hosts_give_libvirt_s_figures(tmp_path: Path) -> None:
    caps = CloudCapabilities(
        tmp_path,
        ssh_hosts={"compute1": "stack@192.0.2.1"},
        locate_domain=lambda server_id: DomainPlace("instance-1", "compute1", None),
    )
    (hypervisor,) = probes_for(Plan(("hypervisor",)), caps)
    assert isinstance(hypervisor, LibvirtJobFigures) and isinstance(hypervisor, CapturesEachMigration)


def test_locust_without_a_locust_load_and_unknown_names(tmp_path: Path) -> None:
    caps = CloudCapabilities(tmp_path)
    assert reason(probes_for(Plan(("locust",)), caps)[0]) == "the case runs no Locust load"
    assert reason(probes_for(Plan(("sonar",)), caps)[0]) == "novamig has no 'sonar' probe"


def test_adding_a_probe_is_one_registration(tmp_path: Path) -> None:
    """A new way to fill a figure goes before the general one; the general one's reason stays the
    figure's reason wherever the new way does not apply either."""
    made: list[Path] = []

    def make(plan: ProbePlan, caps: CloudCapabilities, workdir: Path) -> Probe:
        made.append(workdir)
        return Unavailable("hypervisor", "a stand-in for a new probe module")

    def only_for_big_cases(plan: ProbePlan, caps: CloudCapabilities) -> str | None:
        return None if plan.case_id.startswith("big") else "only big cases"

    registry = (Registration("hypervisor", only_for_big_cases, make), *REGISTRY)
    caps = CloudCapabilities(tmp_path)
    assert reason(probes_for(Plan(("hypervisor",), case_id="big#1"), caps, registry)[0]).startswith(
        "a stand-in"
    )
    assert made == [tmp_path / "big_1" / "hypervisor"]
    assert "NOVAMIG_SSH_HOSTS" in reason(probes_for(Plan(("hypervisor",)), caps, registry)[0])


def test_the_runner_s_case_plan_is_a_probe_plan(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: reg\nfleet: {image: novamig-full}\nworkload: {kind: locust}\n"
        "measure: {probes: [guest, network, locust]}\n"
        "sla: {downtime_ms: {probe: guest}}\n"
    )
    (plan,) = [plan_from_case(c, tmp_path) for c in expand_cases(load_scenario(scenario))]
    caps = CloudCapabilities(tmp_path, embedded_workdir=tmp_path, guest_netns="ns")
    names = [p.name for p in probes_for(plan, caps)]
    assert names == ["guest", "network", "locust"]


@pytest.mark.parametrize(
    ("case_id", "name"), [("a=1,b=x#r2", "a=1_b=x_r2"), ("", "case"), ("ok-name_1.2", "ok-name_1.2")]
)
def test_case_ids_become_one_directory_name(case_id: str, name: str) -> None:
    assert safe_name(case_id) == name


def test_an_sla_on_memory_integrity_asks_the_guest_itself_on_any_cloud(tmp_path: Path) -> None:
    """The guest's verdict over HTTP is the one integrity figure a libvirt cloud has; on the
    embedded cloud it runs beside the driver's check, and only where the guests can be reached."""
    integrity = SlaSpec(memory_integrity=True)
    libvirt = CloudCapabilities(tmp_path)
    embedded = CloudCapabilities(tmp_path, embedded_workdir=tmp_path, guest_netns="novamig-1-x")
    for caps in (libvirt, embedded):
        probes = by_name(probes_for(Plan(("hypervisor",), sla=integrity), caps))
        assert isinstance(probes["integrity"], GuestIntegrityProbe)
        assert isinstance(probes["integrity"], CapturesEachMigration)
        assert probes["integrity"].netns == caps.guest_netns
    assert "integrity" not in by_name(probes_for(Plan(("hypervisor",)), libvirt))
    unreachable = CloudCapabilities(tmp_path, embedded_workdir=tmp_path)
    assert "needs root" in reason(by_name(probes_for(Plan((), sla=integrity), unreachable))["integrity"])
