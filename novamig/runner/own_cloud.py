"""The embedded cloud a run uses: the one it starts itself when no cloud is named, or one that
``novamig cloud up`` started and clouds.yaml names; and what the run's environment records of it."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from novamig.cloud.connection import embedded_workdir
from novamig.cloud.errors import CloudError
from novamig.embedded.controller import EmbeddedCloud

log = logging.getLogger("novamig.runner")


def start_embedded(stack: contextlib.ExitStack, out_dir: Path, options: Mapping[str, Any]) -> EmbeddedCloud:
    cloud = EmbeddedCloud(**options)

    def stop_cloud() -> None:
        if cloud.layout is not None and cloud.layout.logs.exists():
            with contextlib.suppress(OSError):
                shutil.copytree(cloud.layout.logs, out_dir / "logs" / "embedded", dirs_exist_ok=True)
        cloud.stop()

    stack.callback(stop_cloud)
    cloud.start()
    log.info("embedded cloud started in %s (stopped and removed at the end of the run)", cloud.workdir)
    return cloud


def scale_mode(embedded: EmbeddedCloud | None) -> str | None:
    """The environment's label of a cloud whose servers have no guest (None: a measurement)."""
    if embedded is None or embedded.no_guests is None:
        return None
    return f"scale mode: {embedded.no_guests} on {len(embedded.hosts)} computes, no downtime measured"


def embedded_nova_version() -> str | None:
    """The embedded cloud runs the Nova installed here: its version is this package's."""
    try:
        return metadata.version("nova")
    except metadata.PackageNotFoundError:
        return None


def attach_embedded(cloud_name: str) -> EmbeddedCloud | None:
    """An embedded cloud named in clouds.yaml (``novamig cloud up``), attached; None otherwise."""
    try:
        workdir = embedded_workdir(cloud_name)
    except CloudError:
        return None  # connect() reports the error with its exit code
    if workdir is None or not (Path(workdir) / "cloud.json").exists():
        return None
    return EmbeddedCloud.attach(Path(workdir))
