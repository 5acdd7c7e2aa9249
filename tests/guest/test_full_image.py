"""The full guest image: it builds, a second build is a cache hit, it boots under TCG to the
agent's READY, its web application answers over the guest network, and Locust inside the guest
loads that application and reports statistics.

The image comes from the user's cache (as the tiny image's tests do), so repeated runs and CI
runs on one machine build it once. The unit tests at the top need neither root nor QEMU.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from web_app_client import check_locust as _check_locust
from web_app_client import http as _http
from web_app_client import loopback as _loopback
from web_app_client import run_locust as _run_locust

from novamig.guest.build import build_cpio as _build_cpio
from novamig.guest.build import locked as _locked
from novamig.guest.build import read_newc as _read_newc
from novamig.guest.full import (
    DISK_MODULES,
    CloudImage,
    FullImage,
    ImageBuildError,
    build_cloud_image,
    build_full_image,
    debian_mirror,
)
from novamig.guest.full import variants as full_variants

# ------------------------------------------------------------------------------------------------
# unit tests: no root, no QEMU


def test_mirror_from_deb822_prefers_the_suite_and_skips_security(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\n"
    )
    assert debian_mirror("bookworm", [sources]) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_with_options(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm-updates main\n"
        "deb [arch=amd64] http://two.example/debian bookworm main\n"
    )
    assert debian_mirror("bookworm", [listing]) == "http://two.example/debian"


def test_mirror_missing_names_the_step(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text("deb http://x.example/debian bookworm contrib\n")
    with pytest.raises(ImageBuildError) as exc:
        debian_mirror("bookworm", [listing])
    assert exc.value.step == "find the Debian mirror"


def test_read_newc_reads_what_build_cpio_writes() -> None:
    data = _build_cpio(
        dirs=["bin"],
        files={"bin/a": (b"hello", 0o755), "b": (b"x" * 4097, 0o644)},
        symlinks={"bin/sh": "a"},
        nodes={},
    )
    members = _read_newc(data)
    assert members["bin/a"][1] == b"hello"
    assert members["bin/a"][0] & 0o777 == 0o755
    assert members["b"][1] == b"x" * 4097
    assert members["bin/sh"][1] == b"a"


def test_drive_args_share_the_base_read_only_and_overlays_writable(tmp_path: Path) -> None:
    image = FullImage(
        kernel=tmp_path / "vmlinux", initrd=tmp_path / "initrd.img", disk=tmp_path / "disk.qcow2",
        append="console=ttyS0", kernel_version="6", digest="d", locust_version="2",
    )  # fmt: skip
    base = image.drive_args()
    assert f"file={tmp_path / 'disk.qcow2'}" in base[1] and "readonly=on" in base[1]
    overlay = image.drive_args(tmp_path / "o.qcow2")
    assert "o.qcow2" in overlay[1] and "readonly=on" not in overlay[1]
    assert image.command_line(ip="10.0.0.2/24") == "console=ttyS0 novamig.ip=10.0.0.2/24"
    with pytest.raises(ValueError):
        image.command_line(ip="a b")


# ------------------------------------------------------------------------------------------------
# the image: build, cache, boot under TCG


def _can_build() -> str | None:
    if os.geteuid() != 0:
        return "building the full image needs root"
    for tool in ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "mke2fs"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture(scope="module")
def full_image() -> FullImage:
    why = _can_build()
    if why:
        pytest.skip(why)
    return build_full_image()


def _magic(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(4)


def _build_dirs(images: Path) -> list[Path]:
    """Temporary build directories in the cache. A builder keeps one only while it holds the
    build lock, so, looked at under the lock, any one found is a leak (other builds running
    at the same time, e.g. on pytest-xdist workers, cannot confuse the check)."""
    with _locked(images / ".full.lock"):
        return list(images.glob(".full-build-*"))


@pytest.mark.qemu
@pytest.mark.slow
def test_image_builds_and_second_build_is_a_cache_hit(full_image: FullImage) -> None:
    for path in (full_image.kernel, full_image.initrd, full_image.disk):
        assert path.is_file() and path.stat().st_size > 0, path
    assert _magic(full_image.kernel) == b"\x7fELF"  # uncompressed, for PVH boot
    assert _magic(full_image.disk) == b"QFI\xfb"  # qcow2
    assert full_image.disk.parent.name == f"full-{full_image.digest}"
    manifest = json.loads((full_image.disk.parent / "manifest.json").read_text())
    assert manifest["digest"] == full_image.digest
    assert any(p.startswith("python3 ") for p in manifest["packages"]), manifest["packages"][:5]
    assert set(DISK_MODULES) <= set(manifest["modules"])
    # the stage-1 initramfs carries the disk modules and the tiny image's busybox
    members = _read_newc(full_image.initrd.read_bytes())
    assert {f"lib/modules/{m}.ko" for m in DISK_MODULES} <= set(members)
    assert "init" in members and "bin/busybox" in members
    # no temporary build directory left in the cache
    assert not _build_dirs(full_image.disk.parent.parent)

    t0 = time.monotonic()
    again = build_full_image()
    assert again.cached, "the second build was not a cache hit"
    assert (again.digest, again.disk, again.kernel, again.initrd) == (
        full_image.digest, full_image.disk, full_image.kernel, full_image.initrd,
    )  # fmt: skip
    assert again.disk.stat().st_mtime == full_image.disk.stat().st_mtime  # not rewritten
    print(f"cached build: {time.monotonic() - t0:.1f} s; sizes {again.sizes}")


@pytest.mark.qemu
@pytest.mark.slow
def test_failed_build_names_the_package_and_leaves_nothing_behind(
    full_image: FullImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package apt cannot find: the error names the step, the package and apt's complaint, and
    neither a temporary build directory nor an image directory is left in the cache."""
    images = full_image.disk.parent.parent
    # the cache key and the build read the package list where the variants are assembled
    monkeypatch.setattr(full_variants, "PACKAGES", ("python3", "novamig-no-such-package"))
    with pytest.raises(ImageBuildError) as exc:
        build_full_image()
    err = exc.value
    assert "mmdebstrap" in err.step and "novamig-no-such-package" in err.step, err.step
    assert err.command is not None and err.command[0] == "mmdebstrap"
    assert "novamig-no-such-package" in str(err)  # apt's message, in the output tail
    assert not _build_dirs(images)
    for manifest in images.glob("full-*/manifest.json"):
        assert "novamig-no-such-package" not in manifest.read_text(), manifest
    assert not [m for m in Path("/proc/self/mounts").read_text().splitlines() if ".full-build-" in m]


@dataclass
class BootedGuest:
    machine: Any  # QemuMachine
    net: Any  # GuestNetwork
    net_address: Any  # GuestAddress
    ip: str
    port: int
    ready: Any
    ready_after_s: float

    def connect(self) -> socket.socket:
        s: socket.socket = self.net.socket(socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect((self.ip, self.port))
        return s


@contextlib.contextmanager
def _boot(image: FullImage, subnet: str, name: str) -> Iterator[BootedGuest]:
    """A full guest on a bridge in a network namespace of its own, always shut down (QEMU is
    ended by process group) and the namespace deleted."""
    from novamig.hypervisor.machine import GuestSpec, QemuMachine
    from novamig.hypervisor.netns import GuestNetwork, netns_supported

    why = netns_supported()
    if why:
        pytest.skip(why)
    workdir = Path(tempfile.mkdtemp(prefix="novamig-full-test-"))
    try:
        with GuestNetwork(subnet) as net:
            addr = net.new_address()
            spec = GuestSpec(
                name=name, image=image, memory_mib=512, kernel_args=addr.kernel_args(),
                machine_type="pc-q35-7.2", accelerator="tcg", cpu_model="qemu64",
                network=net.attach(addr), extra_args=image.drive_args(),
            )  # fmt: skip
            machine = QemuMachine(spec, workdir)
            try:
                t0 = time.monotonic()
                machine.launch()
                ready = machine.wait_ready(180)
                yield BootedGuest(machine, net, addr, addr.ip, image.web_port, ready, time.monotonic() - t0)
            finally:
                machine.shutdown()
                assert machine.poll() is not None, f"QEMU {machine.pid} still running"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def booted(full_image: FullImage) -> Iterator[BootedGuest]:
    with _boot(full_image, "10.77.5.0/24", "full-test") as guest:
        yield guest


@pytest.mark.qemu
@pytest.mark.slow
def test_guest_boots_to_ready_with_its_address(booted: BootedGuest) -> None:
    assert booted.ready.ip == booted.ip
    assert booted.ready.fields.get("kernel")
    console = booted.machine.console_log()
    assert "novamig-init: up:" in console, console[-2000:]
    print(f"boot to READY: {booted.ready_after_s:.1f} s")


def _locust_status(guest: BootedGuest) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(_http(guest.connect(), "GET", "/_novamig/locust/status")[1])
    return status


def _wait_web(booted: BootedGuest, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = _http(booted.connect(), "GET", "/health")
            if status == 200:
                health: dict[str, Any] = json.loads(body)
                return health
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"web app not answering after {timeout} s; console:\n{booted.machine.console_log()[-3000:]}"
            )
        time.sleep(0.5)


@pytest.mark.qemu
@pytest.mark.slow
def test_web_app_answers_through_the_guest_network(booted: BootedGuest) -> None:
    health = _wait_web(booted, 120)
    assert health["status"] == "ok"
    status, body = _http(booted.connect(), "GET", "/memory?kib=1024")
    assert status == 200 and json.loads(body)["pages"] == 256
    status, body = _http(booted.connect(), "POST", "/echo", b"through the bridge")
    assert (status, body) == (200, b"through the bridge")


@pytest.mark.qemu
@pytest.mark.slow
def test_locust_in_the_guest_loads_the_web_app(booted: BootedGuest) -> None:
    _wait_web(booted, 120)
    outcome = _run_locust(booted.connect, users=3, run_time_s=6, timeout=240)
    totals = _check_locust(outcome, 6)
    duration = float(outcome.records[-1][1]) - float(outcome.records[0][1])
    print(
        f"Locust in the guest: {totals['requests']} requests, first after "
        f"{outcome.result['first_request_s']:.1f} s, {totals['requests'] / max(duration, 1e-3):.0f} req/s"
    )
    # the agent kept beating while Locust ran: the guest stayed responsive
    assert booted.machine.agent.ping(30).ok


@pytest.mark.qemu
@pytest.mark.slow
def test_guest_migrates_under_locust_with_its_shared_read_only_disk(full_image: FullImage) -> None:
    """Both QEMUs open the one base disk read-only; Locust inside the guest keeps running across
    the switchover and no request fails."""
    from novamig.hypervisor.machine import QemuMachine
    from novamig.hypervisor.migration import migrate
    from novamig.hypervisor.policy import QemuMigrationSettings

    with _boot(full_image, "10.77.8.0/24", "full-mig") as src:
        _wait_web(src, 120)
        params = {"users": 3, "spawn_rate": 3, "run_time_s": 40}
        status, body = _http(src.connect(), "POST", "/_novamig/locust/start", json.dumps(params).encode())
        assert status == 202, body
        deadline = time.monotonic() + 120
        while (
            json.loads(_http(src.connect(), "GET", "/_novamig/locust/status")[1])["first_request_s"] is None
        ):
            assert time.monotonic() < deadline, "Locust did not start within 120 s"
            time.sleep(1)
        dst_spec = src.machine.spec.for_destination(network=src.net.attach(src.net_address))
        dst = QemuMachine(dst_spec, src.machine.workdir)
        try:
            dst.launch()
            result = migrate(src.machine, dst, QemuMigrationSettings(timeout_s=120))
            assert result.status == "completed", result.error
            moved = BootedGuest(dst, src.net, src.net_address, src.ip, src.port, src.ready, 0.0)
            outcome_state: dict[str, Any] = {}
            deadline = time.monotonic() + 120
            while True:
                outcome_state = _locust_status(moved)
                if outcome_state["state"] not in ("running", "stopping"):
                    break
                assert time.monotonic() < deadline, outcome_state
                time.sleep(1)
            result_json = json.loads(_http(moved.connect(), "GET", "/_novamig/locust/result")[1])
            assert result_json["state"] == "finished", result_json
            stats = result_json["stats"]
            assert sum(x["num_requests"] for x in stats) > 0
            assert sum(x["num_failures"] for x in stats) == 0, stats
            records = _http(moved.connect(), "GET", "/_novamig/locust/records")[1].decode().splitlines()
            mono = [int(r.split(",", 1)[0]) for r in records]
            # leave out Locust's first seconds (its first requests each take about a second)
            gaps = [b - a for a, b in itertools.pairwise(mono) if a > mono[0] + 3e9]
            print(
                f"migration: {result.total_ms} ms total, QEMU downtime {result.qemu_downtime_ms} ms; "
                f"longest span without a completed request in the guest {max(gaps) / 1e6:.0f} ms"
            )
        finally:
            dst.shutdown()
            assert dst.poll() is not None, f"QEMU {dst.pid} still running"


# ------------------------------------------------------------------------------------------------
# the Glance form: a self-booting qcow2 with cloud-init


@pytest.fixture(scope="module")
def cloud_image() -> CloudImage:
    why = _can_build()
    for tool in ("syslinux", "mkfs.vfat", "mcopy", "sfdisk", "xorriso"):
        if not why and shutil.which(tool) is None:
            why = f"{tool} is not installed"
    if why:
        pytest.skip(why)
    return build_cloud_image()


def _config_drive(path: Path, work: Path, hostname: str, user_data: str) -> Path:
    """An OpenStack config drive (ISO 9660 labelled config-2), as Nova makes one."""
    latest = work / "openstack" / "latest"
    latest.mkdir(parents=True)
    meta = {"uuid": "0d2a6c5e-6f0a-4c53-9d0e-6a1f0f0c0001", "hostname": hostname, "name": hostname,
            "launch_index": 0, "availability_zone": "nova"}  # fmt: skip
    (latest / "meta_data.json").write_text(json.dumps(meta))
    (latest / "user_data").write_text(user_data)
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-o", str(path), "-V", "config-2", "-J", "-R", str(work)],
        check=True, capture_output=True,
    )  # fmt: skip
    return path


@pytest.mark.qemu
@pytest.mark.slow
def test_cloud_image_boots_by_itself_with_dhcp_and_cloud_init(
    cloud_image: CloudImage, tmp_path: Path
) -> None:
    """The DevStack guest's path, short of Nova: BIOS → syslinux → kernel → stage 1 → PID 1; DHCP
    on the first NIC (the agent reports the leased address); cloud-init reads the config drive
    and runs the user-data `novamig run` gives every server (`render_user_data`): the agent is
    restarted with the case's settings — 200 Hz, the dirtier, heartbeats over UDP to a collector
    on the runner (here QEMU user networking's 10.0.2.2, which is this machine's loopback) — and
    the web application answers through a forwarded port."""
    from guestvm import AgentChannel, free_port, stop_process_group

    from novamig.measure.contract import CaseClock, ServerInfo
    from novamig.measure.heartbeat_udp import UdpHeartbeatProbe
    from novamig.scenario.models import Measure, MemoryLoad, Workload
    from novamig.workload.userdata import GuestSetup, render_user_data

    assert _magic(cloud_image.disk) == b"QFI\xfb"
    assert cloud_image.properties["hw_disk_bus"] == "virtio"
    assert build_cloud_image().cached

    overlay = tmp_path / "instance.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(cloud_image.disk), str(overlay)],
        check=True,
    )  # fmt: skip
    hz, collector_port = 200, free_port(socket.SOCK_DGRAM)
    workload = Workload(kind="memory", memory=MemoryLoad(dirty_rate_mib_s=4, working_set_mib=8))
    setup = GuestSetup(
        "cloud#r1", workload, Measure(heartbeat_hz=hz), heartbeat_udp=f"10.0.2.2:{collector_port}"
    )
    user_data = render_user_data(setup)
    iso = _config_drive(tmp_path / "config.iso", tmp_path / "cd", "novamig-cloud-test", user_data)
    collector = UdpHeartbeatProbe(hz, ("127.0.0.1", collector_port), None, tmp_path / "hb")
    collector.start([ServerInfo("id-cloud", "cloud", "h", "127.0.0.1")], CaseClock())
    http_port = free_port()
    console = tmp_path / "console.log"
    agent_sock = tmp_path / "agent.sock"
    cmd = [
        "qemu-system-x86_64", "-machine", "pc-q35-7.2", "-accel", "tcg,tb-size=64", "-cpu", "qemu64",
        "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", f"file:{console}",
        "-drive", f"file={overlay},if=virtio,format=qcow2",
        "-drive", f"file={iso},media=cdrom,if=ide,format=raw,readonly=on",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{http_port}-:{cloud_image.web_port}",
        "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"socket,id=agent,path={agent_sock},server=on,wait=off",
        "-device", "virtserialport,bus=vser0.0,chardev=agent,name=org.novamig.agent",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    agent = None
    try:
        deadline = time.monotonic() + 30
        while not agent_sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "QEMU did not start"
            time.sleep(0.05)
        agent = AgentChannel(agent_sock)
        t0 = time.monotonic()
        try:
            ready = agent.wait_ready(240)
        except (TimeoutError, ConnectionError) as e:
            raise AssertionError(f"no READY: {e}\n{console.read_text(errors='replace')[-3000:]}") from e
        assert ready.ip == "10.0.2.15", ready  # leased from QEMU's DHCP server
        ready_s = time.monotonic() - t0
        health = _wait_http(http_port, 180)
        assert health["status"] == "ok"
        web_s = time.monotonic() - t0
        # cloud-init runs the script late in boot; the agent restarted by it says READY again
        # with the case's rate (the first agent ran on its defaults)
        deadline = time.monotonic() + 300
        while agent.ready is None or agent.ready.fields.get("hb_hz") != str(hz):
            text = console.read_text(errors="replace")
            assert time.monotonic() < deadline, f"cloud-init did not apply the user-data:\n{text[-3000:]}"
            time.sleep(0.5)
        applied_s = time.monotonic() - t0
        # the four stages ran in one process (cloud_init_stages.py), each as cloud-init reports
        # it, all succeeded, and the image's cloud-init configuration passed cloud-init's schema
        deadline = time.monotonic() + 120
        while "novamig-init: cloud-init finished" not in (text := console.read_text(errors="replace")):
            assert time.monotonic() < deadline, f"cloud-init did not finish:\n{text[-3000:]}"
            time.sleep(0.5)
        assert "cloud-init finished (last error status: 0)" in text, text[-3000:]
        for stage in ("init-local", "init", "modules:config", "modules:final"):
            assert f"running '{stage}' at" in text, (stage, text[-3000:])
        assert "Datasource DataSourceConfigDrive" in text and "Invalid cloud-config" not in text
        info = agent.command("info").fields
        assert info["hb_udp"] == f"10.0.2.2:{collector_port}" and info["dirtier"] == "1", info
        time.sleep(3.0)
        info = agent.command("info").fields
        assert int(info["udp_sent"]) > 0 and info["udp_errors"] == "0", info
        print(
            f"Glance form under TCG: READY {ready_s:.1f} s, web app {web_s:.1f} s, "
            f"novamig user-data applied by cloud-init {applied_s:.1f} s after QEMU started"
        )
    finally:
        collector.stop()
        if agent is not None:
            agent.close()
        stop_process_group(proc)
    assert proc.poll() is not None
    beats = collector.records or {}
    assert "127.0.0.1" in beats, f"no heartbeat reached the collector: {sorted(beats)}"
    recv = beats["127.0.0.1"].recv_ns
    span_s = (recv[-1] - recv[0]) / 1e9
    assert len(recv) > 2 * hz and span_s > 2, (len(recv), span_s)
    rate = (len(recv) - 1) / span_s
    print(f"UDP heartbeats at the collector: {len(recv)} over {span_s:.1f} s = {rate:.0f}/s (asked {hz})")
    # the rate the user-data set, not the agent's default of 1000 Hz (the upper bound); the lower
    # bound is loose because under TCG cloud-init may still be finishing beside the agent
    assert 0.5 * hz <= rate <= 1.05 * hz, rate


def _wait_http(port: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = _http(_loopback(port), "GET", "/health", timeout=10)
            if status == 200:
                health: dict[str, Any] = json.loads(body)
                return health
        except (OSError, IndexError, ValueError):
            pass
        assert time.monotonic() < deadline, f"no answer on port {port} within {timeout} s"
        time.sleep(1)
