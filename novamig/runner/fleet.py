"""The cloud's `case.ServerProvisioner`: servers booted through Nova, tagged, deleted at the block's end."""

from __future__ import annotations

import contextlib
import logging
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
)
from novamig.measure.contract import ServerInfo
from novamig.runner.plan import CasePlan
from novamig.runner.signals import StopRequest

log = logging.getLogger(__name__)


class CloudFleet:
    def __init__(
        self,
        compute: Compute,
        *,
        run_id: str,
        image_ids: dict[str, str],
        networks: str | list[dict[str, str]],
        boot_timeout_s: float = 600.0,
        user_data: Callable[[CasePlan], str | None] | None = None,
        conn: Any = None,
        key_dir: Path | None = None,
    ) -> None:
        self.compute = compute
        self.run_id = run_id
        self.image_ids = image_ids
        self.networks = networks
        self.boot_timeout_s = boot_timeout_s
        self.user_data = user_data
        self.leftovers: list[str] = []
        self._flavors: dict[Any, str] = {}
        self.run_resources = Resources(compute, run_id, label="run")
        self.conn = conn
        self.key_dir = key_dir
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

    @contextlib.contextmanager
    def provision(
        self, plan: CasePlan, case_index: int, boot_host: str | None, stop: StopRequest
    ) -> Iterator[list[ServerInfo]]:
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
            states = res.wait_active(ids, self.boot_timeout_s, stop=stop.event)
            floating = self._floating_ips(res, plan, states, stop)
            yield [
                ServerInfo(
                    sid,
                    states[sid].name,
                    states[sid].host,
                    floating.get(sid) or (states[sid].addresses[0] if states[sid].addresses else None),
                )
                for sid in ids
            ]
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
