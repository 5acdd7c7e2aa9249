"""Make novamig's virt driver loadable by Nova, and reach its live instances at shutdown.

Nova imports its compute driver only as ``nova.virt.<compute_driver>``; novamig's driver lives in
``novamig.embedded.service.driver``, so ``register`` makes the module it is handed importable as
``nova.virt.novamig`` (the ``compute_driver = novamig.NovamigDriver`` of nova.conf). Every driver
instance registers itself here (``track``) so the cloud process can stop all guests before it exits.
The driver imports this module, never the reverse: ``service.main`` imports both and hands the
driver module in.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType
from typing import Protocol

from novamig.embedded.layout import CloudLayout

MODULE_NAME = "nova.virt.novamig"


class Stoppable(Protocol):
    def shutdown(self) -> None: ...


_lock = threading.Lock()
_drivers: list[Stoppable] = []
_layouts: list[CloudLayout] = []  # the one layout of this process, once registered


def register(layout: CloudLayout, driver_module: ModuleType, module_name: str = MODULE_NAME) -> None:
    """Make ``driver_module`` Nova's ``module_name`` (``nova.virt.novamig``; the scale mode's fake
    driver is ``nova.virt.novamig_fake``), for the cloud of ``layout``."""
    _layouts[:] = [layout]
    sys.modules[module_name] = driver_module
    import nova.virt  # noqa: PLC0415 - Nova only after nova_threading.prepare(), and main imports this module before it

    setattr(nova.virt, module_name.rpartition(".")[2], driver_module)


def current_layout() -> CloudLayout:
    """The layout of this process's cloud (a driver instance needs its work directory)."""
    if not _layouts:
        raise RuntimeError("the novamig driver runs only inside the embedded cloud process")
    return _layouts[0]


def track(driver: Stoppable) -> None:
    """Remember a driver instance, to stop its guests at shutdown."""
    with _lock:
        _drivers.append(driver)


def shutdown_all() -> None:
    """Stop the guests of every tracked driver instance (the cloud process is stopping)."""
    with _lock:
        drivers = list(_drivers)
        _drivers.clear()
    for driver in drivers:
        driver.shutdown()
