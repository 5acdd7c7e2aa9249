"""The libvirt mode's per-compute configuration file and its reload: DevStack's ``nova-cpu.conf``
path on this machine.

On a DevStack multinode job each compute host has ``/etc/nova/nova-cpu.conf``; a host policy edits
its ``[libvirt]`` live-migration options there and restarts ``devstack@n-cpu``
(`novamig.cloud.host_policy.SshHostPolicy`). The libvirt mode runs both computes in the cloud's one
process, so each compute gets a file of its own, ``nova/nova-cpu-<host>.conf`` in the work
directory, read by that compute when it starts and again when it is asked to reload: novamig's
host-policy code edits the file with the same commands as on DevStack (a local transport instead of
SSH) and then calls `reload`, the stand-in for the service restart.

The reload is a control request to the cloud process: ``SIGHUP`` (what makes an OpenStack service
reload its configuration), after which every libvirt compute reads its file again. Each compute
acknowledges in ``<file>.loaded`` with the SHA-256 of the text it loaded (or ``error: <why>`` for a
file it refused: the options in force stay), so `reload` returns once the compute runs with the
file as it is now — the stand-in for waiting until Nova reports the restarted service up.

Both sides use this module (it imports no Nova): the cloud process's driver
(`novamig.embedded.service.libvirt_compute`) parses and acknowledges, the client reloads.
"""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from novamig.embedded import processes
from novamig.embedded.host_policy import LiveMigrationOptions

LOADED_SUFFIX = ".loaded"
"""Beside each compute's file: what the compute loaded last (see the module docstring)."""

DEFAULT_OPTIONS = frozenset({"max_concurrent_live_migrations"})
"""Options of `LiveMigrationOptions` in nova.conf's ``[DEFAULT]`` section; the others are
``[libvirt]`` options."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ComputeConfError(RuntimeError):
    """A compute refused its file, or did not load it in time."""


def conf_path(workdir: Path, host: str) -> Path:
    """``<workdir>/nova/nova-cpu-<host>.conf`` (DevStack: ``/etc/nova/nova-cpu.conf``)."""
    return Path(workdir) / "nova" / f"nova-cpu-{host}.conf"


def loaded_path(path: Path) -> Path:
    return path.with_name(path.name + LOADED_SUFFIX)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def render(host: str, connection_uri: str, options: LiveMigrationOptions) -> str:
    """The file a compute starts with: its host name, its libvirtd, and every live-migration
    option with the value in force (Nova's defaults unless the cloud was started with a policy)."""
    values = dataclasses.asdict(options)
    default = [f"{k} = {_ini(v)}" for k, v in values.items() if k in DEFAULT_OPTIONS]
    libvirt = [f"{k} = {_ini(v)}" for k, v in values.items() if k not in DEFAULT_OPTIONS]
    return "\n".join(
        [
            f"# nova-cpu.conf of {host}: read when the compute starts and on each reload (SIGHUP)",
            "[DEFAULT]",
            f"host = {host}",
            *default,
            "",
            "[libvirt]",
            f"connection_uri = {connection_uri}",
            *libvirt,
            "",
        ]
    )


def _ini(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def parse(text: str) -> LiveMigrationOptions:
    """The live-migration options of a compute's file, as Nova reads them: ``[libvirt]``
    ``live_migration_*`` and ``[DEFAULT] max_concurrent_live_migrations``; options the file does
    not set take Nova's defaults, and options novamig does not vary are ignored (Nova's own
    configuration, read at start, holds them). Raises ValueError for a value Nova would refuse."""
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(text)
    wanted = {f.name: f for f in dataclasses.fields(LiveMigrationOptions)}
    values: dict[str, Any] = {}
    for name, spec in wanted.items():
        section = "DEFAULT" if name in DEFAULT_OPTIONS else "libvirt"
        if section != "DEFAULT" and not parser.has_section(section):
            continue
        raw = parser.get(section, name, fallback=None)
        if raw is not None:
            values[name] = _typed(name, spec.type, raw.strip())
    return LiveMigrationOptions.from_mapping(values)


def _typed(name: str, kind: Any, raw: str) -> Any:
    """`raw` as oslo.config reads an option of `kind` (the dataclass annotation, a string here)."""
    if kind in (bool, "bool"):
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(f"{name}: {raw!r} is not a boolean")
    if kind in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name}: {raw!r} is not an integer") from None
    return raw


def acknowledge(path: Path, text: str, error: str | None = None) -> None:
    """The compute's side: record what it loaded from `path` (its text's digest), or why not."""
    target = loaded_path(path)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_text(f"error: {error}\n" if error is not None else digest(text) + "\n")
    tmp.replace(target)


def reload(workdir: Path, host: str, timeout_s: float = 60.0) -> None:
    """Ask the cloud running in `workdir` to reload its computes' files; return once `host`'s
    compute has loaded its file as it is now. Raises `ComputeConfError` when the compute refused
    the file, the cloud does not run, or nothing was loaded within `timeout_s`."""
    workdir = Path(workdir)
    path = conf_path(workdir, host)
    want = digest(path.read_text())
    pid = processes.cloud_pid(workdir / "cloud.pid", workdir)
    if pid is None:
        raise ComputeConfError(f"no embedded cloud runs in {workdir}: {host} cannot reload {path.name}")
    loaded_path(path).unlink(missing_ok=True)  # an earlier answer (a refusal too) is not this one's
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            got = loaded_path(path).read_text().strip()
        except FileNotFoundError:
            got = ""
        if got == want:
            return
        if got.startswith("error: "):
            raise ComputeConfError(f"{host} refused {path.name}: {got.removeprefix('error: ')}")
        if time.monotonic() >= deadline:
            raise ComputeConfError(f"{host} did not load {path.name} within {timeout_s:g} s")
        time.sleep(0.05)


def conf_dir(workdir: Path) -> Path:
    """The folder of the computes' files (where `novamig cleanup` looks for backups)."""
    return conf_path(workdir, "any").parent


def reload_put_back(path: Path) -> bool:
    """After `novamig cleanup` moved a dead run's backup back over `path`: when `path` is a
    compute's file of a cloud that runs, have that compute load it (as the run's own restore
    would); True if it did. Any other file: False."""
    name = path.name
    if not (name.startswith("nova-cpu-") and name.endswith(".conf")):
        return False
    workdir = path.parent.parent
    if processes.cloud_pid(workdir / "cloud.pid", workdir) is None:
        return False  # read when the cloud starts again
    reload(workdir, name.removeprefix("nova-cpu-").removesuffix(".conf"))
    return True
