"""Host policy: nova.conf ``[libvirt]`` live-migration options applied per case, always restored.

A scenario's `host_policy` holds nova.conf option names as they are (``live_migration_downtime``,
``live_migration_permit_post_copy`` …) and `migration.policy` holds the friendly names; both end up
as one mapping of ``[libvirt]`` options (`libvirt_options`). Where they are applied depends on the
cloud, behind one protocol (`HostPolicyApplier`):

* the embedded cloud — through its library API (no restart: its driver reads the policy per migration;
  the runner hands the cloud in as a `HostPolicySettable`, so this package never imports it);
* DevStack — over SSH: edit ``nova-cpu.conf``, restart the compute service, wait until Nova reports it
  up, and put the original file back afterwards, on failure too (`SshHostPolicy`);
* the embedded cloud's libvirt mode — the same path (`ConfFileHostPolicy`) with a local transport:
  each compute's own ``nova-cpu-<host>.conf`` edited by the same commands inside that compute's
  libvirt host namespaces, and a reload request to the cloud process for the restart
  (`LocalConfHostPolicy`).

Both keep the original in a backup beside the changed file (`novamig.cloud.conf_backup`) before the
first change and restore from it, so a run that dies without restoring leaves the original for
`novamig cleanup` to put back.

`applied(...)` is the context manager the runner uses: it restores every host it touched, whatever
happens inside.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from novamig.cloud import conf_backup
from novamig.cloud.conf_backup import Leftover
from novamig.cloud.errors import CloudConfigInvalid
from novamig.cloud.ssh import HostSsh, SshError
from novamig.hypervisor.libvirt_hosts import LibvirtHost, LibvirtHostError

log = logging.getLogger(__name__)

# migration.policy key → (nova.conf [libvirt] option, converter)
_POLICY_TO_LIBVIRT: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "downtime_limit_ms": ("live_migration_downtime", int),
    "bandwidth_mib_s": ("live_migration_bandwidth", int),
}


def libvirt_options(policy: Mapping[str, Any], host_policy: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[libvirt]`` options for a case: mapped `migration.policy`, then `host_policy` on top.

    ``post_copy_after_s`` set means post-copy must be permitted on the hosts (the switch itself
    is the force-complete the runner sends); ``auto_converge: true`` permits auto-converge, false
    leaves the host's setting alone; explicit `host_policy` keys always win.
    """
    out: dict[str, Any] = {}
    for key, (option, convert) in _POLICY_TO_LIBVIRT.items():
        value = policy.get(key)
        if value is not None:
            out[option] = convert(value)
    if policy.get("auto_converge"):  # false (the default) leaves the host as it is
        out["live_migration_permit_auto_converge"] = True
    if policy.get("post_copy_after_s") is not None:
        out["live_migration_permit_post_copy"] = True
    out.update(host_policy)
    return out


class HostPolicyApplier(Protocol):
    """Applies ``[libvirt]`` options to one compute host and puts the previous ones back."""

    def apply(self, host: str, options: Mapping[str, Any]) -> None: ...

    def restore(self, host: str) -> None: ...


@contextlib.contextmanager
def applied(applier: HostPolicyApplier, hosts: Sequence[str], options: Mapping[str, Any]) -> Iterator[None]:
    """Apply `options` on every host for the duration of the block; restore every touched host."""
    touched: list[str] = []
    try:
        if options:
            for host in hosts:
                touched.append(host)
                applier.apply(host, options)
                log.info("host policy on %s: %s", host, dict(options))
        yield
    finally:
        for host in reversed(touched):
            try:
                applier.restore(host)
            except Exception as exc:
                log.error("could not restore the host policy of %s: %s", host, exc)


class NoHostPolicy:
    """For a cloud where novamig cannot change host configuration: refuses non-empty options."""

    def __init__(self, why: str) -> None:
        self.why = why

    def apply(self, host: str, options: Mapping[str, Any]) -> None:
        raise RuntimeError(f"cannot apply a host policy on {host}: {self.why}")

    def restore(self, host: str) -> None:
        return None


class HostPolicySettable(Protocol):
    """A cloud whose hosts' live-migration options novamig sets through a library API (the
    embedded cloud's ``EmbeddedCloud``): the cloud package never imports that cloud, the runner
    hands it in."""

    def get_host_policy(self, host: str) -> Mapping[str, Any]: ...

    def set_host_policy(self, host: str, options: Mapping[str, Any]) -> None: ...


class ComputeConfReloadable(Protocol):
    """An embedded cloud in its libvirt mode (``EmbeddedCloud``): each compute has its own
    ``nova-cpu.conf`` and reloads it on request (`libvirt_hosts` is None in other modes)."""

    @property
    def libvirt_hosts(self) -> Mapping[str, LibvirtHost] | None: ...

    def compute_conf(self, host: str) -> Path: ...

    def reload_compute(self, host: str) -> None: ...


class EmbeddedHostPolicy:
    """The embedded cloud's library API: ``set_host_policy(host, options)`` (a whole policy: keys
    left out take Nova's defaults). The policy in force before is read back first and restored,
    so a cloud started with its own host policies gets them back after the case.

    `policy_file` names each host's policy file (``policies/<host>.json`` of the cloud's work
    directory; the runner knows the layout, this package does not import it): with it, the policy in
    force before is also kept in a backup beside that file until it is restored, so a run killed
    mid-case leaves it for `novamig cleanup` on a cloud that outlives the run.

    On a cloud in the libvirt mode (Nova's own libvirt driver) the DevStack path runs instead:
    `LocalConfHostPolicy` edits each compute's ``nova-cpu.conf`` and has the compute reload it."""

    def __init__(self, cloud: HostPolicySettable, policy_file: Callable[[str], Path] | None = None) -> None:
        self.cloud = cloud
        self.policy_file = policy_file
        self._before: dict[str, dict[str, Any]] = {}
        self.conf_files: LocalConfHostPolicy | None = None
        hosts = getattr(cloud, "libvirt_hosts", None)
        if hosts is not None and hasattr(cloud, "reload_compute"):
            reloadable: ComputeConfReloadable = cloud  # type: ignore[assignment]
            self.conf_files = LocalConfHostPolicy(hosts, reloadable.compute_conf, reloadable.reload_compute)

    def apply(self, host: str, options: Mapping[str, Any]) -> None:
        if self.conf_files is not None:
            self.conf_files.apply(host, options)
            return
        before = dict(self.cloud.get_host_policy(host))
        if self.policy_file is not None and host not in self._before:
            path = self.policy_file(host)
            path.parent.mkdir(parents=True, exist_ok=True)
            before = json.loads(conf_backup.take_local(path, json.dumps(before, indent=2) + "\n"))
        self._before.setdefault(host, before)
        self.cloud.set_host_policy(host, {**self._before[host], **options})

    def restore(self, host: str) -> None:
        if self.conf_files is not None:
            self.conf_files.restore(host)
            return
        self.cloud.set_host_policy(host, self._before.pop(host, {}))
        if self.policy_file is not None:
            conf_backup.drop_local(self.policy_file(host))


# -- DevStack over SSH --------------------------------------------------------------------------------
DEFAULT_SECTION_OPTIONS = frozenset({"max_concurrent_live_migrations"})
"""Host-policy keys that live in nova.conf's [DEFAULT] section, not [libvirt]."""


def set_ini_options(text: str, section: str, options: Mapping[str, Any]) -> str:
    """`text` (an ini file) with `options` set in `section`, everything else byte for byte unchanged.

    configparser would drop comments and reorder: the file belongs to DevStack, so we edit lines.
    """
    rendered = {k: _ini_value(v) for k, v in options.items()}
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    in_section = False
    seen_section = False
    done: set[str] = set()

    def flush() -> None:
        # New keys go after the section's last option, before its trailing blank lines.
        at = len(out)
        while at > 0 and not out[at - 1].strip():
            at -= 1
        added = [f"{k} = {v}\n" for k, v in rendered.items() if k not in done]
        done.update(rendered)
        out[at:at] = added

    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if in_section:
                flush()
            in_section = stripped[1:-1].strip() == section
            seen_section = seen_section or in_section
            out.append(line)
            continue
        if in_section and "=" in stripped and not stripped.startswith(("#", ";")):
            key = stripped.split("=", 1)[0].strip()
            if key in rendered:
                if key not in done:
                    out.append(f"{key} = {rendered[key]}\n")
                    done.add(key)
                continue
        out.append(line)
    if in_section:
        flush()
    if not seen_section:
        if out and not out[-1].endswith("\n"):
            out.append("\n")
        out.append(f"\n[{section}]\n")
        flush()
    return "".join(out)


def _ini_value(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


class ConfFileHostPolicy:
    """DevStack's path for a host policy, whatever reaches the host: back the compute's
    ``nova-cpu.conf`` up, set the options in it (`set_ini_options`), write it back, restart the
    compute service and wait until it runs again; restore moves the backup back and restarts again.

    Subclasses say how: `_run(host, command, stdin)` runs a shell command on the compute host and
    returns its stdout; `_restart(host)` restarts (or reloads) the compute service there and returns
    once it runs with the file; `_conf(host)` is the file's path; `_sudo` whether the commands need
    sudo; `_hosts()` every host that may hold a backup (for `leftovers`)."""

    _sudo = True

    def __init__(self) -> None:
        self._touched: set[str] = set()

    def _run(self, host: str, command: str, stdin: str | None = None) -> str:
        raise NotImplementedError

    def _restart(self, host: str) -> None:
        raise NotImplementedError

    def _conf(self, host: str) -> str:
        raise NotImplementedError

    def _hosts(self) -> Sequence[str]:
        raise NotImplementedError

    def apply(self, host: str, options: Mapping[str, Any]) -> None:
        conf = self._conf(host)
        # The backup is taken (or an earlier run's found) in the same command that reads the original.
        original = self._run(host, conf_backup.take_remote_command(conf, sudo=self._sudo))
        self._touched.add(host)
        libvirt = {k: v for k, v in options.items() if k not in DEFAULT_SECTION_OPTIONS}
        default = {k: v for k, v in options.items() if k in DEFAULT_SECTION_OPTIONS}
        text = set_ini_options(original, "libvirt", libvirt) if libvirt else original
        if default:
            text = set_ini_options(text, "DEFAULT", default)
        sudo = "sudo " if self._sudo else ""
        self._run(host, f"{sudo}tee {shlex.quote(conf)} >/dev/null", stdin=text)
        self._restart(host)

    def restore(self, host: str) -> None:
        if host in self._touched:
            self._touched.discard(host)
            self.restore_leftover(host)

    def leftovers(self) -> list[tuple[str, Leftover]]:
        """(host, backup) for every host whose configuration has a backup beside it; a host that
        cannot be reached is logged and skipped."""
        found: list[tuple[str, Leftover]] = []
        for host in sorted(self._hosts()):
            conf = self._conf(host)
            try:
                output = self._run(host, conf_backup.find_remote_command(conf, sudo=self._sudo))
            except (SshError, LibvirtHostError) as exc:
                log.warning("cannot look for a host policy backup on %s: %s", host, exc)
                continue
            leftover = conf_backup.parse_find_remote(f"{host}:{conf}", output)
            if leftover is not None:
                found.append((host, leftover))
        return found

    def restore_leftover(self, host: str) -> None:
        """Put the backup back on `host` and restart its compute service (a dead run's too)."""
        self._run(host, conf_backup.restore_remote_command(self._conf(host), sudo=self._sudo))
        self._restart(host)


@dataclass
class SshHostPolicy(ConfFileHostPolicy):
    """DevStack compute hosts reached over SSH (key-based, BatchMode); `targets` maps Nova host
    names to ssh destinations (``user@address``). Restarting uses DevStack's systemd unit."""

    targets: Mapping[str, str]
    wait_up: Callable[[str, float], None]  # (host, timeout) → returns when Nova says the service is up
    conf_path: str = "/etc/nova/nova-cpu.conf"
    unit: str = "devstack@n-cpu.service"
    ssh_timeout_s: float = 60.0
    up_timeout_s: float = 180.0
    _touched: set[str] = field(default_factory=set)

    def _run(self, host: str, command: str, stdin: str | None = None) -> str:
        return HostSsh(self.targets, self.ssh_timeout_s)(host, command, stdin)

    def _restart(self, host: str) -> None:
        self._run(host, f"sudo systemctl restart {shlex.quote(self.unit)}")
        time.sleep(2.0)  # let the old service report itself down before we wait for "up"
        self.wait_up(host, self.up_timeout_s)

    def _conf(self, host: str) -> str:
        return self.conf_path

    def _hosts(self) -> Sequence[str]:
        return list(self.targets)


class LocalConfHostPolicy(ConfFileHostPolicy):
    """The embedded cloud's libvirt mode: each compute's own ``nova-cpu-<host>.conf`` edited by the
    DevStack commands run inside that compute's libvirt host namespaces (as root: no sudo), then
    the compute reloaded by `reload(host)` — a control request to the cloud process that returns
    once the compute runs with the file (the runner hands in the embedded cloud's, which this
    package does not import; so are `conf_path` and the hosts)."""

    _sudo = False

    def __init__(
        self,
        hosts: Mapping[str, LibvirtHost],
        conf_path: Callable[[str], Path],
        reload: Callable[[str], None],
        timeout_s: float = 30.0,
    ) -> None:
        super().__init__()
        self.hosts = dict(hosts)
        self.conf_path = conf_path
        self.reload = reload
        self.timeout_s = timeout_s

    def _run(self, host: str, command: str, stdin: str | None = None) -> str:
        target = self.hosts.get(host)
        if target is None:
            raise LibvirtHostError(f"no libvirt host {host!r} in this cloud")
        argv = target.exec_argv(["sh", "-c", command])
        try:
            proc = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise LibvirtHostError(f"{command!r} on {host} timed out after {self.timeout_s:g} s") from None
        if proc.returncode != 0:
            raise LibvirtHostError(
                f"{command!r} on {host} failed (exit {proc.returncode}): {proc.stderr[:400]}"
            )
        return proc.stdout

    def _restart(self, host: str) -> None:
        self.reload(host)

    def _conf(self, host: str) -> str:
        return str(self.conf_path(host))

    def _hosts(self) -> Sequence[str]:
        return list(self.hosts)


SSH_HOSTS_ENV = "NOVAMIG_SSH_HOSTS"
"""Path of a YAML mapping ``compute host name: ssh destination`` (``stack@192.0.2.10``) that
enables host policies on an external (DevStack) cloud."""


def ssh_policy_from_file(path: str, compute: Any) -> SshHostPolicy:
    """An `SshHostPolicy` for the hosts in `path`, waiting on Nova's service list for "up"."""
    try:
        data = yaml.safe_load(open(path, encoding="utf-8").read())  # noqa: SIM115
    except (OSError, yaml.YAMLError) as exc:
        raise CloudConfigInvalid(f"{SSH_HOSTS_ENV}={path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise CloudConfigInvalid(f"{SSH_HOSTS_ENV}={path}: expected a mapping 'host: user@address'")

    def wait_up(host: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(s.host == host and s.usable for s in compute.compute_services()):
                return
            time.sleep(2.0)
        raise RuntimeError(f"nova-compute on {host} not up {timeout_s:.0f} s after the restart")

    return SshHostPolicy(targets={str(k): v for k, v in data.items()}, wait_up=wait_up)
