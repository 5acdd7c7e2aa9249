"""Fast checks of the libvirt hosts' configuration and of the job-statistics probe's local
transport, without starting a daemon."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from novamig.hypervisor.libvirt_domain import tap_domain_xml
from novamig.hypervisor.libvirt_hosts import LibvirtHost, libvirtd_conf, qemu_conf
from novamig.hypervisor.netns import GuestAddress
from novamig.measure.libvirt_jobstats import DomainPlace, LibvirtJobFigures
from novamig.results import MigrationRecord


def test_daemon_configuration_has_the_lines_two_hosts_on_one_machine_need() -> None:
    conf = libvirtd_conf("10.88.0.2", "5b1c7c66-7d3e-4a8e-9a55-0d3f2f7c9a01").splitlines()
    assert 'listen_addr = "10.88.0.2"' in conf and "listen_tcp = 1" in conf and "listen_tls = 0" in conf
    assert 'host_uuid = "5b1c7c66-7d3e-4a8e-9a55-0d3f2f7c9a01"' in conf and 'auth_tcp = "none"' in conf
    qemu = qemu_conf("10.88.0.2").splitlines()
    assert 'migration_host = "10.88.0.2"' in qemu and "cgroup_controllers = [ ]" in qemu
    assert 'security_driver = "none"' in qemu


def test_domain_xml_is_novas_tap_shape() -> None:
    address = GuestAddress("10.77.0.2", 24, "52:54:00:77:00:01", "10.77.0.1")
    xml = tap_domain_xml(
        "instance-<1>", kernel=Path("/k"), initrd=Path("/i"), cmdline="a=b", address=address, tap="tap1"
    )
    root = ET.fromstring(xml)
    assert root.findtext("name") == "instance-<1>"
    nic = root.find("devices/interface")
    assert nic is not None and nic.get("type") == "ethernet"
    target = nic.find("target")
    assert target is not None and target.get("dev") == "tap1" and target.get("managed") == "no"
    assert root.findtext("os/kernel") == "/k" and root.findtext("os/cmdline") == "a=b"


def test_local_transport_names_an_unknown_host_in_the_figure_reason() -> None:
    host = LibvirtHost("novamig-lv-a", "10.88.0.1", "novamig-0-000000", Path("/nonexistent"))
    probe = LibvirtJobFigures.in_host_namespaces(
        {host.hostname: host}, lambda server_id: DomainPlace("instance-1", "elsewhere", 1)
    )
    record = MigrationRecord(
        server="s", source_host="novamig-lv-a", dest_host="elsewhere", status="completed", requested_at=0.0
    )
    figure = probe.figure(record, "s", 1)
    assert figure.downtime_ms is None
    assert figure.reason is not None and "no libvirt host 'elsewhere'" in figure.reason
    # A host whose daemon is not running is a reason too, never an exception.
    probe = LibvirtJobFigures.in_host_namespaces(
        {host.hostname: host}, lambda server_id: DomainPlace("instance-1", "novamig-lv-a", 1)
    )
    record = record.model_copy(update={"dest_host": "novamig-lv-a"})
    figure = probe.figure(record, "s", 1)
    assert figure.reason is not None and "is not running" in figure.reason
