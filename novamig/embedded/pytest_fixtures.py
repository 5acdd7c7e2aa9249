"""pytest fixtures for the embedded cloud: one cloud per test session and xdist worker.

Use from a conftest.py::

    pytest_plugins = ["novamig.embedded.pytest_fixtures"]

``embedded_cloud`` (session scope) starts the cloud with novamig's QEMU driver; every xdist worker
gets its own (distinct ports, work directory and clouds.yaml name ``novamig-embedded-<worker>``).
``embedded_conn`` is an admin openstacksdk Connection to it. Set ``NOVAMIG_EMBEDDED_DRIVER`` (e.g.
``fake.FakeDriver``) only to test the cloud's plumbing without guests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import DEFAULT_CLOUD_NAME


def cloud_name_for_worker(worker_id: str) -> str:
    return DEFAULT_CLOUD_NAME if worker_id in ("", "master") else f"{DEFAULT_CLOUD_NAME}-{worker_id}"


@pytest.fixture(scope="session")
def embedded_cloud(worker_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCloud]:
    workdir = tmp_path_factory.mktemp("embedded-cloud", numbered=True) / "cloud"
    cloud = EmbeddedCloud(
        workdir,
        cloud_name=cloud_name_for_worker(worker_id),
        driver=os.environ.get("NOVAMIG_EMBEDDED_DRIVER", "novamig"),
    )
    cloud.start()
    try:
        yield cloud
    finally:
        cloud.stop()


@pytest.fixture(scope="session")
def embedded_conn(embedded_cloud: EmbeddedCloud) -> Any:
    return embedded_cloud.connection()
