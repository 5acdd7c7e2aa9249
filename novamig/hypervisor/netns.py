"""The guests' network: a namespace novamig creates, a bridge in it, one tap per QEMU.

Why a namespace: probes need to reach the guest at a fixed address that survives migration, without
touching the host's own network. Inside `novamig-<pid>-<random>` there is a bridge with the host-side
address (10.77.0.1/24 by default) and one tap per QEMU (source and destination) on it. Both QEMUs
run inside the namespace; the guest keeps its MAC and IP and QEMU's post-migration announcement
(GARP/RARP) moves the MAC to the destination's tap on the bridge. Probes open their sockets inside
the namespace (`socket_in`), so all traffic stays between the namespace and the guest.

Teardown happens on every exit path: the context manager deletes the namespace (which removes the
bridge and the taps with it); an atexit hook is the backstop.

Without root, `UserModeNetwork` is the fallback: QEMU's user-mode networking with a host port
forwarded to the guest, moved to the destination after switchover through HMP
`hostfwd_remove`/`hostfwd_add` (the destination cannot bind the port while the source holds it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from novamig.hypervisor.errors import NetworkError
from novamig.hypervisor.machine import NetworkAttachment
from novamig.hypervisor.runtime import add_exit_hook, libc, remove_exit_hook

if TYPE_CHECKING:
    from novamig.hypervisor.machine import QemuMachine

NETNS_PREFIX = "novamig-"
_CLONE_NEWNET = 0x40000000


def netns_supported() -> str | None:
    """None if namespaces with taps can be made here, else why not (then use UserModeNetwork)."""
    if os.geteuid() != 0:
        return "not root: network namespaces and taps need CAP_NET_ADMIN"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing"
    return None


def list_novamig_netns() -> list[str]:
    """Names of namespaces that look like novamig's (for leak checks and cleanup)."""
    try:
        return sorted(p.name for p in Path("/run/netns").iterdir() if p.name.startswith(NETNS_PREFIX))
    except FileNotFoundError:
        return []


def _ip(*args: str, check: bool = True) -> str:
    argv = ["ip", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise NetworkError(f"ip {' '.join(args[:3])} failed", argv, proc.stdout + proc.stderr)
    return proc.stdout


def socket_in(netns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket created inside `netns` (it stays there for its whole life).

    setns() changes only the calling thread, so a short-lived helper thread enters the namespace,
    creates the socket and ends; the caller's threads never change namespace.
    """
    box: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc().setns(fd, _CLONE_NEWNET) != 0:
                    err = os.strerror(ctypes.get_errno())
                    raise NetworkError(f"setns into {netns} failed: {err}")
            finally:
                os.close(fd)
            box.append(socket.socket(family, kind))
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=make, name=f"novamig-netns-{netns}")
    t.start()
    t.join()
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    return result


@dataclass(frozen=True)
class GuestAddress:
    """A guest's identity on the bridge: kept across migration."""

    ip: str
    prefix: int
    mac: str
    gateway: str

    def kernel_args(self) -> tuple[str, ...]:
        """Agent configuration (docs/guest-agent.md) for this address."""
        return (f"novamig.ip={self.ip}/{self.prefix}", f"novamig.gw={self.gateway}")


class GuestNetwork:
    """A namespace with a bridge; hands out taps and addresses. Use as a context manager."""

    def __init__(self, subnet: str = "10.77.0.0/24", *, bridge: str = "nmbr0") -> None:
        why = netns_supported()
        if why is not None:
            raise NetworkError(f"cannot create a guest network namespace: {why}")
        self.subnet = ipaddress.ip_network(subnet)
        self.name = f"{NETNS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.bridge = bridge
        hosts = self.subnet.hosts()
        self.host_ip = str(next(hosts))
        self._free_ips = hosts
        self._taps = itertools.count()
        self._macs = itertools.count(1)
        self.created = False
        self._hook = self.close
        # locally administered, unicast; unique per namespace
        self.bridge_mac = "02:6e:" + ":".join(secrets.token_hex(4)[i : i + 2] for i in range(0, 8, 2))

    def __enter__(self) -> GuestNetwork:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        _ip("netns", "add", self.name)
        self.created = True
        add_exit_hook(self._hook)
        try:
            n = self.name
            _ip("-n", n, "link", "set", "lo", "up")
            # A fixed address: a bridge without one takes the lowest MAC among its ports and
            # changes it when that tap goes (the source QEMU's, after a live migration). Guests
            # that only send (UDP heartbeats) keep the old MAC in their ARP cache and are dropped.
            _ip("-n", n, "link", "add", self.bridge, "address", self.bridge_mac, "type", "bridge")
            _ip("-n", n, "addr", "add", f"{self.host_ip}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("-n", n, "link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Delete the namespace (and with it the bridge and every tap). Idempotent."""
        if not self.created:
            return
        self.created = False
        remove_exit_hook(self._hook)
        _ip("netns", "del", self.name, check=False)

    def add_tap(self) -> str:
        """A new tap on the bridge, inside the namespace, ready for QEMU's `-netdev tap`."""
        tap = f"nmtap{next(self._taps)}"
        n = self.name
        _ip("-n", n, "tuntap", "add", "dev", tap, "mode", "tap")
        _ip("-n", n, "link", "set", tap, "master", self.bridge)
        _ip("-n", n, "link", "set", tap, "up")
        return tap

    def remove_tap(self, tap: str) -> None:
        if self.created:
            _ip("-n", self.name, "link", "del", tap, check=False)

    def new_address(self) -> GuestAddress:
        idx = next(self._macs)
        mac = f"52:54:00:77:{(idx >> 8) & 0xFF:02x}:{idx & 0xFF:02x}"
        return GuestAddress(str(next(self._free_ips)), self.subnet.prefixlen, mac, self.host_ip)

    def attach(self, address: GuestAddress, *, model: str = "virtio-net-pci") -> NetworkAttachment:
        """A fresh tap for one QEMU (source or destination) carrying `address`'s MAC."""
        return NetworkAttachment(mac=address.mac, tap=self.add_tap(), netns=self.name, model=model)

    def socket(self, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """An IPv4 socket inside the namespace, for probes."""
        return socket_in(self.name, socket.AF_INET, kind)

    def exec_argv(self, argv: list[str]) -> list[str]:
        """`argv` wrapped to run inside the namespace (for external probe programs)."""
        return ["ip", "netns", "exec", self.name, *argv]


class UserModeNetwork:
    """Fallback without root: QEMU user-mode networking and one forwarded TCP port.

    Only the source can hold the forward; after switchover `move_forward` drops it on the source and
    adds it on the destination, so one client address keeps reaching the guest. With `udp_guest_port`
    a UDP port (the agent's echo, port 7) is forwarded as well, and moved with the TCP one.
    """

    GUEST_IP = "10.0.2.15"

    def __init__(
        self,
        guest_port: int = 80,
        host_port: int | None = None,
        *,
        udp_guest_port: int | None = None,
        udp_host_port: int | None = None,
    ) -> None:
        self.guest_port = guest_port
        self.host_port = host_port or _free_port()
        self.udp_guest_port = udp_guest_port
        self.udp_host_port: int | None = None
        if udp_guest_port is not None:
            self.udp_host_port = udp_host_port or _free_port(socket.SOCK_DGRAM)
        self.mac = f"52:54:00:78:{secrets.randbelow(256):02x}:{secrets.randbelow(256):02x}"

    @property
    def rule(self) -> str:
        """The TCP forward (QEMU `hostfwd` syntax)."""
        return f"tcp:127.0.0.1:{self.host_port}-:{self.guest_port}"

    @property
    def rules(self) -> tuple[str, ...]:
        """Every forward: the TCP one, then the UDP one if configured."""
        if self.udp_guest_port is None:
            return (self.rule,)
        return (self.rule, f"udp:127.0.0.1:{self.udp_host_port}-:{self.udp_guest_port}")

    def source_attachment(self, model: str = "virtio-net-pci") -> NetworkAttachment:
        return NetworkAttachment(mac=self.mac, model=model, hostfwd=self.rules)

    def destination_attachment(self, model: str = "virtio-net-pci") -> NetworkAttachment:
        return NetworkAttachment(mac=self.mac, model=model)

    def kernel_args(self) -> tuple[str, ...]:
        return (f"novamig.ip={self.GUEST_IP}/24", "novamig.gw=10.0.2.2")

    def move_forward(self, source: QemuMachine, destination: QemuMachine) -> None:
        """After switchover: release the ports on the source, bind them on the destination."""
        for rule in self.rules:
            host_side = rule.split("-", 1)[0]  # "tcp:127.0.0.1:PORT"
            with contextlib.suppress(Exception):
                source.hmp(f"hostfwd_remove net0 {host_side}")
            out = destination.hmp(f"hostfwd_add net0 {rule}")
            if out.strip():
                raise NetworkError(f"hostfwd_add on {destination.name} failed: {out.strip()}")


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
