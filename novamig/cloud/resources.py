"""Cloud resources novamig creates: named, tagged, and always deleted.

Every resource is named ``novamig-<run id>-…`` and carries the ``novamig`` mark wherever the API
allows one (server tags and metadata, flavor description, security-group tags and description),
so `novamig cleanup` can find what a killed run left behind. Creation goes through a `Resources`
context manager that remembers each resource with its deleter and deletes in reverse order on exit
— normal end, exception or Ctrl-C alike. Deletion never raises: what could not be deleted is
listed in `leftovers` for the run to report.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from openstack import exceptions

from novamig.cloud import microversions as mv
from novamig.cloud.compute import Compute, ComputeApiError, ServerState
from novamig.cloud.errors import BootFailure, CloudError

log = logging.getLogger(__name__)

TAG = "novamig"
"""The mark on everything novamig creates (server tag, metadata key, name prefix)."""
NAME_PREFIX = "novamig-"
BOOT_TIMEOUT_S = 600.0
DELETE_TIMEOUT_S = 180.0
POLL_S = 1.0


def run_tag(run_id: str) -> str:
    return f"novamig-run-{run_id}"


def resource_name(run_id: str, *parts: str) -> str:
    """``novamig-<run id>-<part>-…``: the prefix `cleanup` sweeps and a human can read."""
    return "-".join([f"novamig-{run_id}", *parts])


@dataclass(frozen=True)
class FlavorRequest:
    """A flavor the run creates for itself (`Resources.flavor`), from the scenario's
    ``fleet.flavor`` figures; an existing flavor is named by a plain string instead."""

    vcpus: int
    ram_mb: int
    disk_gb: int


@dataclass(frozen=True)
class ServerSpec:
    name: str
    image_id: str
    flavor_id: str
    networks: str | list[dict[str, str]] = "none"
    user_data: str | None = None
    key_name: str | None = None
    security_groups: Sequence[str] = ()
    host: str | None = None  # boot on this compute host (admin: availability zone "nova:HOST")
    availability_zone: str = "nova"


@dataclass
class Created:
    kind: str
    id: str
    name: str
    delete: Callable[[], None] = field(repr=False)


class Resources:
    """Creates resources and deletes them all on exit, in reverse order of creation."""

    def __init__(self, compute: Compute, run_id: str, *, label: str = "run") -> None:
        self.compute = compute
        self.run_id = run_id
        self.label = label
        self.created: list[Created] = []
        self.leftovers: list[str] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Resources:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete_all()

    def _remember(self, item: Created) -> None:
        with self._lock:
            self.created.append(item)

    def delete_all(self) -> None:
        """Delete everything created, newest first; servers of one batch are deleted together.

        Floating IPs go first: an address released before its server never routes to a server
        being deleted, and a server that will not delete keeps no address of the external pool.
        """
        with self._lock:
            items, self.created = list(reversed(self.created)), []
        for item in items:
            if item.kind == "floating_ip":
                self._delete_one(item)
        servers = [i for i in items if i.kind == "server"]
        if servers:
            self._delete_servers(servers)
        for item in items:
            if item.kind not in ("server", "floating_ip"):
                self._delete_one(item)

    def _delete_one(self, item: Created) -> None:
        """Delete one resource that is not a server; a failure becomes a leftover, never raises."""
        try:
            item.delete()
            log.info("deleted %s %s", item.kind, item.name)
        except Exception as exc:
            self.leftovers.append(f"{item.kind} {item.name} ({item.id}): {exc}")
            log.warning("could not delete %s %s: %s", item.kind, item.name, exc)

    def _delete_servers(self, servers: list[Created]) -> None:
        pending: dict[str, Created] = {}
        for item in servers:
            try:
                item.delete()
                pending[item.id] = item
            except Exception as exc:
                self.leftovers.append(f"server {item.name} ({item.id}): {exc}")
        deadline = time.monotonic() + DELETE_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            for sid in list(pending):
                try:
                    gone = not server_exists(self.compute, sid)
                except CloudError as exc:  # the cloud stopped answering: report, do not hang
                    self.leftovers.append(
                        f"server {pending.pop(sid).name} ({sid}): deletion not confirmed: {exc}"
                    )
                    continue
                if gone:
                    log.info("deleted server %s", pending.pop(sid).name)
            if pending:
                time.sleep(POLL_S)
        for sid, item in pending.items():
            self.leftovers.append(f"server {item.name} ({sid}): still present after {DELETE_TIMEOUT_S:.0f} s")

    # -- flavors ---------------------------------------------------------------------------------
    def flavor(self, spec: FlavorRequest) -> str:
        """A temporary public flavor for this run; its description carries the novamig mark."""
        name = resource_name(self.run_id, "flavor", f"{spec.vcpus}c{spec.ram_mb}m{spec.disk_gb}g")
        body: dict[str, Any] = {
            "name": name,
            "vcpus": spec.vcpus,
            "ram": spec.ram_mb,
            "disk": spec.disk_gb,
        }
        if self.compute.max_version >= mv.FLAVOR_DESCRIPTION:
            body["description"] = f"{TAG} run {self.run_id}"
        data = self.compute.call("POST", "/flavors", json={"flavor": body})
        fid = str(data["flavor"]["id"])
        self._remember(Created("flavor", fid, name, lambda: delete_url(self.compute, f"/flavors/{fid}")))
        return fid

    # -- keypairs --------------------------------------------------------------------------------
    def keypair(self, public_key: str) -> str:
        name = resource_name(self.run_id, "key")
        self.compute.call("POST", "/os-keypairs", json={"keypair": {"name": name, "public_key": public_key}})
        self._remember(
            Created("keypair", name, name, lambda: delete_url(self.compute, f"/os-keypairs/{name}"))
        )
        return name

    # -- security groups (clouds with a Network API) ----------------------------------------------
    def security_group(self, conn: Any) -> str | None:
        """A group letting probes and the agent in: ICMP, TCP and UDP from anywhere, IPv4.

        Wide on purpose: the runner's address as the guests see it is not known in general (NAT,
        floating IPs); this is a test project's group, deleted with the run. None when the Network
        API does not let us create groups (403/405, or 501 from a read-only API such as the
        embedded cloud's, whose guests are reached from the cloud's own network namespace): servers
        then get the project's default group.
        """
        name = resource_name(self.run_id, "sg")
        try:
            group = conn.network.create_security_group(name=name, description=f"{TAG} run {self.run_id}")
        except exceptions.HttpException as exc:
            if exc.status_code in (403, 405, 501):
                log.info(
                    "security groups cannot be created here (HTTP %s): using the default", exc.status_code
                )
                return None
            raise CloudError(f"cannot create security group {name}: {exc}") from None
        except exceptions.SDKException as exc:
            raise CloudError(f"cannot create security group {name}: {exc}") from None

        def delete() -> None:
            conn.network.delete_security_group(group.id, ignore_missing=True)

        self._remember(Created("security_group", str(group.id), name, delete))
        try:
            conn.network.set_tags(group, [TAG, run_tag(self.run_id)])
            for protocol in ("icmp", "tcp", "udp"):
                conn.network.create_security_group_rule(
                    security_group_id=group.id,
                    direction="ingress",
                    ethertype="IPv4",
                    protocol=protocol,
                    remote_ip_prefix="0.0.0.0/0",
                )
        except exceptions.SDKException as exc:
            raise CloudError(f"cannot configure security group {name}: {exc}") from None
        return name

    # -- floating IPs (clouds with a Network API) ---------------------------------------------------
    def floating_ip(self, conn: Any, network_id: str, server_id: str, server_name: str) -> str:
        """A floating IP from `network_id` on the server's port; returns the floating address (the
        server's own when its port is on `network_id` already).

        Created and associated in one request (``port_id`` and the port's fixed IPv4 address), then
        remembered before it is tagged, so a failure while tagging still deletes it. Tagged
        ``novamig`` and with the run's tag like the security group, and its description names the
        run and the server, for `novamig cleanup` and for a human reading ``openstack floating ip
        list``.
        """
        try:
            ports = list(conn.network.ports(device_id=server_id))
        except exceptions.SDKException as exc:
            raise CloudError(f"cannot find the port of server {server_name}: {exc}") from None
        port, fixed = _ipv4_port(ports)
        if port is None or fixed is None:
            raise CloudError(f"server {server_name} ({server_id}) has no port with an IPv4 address")
        if str(port.network_id) == network_id:
            # Booted on the external network itself (`fleet.network: public`): its own address is
            # already the one the runner reaches, and Neutron refuses a floating IP for it.
            log.info("server %s is on the floating IP network: no floating IP, %s", server_name, fixed)
            return fixed
        try:
            fip = conn.network.create_ip(
                floating_network_id=network_id,
                port_id=port.id,
                fixed_ip_address=fixed,
                description=f"{TAG} run {self.run_id} server {server_name}",
            )
        except exceptions.SDKException as exc:
            raise CloudError(f"cannot create a floating IP for server {server_name}: {exc}") from None
        address = str(fip.floating_ip_address)

        def delete() -> None:
            conn.network.delete_ip(fip.id, ignore_missing=True)

        self._remember(Created("floating_ip", str(fip.id), f"{address} ({server_name})", delete))
        try:
            conn.network.set_tags(fip, [TAG, run_tag(self.run_id)])
        except exceptions.SDKException as exc:
            raise CloudError(f"cannot tag floating IP {address}: {exc}") from None
        log.info("floating IP %s → %s (%s)", address, server_name, fixed)
        return address

    # -- servers ---------------------------------------------------------------------------------
    def server(self, spec: ServerSpec) -> str:
        """Ask Nova for one server (does not wait); tagged at creation (2.52+) or right after."""
        body: dict[str, Any] = {
            "name": spec.name,
            "imageRef": spec.image_id,
            "flavorRef": spec.flavor_id,
            "networks": spec.networks,
            "metadata": {TAG: "true", f"{TAG}_run": self.run_id},
        }
        tags = [TAG, run_tag(self.run_id)]
        tag_at_create = self.compute.max_version >= mv.Microversion(2, 52)
        if tag_at_create:
            body["tags"] = tags
        if spec.user_data:
            body["user_data"] = base64.b64encode(spec.user_data.encode()).decode()
        if spec.key_name:
            body["key_name"] = spec.key_name
        if spec.security_groups:
            body["security_groups"] = [{"name": g} for g in spec.security_groups]
        if spec.host:
            if self.compute.max_version >= mv.Microversion(2, 74):
                body["host"] = spec.host  # 2.74+: the scheduler still checks the host; no AZ name needed
            else:
                body["availability_zone"] = f"{spec.availability_zone}:{spec.host}"
        data = self.compute.call("POST", "/servers", json={"server": body})
        sid = str(data["server"]["id"])
        self._remember(Created("server", sid, spec.name, lambda: delete_url(self.compute, f"/servers/{sid}")))
        if not tag_at_create:
            self.compute.call("PUT", f"/servers/{sid}/tags", json={"tags": tags})
        return sid

    def wait_active(
        self,
        server_ids: Sequence[str],
        timeout_s: float = BOOT_TIMEOUT_S,
        stop: threading.Event | None = None,
        timeout_hint: str = "",
    ) -> dict[str, ServerState]:
        """Wait until every server is ACTIVE; BootFailure with Nova's fault message otherwise.

        `timeout_hint` ends the message of a timeout: what the caller's user can raise."""
        deadline = time.monotonic() + timeout_s
        states: dict[str, ServerState] = {}
        waiting = list(server_ids)
        while waiting:
            for sid in list(waiting):
                state = self.compute.server(sid)
                if state.status == "ACTIVE":
                    states[sid] = state
                    waiting.remove(sid)
                elif state.status == "ERROR":
                    raise BootFailure(
                        f"server {state.name} ({sid}) went to ERROR: {state.fault or 'no fault message'}"
                    )
            if not waiting:
                break
            if stop is not None and stop.is_set():
                raise BootFailure("interrupted while waiting for servers to boot")
            if time.monotonic() > deadline:
                last = self.compute.server(waiting[0])
                raise BootFailure(
                    f"{len(waiting)} server(s) not ACTIVE after {timeout_s:.0f} s "
                    f"(e.g. {last.name}: {last.status}/{last.task_state or '-'})"
                    + (f"; {timeout_hint}" if timeout_hint else "")
                )
            time.sleep(POLL_S)
        return states


def server_exists(compute: Compute, server_id: str) -> bool:
    try:
        state = compute.server(server_id)
    except ComputeApiError as exc:
        if exc.status == 404:
            return False
        raise
    return state.status != "DELETED"


def delete_url(compute: Compute, url: str) -> None:
    try:
        compute.call("DELETE", url)
    except ComputeApiError as exc:
        if exc.status != 404:  # already gone is what we wanted
            raise


def find_flavor(compute: Compute, name_or_id: str) -> str:
    try:
        return str(compute.call("GET", f"/flavors/{name_or_id}")["flavor"]["id"])
    except ComputeApiError as exc:
        if exc.status != 404:
            raise
    data = compute.call("GET", "/flavors/detail?is_public=None")
    for flavor in data["flavors"]:
        if flavor["name"] == name_or_id:
            return str(flavor["id"])
    raise CloudError(f"flavor {name_or_id!r} not found")


def find_image(conn: Any, name_or_id: str) -> str:
    """The id of an active image by name or id, through the Image API (Glance or the embedded one)."""
    try:
        image = conn.image.find_image(name_or_id, ignore_missing=True)
    except exceptions.SDKException as exc:
        raise CloudError(f"image {name_or_id!r}: cannot query the image service: {exc}") from None
    if image is None:
        raise CloudError(f"image {name_or_id!r} not found")
    if image.status != "active":
        raise CloudError(f"image {name_or_id!r} is {image.status}, not active")
    return str(image.id)


def choose_networks(conn: Any, name: str | None) -> str | list[dict[str, str]]:
    """The ``networks`` of a server-create request.

    A named network is looked up through the Network API. With none named: where the cloud has a
    Network API, its only non-external network, else DevStack's ``private``; otherwise (the
    embedded cloud: one shared network, no Network API) Nova's ``auto``.
    """
    has_network = conn.has_service("network")
    if name is not None:
        if not has_network:
            raise CloudError(f"network {name!r} named, but the cloud has no Network API to find it")
        net = conn.network.find_network(name, ignore_missing=True)
        if net is None:
            raise CloudError(f"network {name!r} not found")
        return [{"uuid": str(net.id)}]
    if not has_network:
        return "auto"
    try:
        nets = [n for n in conn.network.networks() if not n.is_router_external]
    except exceptions.SDKException as exc:
        raise CloudError(f"cannot list networks: {exc}") from None
    if len(nets) == 1:
        return [{"uuid": str(nets[0].id)}]
    private = [n for n in nets if n.name == "private"]
    if private:
        return [{"uuid": str(private[0].id)}]
    return "auto"


def _ipv4_port(ports: Sequence[Any]) -> tuple[Any, str | None]:
    """The first port with an IPv4 fixed address, and that address ((None, None) if none has)."""
    for port in ports:
        for ip in port.fixed_ips or ():
            address = str(ip.get("ip_address") or "")
            if address and ":" not in address:
                return port, address
    return None, None


def find_floating_network(conn: Any, choice: str) -> str:
    """The id of the external network `fleet.floating_ip_network` names (`auto`: the only one).

    Networks are listed whole and filtered here on ``router:external`` rather than through the
    API's filter, whose boolean spelling differs between Neutron and its stand-ins.
    """
    where = "fleet.floating_ip_network"
    if not conn.has_service("network"):
        raise CloudError(f"{where}: {choice!r} named, but the cloud has no Network API")
    try:
        networks = list(conn.network.networks())
    except exceptions.SDKException as exc:
        raise CloudError(f"{where}: cannot list networks: {exc}") from None
    external = [n for n in networks if n.is_router_external]
    if choice == "auto":
        if len(external) == 1:
            return str(external[0].id)
        if not external:
            raise CloudError(
                f"{where}: auto: the cloud has no external network (router:external) to take "
                "floating IPs from; name one, or set none"
            )
        names = ", ".join(sorted(f"{n.name} ({n.id})" for n in external))
        raise CloudError(f"{where}: auto: {len(external)} external networks, name one of: {names}")
    found = [n for n in networks if choice in (n.id, n.name)]
    if not found:
        known = ", ".join(sorted(n.name for n in external)) or "none"
        raise CloudError(f"{where}: network {choice!r} not found (external networks: {known})")
    if len(found) > 1:
        raise CloudError(f"{where}: {len(found)} networks are named {choice!r}: name one by its id")
    if not found[0].is_router_external:
        raise CloudError(f"{where}: network {choice!r} is not external (router:external is false)")
    return str(found[0].id)
