"""Compute API microversions: every live-migration difference between versions lives here.

Nova changed the live-migrate request three times, and the rest of novamig must not care:

* 2.25 — ``block_migration`` may be ``"auto"`` and ``disk_over_commit`` is gone;
* 2.30 — with a ``host``, the scheduler still validates it unless ``force`` is true;
* 2.68 — ``force`` is removed (a named host is always validated by the scheduler).

novamig never forces: a forced migration bypasses the scheduler and hides placement problems the
test should see. So with a host we send ``force`` only where it is required (2.25–2.29, where a
host implies force and there is no choice), and never after 2.67.

We use the highest version the cloud supports that is no higher than what we need, so a newer
cloud is driven exactly as the code was tested, and an older one still works where it can.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

BlockMigration = bool | Literal["auto"]


@functools.total_ordering
@dataclass(frozen=True)
class Microversion:
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str | tuple[int, int]) -> Microversion:
        if isinstance(text, tuple):
            return cls(int(text[0]), int(text[1]))
        try:
            major, minor = text.strip().split(".")
            return cls(int(major), int(minor))
        except ValueError:
            raise ValueError(f"not a microversion: {text!r} (expected MAJOR.MINOR)") from None

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Microversion):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


MINIMUM = Microversion(2, 25)
"""Below this, block migration cannot be ``auto``: we refuse the cloud in preflight."""

# What each feature needs. Named here so callers and tests share the same numbers.
LIVE_MIGRATE_AUTO_BLOCK = Microversion(2, 25)
LIVE_MIGRATE_HOST_CHECKED = Microversion(2, 30)
LIVE_MIGRATE_FORCE_REMOVED = Microversion(2, 68)
FORCE_COMPLETE = Microversion(2, 22)
SERVER_MIGRATIONS_LIST = Microversion(2, 23)
ABORT_RUNNING = Microversion(2, 24)
ABORT_QUEUED = Microversion(2, 65)
SERVER_TAGS = Microversion(2, 26)
FLAVOR_DESCRIPTION = Microversion(2, 55)
MIGRATIONS_UUID_AND_PAGING = Microversion(2, 59)
MIGRATIONS_USER_PROJECT = Microversion(2, 80)
SERVER_MIGRATION_FIELDS = Microversion(2, 80)
PREFERRED = Microversion(2, 80)
"""The highest version whose behaviour novamig relies on (2.80: user/project in migration records)."""


def choose(cloud_max: Microversion, wanted: Microversion) -> Microversion:
    """The version to send: the highest the cloud supports that is not above `wanted`."""
    return min(cloud_max, wanted)


@dataclass(frozen=True)
class LiveMigrateRequest:
    """One ``os-migrateLive`` action: the microversion header and the body to send with it."""

    microversion: Microversion
    body: dict[str, Any]


def live_migrate_request(
    cloud_max: Microversion, host: str | None, block_migration: BlockMigration = "auto"
) -> LiveMigrateRequest:
    """Build the live-migrate request for a cloud whose maximum microversion is `cloud_max`.

    `host` None lets the scheduler choose. Raises ValueError below 2.25 (preflight refuses
    such a cloud, so this is a programming error when it happens).
    """
    if cloud_max < MINIMUM:
        raise ValueError(f"live migration needs compute microversion >= {MINIMUM}; cloud offers {cloud_max}")
    version = choose(cloud_max, PREFERRED)
    action: dict[str, Any] = {"host": host, "block_migration": block_migration}
    if host is not None and version < LIVE_MIGRATE_HOST_CHECKED:
        # 2.25–2.29: a named host always bypasses the scheduler and the API insists on saying so.
        action["force"] = True
    # 2.30–2.67: leaving `force` out means "validate the host" — what we want.
    # 2.68+: `force` no longer exists; sending it would be a 400.
    return LiveMigrateRequest(version, {"os-migrateLive": action})


def abort_allowed(cloud_max: Microversion, status: str) -> Microversion | None:
    """The version with which a migration in `status` can be aborted, or None if it cannot."""
    if status in ("queued", "preparing") and cloud_max >= ABORT_QUEUED:
        return choose(cloud_max, PREFERRED)
    if status == "running" and cloud_max >= ABORT_RUNNING:
        return choose(cloud_max, PREFERRED)
    return None
