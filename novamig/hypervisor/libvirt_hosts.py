"""Two libvirt compute hosts on one machine: a libvirtd per host, each in namespaces novamig makes.

Why: Nova's libvirt driver — the code a DevStack live-migration job runs — needs one libvirtd per
compute host, and a live migration needs two hosts that reach each other. On one machine each
"host" is a set of namespaces novamig creates and removes:

* a **network namespace** (``novamig-<pid>-<hex>``, the same scheme as the QEMU mode's guest
  network, so leak checks and ``novamig cleanup`` find it) holding the host's management address
  (``10.88.0.1``/``.2`` on a veth pair joining the two hosts: libvirtd listens on TCP there, and a
  peer-to-peer migration's control and data connections use it) and a bridge for its guests' taps;
* a **private mount and UTS namespace**: libvirtd keeps its state in fixed paths, so this host's own
  directories (under the pair's run directory) are bind-mounted over ``/etc/libvirt``,
  ``/run/libvirt``, ``/var/lib/libvirt``, ``/var/cache/libvirt`` and ``/var/log/libvirt``, and the
  host gets its own hostname (Nova's ``hypervisor_hostname``, the Placement provider's name, is
  libvirt's hostname). Each libvirtd gets its own pid file: the default ``/run/libvirtd.pid``
  would be shared by both.

The guests' network is the QEMU mode's `GuestNetwork`: one namespace with a bridge and the runner's
address (``10.77.0.1``), where probes open their sockets. Each host's bridge is joined to it by a
veth pair, so a guest keeps one L2 network and one address wherever it runs; the destination's tap
is made before the migration (what Nova's ``pre_live_migration`` does for a 'tap' VIF) and QEMU's
announcement after switchover moves the MAC in the bridges.

Configuration that matters (measured with libvirt 11.3 and QEMU 10.0, TCG):
``libvirtd.conf`` — TCP without TLS or authentication on the namespace's address only, and an
explicit, distinct ``host_uuid``: SMBIOS is not readable here, and two daemons with the same UUID
refuse to migrate ("Attempt to migrate guest to the same host"). ``qemu.conf`` — QEMU as root with
no security driver (no SELinux/AppArmor labelling), ``remember_owner = 0``, ``migration_host`` =
the namespace's address, and ``cgroup_controllers = [ ]``: both daemons share the machine's cgroup
tree, so guests of the same name on the two hosts (every migration's source and destination) would
clash in it (consequence: flavors with ``quota:cpu_*`` cannot work in this mode).

Nothing system-wide is started or changed: the daemons run only inside these namespaces, no
address, route or firewall rule touches the host's own network. The one trace on the host is an
empty ``/run/libvirt`` made as a mount point if the packages did not make it.

Lifetime: `LibvirtHostPair` is a context manager. virtlogd and libvirtd are started through
`runtime.spawn` (own process group, killed with the harness: ``PR_SET_PDEATHSIG``) with their own
pid files, and ended by PID on exit — SIGTERM, then SIGKILL after a grace period — after the
guests, whose QEMU processes libvirt daemonises (they would outlive libvirtd), are destroyed and
then killed by the pid files libvirt keeps for them. Then the namespaces, bridges and directories
go. Every exit path does this: normal exit, an exception or Ctrl-C inside the ``with``, a failure
while starting, and an exit hook as the backstop.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novamig.guest.image import cache_dir
from novamig.hypervisor import runtime
from novamig.hypervisor.errors import HypervisorError
from novamig.hypervisor.libvirt_domain import tap_domain_xml, tap_name
from novamig.hypervisor.netns import (
    NETNS_PREFIX,
    GuestAddress,
    GuestNetwork,
    netns_supported,
)

#: The directories libvirtd keeps state in, each replaced per host by a bind mount.
STATE_DIRS: dict[str, str] = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}
MGMT_SUBNET_PREFIX = "10.88.0"
"""The hosts' management/migration addresses: ``<prefix>.1`` and ``<prefix>.2`` (/24)."""

CAPABILITIES = Path("cache") / "qemu" / "capabilities"
"""Where libvirtd caches what it probed of QEMU (inside a host's directory)."""

RUN_DIR_PREFIX = "novamig-libvirt-"
"""Run directories are ``<tmp>/novamig-libvirt-<pid>-<random>``: leftovers name their creator."""


class LibvirtHostError(HypervisorError):
    """A libvirt host could not be started, or a command inside its namespaces failed. The message
    carries the command and up to 600 characters of its output."""


def libvirt_supported() -> str | None:
    """None if two libvirt hosts can be made here, else why not."""
    why = netns_supported()
    if why is not None:
        return why
    for program in ("libvirtd", "virtlogd", "virsh", "nsenter", "unshare"):
        if shutil.which(program) is None:
            return f"`{program}` is missing (tools/setup.sh installs libvirt)"
    return None


def run_command(argv: list[str], timeout_s: float = 30.0, *, check: bool = True) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise LibvirtHostError(f"{' '.join(argv)!r} timed out after {timeout_s:g} s") from None
    if check and proc.returncode != 0:
        out = (proc.stderr + proc.stdout).strip()[:600]
        raise LibvirtHostError(f"{' '.join(argv)!r} failed (exit {proc.returncode}): {out}")
    return proc.stdout


def _new_netns_name() -> str:
    return f"{NETNS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"


def libvirtd_conf(address: str, host_uuid: str) -> str:
    """``libvirtd.conf`` for one host (see the module docstring for why each line)."""
    return (
        "# written by novamig for one libvirt host in its own namespaces\n"
        "listen_tls = 0\n"
        "listen_tcp = 1\n"
        f'listen_addr = "{address}"\n'
        'auth_tcp = "none"\n'
        f'host_uuid = "{host_uuid}"\n'
        'log_filters = "1:qemu.qemu_migration 1:qemu.qemu_migration_params"\n'
        'log_outputs = "1:file:/var/log/libvirt/libvirtd.log"\n'
    )


def qemu_conf(address: str, shared_filesystems: tuple[str, ...] = ()) -> str:
    """``qemu.conf`` for one host (see the module docstring for why each line)."""
    text = (
        "# written by novamig for one libvirt host in its own namespaces\n"
        'user = "root"\n'
        'group = "root"\n'
        'security_driver = "none"\n'
        "cgroup_controllers = [ ]\n"
        "remember_owner = 0\n"
        f'migration_host = "{address}"\n'
    )
    if shared_filesystems:
        paths = ", ".join(f'"{p}"' for p in shared_filesystems)
        text += f"shared_filesystems = [ {paths} ]\n"
    return text


def hosts_file(hosts: list[tuple[str, str]]) -> str:
    """The ``/etc/hosts`` each libvirtd sees: its peers' compute host names resolve to their
    management addresses (Nova's source builds ``qemu+tcp://<destination host>/system``)."""
    lines = ["127.0.0.1 localhost", *(f"{address} {name}" for name, address in hosts)]
    return "\n".join(lines) + "\n"


@dataclass
class LibvirtHost:
    """One compute host: its names, addresses, directories and daemons."""

    hostname: str
    address: str
    netns: str
    directory: Path
    host_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    bridge: str = "nmbr0"
    virtlogd: subprocess.Popen[bytes] | None = None
    libvirtd: subprocess.Popen[bytes] | None = None
    libvirtd_pid: int | None = None
    """libvirtd's PID when this process did not start it (`from_description`, another process
    reaching the host's namespaces)."""

    def describe(self) -> dict[str, str | int | None]:
        """What another process needs to run commands on this host (`from_description`)."""
        pid = self.libvirtd.pid if self.libvirtd is not None else self.libvirtd_pid
        return {
            "hostname": self.hostname,
            "address": self.address,
            "netns": self.netns,
            "directory": str(self.directory),
            "host_uuid": self.host_uuid,
            "libvirtd_pid": pid,
        }

    @classmethod
    def from_description(cls, data: dict[str, Any]) -> LibvirtHost:
        """The host `describe` wrote, reachable from this process while its libvirtd runs."""
        return cls(
            str(data["hostname"]),
            str(data["address"]),
            str(data["netns"]),
            Path(data["directory"]),
            host_uuid=str(data["host_uuid"]),
            libvirtd_pid=int(data["libvirtd_pid"]),
        )

    @property
    def socket_path(self) -> Path:
        """libvirtd's read-write unix socket, as seen from the root mount namespace."""
        return self.directory / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """The connection URI from outside the host's namespaces (Nova's ``connection_uri``)."""
        return f"qemu+unix:///system?socket={self.socket_path}"

    @property
    def tcp_uri(self) -> str:
        """The URI a peer's libvirtd dials for a peer-to-peer migration to this host."""
        return f"qemu+tcp://{self.address}/system"

    @property
    def migrate_uri(self) -> str:
        """Where the migration's data stream goes (``VIR_MIGRATE_PARAM_URI``)."""
        return f"tcp://{self.address}"

    def exec_argv(self, argv: list[str]) -> list[str]:
        """`argv` wrapped to run inside this host's network, mount and UTS namespaces, where
        ``qemu:///system`` is this host's libvirtd (the same command as on a real compute host)."""
        pid = self.libvirtd.pid if self.libvirtd is not None else self.libvirtd_pid
        if pid is None:
            raise LibvirtHostError(f"libvirt host {self.hostname} is not running")
        return ["nsenter", f"--target={pid}", "--mount", "--uts", "--net", *argv]

    def shell(self, command: str, timeout_s: float = 30.0) -> str:
        """Run a shell command inside the host's namespaces; its stdout. Raises `LibvirtHostError`
        on a non-zero exit, with stderr in the message."""
        return run_command(self.exec_argv(["sh", "-c", command]), timeout_s)

    def virsh(self, *args: str, timeout_s: float = 30.0) -> str:
        """``virsh`` against this host's libvirtd (from the root namespace, over its socket)."""
        return run_command(["virsh", "-c", self.uri, *args], timeout_s)

    def plug_tap(self, tap: str, *, exist_ok: bool = False) -> None:
        """A tap on this host's guest bridge, made before libvirt starts or receives a guest on it
        (Nova's 'tap' VIF: ``<interface type='ethernet'>`` with ``managed='no'``). `exist_ok`: a
        tap already there is left as it is (Nova plugs a server's VIFs again when it restarts)."""
        n = self.netns
        if exist_ok and run_command(["ip", "-n", n, "link", "show", "dev", tap], check=False):
            return
        run_command(["ip", "-n", n, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])
        run_command(["ip", "-n", n, "link", "set", tap, "master", self.bridge])
        run_command(["ip", "-n", n, "link", "set", tap, "up"])

    def unplug_tap(self, tap: str) -> None:
        run_command(["ip", "-n", self.netns, "link", "del", tap], check=False)

    def start_guest(
        self,
        name: str,
        *,
        kernel: Path,
        initrd: Path,
        cmdline: str,
        address: GuestAddress,
        memory_mib: int = 256,
    ) -> str:
        """Define and start a direct-kernel-boot guest on its own tap (`tap_domain_xml`); the tap's
        name, which the destination of a migration needs too (`plug_tap` there first)."""
        tap = tap_name(name)
        self.plug_tap(tap)
        xml = tap_domain_xml(
            name,
            kernel=kernel,
            initrd=initrd,
            cmdline=cmdline,
            address=address,
            tap=tap,
            memory_mib=memory_mib,
        )
        path = self.directory / f"{name}.xml"
        path.write_text(xml)
        self.virsh("define", str(path))
        self.virsh("start", name)
        return tap

    def guest_pids(self) -> list[int]:
        """PIDs of the QEMU processes libvirt started on this host (from its pid files)."""
        pids = []
        for pidfile in (self.directory / "run" / "qemu").glob("*.pid"):
            if pidfile.name == "driver.pid":  # the QEMU driver's own lock file: libvirtd's PID
                continue
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(pidfile.read_text().strip()))
        return pids

    def pids(self) -> list[int]:
        """PIDs of this host's daemons (those still running)."""
        return [p.pid for p in (self.virtlogd, self.libvirtd) if p is not None and p.poll() is None]


def _capabilities_cache() -> Path:
    return cache_dir() / "libvirt-qemu-capabilities"


def _seed_capabilities(target: Path) -> None:
    """Start a host's libvirtd with the QEMU capabilities a previous host probed. Probing QEMU costs
    each libvirtd 8 s under TCG; with the cache both answer in 0.4 s. libvirt checks each cached
    file itself (QEMU binary's time stamp, libvirt and kernel version, host CPU and microcode) and
    probes again when one is stale, so a seed can only save time."""
    seed = _capabilities_cache()
    if seed.is_dir():
        shutil.copytree(seed, target, dirs_exist_ok=True)


def _keep_capabilities(source: Path) -> None:
    """Keep what a started libvirtd has cached (file by file, each replaced atomically: two pairs
    may start at once)."""
    seed = _capabilities_cache()
    with contextlib.suppress(OSError):
        seed.mkdir(parents=True, exist_ok=True)
        for cached in source.glob("*.xml"):
            data = cached.read_bytes()
            kept = seed / cached.name
            if kept.exists() and kept.read_bytes() == data:
                continue
            tmp = seed / f".{cached.name}.{os.getpid()}"
            tmp.write_bytes(data)
            os.replace(tmp, kept)


class LibvirtHostPair:
    """Two libvirt hosts joined by a management link and one guest network.

    ``with LibvirtHostPair() as pair:`` starts both (0.4 s; 9 s the first time on a machine, while
    each libvirtd probes QEMU — see `_seed_capabilities`) and removes everything on exit.
    """

    def __init__(
        self,
        *,
        run_dir: Path | None = None,
        guest_subnet: str = "10.77.0.0/24",
        hostnames: tuple[str, str] = ("novamig-lv-a", "novamig-lv-b"),
        start_timeout_s: float = 60.0,
        shared_filesystems: tuple[str, ...] = (),
    ) -> None:
        """`shared_filesystems`: directories both hosts share (the embedded cloud's instances
        path): libvirt migrates a guest whose disks are there without copying them (qemu.conf's
        ``shared_filesystems``, libvirt 10.6 and later), as over NFS on a real deployment."""
        why = libvirt_supported()
        if why is not None:
            raise LibvirtHostError(f"cannot run libvirt hosts here: {why}")
        self._parent = run_dir
        self.guest_subnet = guest_subnet
        self.hostnames = hostnames
        self.start_timeout_s = start_timeout_s
        self.shared_filesystems = shared_filesystems
        self.run_dir: Path | None = None
        self.guest_network: GuestNetwork | None = None
        self.hosts: list[LibvirtHost] = []
        self._hook = self.close

    def __enter__(self) -> LibvirtHostPair:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def network(self) -> GuestNetwork:
        if self.guest_network is None:
            raise LibvirtHostError("the libvirt hosts are not started")
        return self.guest_network

    def host(self, hostname: str) -> LibvirtHost:
        for h in self.hosts:
            if h.hostname == hostname:
                return h
        raise KeyError(hostname)

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Make the directories, namespaces and links, start both daemons and wait until they
        answer. Anything made is removed again if this fails or is interrupted."""
        runtime.add_exit_hook(self._hook)
        try:
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-", dir=self._parent))
            runtime.track_temp_dir(self.run_dir)
            self.guest_network = GuestNetwork(self.guest_subnet)
            self.guest_network.create()
            for i, hostname in enumerate(self.hostnames):
                self._add_host(i, hostname)
            self._link_hosts()
            for h in self.hosts:
                self._start_daemons(h)
            # In parallel: each libvirtd probes QEMU's capabilities on the first request.
            with concurrent.futures.ThreadPoolExecutor(len(self.hosts)) as pool:
                for future in [pool.submit(self._wait_ready, h) for h in self.hosts]:
                    future.result()
            _keep_capabilities(self.hosts[0].directory / CAPABILITIES)
        except BaseException:
            self.close()
            raise

    def _add_host(self, index: int, hostname: str) -> None:
        assert self.run_dir is not None
        directory = self.run_dir / chr(ord("a") + index)
        for sub in STATE_DIRS:
            (directory / sub).mkdir(parents=True)
        (directory / "log" / "qemu").mkdir()  # guests' console logs (the packages make it on the host)
        _seed_capabilities(directory / CAPABILITIES)
        host = LibvirtHost(hostname, f"{MGMT_SUBNET_PREFIX}.{index + 1}", _new_netns_name(), directory)
        (directory / "etc" / "libvirtd.conf").write_text(libvirtd_conf(host.address, host.host_uuid))
        (directory / "etc" / "qemu.conf").write_text(qemu_conf(host.address, self.shared_filesystems))
        names = [(name, f"{MGMT_SUBNET_PREFIX}.{i + 1}") for i, name in enumerate(self.hostnames)]
        (directory / "hosts").write_text(hosts_file(names))
        run_command(["ip", "netns", "add", host.netns])
        self.hosts.append(host)  # from here on close() removes its namespace
        n = host.netns
        run_command(["ip", "-n", n, "link", "set", "lo", "up"])
        run_command(["ip", "-n", n, "link", "add", host.bridge, "type", "bridge", "stp_state", "0"])
        run_command(["ip", "-n", n, "link", "set", host.bridge, "up"])
        # The guest network's side of the veth is named after the host; the host's side is `nmup`.
        g = self.network.name
        outer = f"nmlv{index}"
        run_command(["ip", "-n", g, "link", "add", outer, "type", "veth", "peer", "name", "nmup", "netns", n])
        run_command(["ip", "-n", g, "link", "set", outer, "master", self.network.bridge])
        run_command(["ip", "-n", g, "link", "set", outer, "up"])
        run_command(["ip", "-n", n, "link", "set", "nmup", "master", host.bridge])
        run_command(["ip", "-n", n, "link", "set", "nmup", "up"])

    def _link_hosts(self) -> None:
        """The management link: a veth pair with each host's address (libvirtd's TCP listener,
        the peer-to-peer migration's connection and QEMU's migration stream)."""
        a, b = self.hosts
        run_command(
            [
                "ip",
                "-n",
                a.netns,
                "link",
                "add",
                "nmmgmt",
                "type",
                "veth",
                "peer",
                "name",
                "nmmgmt",
                "netns",
                b.netns,
            ]
        )
        for h in (a, b):
            run_command(["ip", "-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "nmmgmt"])
            run_command(["ip", "-n", h.netns, "link", "set", "nmmgmt", "up"])

    def _start_daemons(self, host: LibvirtHost) -> None:
        """virtlogd first, in a new private mount + UTS namespace that gets the host's bind mounts
        and hostname; then libvirtd entering that same namespace (``nsenter`` to virtlogd's), so
        both see the same ``/run/libvirt``. Both run in the foreground as `runtime.spawn` children."""
        for path in STATE_DIRS.values():
            Path(path).mkdir(parents=True, exist_ok=True)  # mount points; empty on the host
        d = host.directory
        mounts = "; ".join(f'mount --bind "$2/{sub}" {path}' for sub, path in STATE_DIRS.items())
        # A sysfs of the host's own network namespace (as `ip netns exec` mounts it): libvirt reads
        # network devices there.
        sysfs = "umount -l /sys; mount -t sysfs sysfs /sys"
        # Its own /etc/hosts: the compute host names resolve to the management addresses.
        mounts += '; mount --bind "$2/hosts" /etc/hosts'
        script = f'set -e; hostname "$1"; {sysfs}; {mounts}; exec virtlogd --pid-file "$2/virtlogd.pid"'
        argv = ["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script, "sh"]
        with open(d / "virtlogd.out", "wb") as out:
            host.virtlogd = runtime.spawn([*argv, host.hostname, str(d)], stdout=out, netns=host.netns)
        self._wait_for(host, d / "run" / "virtlogd-sock", host.virtlogd, "virtlogd")
        argv = ["nsenter", f"--target={host.virtlogd.pid}", "--mount", "--uts"]
        argv += ["libvirtd", "--listen", "--pid-file", str(d / "libvirtd.pid")]
        with open(d / "libvirtd.out", "wb") as out:
            host.libvirtd = runtime.spawn(argv, stdout=out, netns=host.netns)
        self._wait_for(host, host.socket_path, host.libvirtd, "libvirtd")

    def _wait_for(self, host: LibvirtHost, path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not path.exists():
            if proc.poll() is not None:
                log = (host.directory / f"{what}.out").read_text(errors="replace")[-600:]
                raise LibvirtHostError(f"{what} of {host.hostname} exited ({proc.returncode}): {log}")
            if time.monotonic() > deadline:
                raise LibvirtHostError(
                    f"{what} of {host.hostname} made no {path.name} in {self.start_timeout_s:g} s"
                )
            time.sleep(0.05)

    def _wait_ready(self, host: LibvirtHost) -> None:
        """Until libvirtd reports its capabilities with the configured host UUID (it probes QEMU
        first: a few seconds under TCG)."""
        deadline = time.monotonic() + self.start_timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                if host.host_uuid in host.virsh("capabilities", timeout_s=20):
                    return
            except LibvirtHostError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise LibvirtHostError(f"libvirtd of {host.hostname} not ready in {self.start_timeout_s:g} s: {last}")

    # -- stop ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop everything and remove what was made. Idempotent; never raises for one part that
        is already gone, so the rest is still removed."""
        runtime.remove_exit_hook(self._hook)
        for h in self.hosts:
            _stop_guests(h)
        for h in self.hosts:
            for proc in (h.libvirtd, h.virtlogd):
                if proc is not None:
                    _end(proc)
            for pid in h.guest_pids():  # anything libvirt did not get to destroy
                kill_pid(pid)
            run_command(["ip", "netns", "del", h.netns], check=False)
        self.hosts = []
        if self.guest_network is not None:
            self.guest_network.close()
            self.guest_network = None
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None


def _stop_guests(host: LibvirtHost) -> None:
    """Destroy every running guest through libvirt (so it releases its state cleanly)."""
    if host.libvirtd is None or host.libvirtd.poll() is not None or not host.socket_path.exists():
        return
    with contextlib.suppress(LibvirtHostError):
        for name in host.virsh("list", "--name", timeout_s=10).split():
            with contextlib.suppress(LibvirtHostError):
                host.virsh("destroy", name, timeout_s=20)


def _end(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM the daemon's process group, SIGKILL it after `grace_s`; reap the daemon. (Waits on
    the child itself: a signal-0 probe would count its zombie as alive.)"""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    runtime.unregister_process_group(proc.pid)


def kill_pid(pid: int, grace_s: float = 2.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
