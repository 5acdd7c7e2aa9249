"""``EmbeddedCloud``: start, reach and stop one embedded cloud from any Python process.

The cloud always runs in a child process of its own (its own process group, PID file in the work
directory), whether it was started by ``novamig cloud up`` (which returns to the shell and leaves it
running) or by a test fixture (``die_with_parent=True``: it goes when the test run goes, even on
SIGKILL). Nova's process-global configuration therefore never lands in the caller's interpreter.

    with EmbeddedCloud() as cloud:
        conn = cloud.connection()            # openstacksdk, admin user, via Keystone and the catalog
        conn.compute.servers()
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import openstack.config
import openstack.connection

from novamig import process_state
from novamig.embedded import clouds_yaml, compute_conf, config, host_policy, lifeline, processes
from novamig.embedded.layout import DEFAULT_CLOUD_NAME, DEFAULT_HOSTS, CloudLayout, Ports, Secrets
from novamig.hypervisor.libvirt_hosts import LibvirtHost
from novamig.hypervisor.libvirt_leftovers import find_leftovers, remove_leftovers

DEFAULT_START_TIMEOUT_S = 120.0


class CloudStartError(RuntimeError):
    """The cloud did not become ready. ``service`` names the part that failed; ``log`` is kept."""

    def __init__(self, service: str, detail: str, log: Path | None) -> None:
        where = f" (log: {log})" if log else ""
        super().__init__(f"embedded cloud: {service} failed to start: {detail}{where}")
        self.service = service
        self.detail = detail
        self.log = log


@dataclass(frozen=True)
class CloudStatus:
    workdir: Path
    running: bool
    pid: int | None
    ready: dict[str, Any] | None
    processes: list[int]
    guests: list[int]


def compute_hosts(count: int) -> tuple[str, ...]:
    """The compute host names of a cloud of ``count`` computes: compute1 … computeN."""
    if count < 1:
        raise ValueError(f"an embedded cloud needs at least one compute, not {count}")
    return tuple(f"compute{i}" for i in range(1, count + 1))


def options_from_env(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """`EmbeddedCloud`'s mode from the environment, for a cloud a run or a test session starts
    itself: ``NOVAMIG_EMBEDDED_DRIVER`` (novamig, fake, …), ``NOVAMIG_EMBEDDED_COMPUTES`` (how many
    computes; default two) and ``NOVAMIG_FAKE_MIGRATION_S`` (how long a fake migration takes)."""
    options: dict[str, Any] = {"driver": env.get("NOVAMIG_EMBEDDED_DRIVER", "novamig")}
    if env.get("NOVAMIG_EMBEDDED_COMPUTES"):
        options["hosts"] = compute_hosts(int(env["NOVAMIG_EMBEDDED_COMPUTES"]))
    if env.get("NOVAMIG_FAKE_MIGRATION_S"):
        options["fake_migration_s"] = float(env["NOVAMIG_FAKE_MIGRATION_S"])
    return options


def default_workdir(cloud_name: str = DEFAULT_CLOUD_NAME) -> Path:
    """Where ``novamig cloud up`` keeps the cloud: ``$NOVAMIG_EMBEDDED_DIR`` or the XDG state dir."""
    env = os.environ.get("NOVAMIG_EMBEDDED_DIR")
    if env:
        return Path(env)
    state = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return state / "novamig" / cloud_name


class EmbeddedCloud:
    """One embedded cloud: Keystone, Placement, Nova (API, conductor, scheduler, computes)."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        cloud_name: str = DEFAULT_CLOUD_NAME,
        hosts: Sequence[str] = DEFAULT_HOSTS,
        host_policies: Mapping[str, Mapping[str, Any]] | None = None,
        driver: str = "novamig",
        die_with_parent: bool = True,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        fake_migration_s: float | None = None,
    ) -> None:
        """``driver``: "novamig" (QEMU guests), "fake" (the scale mode: Nova's live-migrating fake
        driver, each migration taking ``fake_migration_s``, no guests, so no downtime figures) or a
        Nova driver path such as "fake.FakeDriver", which serves only to test the cloud's plumbing."""
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="novamig-embedded-"))
        self.cloud_name = cloud_name
        self.hosts = tuple(hosts)
        self.host_policies = {h: dict(p) for h, p in (host_policies or {}).items()}
        self.driver = driver
        self.fake_migration_s = fake_migration_s
        self.die_with_parent = die_with_parent
        self.start_timeout_s = start_timeout_s
        self.layout: CloudLayout | None = None
        self.ready_info: dict[str, Any] | None = None

    # -- attach to one started elsewhere (``novamig cloud down|status``) -----------------------------
    @classmethod
    def attach(cls, workdir: Path) -> EmbeddedCloud:
        layout = CloudLayout.load(workdir)
        cloud = cls(
            workdir,
            cloud_name=layout.cloud_name,
            hosts=layout.hosts,
            driver=layout.driver,
            die_with_parent=False,
        )
        cloud.layout = layout
        ready = workdir / "ready.json"
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(ready.read_text())
            cloud.ready_info = info if isinstance(info, dict) else None
        return cloud

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start the cloud in a fresh work directory and wait until every service answers."""
        if self.workdir.exists():
            if processes.cloud_pid(self.workdir / "cloud.pid", self.workdir) is not None:
                raise CloudStartError("cloud", f"already running in {self.workdir}", None)
            if not self._own_workdir:
                self.stop()  # a stale cloud of a dead process: its guests and namespace go too
        self.workdir.mkdir(parents=True, exist_ok=True)
        layout = CloudLayout(
            workdir=self.workdir.resolve(),
            cloud_name=self.cloud_name,
            ports=Ports.pick(),
            hosts=self.hosts,
            host_policies=self.host_policies,
            driver=self.driver,
        )
        secret = Secrets.generate()
        layout.logs.mkdir()
        layout.guests_dir.mkdir()
        layout.save(secret)
        if self.driver == "fake" and self.fake_migration_s is not None:
            # read by service/fake_mode.py (the client side never imports the service side)
            (layout.workdir / "fake_mode.json").write_text(json.dumps({"migration_s": self.fake_migration_s}))
        config.write_all(layout, secret)
        clouds_yaml.write_own(layout, secret)
        self.layout = layout
        for host, options in self.host_policies.items():
            host_policy.write(layout.workdir, host, options)

        out = (layout.logs / "cloud.out").open("ab")
        env = dict(os.environ, PYTHONWARNINGS="ignore", OS_NOVA_DISABLE_EVENTLET_PATCHING="1")
        env.pop(lifeline.ENV, None)
        if self.die_with_parent:
            env.update(lifeline.env_for_child())
        proc = subprocess.Popen(
            [sys.executable, "-m", "novamig.embedded.service.main", str(layout.workdir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        out.close()
        layout.pid_file.write_text(f"{proc.pid}\n")
        try:
            self.ready_info = self._wait_ready(proc)
        except BaseException:
            processes.stop_group(proc.pid)
            processes.stop_guests(layout.guests_dir)
            self._cleanup_networks()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)
            raise
        return self.ready_info

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        layout = self._layout()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if layout.ready_file.exists():
                ready: dict[str, Any] = json.loads(layout.ready_file.read_text())
                return ready
            code = proc.poll()
            if code is not None:
                raise self._failure(f"the cloud process exited with status {code}")
            if time.monotonic() > deadline:
                raise CloudStartError(
                    "cloud", f"not ready after {self.start_timeout_s:.0f} s", layout.logs / "nova.log"
                )
            time.sleep(0.05)

    def _failure(self, fallback: str) -> CloudStartError:
        layout = self._layout()
        if layout.failure_file.exists():
            info = json.loads(layout.failure_file.read_text())
            return CloudStartError(info["service"], info["error"], Path(info["log"]))
        return CloudStartError("cloud", fallback, layout.logs / "cloud.out")

    def stop(self, *, keep_workdir: bool = False) -> None:
        """Stop every process of the cloud and its guests; remove the work directory."""
        workdir = self.workdir
        pid = processes.cloud_pid(workdir / "cloud.pid", workdir)
        if pid is not None:
            processes.stop_group(pid)
        self._remove_libvirt_leftovers()
        if (workdir / "guests").exists():
            processes.stop_guests(workdir / "guests")
        self._cleanup_networks()
        if not keep_workdir and workdir.exists():
            shutil.rmtree(workdir, ignore_errors=True)

    def _remove_libvirt_leftovers(self) -> None:
        """The libvirt mode's hosts, if the cloud process died before it stopped them: its
        daemons die with it, its guests' QEMUs (daemonised by libvirt) do not."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.workdir / "cloud.pid").read_text().strip())
            remove_leftovers([left for left in find_leftovers() if left.creator_pid == pid])

    def _cleanup_networks(self) -> None:
        """Remove network namespaces the driver recorded (``netns.json``) if they outlived it."""
        record = self.workdir / "netns.json"
        if not record.exists():
            return
        for name in json.loads(record.read_text()):
            if Path(f"/run/netns/{name}").exists():
                subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)

    def status(self) -> CloudStatus:
        workdir = self.workdir
        pid = processes.cloud_pid(workdir / "cloud.pid", workdir)
        ready = None
        if (workdir / "ready.json").exists():
            ready = json.loads((workdir / "ready.json").read_text())
        guests = [
            int(p.read_text())
            for p in (workdir / "guests").glob("**/*.pid")
            if p.read_text().strip().isdigit() and process_state.alive(int(p.read_text()))
        ]
        return CloudStatus(
            workdir,
            pid is not None and ready is not None,
            pid,
            ready,
            processes.group_members(pid) if pid else [],
            guests,
        )

    def __enter__(self) -> EmbeddedCloud:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- reaching it ---------------------------------------------------------------------------------
    def _layout(self) -> CloudLayout:
        if self.layout is None:
            raise RuntimeError("the embedded cloud has not been started")
        return self.layout

    @property
    def guest_netns(self) -> str | None:
        """The network namespace where every guest is reachable at its port address (None without
        root: guests then have user-mode networking only). Run probes inside it."""
        return (self.ready_info or {}).get("guest_netns")

    @property
    def libvirt_hosts(self) -> dict[str, LibvirtHost] | None:
        """The libvirt mode's compute hosts by Nova host name (None in other modes): libvirt's job
        statistics are read inside their namespaces (`novamig.measure.libvirt_jobstats`)."""
        hosts = (self.ready_info or {}).get("libvirt_hosts")
        if not isinstance(hosts, dict):
            return None
        return {name: LibvirtHost.from_description(data) for name, data in hosts.items()}

    def compute_conf(self, host: str) -> Path:
        """The libvirt mode's ``nova-cpu.conf`` of compute `host` (`novamig.embedded.compute_conf`)."""
        return compute_conf.conf_path(self.workdir, host)

    def reload_compute(self, host: str) -> None:
        """Make compute `host` read its ``nova-cpu.conf`` again (libvirt mode; the stand-in for
        DevStack's restart of ``n-cpu``); returns once it runs with the file as it is now."""
        compute_conf.reload(self.workdir, host)

    @property
    def no_guests(self) -> str | None:
        """Why this cloud's servers have no guest behind them (None: they are QEMU guests): what
        every probe reports instead of a figure (`novamig.measure.registry.CloudCapabilities`)."""
        fake = self.driver == "fake" or self.driver.startswith("fake.")
        return "fake driver" if fake else None

    @property
    def clouds_yaml(self) -> Path:
        return self._layout().clouds_yaml

    def env(self, member: bool = False) -> dict[str, str]:
        """Environment variables that point openstacksdk/OSC in a subprocess at this cloud."""
        name = f"{self.cloud_name}-member" if member else self.cloud_name
        return {"OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml), "OS_CLOUD": name}

    def connection(self, member: bool = False) -> Any:
        """An openstacksdk Connection authenticated with a password through Keystone.

        Read from this cloud's own clouds.yaml only: openstacksdk would otherwise put
        ``$OS_CLIENT_CONFIG_FILE`` first (and read only the first file that exists) and merge the
        user's secure.yaml, so a user's or test session's environment could hide or change the entry.
        """
        name = f"{self.cloud_name}-member" if member else self.cloud_name
        region = openstack.config.OpenStackConfig(
            config_files=[str(self.clouds_yaml)], vendor_files=[], secure_files=[], load_envvars=False
        ).get_one(cloud=name)
        return openstack.connection.Connection(config=region)

    def set_host_policy(self, host: str, options: Mapping[str, Any]) -> None:
        """Set a compute host's live-migration policy (nova.conf ``[libvirt]`` option names and
        ``max_concurrent_live_migrations``). Read by the driver at each migration, so it takes
        effect for the next migration without restarting the cloud."""
        layout = self._layout()
        if host not in layout.hosts:
            raise ValueError(f"unknown compute host {host!r}; this cloud has {', '.join(layout.hosts)}")
        host_policy.write(layout.workdir, host, options)

    def get_host_policy(self, host: str) -> dict[str, Any]:
        """The live-migration options in force on a compute host (Nova's defaults for any never
        set), as ``set_host_policy`` takes them: what a runner restores after a case."""
        layout = self._layout()
        if host not in layout.hosts:
            raise ValueError(f"unknown compute host {host!r}; this cloud has {', '.join(layout.hosts)}")
        return dataclasses.asdict(host_policy.read(layout.workdir, host))
