"""Put Nova into native-threading mode before anything imports it.

Nova 34 refuses to run when eventlet was imported before its own patch decision ("eventlet library
imported early"), and Nova's test fixtures import eventlet-aware modules. So the cloud process calls
``prepare()`` first thing, before importing nova, placement or nova.tests.
"""

from __future__ import annotations

import os


def prepare() -> None:
    os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = "1"
    from nova import monkey_patch  # noqa: PLC0415 - Nova's import of itself must follow the env var

    monkey_patch.patch(backend="threading")
