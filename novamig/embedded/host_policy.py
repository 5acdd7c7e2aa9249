"""Per-compute live-migration policy, with the names and meaning of nova.conf on a libvirt host.

Stored as ``policies/<host>.json`` in the work directory and read by the driver at each migration,
so a scenario written for DevStack (where these are ``[libvirt]`` options of each compute's
nova.conf) means the same here, and a runner can change them between cases. Both sides use this
module: the client (``EmbeddedCloud.set_host_policy``) writes the file, the cloud process's driver
and live-migration pools read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LiveMigrationOptions:
    """One compute host's live-migration options of nova.conf (what a scenario's ``host_policy``
    sets), named apart from the scenario's ``HostPolicy`` model that asks for them."""

    # [libvirt] options, Nova's defaults.
    # The downtime limit is raised to live_migration_downtime in live_migration_downtime_steps
    # steps, one every live_migration_downtime_delay s per GiB of guest RAM (see
    # migration_monitor.downtime_steps), as the libvirt driver does.
    live_migration_downtime: int = 500  # ms
    live_migration_downtime_steps: int = 10
    live_migration_downtime_delay: int = 75  # s per GiB
    live_migration_bandwidth: int = 0  # MiB/s, 0 = unlimited
    live_migration_permit_post_copy: bool = False
    live_migration_permit_auto_converge: bool = False
    live_migration_completion_timeout: int = 800  # s per GiB, 0 = none
    live_migration_timeout_action: str = "abort"  # abort | force_complete
    # [DEFAULT]
    max_concurrent_live_migrations: int = 1

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> LiveMigrationOptions:
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"unknown host policy option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        policy = cls(**dict(options))
        if policy.live_migration_timeout_action not in ("abort", "force_complete"):
            raise ValueError("live_migration_timeout_action must be 'abort' or 'force_complete'")
        # nova.conf's own lower bounds (oslo.config refuses smaller values, so nova-compute on a
        # libvirt host would not start with them); the downtime is only required to be positive,
        # as scenario files may ask for less than Nova's 100 ms on purpose.
        if policy.live_migration_downtime < 1:
            raise ValueError("live_migration_downtime must be >= 1 ms")
        if policy.live_migration_downtime_steps < 3:
            raise ValueError("live_migration_downtime_steps must be >= 3 (as in nova.conf)")
        if policy.live_migration_downtime_delay < 3:
            raise ValueError("live_migration_downtime_delay must be >= 3 s per GiB (as in nova.conf)")
        return policy


def path(workdir: Path, host: str) -> Path:
    """``policies/<host>.json`` of a work directory."""
    return workdir / "policies" / f"{host}.json"


def write(workdir: Path, host: str, options: Mapping[str, Any]) -> LiveMigrationOptions:
    policy = LiveMigrationOptions.from_mapping(options)
    target = path(workdir, host)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(policy), indent=2) + "\n")
    tmp.replace(target)
    return policy


def read(workdir: Path, host: str) -> LiveMigrationOptions:
    target = path(workdir, host)
    if not target.exists():
        return LiveMigrationOptions()
    return LiveMigrationOptions.from_mapping(json.loads(target.read_text()))
