"""The compute API calls novamig makes, each with an explicit microversion and a timeout.

Raw REST through openstacksdk's compute adapter (not the resource layer) because the migration
calls must be sent with the microversion `microversions` chose, and their answers read field by
field: the SDK's resource objects pick a microversion of their own and hide fields we time.
Everything returned is a small frozen dataclass; every failure is a `CloudError`.

Transient failures (HTTP 500/502/503/504, a connection refused or dropped, no answer within the
timeout) are retried with backoff, but only for idempotent calls (GET, DELETE: a repeat changes
nothing, a DELETE that did happen answers 404, which its callers take as done). A POST or PUT — the
live-migrate action, a server create — is sent once: Nova may have acted on a request whose answer
was lost, and a blind repeat could start a second migration or boot a second server. The error then
says so, naming the call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from keystoneauth1 import exceptions as ksa_exc

from novamig.cloud import microversions as mv
from novamig.cloud.errors import CloudError, CloudUnreachable, MigrationRequestLost, MigrationRequestRefused
from novamig.cloud.instance_actions import InstanceAction, action_from_json

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "DELETE"})
RETRY_DELAYS_S = (0.5, 2.0)
"""Waits before each retry of an idempotent call: at most three attempts, about 2.5 s apart in all
(plus each attempt's own timeout), so a short API hiccup is ridden out and a dead API is said soon."""
LIVE_MIGRATE_TIMEOUT_S = 120.0
"""How long the live-migrate POST waits for its answer (every other call: the connection's
``api_timeout``, 30 s). Nova answers it only after its conductor has checked the destination, and
a busy cloud takes long for that: measured up to 24 s on the embedded cloud with 100 migrations
requested, so 1 in 100 requests went past 30 s. Such a request is sent once and never repeated (Nova
may have acted on it), so a lost answer costs the migration: a longer wait here is cheap."""
RETRY_STATUSES = frozenset({500, 502, 503, 504})
"""Answers that say the API (or a proxy in front of it) failed, not that the request was wrong."""

FINAL_MIGRATION_STATUSES = frozenset({"completed", "cancelled", "error", "failed", "done"})

POWER_STATES = {0: "nostate", 1: "running", 3: "paused", 4: "shutdown", 6: "crashed", 7: "suspended"}
"""``OS-EXT-STS:power_state`` (nova.compute.power_state): what the hypervisor last said of the guest."""

INSTANCE_ACTION_EVENT_DETAILS = mv.Microversion(2, 84)
"""Instance action events carry ``details``, a short reason for a failed step, from 2.84."""
REQUEST_ID_HEADERS = ("x-openstack-request-id", "x-compute-request-id")


@dataclass(frozen=True)
class ServerState:
    id: str
    name: str
    status: str
    task_state: str | None
    host: str | None
    fault: str | None = None
    tags: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()  # IPv4 addresses of the server's ports, fixed before floating
    power_state: int | None = None  # Nova's record of it (`POWER_STATES`), refreshed only now and then


@dataclass(frozen=True)
class MigrationState:
    """One migration record, from a server's in-progress list or from ``/os-migrations``."""

    id: int
    status: str
    source_host: str | None
    dest_host: str | None
    memory_total_bytes: int | None = None
    memory_processed_bytes: int | None = None
    memory_remaining_bytes: int | None = None
    migration_type: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_MIGRATION_STATUSES


@dataclass(frozen=True)
class ComputeService:
    host: str
    status: str  # enabled | disabled
    state: str  # up | down

    @property
    def usable(self) -> bool:
        return self.status == "enabled" and self.state == "up"


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def migration_from_json(data: dict[str, Any]) -> MigrationState:
    return MigrationState(
        id=int(data["id"]),
        status=str(data.get("status") or "unknown"),
        source_host=data.get("source_compute"),
        dest_host=data.get("dest_compute"),
        memory_total_bytes=_int(data.get("memory_total_bytes")),
        memory_processed_bytes=_int(data.get("memory_processed_bytes")),
        memory_remaining_bytes=_int(data.get("memory_remaining_bytes")),
        migration_type=data.get("migration_type"),
    )


def server_from_json(data: dict[str, Any]) -> ServerState:
    fault = data.get("fault") or {}
    return ServerState(
        id=str(data["id"]),
        name=str(data.get("name") or ""),
        status=str(data.get("status") or "UNKNOWN"),
        task_state=data.get("OS-EXT-STS:task_state"),
        host=data.get("OS-EXT-SRV-ATTR:host"),
        fault=fault.get("message") if isinstance(fault, dict) else None,
        tags=tuple(data.get("tags") or ()),
        addresses=_ipv4_addresses(data.get("addresses")),
        power_state=_int(data.get("OS-EXT-STS:power_state")),
    )


def _ipv4_addresses(addresses: Any) -> tuple[str, ...]:
    """Nova's ``addresses`` ({network: [{addr, version, OS-EXT-IPS:type}]}): IPv4, fixed first."""
    if not isinstance(addresses, dict):
        return ()
    fixed: list[str] = []
    floating: list[str] = []
    for entries in addresses.values():
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, dict) or entry.get("version") != 4 or not entry.get("addr"):
                continue
            kind = entry.get("OS-EXT-IPS:type")
            (floating if kind == "floating" else fixed).append(str(entry["addr"]))
    return tuple(fixed + floating)


def hypervisor_version_text(version: object) -> str:
    """Nova reports a hypervisor's version as one integer, major * 1 000 000 + minor * 1 000 + patch
    (oslo_utils.versionutils.convert_version_to_int): QEMU 10.0.2 is 10000002. Shown as people write it."""
    if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
        return f"{version // 1_000_000}.{version // 1_000 % 1_000}.{version % 1_000}"
    return "?" if version is None else str(version)


class Compute:
    """Nova's API as novamig uses it. Thread-safe for concurrent migrations (one HTTP call each)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.max_version = self._discover_max()
        self.version = mv.choose(self.max_version, mv.PREFERRED)

    # -- plumbing ------------------------------------------------------------------------------------
    def _discover_max(self) -> mv.Microversion:
        try:
            data = self.conn.compute.get_endpoint_data()
        except ksa_exc.ClientException as exc:
            raise CloudUnreachable(f"compute endpoint not reachable: {exc}") from None
        if data is None or not data.max_microversion:
            raise CloudError("the compute API announces no microversions (is it Nova v2.1?)")
        return mv.Microversion.parse(tuple(data.max_microversion[:2]))

    def call(
        self,
        method: str,
        url: str,
        *,
        version: mv.Microversion | None = None,
        json: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        timeout_s: float | None = None,
    ) -> Any:
        """One compute API call, its answer's JSON body (None when empty); an idempotent one is
        retried on transient failures (see above)."""
        resp = self.request(method, url, version=version, json=json, ok=ok, timeout_s=timeout_s)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def request(
        self,
        method: str,
        url: str,
        *,
        version: mv.Microversion | None = None,
        json: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        timeout_s: float | None = None,
    ) -> Any:
        """`call`, answering with the HTTP response itself (its headers: the request id).
        `timeout_s`: this call's own wait for an answer, instead of the connection's."""
        delays = RETRY_DELAYS_S if method in IDEMPOTENT_METHODS else ()
        for attempt, delay in enumerate((*delays, None), start=1):
            try:
                return self._call_once(method, url, version=version, json=json, ok=ok, timeout_s=timeout_s)
            except _Transient as exc:
                if delay is None:
                    raise exc.final(attempt, retried=bool(delays)) from None
                log.warning("%s (attempt %d; retrying in %g s)", exc.error, attempt, delay)
                time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _call_once(
        self,
        method: str,
        url: str,
        *,
        version: mv.Microversion | None,
        json: dict[str, Any] | None,
        ok: tuple[int, ...],
        timeout_s: float | None = None,
    ) -> Any:
        use = version or self.version
        # keystoneauth takes a request's own ``timeout`` over its session's
        extra: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        try:
            # keystoneauth's own retries off: which calls may be repeated is decided above
            resp = self.conn.compute.request(
                url,
                method,
                json=json,
                microversion=str(use),
                raise_exc=False,
                connect_retries=0,
                status_code_retries=0,
                **extra,
            )
        except ksa_exc.ConnectTimeout as exc:
            raise _Transient(CloudUnreachable(f"{method} {url}: no answer in time: {exc}")) from None
        except ksa_exc.ConnectFailure as exc:
            raise _Transient(CloudUnreachable(f"{method} {url}: {exc}")) from None
        except ksa_exc.ClientException as exc:
            raise CloudError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code not in ok:
            error = ComputeApiError(method, url, resp.status_code, _fault_text(resp))
            if resp.status_code in RETRY_STATUSES:
                raise _Transient(error)
            raise error
        return resp

    # -- reads ---------------------------------------------------------------------------------------
    def server(self, server_id: str) -> ServerState:
        return server_from_json(self.call("GET", f"/servers/{server_id}")["server"])

    def servers_tagged(self, tag: str) -> list[ServerState]:
        data = self.call("GET", f"/servers/detail?tags={tag}&all_tenants=1")
        return [server_from_json(s) for s in data["servers"]]

    def server_migrations(self, server_id: str) -> list[MigrationState]:
        """In-progress migrations of a server (Nova drops finished ones from this list)."""
        data = self.call("GET", f"/servers/{server_id}/migrations")
        return [migration_from_json(m) for m in data["migrations"]]

    def live_migrations_of(self, server_id: str) -> list[MigrationState]:
        """All live migrations of a server from ``/os-migrations``, with their final statuses."""
        data = self.call("GET", f"/os-migrations?instance_uuid={server_id}&migration_type=live-migration")
        return sorted((migration_from_json(m) for m in data["migrations"]), key=lambda m: m.id)

    def migration_action(self, server_id: str, request_id: str) -> InstanceAction | None:
        """Nova's action of the request `request_id` (a live-migrate's: ``live-migration``), with
        its events; None when Nova has none. Admin: the events' tracebacks and hosts are shown to
        an admin only."""
        version = mv.choose(self.max_version, INSTANCE_ACTION_EVENT_DETAILS)
        try:
            data = self.call("GET", f"/servers/{server_id}/os-instance-actions/{request_id}", version=version)
        except ComputeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return action_from_json((data or {}).get("instanceAction") or {})

    def guest_running(self, server_id: str) -> bool | None:
        """Whether the hypervisor runs the server's guest now, asked through Nova's diagnostics
        (admin): the compute host reads the guest's power state live and answers 409 when it is not
        running. Nova's ``power_state`` field is only its last record, refreshed by a periodic
        task (every 10 minutes by default), so a guest whose QEMU died stays ``running`` there.
        Asked at the oldest diagnostics format (before 2.48), which every driver that reports
        diagnostics implements. None: no answer either way (the driver reports no diagnostics)."""
        try:
            self.call("GET", f"/servers/{server_id}/diagnostics", version=mv.MINIMUM)
        except ComputeApiError as exc:
            if exc.status == 409:
                return False
            log.info("server %s: diagnostics say nothing of its guest: %s", server_id, exc)
            return None
        return True

    def compute_services(self) -> list[ComputeService]:
        data = self.call("GET", "/os-services?binary=nova-compute")
        return [ComputeService(s["host"], s["status"], s["state"]) for s in data["services"]]

    def hypervisor_versions(self) -> dict[str, str]:
        data = self.call("GET", "/os-hypervisors/detail")
        out: dict[str, str] = {}
        for h in data.get("hypervisors", []):
            host = (h.get("service") or {}).get("host") or h.get("hypervisor_hostname")
            out[str(host)] = (
                f"{h.get('hypervisor_type', '?')} {hypervisor_version_text(h.get('hypervisor_version'))}"
            )
        return out

    # -- actions -------------------------------------------------------------------------------------
    def live_migrate(
        self, server_id: str, host: str | None, block_migration: mv.BlockMigration
    ) -> str | None:
        """Request the live migration; the API request's id, under which Nova records the
        ``live-migration`` instance action (`migration_action`), when the answer names it."""
        request = mv.live_migrate_request(self.max_version, host, block_migration)
        try:
            resp = self.request(
                "POST",
                f"/servers/{server_id}/action",
                version=request.microversion,
                json=request.body,
                timeout_s=LIVE_MIGRATE_TIMEOUT_S,
            )
        except ComputeApiError as exc:
            raise MigrationRequestRefused(str(exc)) from None
        except CloudError as exc:  # no answer: sent once, never repeated (see the module's docstring)
            raise MigrationRequestLost(str(exc)) from None
        headers = getattr(resp, "headers", None) or {}
        return next((str(headers[h]) for h in REQUEST_ID_HEADERS if headers.get(h)), None)

    def force_complete(self, server_id: str, migration_id: int) -> None:
        version = mv.choose(self.max_version, mv.PREFERRED)
        if self.max_version < mv.FORCE_COMPLETE:
            raise CloudError(f"force-complete needs microversion {mv.FORCE_COMPLETE}")
        self.call(
            "POST",
            f"/servers/{server_id}/migrations/{migration_id}/action",
            version=version,
            json={"force_complete": None},
        )

    def abort(self, server_id: str, migration_id: int, status: str) -> None:
        version = mv.abort_allowed(self.max_version, status)
        if version is None:
            raise ComputeApiError("DELETE", "migration", 409, f"cannot abort a migration in status {status}")
        self.call("DELETE", f"/servers/{server_id}/migrations/{migration_id}", version=version)


class ComputeApiError(CloudError):
    """Nova answered with an error status; `status` lets callers tell 409 (try later) from the rest."""

    def __init__(self, method: str, url: str, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"{method} {url}: HTTP {status}: {message}")


class _Transient(Exception):
    """A failure that a repeat of the same request may not meet again; `error` is what it means."""

    def __init__(self, error: CloudError) -> None:
        super().__init__(str(error))
        self.error = error

    def final(self, attempts: int, *, retried: bool) -> CloudError:
        """The error to raise once no attempt is left, saying how many were made, or why none was
        repeated (the call is not idempotent)."""
        if retried:
            note = f" (gave up after {attempts} attempts)"
        else:
            note = " (not retried: the request may have reached Nova, and repeating it is not safe)"
        error = self.error
        error.args = (str(error) + note,)
        return error


def _fault_text(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return str(resp.text)[:300]
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])
    return str(body)[:300]
