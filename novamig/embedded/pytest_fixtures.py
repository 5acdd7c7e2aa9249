"""pytest fixtures for the embedded cloud: one cloud per test session and xdist worker.

Use from a conftest.py::

    pytest_plugins = ["novamig.embedded.pytest_fixtures"]

``embedded_cloud`` (session scope) starts the cloud with novamig's QEMU driver; every xdist worker
gets its own (distinct ports, work directory and clouds.yaml name ``novamig-embedded-<worker>``).
``embedded_conn`` is an admin openstacksdk Connection to it. The cloud's mode comes from the same
environment as a run's own cloud (`options_from_env`): ``NOVAMIG_EMBEDDED_DRIVER=fake`` with
``NOVAMIG_EMBEDDED_COMPUTES`` and ``NOVAMIG_FAKE_MIGRATION_S`` gives the scale mode, without guests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from novamig.embedded.controller import EmbeddedCloud, options_from_env
from novamig.embedded.layout import DEFAULT_CLOUD_NAME


def cloud_name_for_worker(worker_id: str) -> str:
    return DEFAULT_CLOUD_NAME if worker_id in ("", "master") else f"{DEFAULT_CLOUD_NAME}-{worker_id}"


@pytest.fixture(scope="session")
def embedded_cloud(worker_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCloud]:
    workdir = tmp_path_factory.mktemp("embedded-cloud", numbered=True) / "cloud"
    cloud = EmbeddedCloud(
        workdir,
        cloud_name=cloud_name_for_worker(worker_id),
        **options_from_env(),
    )
    cloud.start()
    try:
        yield cloud
    finally:
        cloud.stop()


@pytest.fixture(scope="session")
def embedded_conn(embedded_cloud: EmbeddedCloud) -> Any:
    return embedded_cloud.connection()
