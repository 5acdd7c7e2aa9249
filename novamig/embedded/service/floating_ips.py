"""Floating IPs of the embedded cloud: Neutron's ``/v2.0/floatingips`` over NAT in the guests' namespace.

On DevStack the guests sit on a tenant network behind a router and the runner reaches them through
floating IPs of the external network (`fleet.floating_ip_network`). To run that path for real here,
the embedded cloud shows one external network, `novamig-ext` (10.78.0.0/24), and its network API
creates, associates, lists (with tags) and deletes floating IPs as Neutron does. Each association is
a pair of nftables rules in the guest network namespace the cloud created — never in the root
namespace, whose firewall is the machine owner's:

* ``output`` hook, DNAT: a probe's packet to the floating address goes to the guest's fixed address
  (the runner's sockets live in that namespace, so their packets are locally generated; conntrack
  turns the replies back into the floating address);
* ``input`` hook, SNAT: a connection the guest opens to the runner (any address of the namespace,
  which plays the runner's machine: 10.78.0.1 on the guests' bridge, or their gateway 192.168.1.1)
  arrives from the floating address, as the router's SNAT makes it on DevStack — which is what the
  UDP heartbeat collector tells the servers apart by.

The whole table is rewritten in one ``nft -f`` transaction after every change, and deleted when no
floating IP is left, so the rules always match the floating IPs listed, and nothing stays behind.
NAT applies when a connection is first seen, and a guest sends its UDP heartbeat from boot, before
its floating IP exists: so after each change the connections of the addresses concerned are
forgotten (``conntrack -D``, as Neutron's L3 agent does on association), and the next datagram
takes the new rules. Without the namespace (no root) or without ``nft`` and ``conntrack`` there are
no floating IPs: writes answer 501.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import shutil
import subprocess
import threading
import time
import uuid
from typing import Any

FLOATING_CIDR = "10.78.0.0/24"
EXTERNAL_NETWORK_NAME = "novamig-ext"
EXTERNAL_NETWORK_ID = "6e6f7661-6d69-4765-b874-000000000078"  # fixed: clouds.yaml users may name it
EXTERNAL_SUBNET_ID = "6e6f7661-6d69-4765-b874-000000000079"
NFT_TABLE = "novamig_floating"
_PROJECT = "novamig"  # the stand-in's ports carry no project; one is shown as Neutron always does


class FloatingIpError(Exception):
    """A request Neutron would refuse: HTTP status, Neutron's exception name and message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def nft_available() -> str | None:
    """None when NAT rules can be made and connections forgotten here, else why not."""
    if shutil.which("nft") is None:
        return "the `nft` command (nftables) is missing"
    if shutil.which("conntrack") is None:
        return "the `conntrack` command (conntrack) is missing"
    return None


def _run(argv: list[str], stdin: str | None = None, ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode not in ok:
        raise FloatingIpError(500, "NatFailed", f"{' '.join(argv[:6])}: {proc.stderr.strip()}")
    return proc.stdout


class NamespaceNat:
    """The nftables table of the floating IPs inside one network namespace."""

    def __init__(self, netns: str, guest_cidr: str, cidr: str = FLOATING_CIDR) -> None:
        self.netns = netns
        self.guest_cidr = guest_cidr
        self.network = ipaddress.ip_network(cidr)
        self.runner_ip = str(next(self.network.hosts()))  # the runner's side: 10.78.0.1
        self._device: str | None = None

    def _nft(self, script: str) -> None:
        _run(["ip", "netns", "exec", self.netns, "nft", "-f", "-"], stdin=script)

    def start(self) -> None:
        """Put the runner's address of the external range on the guests' bridge (routes to it)."""
        routes = json.loads(_run(["ip", "-n", self.netns, "-j", "route", "show", self.guest_cidr]) or "[]")
        if not routes:
            raise FloatingIpError(500, "NatFailed", f"no route to {self.guest_cidr} in {self.netns}")
        self._device = str(routes[0]["dev"])
        prefix = self.network.prefixlen
        _run(["ip", "-n", self.netns, "addr", "replace", f"{self.runner_ip}/{prefix}", "dev", self._device])

    def apply(self, mapping: dict[str, str]) -> None:
        """Make the table hold exactly `mapping` (floating → fixed address); none → no table."""
        script = f"table ip {NFT_TABLE} {{}}\ndelete table ip {NFT_TABLE}\n"
        if mapping:
            dnat = "".join(f"    ip daddr {f} dnat to {x}\n" for f, x in sorted(mapping.items()))
            snat = "".join(f"    ip saddr {x} snat to {f}\n" for f, x in sorted(mapping.items()))
            script += (
                f"table ip {NFT_TABLE} {{\n"
                "  chain output {\n    type nat hook output priority -100; policy accept;\n"
                f"{dnat}  }}\n"
                "  chain input {\n    type nat hook input priority 100; policy accept;\n"
                f"{snat}  }}\n}}\n"
            )
        self._nft(script)

    def forget(self, addresses: set[str]) -> None:
        """Drop the tracked connections from and to `addresses`, so their next packet is NATed anew."""
        for address in sorted(addresses):
            for side in ("-s", "-d"):
                # exit status 1: no connection matched, which is fine
                _run(["ip", "netns", "exec", self.netns, "conntrack", "-D", side, address], ok=(0, 1))

    def rules(self) -> str:
        """The namespace's whole nftables ruleset, as ``nft list ruleset`` prints it."""
        return _run(["ip", "netns", "exec", self.netns, "nft", "list", "ruleset"])

    def stop(self) -> None:
        self.apply({})
        if self._device is not None:
            prefix = self.network.prefixlen
            _run(["ip", "-n", self.netns, "addr", "del", f"{self.runner_ip}/{prefix}", "dev", self._device])
            self._device = None


def external_network() -> dict[str, Any]:
    """The external network as Neutron shows one (``router:external``)."""
    return {
        "id": EXTERNAL_NETWORK_ID,
        "name": EXTERNAL_NETWORK_NAME,
        "router:external": True,
        "shared": False,
        "status": "ACTIVE",
        "admin_state_up": True,
        "subnets": [EXTERNAL_SUBNET_ID],
        "project_id": _PROJECT,
        "tenant_id": _PROJECT,
        "mtu": 1500,
        "tags": [],
        "description": "the embedded cloud's floating IP range, reached from its guest namespace",
    }


def external_subnet() -> dict[str, Any]:
    network = ipaddress.ip_network(FLOATING_CIDR)
    return {
        "id": EXTERNAL_SUBNET_ID,
        "name": f"{EXTERNAL_NETWORK_NAME}-subnet",
        "network_id": EXTERNAL_NETWORK_ID,
        "cidr": FLOATING_CIDR,
        "ip_version": 4,
        "gateway_ip": str(next(network.hosts())),
        "enable_dhcp": False,
        "project_id": _PROJECT,
        "tenant_id": _PROJECT,
        "tags": [],
    }


class FloatingIps:
    """Floating IPs as Neutron keeps them, with the NAT that makes each one real."""

    def __init__(self, ports: dict[str, Any], nat: NamespaceNat) -> None:
        self._ports = ports  # the network stand-in's ports, by id (read only here)
        self._nat = nat
        self._lock = threading.Lock()
        self.items: dict[str, dict[str, Any]] = {}
        hosts = list(nat.network.hosts())
        self._pool = [str(h) for h in hosts[9:]]  # .10 onwards, like the tenant network's ports

    def view(self, fip: dict[str, Any]) -> dict[str, Any]:
        """As listed: an association whose port is gone (its server deleted) shows none."""
        shown = copy.deepcopy(fip)
        if shown["port_id"] is not None and shown["port_id"] not in self._ports:
            shown.update(port_id=None, fixed_ip_address=None, status="DOWN")
        return shown

    def _association(self, body: dict[str, Any], fip_id: str = "") -> tuple[str | None, str | None]:
        """(port id, fixed address) a request asks for, checked as Neutron checks them; `fip_id`:
        the floating IP being updated (its own association is no conflict)."""
        port_id = body.get("port_id")
        if port_id is None:
            return None, None
        port = self._ports.get(port_id)
        if port is None:
            raise FloatingIpError(404, "PortNotFound", f"Port {port_id} could not be found.")
        fixed = [str(ip["ip_address"]) for ip in port.get("fixed_ips") or () if ":" not in ip["ip_address"]]
        wanted = body.get("fixed_ip_address") or (fixed[0] if fixed else None)
        if wanted is None or wanted not in fixed:
            raise FloatingIpError(
                400, "BadRequest", f"Bad floatingip request: port {port_id} has no IPv4 address {wanted}."
            )
        for other in self.items.values():
            if other["id"] != fip_id and other["port_id"] == port_id and other["fixed_ip_address"] == wanted:
                raise FloatingIpError(
                    409,
                    "FloatingIPPortAlreadyAssociated",
                    f"Cannot associate floating IP with port {port_id} using fixed IP {wanted}, "
                    f"as that fixed IP already has a floating IP ({other['floating_ip_address']}).",
                )
        return str(port_id), wanted

    def _mapping(self) -> dict[str, str]:
        return {
            f["floating_ip_address"]: f["fixed_ip_address"]
            for f in map(self.view, self.items.values())
            if f["fixed_ip_address"] is not None
        }

    def _sync(self, before: dict[str, str]) -> None:
        """Rules for the floating IPs as they are now; connections of what changed forgotten."""
        after = self._mapping()
        self._nat.apply(after)
        changed = set(before.items()) ^ set(after.items())
        self._nat.forget({address for pair in changed for address in pair})

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("floating_network_id") != EXTERNAL_NETWORK_ID:
            raise FloatingIpError(
                400,
                "BadRequest",
                f"Bad floatingip request: Network {body.get('floating_network_id')} "
                "is not a valid external network.",
            )
        with self._lock:
            before = self._mapping()
            port_id, fixed = self._association(body)
            used = {f["floating_ip_address"] for f in self.items.values()}
            free = [a for a in self._pool if a not in used]
            if not free:
                raise FloatingIpError(
                    409, "IpAddressGenerationFailure", "No more IP addresses available on network."
                )
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            fip: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "floating_ip_address": free[0],
                "floating_network_id": EXTERNAL_NETWORK_ID,
                "port_id": port_id,
                "fixed_ip_address": fixed,
                "router_id": None,
                "status": "ACTIVE" if port_id else "DOWN",
                "description": str(body.get("description") or ""),
                "tags": [],
                "project_id": _PROJECT,
                "tenant_id": _PROJECT,
                "created_at": now,
                "updated_at": now,
                "revision_number": 0,
            }
            self.items[fip["id"]] = fip
            self._sync(before)
            return self.view(fip)

    def _get(self, fip_id: str) -> dict[str, Any]:
        fip = self.items.get(fip_id)
        if fip is None:
            raise FloatingIpError(404, "FloatingIPNotFound", f"Floating IP {fip_id} could not be found")
        return fip

    def update(self, fip_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Associate (``port_id``), disassociate (``port_id: null``) or describe."""
        with self._lock:
            fip = self._get(fip_id)
            before = self._mapping()
            if "port_id" in body:
                port_id, fixed = self._association(body, fip_id)
                fip.update(port_id=port_id, fixed_ip_address=fixed, status="ACTIVE" if port_id else "DOWN")
            if "description" in body:
                fip["description"] = str(body["description"] or "")
            fip["revision_number"] += 1
            fip["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._sync(before)
            return self.view(fip)

    def set_tags(self, fip_id: str, tags: list[str]) -> list[str]:
        with self._lock:
            fip = self._get(fip_id)
            fip["tags"] = sorted({str(t) for t in tags})
            return list(fip["tags"])

    def delete(self, fip_id: str) -> None:
        with self._lock:
            self._get(fip_id)
            before = self._mapping()
            del self.items[fip_id]
            self._sync(before)

    def close(self) -> None:
        """Remove every floating IP's rules (the cloud stops): nothing stays in the namespace."""
        with self._lock:
            self.items.clear()
            self._nat.stop()
