"""The cloud's `case.ServerProvisioner`: servers booted through Nova, tagged, deleted at the block's end."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from novamig.cloud.compute import Compute
from novamig.cloud.errors import CloudError
from novamig.cloud.keys import generate_keypair, write_private_key
from novamig.cloud.resources import (
    FlavorRequest,
    Resources,
    ServerSpec,
    find_flavor,
    find_floating_network,
    resource_name,
    run_tag,
)
from novamig.hypervisor.netns import socket_in
from novamig.measure.contract import ServerInfo
from novamig.runner.plan import CasePlan
from novamig.runner.signals import StopRequest

log = logging.getLogger(__name__)

#: The guest agent's UDP echo port (docs/guest-agent.md): any datagram comes back unchanged.
AGENT_ECHO_PORT = 7


def raise_hint(setting: str, timeout_s: float) -> str:
    """What to do about a timeout on a slow cloud: the scenario setting, and a value three times
    the one that ran out (within the setting's bound of a day)."""
    return f"on a slow cloud raise `{setting}` (e.g. `--set {setting}={min(3 * timeout_s, 86_400):g}`)"


class CloudFleet:
    def __init__(
        self,
        compute: Compute,
        *,
        run_id: str,
        image_ids: dict[str, str],
        networks: str | list[dict[str, str]],
        user_data: Callable[[CasePlan], str | None] | None = None,
        conn: Any = None,
        key_dir: Path | None = None,
        guest_netns: str | None = None,
        prepare: Callable[[CasePlan], CasePlan] | None = None,
    ) -> None:
        self.compute = compute
        self.run_id = run_id
        self.image_ids = image_ids
        self.networks = networks
        self.user_data = user_data
        self.leftovers: list[str] = []
        self._flavors: dict[Any, str] = {}
        self.run_resources = Resources(compute, run_id, label="run")
        self.conn = conn
        self.key_dir = key_dir
        self.guest_netns = guest_netns  # where the guests' addresses are reached (embedded cloud)
        # fills in what the session decides for every case (the UDP heartbeat collector's address)
        self.prepare = prepare if prepare is not None else (lambda plan: plan)
        self._access: tuple[str | None, tuple[str, ...]] | None = None
        self._floating_networks: dict[str, str] = {}

    def close(self) -> None:
        """Delete run-wide resources (flavors); call after the last case."""
        self.run_resources.delete_all()
        self.leftovers += self.run_resources.leftovers

    def _flavor(self, flavor: FlavorRequest | str) -> str:
        if flavor not in self._flavors:
            if isinstance(flavor, FlavorRequest):
                self._flavors[flavor] = self.run_resources.flavor(flavor)
            else:
                self._flavors[flavor] = find_flavor(self.compute, flavor)
        return self._flavors[flavor]

    def _guest_access(self) -> tuple[str | None, tuple[str, ...]]:
        """(key pair name, security groups), created once per run on first use.

        The key pair only when there is a folder for its private half; the security group only
        on clouds whose Network API lets us create one (the embedded cloud's is read-only: its
        guests live in a network namespace the runner reaches directly).
        """
        if self._access is None:
            key_name = None
            if self.key_dir is not None:
                private, public = generate_keypair()
                key_name = self.run_resources.keypair(public)
                write_private_key(self.key_dir / "id_ed25519", private)
            groups: tuple[str, ...] = ()
            if self.conn is not None and self.conn.has_service("network"):
                group = self.run_resources.security_group(self.conn)
                groups = (group,) if group else ()
            self._access = (key_name, groups)
        return self._access

    @property
    def servers_tag(self) -> str:
        """The run's own tag, which `Resources` puts on every server it boots."""
        return run_tag(self.run_id)

    @contextlib.contextmanager
    def provision(
        self, plan: CasePlan, case_index: int, boot_host: str | None, stop: StopRequest
    ) -> Iterator[list[ServerInfo]]:
        plan = self.prepare(plan)
        flavor_id = self._flavor(plan.flavor)
        key_name, groups = self._guest_access()
        res = Resources(self.compute, self.run_id, label=f"case {case_index}")
        try:
            ids = []
            for i in range(plan.servers):
                if stop.is_set():
                    break
                spec = ServerSpec(
                    name=resource_name(self.run_id, f"c{case_index}", f"s{i}"),
                    image_id=self.image_ids.get(plan.image, plan.image),
                    flavor_id=flavor_id,
                    networks=self.networks,
                    user_data=self.user_data(plan) if self.user_data else None,
                    host=boot_host,
                    key_name=key_name,
                    security_groups=groups,
                )
                ids.append(res.server(spec))
            # the case's own timeouts: a matrix may vary them
            states = res.wait_active(
                ids,
                plan.boot_timeout_s,
                stop=stop.event,
                timeout_hint=raise_hint("fleet.boot_timeout_s", plan.boot_timeout_s),
            )
            floating = self._floating_ips(res, plan, states, stop)
            servers = [
                ServerInfo(
                    sid,
                    states[sid].name,
                    states[sid].host,
                    floating.get(sid) or (states[sid].addresses[0] if states[sid].addresses else None),
                )
                for sid in ids
            ]
            if plan.measure.heartbeat_collector is not None:
                wait_guests_answer(servers, self.guest_netns, plan.ready_timeout_s, stop)
            yield servers
        finally:
            res.delete_all()
            self.leftovers += res.leftovers

    def _floating_ips(
        self, res: Resources, plan: CasePlan, states: dict[str, Any], stop: StopRequest
    ) -> dict[str, str]:
        """Server id → floating address, when the plan asks for floating IPs (else empty).

        Made in the case's `Resources`, so they go with the servers, before them, on every exit.
        The probes aim at these addresses: the servers' own ones sit behind the router.
        """
        choice = plan.floating_ip_network
        if choice is None:
            return {}
        if self.conn is None:
            raise CloudError("fleet.floating_ip_network is set but there is no Network API connection")
        if choice not in self._floating_networks:
            self._floating_networks[choice] = find_floating_network(self.conn, choice)
        network_id = self._floating_networks[choice]
        floating: dict[str, str] = {}
        for sid, state in states.items():
            if stop.is_set():
                break
            floating[sid] = res.floating_ip(self.conn, network_id, sid, state.name)
        return floating


def wait_guests_answer(
    servers: list[ServerInfo],
    netns: str | None,
    timeout_s: float,
    stop: StopRequest,
    port: int = AGENT_ECHO_PORT,
) -> None:
    """Return once every server's guest agent has answered a UDP echo (port 7) at its address.

    Why: on a cloud whose host gives the guest no virtio-serial port (DevStack, the embedded
    cloud's libvirt mode) ACTIVE means the domain runs, not that the guest has booted, and the
    case's noise-floor window and first migration would otherwise start before the guest's first
    heartbeat, leaving that migration without a guest or network figure. The runner waits only
    when the case sends the heartbeat over UDP (``measure.heartbeat_collector``): then the guests
    run the novamig agent, whose echo starts with its UDP beats. Servers without an address cannot
    be asked and are not waited for. Raises `CloudError` naming every guest that did not answer
    within `timeout_s` (the case's ``fleet.ready_timeout_s``) and the setting to raise; returns early
    when the run is asked to stop.
    """
    pending = {s.address: s for s in servers if s.address}
    if not pending:
        return
    deadline = time.monotonic() + timeout_s
    sock = socket_in(netns) if netns is not None else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setblocking(False)
        while pending and not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                names = ", ".join(f"{s.name} ({s.id}) at {a}" for a, s in sorted(pending.items()))
                raise CloudError(
                    f"the guest agent of {names} did not answer a UDP echo on port {port} "
                    f"within {timeout_s:g} s of ACTIVE: the guest has not booted, its agent is not "
                    "running, or its address is not reachable from the runner; "
                    + raise_hint("fleet.ready_timeout_s", timeout_s)
                )
            for address in pending:
                with contextlib.suppress(OSError):  # no route yet: asked again next round
                    sock.sendto(b"novamig-ready", (address, port))
            _take_answers(sock, pending, min(deadline, now + 0.5))
    if not pending:
        waited = time.monotonic() - (deadline - timeout_s)
        log.info("guests answering %.1f s after ACTIVE: %s", waited, ", ".join(s.name for s in servers))


def _take_answers(sock: socket.socket, pending: dict[str, ServerInfo], until: float) -> None:
    """Remove from `pending` every address whose echo arrives on `sock` before `until`."""
    while pending and (left := until - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            return
        with contextlib.suppress(OSError):  # an ICMP error from an earlier send: not an answer
            _data, peer = sock.recvfrom(2048)
            pending.pop(peer[0], None)
