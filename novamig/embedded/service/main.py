"""The embedded cloud's main process: ``python -m novamig.embedded.service.main WORKDIR``.

Starts Keystone (a child process), then in this process Placement, Nova's databases, conductor,
scheduler, the computes and the compute API, each served on its loopback port. Progress is visible
in the work directory: ``ready.json`` once every service answers, or ``failure.json`` naming the
service that failed to start (its log is kept in ``logs/``). SIGTERM stops the services and the
guests, then the process exits; the launcher removes the work directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from novamig.embedded import lifeline
from novamig.embedded.layout import FULL_IMAGE_ID, TINY_IMAGE_ID, CloudLayout
from novamig.embedded.service import (
    driver_registry,
    guest_network,
    libvirt_cloud,
    live_migration_pools,
    nova_setup,
    nova_threading,
    sqlite_lock,
    stand_ins,
)
from novamig.embedded.service.image_api import ImageApi
from novamig.embedded.service.keystone_process import READY_NAME as KEYSTONE_READY
from novamig.embedded.service.network_api import NetworkApi
from novamig.embedded.service.placement_app import placement_app
from novamig.embedded.service.wsgi_server import LoopbackServer
from novamig.guest.full import find_full_image

# The modules above import Nova, Placement and futurist (which brings eventlet) only inside their
# functions: Nova refuses to run when eventlet came in before its own threading decision
# (nova_threading.prepare()), which the "nova-config" stage makes after Keystone's process started.

KEYSTONE_TIMEOUT_S = 60.0


class StartupError(Exception):
    def __init__(self, service: str, detail: str, log: Path) -> None:
        super().__init__(f"{service}: {detail}")
        self.service = service
        self.detail = detail
        self.log = log


class CloudProcess:
    """The services of one cloud in this process, started stage by stage and stopped together."""

    def __init__(self, layout: CloudLayout) -> None:
        self.layout = layout
        self.timings: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._keystone: subprocess.Popen[bytes] | None = None
        self._servers: list[Any] = []
        self._services: list[Any] = []
        self._fixture_host: Any = None
        self._network: Any = None
        self._pools: Any = None
        self._images: Any = None  # the driver's guest images, once the driver is registered
        self._stop = threading.Event()

    # -- helpers -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, service: str, log_name: str = "nova.log") -> Iterator[None]:
        """Time one start-up stage; any failure becomes a StartupError naming the service."""
        started = time.monotonic()
        try:
            yield
        except StartupError:
            raise
        except (Exception, SystemExit) as exc:  # Nova calls sys.exit() when e.g. a driver fails to load
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            with (self.layout.logs / log_name).open("a") as fh:
                fh.write(f"novamig: {service} failed to start\n{traceback.format_exc()}\n")
            raise StartupError(service, detail, self.layout.logs / log_name) from exc
        self.timings[service] = round(time.monotonic() - started, 3)

    def _serve(self, name: str, app: Any, port: int) -> None:
        server = LoopbackServer(name, app, port)
        server.start()
        self._servers.append(server)

    # -- stages --------------------------------------------------------------------------------------
    def start_keystone(self) -> None:
        env = dict(os.environ, PYTHONWARNINGS="ignore", **lifeline.env_for_child())
        log = (self.layout.logs / "keystone.out").open("ab")
        self._keystone = subprocess.Popen(
            [sys.executable, "-m", "novamig.embedded.service.keystone_process", str(self.layout.workdir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()

    def wait_keystone(self) -> None:
        assert self._keystone is not None
        deadline = time.monotonic() + KEYSTONE_TIMEOUT_S
        ready = self.layout.workdir / KEYSTONE_READY
        while not ready.exists():
            code = self._keystone.poll()
            if code is not None:
                raise StartupError(
                    "keystone",
                    f"exited with status {code} during start-up",
                    self.layout.logs / "keystone.log",
                )
            if time.monotonic() > deadline:
                raise StartupError(
                    "keystone",
                    f"not ready after {KEYSTONE_TIMEOUT_S:.0f} s",
                    self.layout.logs / "keystone.log",
                )
            time.sleep(0.05)

    def run(self) -> None:
        """Start every service, one timed stage after another; write ``ready.json`` at the end."""
        lay = self.layout
        with self.stage("keystone", "keystone.log"):
            self.start_keystone()
        with self.stage("nova-config"):
            nova_threading.prepare()
            conf = nova_setup.configure(lay.nova_dir / "nova.conf")
            sqlite_lock.install()
        with self.stage("placement", "placement.log"):
            app = placement_app(lay.placement_dir / "placement.conf", lay.placement_dir / "placement.sqlite")
            self._serve("placement", app, lay.ports.placement)
        with self.stage("nova-databases"):
            nova_setup.create_databases(lay, conf)
            nova_setup.create_flavors()
        with self.stage("image-and-network"):
            self._serve_image_and_network(conf)
        if lay.driver == "novamig":
            with self.stage("guest-network"):
                self._network = guest_network.install(lay.workdir)
            with self.stage("driver"):
                # the driver imports Nova at module level: only after nova_threading.prepare()
                from novamig.embedded.service import driver  # noqa: PLC0415 - Nova after prepare()

                driver_registry.register(lay, driver)
                self._images = driver.IMAGES
        elif lay.driver == "fake":
            with self.stage("driver"):
                # Nova's fake driver, the scale mode: no guests, no network namespace
                from novamig.embedded.service import fake_mode  # noqa: PLC0415 - Nova after prepare()

                driver_registry.register(lay, fake_mode, fake_mode.MODULE_NAME)
        elif lay.driver == libvirt_cloud.MODE:
            self._start_libvirt(conf)
        with self.stage("live-migration-pools"):
            self._pools = live_migration_pools.install(lay.workdir)
        self._start_nova_services(conf)
        with self.stage("keystone-ready", "keystone.log"):
            self.wait_keystone()
        self._write_ready()
        if self._images is not None:
            self._images.prefetch()  # find (or build) the guest image before the first server is asked for

    def _start_libvirt(self, conf: Any) -> None:
        """The libvirt mode: a libvirtd per compute, then Nova's LibvirtDriver for each."""
        with self.stage("libvirt-hosts", "libvirt.log"):
            self._network = libvirt_cloud.start(self.layout, Path(conf.instances_path))
        with self.stage("driver"):
            from novamig.embedded.service import libvirt_compute  # noqa: PLC0415 - Nova after prepare()

            libvirt_compute.install(self._network)
            driver_registry.register(self.layout, libvirt_compute, libvirt_compute.MODULE_NAME)
            self._images = libvirt_compute.IMAGES

    def _serve_image_and_network(self, conf: Any) -> None:
        """Nova's Glance and Neutron stand-ins, and the Image and Network APIs over their stores."""
        lay = self.layout
        self._fixture_host = stand_ins.FixtureHost(conf)
        # novamig-full only when already built: building it takes minutes, never here
        full_image = find_full_image() if lay.driver == "novamig" else None
        glance = stand_ins.install_glance(self._fixture_host, full_image)
        conf.set_override("api_servers", [lay.image_url], group="glance")
        neutron = stand_ins.install_neutron(self._fixture_host)
        if lay.driver == libvirt_cloud.MODE:
            libvirt_cloud.use_tap_vifs(neutron)
            libvirt_cloud.serve_images(glance, lay)  # novamig-full as its Glance form; image bytes
        # uploads (novamig image upload, conn.image.create_image) go to <workdir>/images/;
        # the images the cloud registers itself stay undeletable: the driver boots them by id
        registered = (TINY_IMAGE_ID, FULL_IMAGE_ID)
        image_api = ImageApi(glance, lay.image_url, lay.workdir / "images", undeletable=registered)
        self._serve("image", image_api, lay.ports.image)
        self._serve("network", NetworkApi(neutron, lay.network_url), lay.ports.network)

    def _start_nova_services(self, conf: Any) -> None:
        """Conductor, scheduler, one compute per host, cell discovery, then the compute API."""
        lay = self.layout
        with self.stage("nova-conductor"):
            self._services.append(nova_setup.start_service("conductor", "controller", conf))
        with self.stage("nova-scheduler"):
            self._services.append(nova_setup.start_service("scheduler", "controller", conf))
        for host in lay.hosts:
            with self.stage(f"nova-compute@{host}"):
                self._services.append(nova_setup.start_service("compute", host, conf))
        conf.set_override("host", "controller")
        with self.stage("cell-discovery"):
            nova_setup.discover_hosts()
        with self.stage("nova-api"):
            self._serve("nova-api", nova_setup.compute_api_app(lay), lay.ports.compute)

    def _write_ready(self) -> None:
        lay = self.layout
        ready = {
            "pid": os.getpid(),
            "elapsed_s": round(time.monotonic() - self._t0, 3),
            "stages_s": self.timings,
            "keystone_pid": self._keystone.pid if self._keystone else None,
            "guest_netns": self._network.netns if self._network is not None else None,
        }
        if isinstance(self._network, libvirt_cloud.LibvirtCloud):
            ready["libvirt_hosts"] = self._network.describe()
        tmp = lay.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ready, indent=2) + "\n")
        tmp.rename(lay.ready_file)

    def wait(self) -> None:
        while not self._stop.wait(1.0):
            if self._keystone is not None and self._keystone.poll() is not None:
                print("novamig: keystone exited; stopping the cloud", file=sys.stderr)
                break

    def stop(self) -> None:
        """Stop guests (through the driver), servers and Keystone; tolerant of partial start-up.

        Each step's duration goes to ``logs/cloud.out``, so a slow shutdown shows where it waits."""
        took: dict[str, float] = {}

        def step(name: str, action: Any) -> None:
            started = time.monotonic()
            with contextlib.suppress(Exception):
                action()
            took[name] = round(time.monotonic() - started, 2)

        for svc in reversed(self._services):
            step(f"service:{getattr(svc, 'binary', '?')}@{getattr(svc, 'host', '?')}", svc.kill)

        step("guests", driver_registry.shutdown_all)
        if self._pools is not None:
            step("live-migration-pools", self._pools.shutdown)
        if self._network is not None:
            step("guest-network", self._network.stop)
        for server in reversed(self._servers):
            step(f"wsgi:{server.name}", server.stop)
        step("keystone", self._stop_keystone)
        print(f"novamig: embedded cloud stopped: {took}", file=sys.stderr, flush=True)

    def _stop_keystone(self) -> None:
        if self._keystone is not None and self._keystone.poll() is None:
            self._keystone.terminate()
            try:
                self._keystone.wait(5)
            except subprocess.TimeoutExpired:
                self._keystone.kill()
                self._keystone.wait()

    def request_stop(self, *_: Any) -> None:
        self._stop.set()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m novamig.embedded.service.main WORKDIR", file=sys.stderr)
        return 2
    lifeline.arm()
    layout = CloudLayout.load(Path(argv[0]))
    proc = CloudProcess(layout)
    signal.signal(signal.SIGTERM, proc.request_stop)
    signal.signal(signal.SIGINT, proc.request_stop)
    code = _serve(proc, layout)
    if layout.driver == libvirt_cloud.MODE:
        # Nova's libvirt connection-event threads never end (they wait on a queue), and the
        # interpreter's exit would join them: leave without waiting, everything is stopped.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _serve(proc: CloudProcess, layout: CloudLayout) -> int:
    """Start the cloud, serve until asked to stop, stop it; the process's exit status."""
    try:
        proc.run()
    except StartupError as exc:
        layout.failure_file.write_text(
            json.dumps({"service": exc.service, "error": exc.detail, "log": str(exc.log)}, indent=2) + "\n"
        )
        print(f"novamig: embedded cloud failed to start: {exc} (log: {exc.log})", file=sys.stderr)
        proc.stop()
        return 1
    print(f"novamig: embedded cloud ready in {proc.timings}", file=sys.stderr, flush=True)
    proc.wait()
    proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
