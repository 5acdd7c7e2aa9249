"""Where the UDP heartbeat collector listens when the scenario does not say: the route to the guests.

Wherever the runner cannot read the guests' virtio-serial channel (DevStack and other clouds, the
embedded cloud's libvirt mode), the guest agent sends its heartbeat over UDP to the address given in
the server's user-data (``novamig.hb_udp``), and the runner's collector must listen there. With
``measure.heartbeat_collector`` unset, that address is the **source address of this machine's route
to the guests' subnet** — ``ip route get <address in the subnet>``, inside the namespace the probes
run in (the embedded cloud's ``guest_netns``) — which is the address the guests' replies reach this
machine at, and so an address they can send to:

* the subnet is the floating-IP network's when the case gives its servers floating IPs (DevStack's
  ``public``, 172.24.4.0/24: the route is ``br-ex``, source 172.24.4.1), else the servers' own
  network's (the embedded cloud: ``novamig-net``, source 192.168.1.1 in its namespace);
* it is known before the servers exist, from the Network API: the address goes into their
  user-data at boot;
* the port is `DEFAULT_PORT` (the one the DevStack plugin opens for the guests) when free there, else
  one the kernel picks.

None (with the reason, logged) when the cloud has no Network API or no route other than the default
one (the guests' subnet is not routed here: beats and echoes would leave by the default gateway): the
guest figure is then unavailable with its usual reason, and ``measure.heartbeat_collector`` names the
address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import subprocess
import threading
from typing import Any

from novamig.cloud.errors import CloudError
from novamig.cloud.resources import find_floating_network
from novamig.hypervisor.netns import socket_in

log = logging.getLogger(__name__)

DEFAULT_PORT = 47100
"""The collector's port when free: DevStack's plugin opens it for the guests (NOVAMIG_HEARTBEAT_PORT)."""


IP_TIMEOUT_S = 10.0  # an `ip route` query answers in milliseconds; more means the system is stuck


def _ip_route_argv(netns: str | None, *args: str) -> list[str]:
    """``ip -j route ARGS`` (JSON out), inside `netns` when given."""
    return ["ip", "-j", *(["-n", netns] if netns else []), "route", *args]


class NoRoute(Exception):
    """No source address for the guests' subnet could be found."""


def route_source(destination: str, netns: str | None = None) -> str:
    """This machine's source address for packets to `destination` (``ip -j route get``), inside
    `netns` when given. Raises `NoRoute` when there is no route or no source address."""
    argv = _ip_route_argv(netns, "get", destination)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NoRoute(f"{' '.join(argv)}: {exc}") from None
    if out.returncode != 0:
        raise NoRoute(f"no route to {destination}: {out.stderr.strip() or f'exit {out.returncode}'}")
    try:
        routes = json.loads(out.stdout)
        source = str(routes[0]["prefsrc"])
    except (ValueError, LookupError, TypeError):
        raise NoRoute(f"the route to {destination} names no source address: {out.stdout.strip()}") from None
    if not _routed_beyond_default(destination, netns):
        raise NoRoute(
            f"only the default route leads to {destination}: the guests' subnet is not routed to this "
            "machine (no floating IPs, or the runner is not on the guests' network)"
        )
    return source


def _routed_beyond_default(destination: str, netns: str | None) -> bool:
    """Some route other than the default one matches `destination` (any table: loopback's is in
    ``local``). Only the default route means the guests' subnet is unknown here: echoes and beats
    would go to whatever network that route leads to, never to the guests."""
    argv = _ip_route_argv(netns, "show", "match", destination, "table", "all")
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
        routes = json.loads(out.stdout) if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return False
    return any(isinstance(r, dict) and r.get("dst") not in (None, "default") for r in routes)


def free_port(address: str, netns: str | None, preferred: int = DEFAULT_PORT) -> int:
    """`preferred` when a UDP socket can bind it at `address` (in `netns`), else a port the kernel
    picks there. The socket is closed again: the collector binds it moments later."""
    for port in (preferred, 0):
        sock = socket_in(netns) if netns is not None else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise NoRoute(f"no UDP port can be bound at {address}")


def subnet_probe_address(cidr: str) -> str:
    """An address inside `cidr` to ask the route for: its last host address (a guest's would do;
    the servers do not exist yet)."""
    net = ipaddress.ip_network(cidr, strict=False)
    if net.num_addresses <= 2:
        return str(net.network_address)
    return str(net.broadcast_address - 1)


def network_cidr(conn: Any, network_id: str) -> str:
    """The first IPv4 subnet's CIDR of a network, through the Network API."""
    net = conn.network.get_network(network_id)
    for subnet_id in net.subnet_ids or ():
        subnet = conn.network.get_subnet(subnet_id)
        if int(subnet.ip_version or 4) == 4 and subnet.cidr:
            return str(subnet.cidr)
    raise NoRoute(f"network {net.name or network_id} has no IPv4 subnet")


class CollectorAddresses:
    """The collector address of each case of one session (cached per floating-IP choice).

    `conn`: the openstacksdk connection; `networks`: the servers' ``networks`` request
    (``[{"uuid": …}]`` or ``"auto"``); `netns`: the namespace the probes run in, or None."""

    def __init__(self, conn: Any, networks: str | list[dict[str, str]], netns: str | None) -> None:
        self._conn = conn
        self._networks = networks
        self._netns = netns
        self._lock = threading.Lock()
        self._found: dict[str | None, str | None] = {}

    def for_case(self, floating_ip_network: str | None) -> str | None:
        """``ip:port`` for a case whose servers get floating IPs from `floating_ip_network` (None:
        their own addresses); None when it cannot be found (the reason is logged once)."""
        with self._lock:
            if floating_ip_network not in self._found:
                self._found[floating_ip_network] = self._discover(floating_ip_network)
            return self._found[floating_ip_network]

    def _discover(self, floating_ip_network: str | None) -> str | None:
        try:
            cidr = self._guest_cidr(floating_ip_network)
            destination = subnet_probe_address(cidr)
            source = route_source(destination, self._netns)
            address = f"{source}:{free_port(source, self._netns)}"
        except (NoRoute, CloudError) as exc:
            log.warning("no UDP heartbeat collector address found from the route to the guests: %s", exc)
            return None
        except Exception as exc:  # the Network API's own errors (openstacksdk)
            log.warning("no UDP heartbeat collector address: the guests' subnet is unknown: %s", exc)
            return None
        where = f" in {self._netns}" if self._netns else ""
        log.info(
            "UDP heartbeat collector at %s: the source of the route to %s (%s)%s",
            address,
            destination,
            cidr,
            where,
        )
        return address

    def _guest_cidr(self, floating_ip_network: str | None) -> str:
        if not self._conn.has_service("network"):
            raise NoRoute("the cloud has no Network API to find the guests' subnet in")
        if floating_ip_network is not None:
            return network_cidr(self._conn, find_floating_network(self._conn, floating_ip_network))
        if isinstance(self._networks, list) and self._networks:
            return network_cidr(self._conn, self._networks[0]["uuid"])
        raise NoRoute(f"the servers' network is {self._networks!r}, not one the Network API names")
