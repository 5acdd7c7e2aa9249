"""Two libvirt hosts on this machine: a tiny guest started on one, live-migrated peer-to-peer to the
other with libvirt-python, and libvirt's completed-job statistics read by the DevStack probe's code
through the local transport. Afterwards nothing of the pair is left: no daemon, QEMU, namespace or
directory. (Slow: each libvirtd probes QEMU's capabilities at start, several seconds under TCG.)"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from novamig.guest.image import GuestImage
from novamig.hypervisor.libvirt_domain import tap_domain_xml
from novamig.hypervisor.libvirt_hosts import LibvirtHostPair, libvirt_supported
from novamig.hypervisor.libvirt_leftovers import find_leftovers, remove_leftovers
from novamig.hypervisor.netns import list_novamig_netns
from novamig.measure.libvirt_jobstats import DomainPlace, LibvirtJobFigures
from novamig.results import MigrationRecord

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

libvirt = pytest.importorskip("libvirt", reason="libvirt-python (the embedded extra) is not installed")

HB_PORT = 9999
HB_HZ = 100


@pytest.fixture(autouse=True)
def _needs_libvirt() -> None:
    why = libvirt_supported()
    if why is not None:
        pytest.skip(why)


@dataclass
class Beats:
    """Arrival times (monotonic s) of the guest's UDP heartbeats at the runner's address."""

    times: list[float] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_after(self, t: float, timeout_s: float) -> bool:
        """True once a beat arrived after `t` (within `timeout_s`)."""
        with self.arrived:
            return self.arrived.wait_for(lambda: bool(self.times) and self.times[-1] > t, timeout_s)

    def longest_gap_ms(self, start: float, end: float) -> float:
        with self.arrived:
            inside = [t for t in self.times if start <= t <= end]
        return max(b - a for a, b in itertools.pairwise(inside)) * 1000


@pytest.fixture
def libvirt_pair() -> Iterator[LibvirtHostPair]:
    with LibvirtHostPair() as pair:
        yield pair


@pytest.fixture
def beats(libvirt_pair: LibvirtHostPair) -> Iterator[Beats]:
    """A UDP receiver on the runner's address in the guest network, recording every beat."""
    sock = libvirt_pair.network.socket()
    sock.bind((libvirt_pair.network.host_ip, HB_PORT))
    sock.settimeout(0.2)
    record = Beats()
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                sock.recv(2048)
            except TimeoutError:
                continue
            with record.arrived:
                record.times.append(time.monotonic())
                record.arrived.notify_all()

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    yield record
    stop.set()
    thread.join(5)
    sock.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_live_migration_between_two_libvirt_hosts_with_libvirt_job_statistics(
    libvirt_pair: LibvirtHostPair, beats: Beats, tiny_image: GuestImage
) -> None:
    pair = libvirt_pair
    src, dst = pair.hosts
    assert src.shell("hostname").strip() == src.hostname  # its own UTS namespace
    assert src.virsh("hostname").strip() == src.hostname  # what Nova takes as hypervisor_hostname
    name = "instance-00000001"
    address = pair.network.new_address()
    cmdline = tiny_image.command_line(
        hb_hz=HB_HZ,
        hb_udp=f"{pair.network.host_ip}:{HB_PORT}",
        ip=f"{address.ip}/{address.prefix}",
        gw=address.gateway,
    )
    tap = src.start_guest(
        name, kernel=tiny_image.kernel, initrd=tiny_image.initrd, cmdline=cmdline, address=address
    )
    dom = libvirt.open(src.uri).lookupByName(name)
    booted = time.monotonic()
    assert beats.wait_after(0.0, 90), "no UDP heartbeat from the guest on the source host"
    boot_s = time.monotonic() - booted

    dst.plug_tap(tap)  # what Nova's pre_live_migration does for a 'tap' VIF
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    started = time.monotonic()
    dom.migrateToURI3(dst.tcp_uri, {libvirt.VIR_MIGRATE_PARAM_URI: dst.migrate_uri}, flags)
    ended = time.monotonic()
    wall_ms = (ended - started) * 1000
    src.unplug_tap(tap)

    moved = libvirt.open(dst.uri).lookupByName(name)
    assert moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert name not in [d.name() for d in libvirt.open(src.uri).listAllDomains()]
    assert beats.wait_after(ended, 20), "no heartbeat from the guest after it moved to the destination"
    guest_gap_ms = beats.longest_gap_ms(started, time.monotonic())

    # The DevStack probe's own code: the same virsh command, run inside the destination's namespaces.
    probe = LibvirtJobFigures.in_host_namespaces(
        {h.hostname: h for h in pair.hosts}, lambda server_id: DomainPlace(name, dst.hostname, 1)
    )
    record = MigrationRecord(
        server="server-1",
        source_host=src.hostname,
        dest_host=dst.hostname,
        status="completed",
        requested_at=0.0,
    )
    probe.capture(record, "server-1", 1)
    figure = probe.figure(record, "server-1", 1)
    assert figure.reason is None, figure.reason
    assert figure.downtime_ms is not None and figure.details is not None
    details = figure.details
    print(
        f"\nguest boot {boot_s:.2f} s; migration wall {wall_ms:.0f} ms; libvirt time elapsed "
        f"{details.get('time_elapsed_ms')} ms, downtime {figure.downtime_ms:.0f} ms; "
        f"UDP heartbeat gap {guest_gap_ms:.0f} ms"
    )
    assert details["operation"] == "Incoming migration" and details["format"] == "rawstats"
    # Plausible: a stop-and-copy of an idle 256 MiB guest is some ms to a second, inside the
    # migration's own elapsed time, which is inside the wall time of the call that ran it.
    assert 1 <= figure.downtime_ms <= 2000
    assert figure.downtime_ms <= details["time_elapsed_ms"] <= wall_ms
    # Guest RAM plus QEMU's other RAM blocks (firmware, option ROMs): a few MiB more.
    assert 256 << 20 <= details["memory_total_bytes"] <= 300 << 20
    # The guest went quiet for about libvirt's downtime (plus the network's switch to the new tap).
    assert guest_gap_ms >= figure.downtime_ms * 0.5


def test_everything_goes_on_interrupt(tiny_image: GuestImage) -> None:
    """Ctrl-C inside the ``with`` while a guest runs: daemons, the guest's QEMU, namespaces and
    the run directory are gone afterwards."""
    before = set(list_novamig_netns())
    seen: dict[str, object] = {}
    with pytest.raises(KeyboardInterrupt), LibvirtHostPair() as pair:
        host = pair.hosts[0]
        host.plug_tap("tapint")
        address = pair.network.new_address()
        xml = tap_domain_xml(
            "interrupted",
            kernel=tiny_image.kernel,
            initrd=tiny_image.initrd,
            cmdline=tiny_image.append,
            address=address,
            tap="tapint",
        )
        libvirt.open(host.uri).createXML(xml)  # a transient guest, still booting
        seen.update(pids=[*host.pids(), *host.guest_pids()], dir=pair.run_dir)
        seen["netns"] = set(list_novamig_netns()) - before
        raise KeyboardInterrupt
    pids = seen["pids"]
    assert isinstance(pids, list) and len(pids) == 3  # virtlogd, libvirtd, the guest's QEMU
    assert not [p for p in pids if _alive(p)]
    assert isinstance(seen["dir"], Path) and not seen["dir"].exists()
    made = seen["netns"]
    assert isinstance(made, set) and len(made) == 3  # the guest network and the two hosts
    assert not set(list_novamig_netns()) & made


_CHILD = """
import sys, libvirt
from pathlib import Path
from novamig.hypervisor.libvirt_domain import tap_domain_xml
from novamig.hypervisor.libvirt_hosts import LibvirtHostPair
kernel, initrd, append = sys.argv[1:4]
pair = LibvirtHostPair().__enter__()
host = pair.hosts[0]
host.plug_tap("tapleft")
xml = tap_domain_xml("left", kernel=Path(kernel), initrd=Path(initrd), cmdline=append,
                     address=pair.network.new_address(), tap="tapleft")
libvirt.open(host.uri).createXML(xml)
print(pair.run_dir, flush=True)
sys.stdin.read()
"""


def test_leftovers_of_a_creator_killed_hard_are_found_and_removed(tiny_image: GuestImage) -> None:
    """SIGKILL of the process that made a pair: its daemons die with it, its running guest, its
    namespaces and its run directory do not; `find_leftovers` finds exactly those and
    `remove_leftovers` removes them."""
    argv = [sys.executable, "-c", _CHILD, str(tiny_image.kernel), str(tiny_image.initrd), tiny_image.append]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        run_dir = Path(child.stdout.readline().strip())
        assert run_dir.is_dir()
    finally:
        child.kill()
        child.wait(10)
    leftovers = [left for left in find_leftovers() if left.run_dir == run_dir]
    assert len(leftovers) == 1
    left = leftovers[0]
    assert left.creator_pid == child.pid and len(left.netns) == 3
    # The guest's QEMU outlives its creator; the daemons died with it (they may take a moment).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len([p for p in left.pids if _alive(p)]) > 1:
        time.sleep(0.1)
    assert [Path(os.readlink(f"/proc/{p}/exe")).name for p in left.pids if _alive(p)] == [
        "qemu-system-x86_64"
    ]
    remove_leftovers(leftovers)
    assert not [p for p in left.pids if _alive(p)]
    assert not run_dir.exists() and not set(left.netns) & set(list_novamig_netns())
    assert not [left for left in find_leftovers() if left.run_dir == run_dir]
