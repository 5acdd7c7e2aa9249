"""The embedded cloud's scale mode: Nova's own fake driver on N computes, no guests at all.

``novamig cloud up --driver fake --computes N`` (or ``EmbeddedCloud(driver="fake")``) loads
`ScaleFakeDriver` here as ``nova.virt.novamig_fake.ScaleFakeDriver``. It is Nova's
``nova.virt.fake.FakeLiveMigrateDriver`` (the fake driver Nova's own functional tests live-migrate
with) with two changes that make it usable for many migrations at once:

- Nova's class keeps one "migrating" flag per driver, so a force-complete or an abort of one
  migration would end every migration of that compute; here each migration has its own event.
- Nova's class waits a fixed 5 s; here a migration takes ``migration_s`` (``fake_mode.json`` in the
  work directory, written by the launcher), so a bench can choose how long migrations overlap.

Everything else (scheduling, Placement claims, the conductor's checks, the compute RPC, the
migration records and their status) is Nova's real code: this mode measures the harness and Nova's
orchestration at scale. It boots nothing, so no downtime is ever measured here: the probes say
"unavailable: fake driver" (`novamig.measure.registry`).
"""

# Method signatures below are Nova's ComputeDriver interface, positional arguments included.
# ruff: noqa: PLR0917

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from nova.virt import fake

from novamig.embedded.service import driver_registry

MODULE_NAME = "nova.virt.novamig_fake"
COMPUTE_DRIVER = "novamig_fake.ScaleFakeDriver"
SETTINGS_FILE = "fake_mode.json"
DEFAULT_MIGRATION_S = 1.0


def migration_seconds(workdir: Path) -> float:
    """How long each fake live migration takes, from ``fake_mode.json`` (the default if absent)."""
    try:
        data = json.loads((workdir / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return DEFAULT_MIGRATION_S
    return float(data.get("migration_s", DEFAULT_MIGRATION_S))


class ScaleFakeDriver(fake.FakeLiveMigrateDriver):  # type: ignore[misc]
    """Nova's live-migrating fake driver, one wait per migration and a configurable duration."""

    def __init__(self, virtapi: Any, read_only: bool = False) -> None:
        super().__init__(virtapi, read_only)
        self._migration_s = migration_seconds(driver_registry.current_layout().workdir)
        self._lock = threading.Lock()
        self._running: dict[str, tuple[threading.Event, list[bool]]] = {}  # uuid → (end, [aborted])

    def live_migration(
        self,
        context: Any,
        instance: Any,
        dest: Any,
        post_method: Any,
        recover_method: Any,
        block_migration: bool = False,
        migrate_data: Any = None,
    ) -> None:
        """Wait `migration_s` (or until force-complete or abort), then Nova's post or recover."""
        ended, aborted = threading.Event(), [False]
        with self._lock:
            self._running[instance.uuid] = (ended, aborted)
        try:
            ended.wait(self._migration_s)
        finally:
            with self._lock:
                self._running.pop(instance.uuid, None)
        if aborted[0]:
            recover_method(context, instance, dest, migrate_data, migration_status="cancelled")
        else:
            post_method(context, instance, dest, block_migration, migrate_data)

    def live_migration_force_complete(self, instance: Any) -> None:
        with self._lock:
            running = self._running.get(instance.uuid)
        if running is not None:
            running[0].set()

    def live_migration_abort(self, instance: Any) -> None:
        with self._lock:
            running = self._running.get(instance.uuid)
        if running is not None:
            running[1][0] = True
            running[0].set()
