"""Make novamig's virt driver loadable by Nova, and reach its live instances at shutdown.

Nova imports its compute driver only as ``nova.virt.<compute_driver>``; novamig's driver lives in
``novamig.embedded.service.driver``, so ``register`` makes it importable as ``nova.virt.novamig`` (the
``compute_driver = novamig.NovamigDriver`` of nova.conf). Every driver instance registers itself
here so the cloud process can stop all guests before it exits.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Protocol

from novamig.embedded.layout import CloudLayout

MODULE_NAME = "nova.virt.novamig"


class Stoppable(Protocol):
    def shutdown(self) -> None: ...


_lock = threading.Lock()
_drivers: list[Stoppable] = []
_layouts: list[CloudLayout] = []  # the one layout of this process, once registered


def register(layout: CloudLayout) -> None:
    _layouts[:] = [layout]
    module = importlib.import_module("novamig.embedded.service.driver")
    sys.modules[MODULE_NAME] = module
    import nova.virt

    nova.virt.novamig = module


def current_layout() -> CloudLayout:
    if not _layouts:
        raise RuntimeError("the novamig driver runs only inside the embedded cloud process")
    return _layouts[0]


def track(driver: Stoppable) -> None:
    with _lock:
        _drivers.append(driver)


def shutdown_all() -> None:
    with _lock:
        drivers = list(_drivers)
        _drivers.clear()
    for driver in drivers:
        driver.shutdown()
