"""Which probe fills which figure, on which cloud: `probes_for(plan, capabilities)`.

Every figure (``downtime_ms.guest``, ``.network``, ``.locust``, ``.hypervisor``) has one or more
ways to be measured, each a `Registration` in `REGISTRY`: the figure it fills, when it applies
(`why_not` returns None) or why not, and how to make the probe. For each figure a case asks for,
the first registration that applies makes the probe; when none does, the figure's probe is
`Unavailable` with the reason of the figure's *last* registration — so the last one listed is the
general one, whose reason tells the user what to set up (an SSH hosts file, a heartbeat collector).

A cloud whose servers have no guest (`CloudCapabilities.no_guests`: the embedded cloud's scale
mode on Nova's fake driver) gets `Unavailable` for every figure, with that reason.

Adding a probe is one module under `novamig/measure/` and one `Registration` here.

The registry sees a case through `ProbePlan` (the runner's `CasePlan` satisfies it) and the cloud
through `CloudCapabilities`, both defined here: measurement ranks below the runner and never
imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from novamig.cloud.host_policy import SSH_HOSTS_ENV
from novamig.hypervisor.libvirt_hosts import LibvirtHost
from novamig.measure.contract import Probe, Unavailable
from novamig.measure.embedded_figures import EmbeddedMigrationFigures
from novamig.measure.guest_integrity import GuestIntegrityProbe
from novamig.measure.heartbeat_udp import UdpHeartbeatProbe
from novamig.measure.libvirt_jobstats import DomainPlace, LibvirtJobFigures
from novamig.measure.locust import LocustProbe
from novamig.measure.network import NetworkProbe
from novamig.measure.sla import SlaSpec
from novamig.scenario.models import Measure, Workload


class ProbePlan(Protocol):
    """What of a case the probes need (the runner's `CasePlan` has all of it)."""

    @property
    def case_id(self) -> str: ...
    @property
    def probes(self) -> tuple[str, ...]: ...  # the scenario's measure.probes
    @property
    def workload(self) -> str: ...  # the workload kind: idle | memory | locust | script
    @property
    def workload_spec(self) -> Workload: ...
    @property
    def measure(self) -> Measure: ...
    @property
    def scenario_dir(self) -> Path | None: ...  # where a user's locustfile path is relative to
    @property
    def sla(self) -> SlaSpec: ...  # memory_integrity asks for the guest's own verdict


@dataclass(frozen=True)
class CloudCapabilities:
    """What the cloud under test offers the probes; the runner fills it in once per run."""

    probe_dir: Path
    """Where probes write their files: ``<probe_dir>/<case>/<figure>/``."""
    embedded_workdir: Path | None = None
    """The embedded cloud's work directory (None on other clouds): its driver writes every
    migration's figures under ``migrations/``, and its guests' addresses exist only inside
    `guest_netns`."""
    guest_netns: str | None = None
    """The network namespace the guests' addresses are reached in (the embedded cloud run as root);
    None: probes reach the addresses from where the runner is."""
    ssh_hosts: Mapping[str, str] | None = None
    """Compute host name → ``user@address`` (the hosts file named by NOVAMIG_SSH_HOSTS): libvirt's
    job statistics are read there over SSH. None: the hosts are out of reach."""
    locate_domain: Callable[[str], DomainPlace] | None = None
    """Server id → where its libvirt domain is, from Nova (`libvirt_jobstats.locate_with`)."""
    libvirt_hosts: Mapping[str, LibvirtHost] | None = None
    """The embedded cloud's libvirt mode: Nova compute host name → its libvirt host on this machine.
    libvirt's job statistics are read inside the host's namespaces (the DevStack probe's local
    transport), and the guests' heartbeat comes over UDP only (no virtio-serial reader there)."""
    no_guests: str | None = None
    """Why the cloud's servers have no guest behind them (the embedded cloud's scale mode: "fake
    driver"), so that no probe can measure anything; None: servers are real guests."""


WhyNot = Callable[[ProbePlan, CloudCapabilities], str | None]
Make = Callable[[ProbePlan, CloudCapabilities, Path], Probe]


@dataclass(frozen=True)
class Registration:
    """One way to fill a figure: `why_not` is None when it applies to the case on this cloud, else
    the reason it does not; `make` builds the probe, given the probe's own directory."""

    figure: str  # the results key: downtime_ms.<figure>
    why_not: WhyNot
    make: Make


def _unreachable_guests(plan: ProbePlan, caps: CloudCapabilities) -> str | None:
    """The embedded cloud's guest addresses exist only inside its namespace: sent from here,
    probes would leave this machine."""
    if caps.embedded_workdir is not None and caps.guest_netns is None:
        return "the embedded cloud's guests have no namespace to reach them in (needs root)"
    return None


def _no_guests(plan: ProbePlan, caps: CloudCapabilities) -> str | None:
    """Every figure is read from a guest, its network or its hypervisor: a cloud without guests
    (Nova's fake driver) has none of them, whatever else the case asks for."""
    return caps.no_guests


def _not_embedded_driver_heartbeat(plan: ProbePlan, caps: CloudCapabilities) -> str | None:
    """The embedded cloud's driver reads each guest's heartbeat over virtio-serial; a scenario that
    names a UDP collector asks for the DevStack path instead, on any cloud."""
    if caps.embedded_workdir is None:
        return "not the embedded cloud"
    if caps.libvirt_hosts is not None:
        return _LIBVIRT_MODE_HEARTBEAT
    if plan.measure.heartbeat_collector is not None:
        return "the scenario names a UDP heartbeat collector, which takes precedence"
    return None


_LIBVIRT_MODE_HEARTBEAT = (
    "the embedded cloud's libvirt mode reads no heartbeat itself, and no UDP collector address was "
    "found from the route to the guests: set measure.heartbeat_collector to the runner's address on "
    "the guests' network (192.168.1.1:PORT)"
)


def heartbeat_over_udp(caps: CloudCapabilities) -> bool:
    """Whether the guests' heartbeat can reach the runner only over UDP on this cloud: anywhere
    but the embedded cloud's own driver, which reads the virtio-serial channel (and a cloud without
    guests). The runner then finds a collector address when the scenario names none
    (`novamig.measure.collector_address`)."""
    if caps.no_guests is not None:
        return False
    return caps.embedded_workdir is None or caps.libvirt_hosts is not None


def _no_heartbeat_collector(plan: ProbePlan, caps: CloudCapabilities) -> str | None:
    if plan.measure.heartbeat_collector is None and caps.libvirt_hosts is not None:
        return _LIBVIRT_MODE_HEARTBEAT
    if plan.measure.heartbeat_collector is None:
        return (
            "no UDP heartbeat collector address was found from the route to the guests (no "
            "Network API, or no route): set measure.heartbeat_collector to an IPV4:PORT of this "
            "machine that the guests reach"
        )
    return None


def _not_embedded(plan: ProbePlan, caps: CloudCapabilities) -> str | None:
    if caps.libvirt_hosts is not None:
        return "the embedded cloud's libvirt mode: libvirt's own figures instead"
    return "not the embedded cloud" if caps.embedded_workdir is None else None


def _no_libvirt_hosts(plan: ProbePlan, caps: CloudCapabilities) -> str | None:
    if caps.libvirt_hosts is None or caps.locate_domain is None:
        return "not the embedded cloud's libvirt mode"
    return None


def _no_ssh_hosts(plan: ProbePlan, caps: CloudCapabilities) -> str | None:
    if caps.ssh_hosts is None or caps.locate_domain is None:
        return (
            f"libvirt's job statistics are read over SSH: set {SSH_HOSTS_ENV} to a YAML file "
            "mapping each compute host to user@address"
        )
    return None


def _no_locust_load(plan: ProbePlan, caps: CloudCapabilities) -> str | None:
    unreachable = _unreachable_guests(plan, caps)
    if unreachable is not None:
        return unreachable
    return None if plan.workload == "locust" else "the case runs no Locust load"


def _embedded_figures(figure: str) -> Make:
    def make(plan: ProbePlan, caps: CloudCapabilities, workdir: Path) -> Probe:
        assert caps.embedded_workdir is not None  # checked by why_not
        return EmbeddedMigrationFigures(caps.embedded_workdir, figure)

    return make


def _udp_heartbeat(plan: ProbePlan, caps: CloudCapabilities, workdir: Path) -> Probe:
    assert plan.measure.heartbeat_collector is not None  # checked by why_not
    host, _, port = plan.measure.heartbeat_collector.rpartition(":")
    return UdpHeartbeatProbe(plan.measure.heartbeat_hz, (host, int(port)), caps.guest_netns, workdir)


def _libvirt(plan: ProbePlan, caps: CloudCapabilities, workdir: Path) -> Probe:
    assert caps.ssh_hosts is not None and caps.locate_domain is not None  # checked by why_not
    return LibvirtJobFigures.over_ssh(caps.ssh_hosts, caps.locate_domain)


def _libvirt_local(plan: ProbePlan, caps: CloudCapabilities, workdir: Path) -> Probe:
    assert caps.libvirt_hosts is not None and caps.locate_domain is not None  # checked by why_not
    return LibvirtJobFigures.in_host_namespaces(caps.libvirt_hosts, caps.locate_domain)


def _network(plan: ProbePlan, caps: CloudCapabilities, workdir: Path) -> Probe:
    m = plan.measure
    return NetworkProbe(m.network_probe_hz, caps.guest_netns, workdir, protocol=m.network_protocol)


def _guest_integrity(plan: ProbePlan, caps: CloudCapabilities, workdir: Path) -> Probe:
    return GuestIntegrityProbe(caps.guest_netns)


def _locust(plan: ProbePlan, caps: CloudCapabilities, workdir: Path) -> Probe:
    return LocustProbe(plan.workload_spec.locust, caps.guest_netns, workdir, plan.scenario_dir)


REGISTRY: tuple[Registration, ...] = (
    # the embedded driver reads the heartbeat over virtio-serial …
    Registration("guest", _not_embedded_driver_heartbeat, _embedded_figures("guest")),
    # … anywhere else (and wherever the scenario asks) the agent's beats come over UDP
    Registration("guest", _no_heartbeat_collector, _udp_heartbeat),
    Registration(
        "hypervisor", _not_embedded, _embedded_figures("hypervisor")
    ),  # QEMU's figures, by the driver
    # libvirt's, by the DevStack code: inside the libvirt mode's host namespaces …
    Registration("hypervisor", _no_libvirt_hosts, _libvirt_local),
    Registration("hypervisor", _no_ssh_hosts, _libvirt),  # … and over SSH on DevStack
    Registration("network", _unreachable_guests, _network),
    Registration("locust", _no_locust_load, _locust),
    # the guest's own integrity verdict over HTTP, on every cloud (on the embedded one a second
    # opinion beside its driver's check over virtio-serial)
    Registration("integrity", _unreachable_guests, _guest_integrity),
)


def wanted_figures(plan: ProbePlan) -> list[str]:
    """The figures a case measures: its ``measure.probes``, plus ``locust`` when the workload is
    Locust (the Locust probe also drives the load) and ``integrity`` when the SLA asks for
    ``memory_integrity`` (the guest's verdict, `novamig.measure.guest_integrity`)."""
    wanted = list(plan.probes)
    if plan.workload == "locust" and "locust" not in wanted:
        wanted.append("locust")
    if plan.sla.memory_integrity and "integrity" not in wanted:
        wanted.append("integrity")
    return wanted


def probes_for(
    plan: ProbePlan, capabilities: CloudCapabilities, registry: tuple[Registration, ...] = REGISTRY
) -> list[Probe]:
    """One probe per figure the case measures (see the module docstring for the choice)."""
    case_dir = capabilities.probe_dir / safe_name(plan.case_id)
    out: list[Probe] = []
    for figure in wanted_figures(plan):
        no_guest = _no_guests(plan, capabilities)
        if no_guest is not None:
            out.append(Unavailable(figure, no_guest))
            continue
        ways = [r for r in registry if r.figure == figure]
        reason = f"novamig has no {figure!r} probe"
        for way in ways:
            why = way.why_not(plan, capabilities)
            if why is None:
                out.append(way.make(plan, capabilities, case_dir / figure))
                break
            reason = why
        else:
            out.append(Unavailable(figure, reason))
    return out


def safe_name(case_id: str) -> str:
    """A case id as one directory name (ids hold '=', ',' and '#')."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in case_id) or "case"
