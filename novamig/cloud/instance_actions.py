"""Nova's own account of a server action: ``/servers/{id}/os-instance-actions/{request_id}``.

Nova records each action on a server (``live-migration`` among them) under the request id of the
API call that started it, with one event per step it ran (``conductor_live_migrate_instance``,
``compute_check_can_live_migrate_destination``, ``compute_pre_live_migration``,
``compute_live_migration`` …), each ``Success`` or ``Error``. An ``Error`` event carries why: its
``details`` (2.84+, a short message) and, to an admin, the ``traceback`` whose last line names the
exception and its message — e.g. ``nova.exception.ComputeServiceUnavailable: Compute service of
compute2 is unavailable at this time.`` That is the reason novamig puts into a failed migration's
error, rather than only the migration record's bare ``error``/``failed``.

Not every failure has one: when a migration fails once the hypervisor is copying memory, Nova's
driver rolls back without raising (libvirt's monitor calls the rollback and returns), so every
event says ``Success`` and the reason is only in the compute's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REASON_MAX_CHARS = 300
"""A reason is one line of a results file and a console summary, not a log."""


@dataclass(frozen=True)
class ActionEvent:
    """One step of an action, as Nova recorded it."""

    event: str
    result: str | None  # "Success", "Error", None while it runs
    host: str | None = None  # 2.62+, to an admin
    details: str | None = None  # 2.84+
    traceback: str | None = None  # to an admin

    @property
    def failed(self) -> bool:
        return self.result == "Error"

    def reason(self) -> str:
        """Why this step failed, in one line: its details, else the traceback's last line (the
        exception and its message), else only that it failed."""
        text = self.details or _last_line(self.traceback) or f"{self.result or 'no result'}"
        where = f" on {self.host}" if self.host else ""
        return _one_line(f"{self.event}{where}: {text}")

    def summary(self) -> str:
        where = f" on {self.host}" if self.host else ""
        return f"{self.event}{where}: {self.result or 'running'}"


@dataclass(frozen=True)
class InstanceAction:
    action: str
    request_id: str
    message: str | None
    events: tuple[ActionEvent, ...]

    def reason(self) -> str | None:
        """Nova's reason the action failed: its first failed step (the later ones are mostly the
        rollback failing in turn); None when no step failed."""
        failed = [e for e in self.events if e.failed]
        return failed[0].reason() if failed else None


def action_from_json(data: dict[str, Any]) -> InstanceAction:
    raw_events = data.get("events") or []
    # Nova lists events in no promised order: by start time, the order they ran in.
    ordered = sorted(
        (e for e in raw_events if isinstance(e, dict)), key=lambda e: str(e.get("start_time") or "")
    )
    return InstanceAction(
        action=str(data.get("action") or ""),
        request_id=str(data.get("request_id") or ""),
        message=data.get("message"),
        events=tuple(
            ActionEvent(
                event=str(e.get("event") or "?"),
                result=e.get("result"),
                host=e.get("host"),
                details=e.get("details"),
                traceback=e.get("traceback"),
            )
            for e in ordered
        ),
    )


def _last_line(text: str | None) -> str | None:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= REASON_MAX_CHARS else flat[: REASON_MAX_CHARS - 1] + "…"
