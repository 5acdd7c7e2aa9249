"""After a migration failed: Nova's reason, the server's state, and whether the server is lost.

The watcher knows that a migration failed and what it saw (the record's ``failed``, a refusal, a
cloud that stopped answering). Nova often knows why: its ``live-migration`` instance action holds a
failed step with the exception — a compute service down, a destination that refused, a host check
— and that reason becomes the record's `error`, one line, with the action's steps in the timeline.

Then the server: Nova's status, host, task and power state are recorded (`ServerAfter`), and the
hypervisor is asked, through Nova's diagnostics, whether the guest still runs. A migration whose
source QEMU died leaves the server ACTIVE on its source with Nova's power state still ``running``
(Nova refreshes it every ten minutes): only that live answer shows the guest is gone. A server whose
guest is gone — or that Nova deleted, holds in ERROR or shut off — is *lost*: its further migrations
in the case are skipped (`novamig.runner.case`), since each would fail in turn, and the run's cleanup
deletes it as any other.

Reached only on a cloud whose API offers these reads (`FailureApi`: the real `Compute`); a unit
test's in-memory cloud keeps the watcher's own reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from novamig.cloud.compute import POWER_STATES, ComputeApiError, ComputeService, ServerState
from novamig.cloud.errors import CloudError, CloudUnreachable
from novamig.cloud.instance_actions import InstanceAction
from novamig.measure.contract import CaseClock
from novamig.results import Event, MigrationRecord, ServerAfter

log = logging.getLogger(__name__)

_Note = Callable[[str], None]

#: Nova statuses of a server that has no running guest to migrate any more.
LOST_STATUSES = frozenset({"ERROR", "SHUTOFF", "DELETED", "SOFT_DELETED", "SHELVED", "SHELVED_OFFLOADED"})
#: Nova's power states of a guest that does not run (nostate, shutdown, crashed).
LOST_POWER_STATES = frozenset({0, 4, 6})
RUNNING = 1


@runtime_checkable
class FailureApi(Protocol):
    """The reads that explain a failure; `novamig.cloud.compute.Compute` provides them."""

    def server(self, server_id: str) -> ServerState: ...

    def migration_action(self, server_id: str, request_id: str) -> InstanceAction | None: ...

    def guest_running(self, server_id: str) -> bool | None: ...

    def compute_services(self) -> list[ComputeService]: ...


def explain_failure(
    api: object,
    record: MigrationRecord,
    server_id: str,
    request_id: str | None,
    clock: CaseClock,
    *,
    hosts: tuple[str | None, ...] | None = None,
) -> None:
    """Complete an `error` record with Nova's reason, the compute services of `hosts` (source,
    destination; None: every host, when the scheduler chose) that are down or disabled, the
    server's state and whether it is lost. Each read that fails is noted in the timeline and
    skipped: the record stays what it was; a cloud that does not answer ends them all at once
    (each read would wait out its retries in turn)."""
    if record.status != "error" or not isinstance(api, FailureApi):
        return

    def note(what: str) -> None:
        record.events.append(Event(t=clock.now(), what=what))

    try:
        _explain(api, record, server_id, request_id, note, hosts=hosts)
    except CloudUnreachable as exc:
        note(f"the failure not explained: the cloud does not answer: {exc}")


def _explain(
    api: FailureApi,
    record: MigrationRecord,
    server_id: str,
    request_id: str | None,
    note: _Note,
    *,
    hosts: tuple[str | None, ...] | None,
) -> None:
    reason = _nova_reason(api, server_id, request_id, note)
    if reason is not None:
        record.error = f"Nova: {reason}"
    down = _services_down(api, None if hosts is None else {h for h in hosts if h}, note)
    if down:
        record.error = f"{record.error or 'migration failed'}; {down}"
    after, lost_because = _server_after(api, server_id, note)
    if after is not None:
        record.server_after = after
    if lost_because is not None:
        record.server_lost = True
        note(f"server lost: {lost_because}")
        record.error = f"{record.error or 'migration failed'}; server lost: {lost_because}"
        log.warning("%s: server lost after its failed migration: %s", record.server, lost_because)


def _nova_reason(api: FailureApi, server_id: str, request_id: str | None, note: _Note) -> str | None:
    """The first failed step of Nova's instance action for this migration, each step noted.
    None without the request's id: a refused request started no action (its refusal is the
    reason), and the server's newest action could be an earlier migration's."""
    if request_id is None:
        return None
    try:
        action = api.migration_action(server_id, request_id)
    except CloudUnreachable:
        raise
    except CloudError as exc:
        note(f"Nova's instance action not read: {exc}")
        return None
    if action is None:
        note("Nova recorded no live-migration action for this request")
        return None
    note("Nova's live-migration action: " + ", ".join(e.summary() for e in action.events))
    return action.reason()


def _services_down(api: FailureApi, hosts: set[str] | None, note: _Note) -> str | None:
    """The hosts (None: all) whose compute service is down or disabled now, in one phrase: a
    scheduler's "No valid host" or a rollback's silence often hides exactly that."""
    if hosts is not None and not hosts:
        return None
    try:
        services = api.compute_services()
    except CloudUnreachable:
        raise
    except CloudError as exc:
        note(f"compute services not read: {exc}")
        return None
    bad = sorted(
        f"{s.host} is {s.state}/{s.status}"
        for s in services
        if (hosts is None or s.host in hosts) and not s.usable
    )
    if not bad:
        return None
    what = "compute service " + ", ".join(bad)
    note(what)
    return what


def _server_after(api: FailureApi, server_id: str, note: _Note) -> tuple[ServerAfter | None, str | None]:
    """The server after the failure and, when it is lost, why."""
    try:
        server = api.server(server_id)
    except ComputeApiError as exc:
        if exc.status == 404:
            return ServerAfter(), "Nova no longer has the server"
        note(f"the server after the failure not read: {exc}")
        return None, None
    except CloudUnreachable:
        raise
    except CloudError as exc:
        note(f"the server after the failure not read: {exc}")
        return None, None
    power = (
        POWER_STATES.get(server.power_state, str(server.power_state))
        if server.power_state is not None
        else None
    )
    running: bool | None = None
    if server.status not in LOST_STATUSES and server.power_state == RUNNING:
        try:
            running = api.guest_running(server_id)
        except CloudUnreachable:
            raise
        except CloudError as exc:
            note(f"the hypervisor not asked whether the guest runs: {exc}")
    after = ServerAfter(
        status=server.status,
        host=server.host,
        task_state=server.task_state,
        power_state=power,
        guest_running=running,
        fault=server.fault,
    )
    note(
        f"server after the failure: {server.status} on {server.host or '-'}, power state {power or '-'}, "
        f"guest {'running' if running else 'not running' if running is False else 'not asked'}"
    )
    return after, lost_because(server, power, running)


def lost_because(server: ServerState, power: str | None, running: bool | None) -> str | None:
    """Why the server is lost, from its state after the failure; None: it is not."""
    if server.status in LOST_STATUSES:
        return f"Nova has it {server.status}" + (f" ({server.fault})" if server.fault else "")
    if server.power_state in LOST_POWER_STATES:
        return f"Nova's power state is {power}"
    if running is False:
        return f"its guest no longer runs on {server.host or 'its host'} (Nova still says {power})"
    return None
