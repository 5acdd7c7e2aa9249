"""The hypervisor figure on DevStack: libvirt's statistics of the completed migration job, over SSH.

On a DevStack cloud the runner cannot talk to QEMU; when the compute hosts are reachable over SSH
(the hosts file of the SSH host policy, ``NOVAMIG_SSH_HOSTS``) it asks libvirt instead:

    virsh -c qemu:///system domjobinfo --completed --keep-completed --rawstats <instance name>

**Which host.** The *destination*. After a successful live migration Nova's libvirt driver has
destroyed the domain on the source and undefined it there (``VIR_MIGRATE_UNDEFINE_SOURCE``), and
libvirt keeps completed-job statistics on the domain object, so on the source ``domjobinfo`` answers
"failed to get domain" (libvirt's JOB_COMPLETED event was added precisely because a migrated-away
transient domain's statistics cannot be read on the source). On the destination libvirt's QEMU
driver stores the migration's statistics as the domain's completed job when the incoming migration
finishes: the source sends its own statistics (bytes, iterations, dirty rate, QEMU's setup time)
in the migration cookie, and the destination fills in the downtime from the source's "CPUs stopped"
time to its own resume (``Operation: Incoming migration``). That downtime spans two hosts' wall
clocks: the man page warns it is meaningless without synchronised time (NTP); ``Downtime w/o
network`` is the same minus the time the cookie spent on the network.

**When.** The statistics stay on the destination's domain until its next job replaces them (the
server's next migration, which starts there) or libvirtd restarts, so they must be read before
that: `capture` right after each completed migration. `figure` uses what `capture` read; without a
capture it reads now, but only for the server's newest migration (Nova's migration list says
which) and only while the server is still on that migration's destination — otherwise the
statistics on the host are another job's, and the figure is None with that reason rather than a
wrong number.

**Reading.** ``--keep-completed`` (without it libvirt deletes the statistics once read, and a second
reader — a retry, Nova, an operator — would find none); ``--rawstats`` for exact integers (the
human format rounds bytes to 0.001 of a KiB/MiB/GiB). Both options are newer than ``--completed``
(libvirt 1.2.9): an older virsh that rejects one is asked again without it, and the parser reads
both formats.

**After post-copy** the destination holds no completed job; the source emits the statistics in a
``job-completed`` event and undefines the domain. The probe listens for those events during the
case (`novamig.measure.libvirt_job_events`, over the same transport) and takes the source's when
the destination has none (details ``format: job-completed event``, ``operation: Outgoing
migration``).

`parse_domjobinfo` is pure; `LibvirtJobFigures` is the probe (name ``hypervisor``). It reads through
a transport, ``(host, shell command) -> stdout``: on DevStack SSH (`novamig.cloud.ssh`); on the
embedded cloud's libvirt hosts (`novamig.hypervisor.libvirt_hosts`) the same command run inside the
host's namespaces, where ``qemu:///system`` is that host's libvirtd (`in_host_namespaces`) — so the
DevStack code path, command and parser included, is the one that runs on this machine.
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from novamig.cloud.ssh import HostSsh, SshError
from novamig.hypervisor.libvirt_hosts import LibvirtHost, LibvirtHostError
from novamig.measure.contract import CaseClock, PassiveProbe, ProbeFigure, ServerInfo
from novamig.measure.libvirt_job_events import JobCompletedEvents, namespace_spawner, ssh_spawner
from novamig.results import MigrationRecord

log = logging.getLogger(__name__)

# -- the parser -------------------------------------------------------------------------------------

JOB_TYPES = ("None", "Bounded", "Unbounded", "Completed", "Failed", "Cancelled")
"""virDomainJobType, in enum order (``--rawstats`` prints the number)."""

OPERATIONS = (
    "Unknown",
    "Start",
    "Save",
    "Restore",
    "Incoming migration",
    "Outgoing migration",
    "Snapshot",
    "Snapshot revert",
    "Dump",
    "Backup",
    "Snapshot delete",
)
"""virDomainJobOperation, in enum order."""

_UNITS = {unit: 1 << (10 * i) for i, unit in enumerate(("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"))}
"""virsh's vshPrettyCapacity units (binary prefixes)."""

# (human label as virsh prints it, raw typed-parameter name, JobStats attribute, kind)
# kinds: ms, bytes, bytes_s (bytes per second), count, pct, text
_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("Time elapsed", "time_elapsed", "time_elapsed_ms", "ms"),
    ("Time elapsed w/o network", "time_elapsed_net", "time_elapsed_net_ms", "ms"),
    ("Time remaining", "time_remaining", "time_remaining_ms", "ms"),
    ("Data processed", "data_processed", "data_processed_bytes", "bytes"),
    ("Data remaining", "data_remaining", "data_remaining_bytes", "bytes"),
    ("Data total", "data_total", "data_total_bytes", "bytes"),
    ("Memory processed", "memory_processed", "memory_processed_bytes", "bytes"),
    ("Memory remaining", "memory_remaining", "memory_remaining_bytes", "bytes"),
    ("Memory total", "memory_total", "memory_total_bytes", "bytes"),
    ("Memory bandwidth", "memory_bps", "memory_bandwidth_bytes_s", "bytes_s"),
    ("Dirty rate", "memory_dirty_rate", "dirty_rate_pages_s", "count"),
    ("Page size", "memory_page_size", "page_size_bytes", "count"),
    ("Iteration", "memory_iteration", "iteration", "count"),
    ("Postcopy requests", "memory_postcopy_requests", "postcopy_requests", "count"),
    ("File processed", "disk_processed", "file_processed_bytes", "bytes"),
    ("File remaining", "disk_remaining", "file_remaining_bytes", "bytes"),
    ("File total", "disk_total", "file_total_bytes", "bytes"),
    ("File bandwidth", "disk_bps", "file_bandwidth_bytes_s", "bytes_s"),
    ("Constant pages", "memory_constant", "constant_pages", "count"),
    ("Normal pages", "memory_normal", "normal_pages", "count"),
    ("Normal data", "memory_normal_bytes", "normal_data_bytes", "bytes"),
    ("Total downtime", "", "total_downtime_ms", "ms"),
    ("Expected downtime", "", "expected_downtime_ms", "ms"),
    ("Downtime w/o network", "downtime_net", "downtime_net_ms", "ms"),
    ("Setup time", "setup_time", "setup_time_ms", "ms"),
    ("Auto converge throttle", "auto_converge_throttle", "auto_converge_throttle_pct", "pct"),
    ("Error message", "errmsg", "error_message", "text"),
)
_BY_LABEL = {label.lower(): (attr, kind) for label, _, attr, kind in _FIELDS}
_BY_RAW = {raw: (attr, kind) for _, raw, attr, kind in _FIELDS if raw}

_NUMBER = re.compile(r"^(\d+(?:\.\d+)?)\s*([A-Za-z]+)?(/s)?$")


@dataclass(frozen=True)
class JobStats:
    """One ``virsh domjobinfo`` answer. Every figure is None when virsh did not print it (libvirt
    prints only what the hypervisor reported; older versions know fewer fields). Bytes from the
    human format are exact only to 0.001 of the printed unit; from ``--rawstats`` exactly."""

    job_type: str | None = None  # None | Bounded | Unbounded | Completed | Failed | Cancelled
    operation: str | None = None  # "Incoming migration", "Outgoing migration" …
    raw: bool = False  # parsed from --rawstats
    time_elapsed_ms: int | None = None
    time_elapsed_net_ms: int | None = None
    time_remaining_ms: int | None = None
    data_processed_bytes: int | None = None
    data_remaining_bytes: int | None = None
    data_total_bytes: int | None = None
    memory_processed_bytes: int | None = None
    memory_remaining_bytes: int | None = None
    memory_total_bytes: int | None = None
    memory_bandwidth_bytes_s: int | None = None
    dirty_rate_pages_s: int | None = None
    page_size_bytes: int | None = None
    iteration: int | None = None
    postcopy_requests: int | None = None
    file_processed_bytes: int | None = None
    file_remaining_bytes: int | None = None
    file_total_bytes: int | None = None
    file_bandwidth_bytes_s: int | None = None
    constant_pages: int | None = None
    normal_pages: int | None = None
    normal_data_bytes: int | None = None
    total_downtime_ms: int | None = None
    expected_downtime_ms: int | None = None
    downtime_net_ms: int | None = None
    setup_time_ms: int | None = None
    auto_converge_throttle_pct: int | None = None
    error_message: str | None = None
    other: dict[str, str] = field(default_factory=dict)  # lines the parser does not know, as printed

    def figures(self) -> dict[str, Any]:
        """The record without its empty fields: the migration's ``hypervisor`` object."""
        out = {k: v for k, v in asdict(self).items() if v is not None and v != {}}
        out.pop("raw", None)
        return out


class JobInfoParseError(ValueError):
    """The text is not ``virsh domjobinfo`` output (no ``Job type`` line, or a value that does not
    read as its field's kind)."""


def _value(kind: str, text: str, field_name: str) -> int | str:
    if kind == "text":
        return text
    match = _NUMBER.match(text.strip())
    if match is None:
        raise JobInfoParseError(f"{field_name}: {text.strip()[:40]!r} is not a number")
    number, unit = match.group(1), match.group(2)
    if kind in ("bytes", "bytes_s"):
        if unit is None:
            return int(float(number))
        factor = _UNITS.get(unit)
        if factor is None:
            raise JobInfoParseError(f"{field_name}: unknown unit {unit!r}")
        return round(float(number) * factor)
    if kind == "ms" and unit not in (None, "ms"):
        raise JobInfoParseError(f"{field_name}: {text.strip()[:40]!r} is not in ms")
    if "." in number:
        raise JobInfoParseError(f"{field_name}: {number!r} is not a whole number")
    return int(number)


def _enum(names: Sequence[str], text: str) -> str:
    value = text.strip()
    if value.isdigit():
        index = int(value)
        return names[index] if index < len(names) else f"unknown ({index})"
    return value


def parse_domjobinfo(text: str) -> JobStats:
    """Parse ``virsh domjobinfo`` output, human (``Label:   value unit``) or ``--rawstats``
    (``name: value``). Raises `JobInfoParseError` on text that is not domjobinfo output."""
    values: dict[str, Any] = {}
    other: dict[str, str] = {}
    raw_downtime: int | None = None
    raw = False
    for line in text.splitlines():
        if not line.strip() or ":" not in line:
            continue
        label, _, value = line.partition(":")
        label, value = label.strip(), value.strip()
        key = label.lower()
        if key == "job type":
            values["job_type"] = _enum(JOB_TYPES, value)
            raw = raw or value.isdigit()
            continue
        if key == "operation":
            values["operation"] = _enum(OPERATIONS, value)
            continue
        if label in _BY_RAW or label == "downtime":
            raw = True
            if label == "downtime":
                raw_downtime = int(_value("ms", value, label))
                continue
            attr, kind = _BY_RAW[label]
        elif key in _BY_LABEL:
            attr, kind = _BY_LABEL[key]
        else:
            other[label] = value
            continue
        values[attr] = _value(kind, value, label)
    if "job_type" not in values:
        raise JobInfoParseError("no 'Job type' line: not virsh domjobinfo output")
    if raw_downtime is not None:  # one raw name for both: libvirt reports the real one once completed
        name = "total_downtime_ms" if values["job_type"] == "Completed" else "expected_downtime_ms"
        values[name] = raw_downtime
    return JobStats(raw=raw, other=other, **values)


# -- the probe --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainPlace:
    """Where a server's libvirt domain is, from Nova (admin): its libvirt name
    (``OS-EXT-SRV-ATTR:instance_name``), its compute host, and the id of its newest live migration."""

    instance_name: str
    host: str | None
    last_migration_id: int | None


def locate_with(compute: Any) -> Callable[[str], DomainPlace]:
    """`DomainPlace` of a server through novamig's `Compute`: server show (the instance name is an
    admin-only extended attribute) and Nova's migration list of the server."""

    def locate(server_id: str) -> DomainPlace:
        data = compute.call("GET", f"/servers/{server_id}")["server"]
        name = data.get("OS-EXT-SRV-ATTR:instance_name")
        if not name:
            raise LookupError("Nova shows no instance_name (the API user is not admin?)")
        migrations = compute.live_migrations_of(server_id)
        return DomainPlace(
            instance_name=str(name),
            host=data.get("OS-EXT-SRV-ATTR:host"),
            last_migration_id=max((m.id for m in migrations), default=None),
        )

    return locate


def domjobinfo_command(instance_name: str, options: Sequence[str]) -> str:
    """The remote shell command (the domain name quoted: it comes from Nova, not from us)."""
    return shlex.join(["virsh", "-c", "qemu:///system", "domjobinfo", *options, instance_name])


FULL_OPTIONS = ("--completed", "--keep-completed", "--rawstats")
TRANSPORT_ERRORS = (SshError, LibvirtHostError)
"""What a transport raises when the command cannot be run or fails (its message carries stderr)."""
_UNSUPPORTED = re.compile(r"doesn't support option --([a-z-]+)")


class LibvirtJobFigures(PassiveProbe):
    """The ``hypervisor`` probe on a cloud whose compute hosts novamig reaches over SSH.

    `ssh(host, command)` runs a command on a Nova compute host and returns its stdout, raising one
    of `TRANSPORT_ERRORS` on failure (`novamig.cloud.ssh.HostSsh` over the hosts file, or
    `in_host_namespaces` locally); `locate(server_id)`
    says where the server's domain is (`locate_with(compute)`). The runner calls `capture` right
    after each completed migration (see the module docstring for why it cannot wait); `figure`
    never raises. ``virsh`` runs as the SSH user: DevStack's ``stack`` user is in the libvirt group,
    so no sudo (which could prompt and hang).

    The figure: ``Total downtime`` (resolution 1 ms: libvirt counts whole ms); details: every parsed
    field. No brownout: libvirt gives the final auto-converge throttle percentage and a count of
    post-copy page requests, neither of which is a time.
    """

    name = "hypervisor"

    def __init__(
        self,
        ssh: Callable[[str, str], str],
        locate: Callable[[str], DomainPlace],
        events: JobCompletedEvents | None = None,
    ) -> None:
        self.ssh = ssh
        self.locate = locate
        self.events = events  # the source's job-completed events: the figure after post-copy
        self._origin: float | None = None
        self._lock = threading.Lock()
        self._captured: dict[_Key, ProbeFigure] = {}
        self._options: tuple[str, ...] = FULL_OPTIONS  # narrowed once an older virsh refuses one

    @classmethod
    def over_ssh(
        cls, targets: Mapping[str, str], locate: Callable[[str], DomainPlace], timeout_s: float = 30.0
    ) -> LibvirtJobFigures:
        """The usual construction: the hosts file's targets (`SshHostPolicy.targets`)."""
        return cls(HostSsh(targets, timeout_s), locate, JobCompletedEvents(ssh_spawner(targets), targets))

    @classmethod
    def in_host_namespaces(
        cls, hosts: Mapping[str, LibvirtHost], locate: Callable[[str], DomainPlace], timeout_s: float = 30.0
    ) -> LibvirtJobFigures:
        """The local transport: `hosts` maps Nova compute host names to the libvirt hosts of the
        embedded cloud's libvirt mode; the command runs inside that host's namespaces."""

        def run(host: str, command: str) -> str:
            target = hosts.get(host)
            if target is None:
                raise LibvirtHostError(f"no libvirt host {host!r} in this cloud")
            return target.shell(command, timeout_s)

        return cls(run, locate, JobCompletedEvents(namespace_spawner(hosts), hosts))

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None:
        """Listen for the hosts' job-completed events for the whole case (`libvirt_job_events`)."""
        self._origin = clock.origin
        if self.events is not None:
            self.events.start()

    def stop(self) -> None:
        if self.events is not None:
            self.events.stop()

    # -- Probe protocol: no noise floor (libvirt reports a downtime it measured itself, there is
    # nothing to sample at rest) and no cost worth counting (one ssh call per migration, after it)
    def capture(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> None:
        """Read the statistics of `migration` now, while its destination still holds them. Call
        once the migration is over, before the server's next one starts. Never raises."""
        if migration.status != "completed":
            return
        fig = self._read(migration, server_id, check_latest=None)
        with self._lock:
            self._captured[_key(migration, server_id, migration_id)] = fig

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
        if migration.status != "completed":
            return ProbeFigure(None, None, f"the migration did not complete ({migration.status})")
        with self._lock:
            captured = self._captured.get(_key(migration, server_id, migration_id))
        if captured is not None:
            return captured
        if migration_id is None:
            return ProbeFigure(None, None, "no Nova migration record was seen, and nothing was captured")
        return self._read(migration, server_id, check_latest=migration_id)

    # -- reading -----------------------------------------------------------------------------------
    def _read(self, migration: MigrationRecord, server_id: str, check_latest: int | None) -> ProbeFigure:
        host = migration.dest_host
        if not host:
            return ProbeFigure(None, None, "the migration record names no destination host")
        try:
            place = self.locate(server_id)
        except Exception as exc:  # Nova down, not admin …: the figure's reason, never the run's error
            return ProbeFigure(None, None, f"cannot find the server's libvirt domain: {_brief(exc)}")
        stale = _stale(place, host, check_latest)
        if stale is not None:
            return ProbeFigure(None, None, stale)
        try:
            text = self._domjobinfo(host, place.instance_name)
        except TRANSPORT_ERRORS as exc:
            return ProbeFigure(None, None, f"virsh domjobinfo on {host}: {_brief(exc)}")
        return self._figure_of(text, migration, place.instance_name)

    def _figure_of(self, text: str, migration: MigrationRecord, instance_name: str) -> ProbeFigure:
        """The figure of the destination's domjobinfo `text`, or of the source's event when the
        destination holds no completed job (after post-copy)."""
        host = str(migration.dest_host)
        try:
            stats = parse_domjobinfo(text)
        except JobInfoParseError as exc:
            return ProbeFigure(None, None, f"virsh domjobinfo on {host}: unreadable output ({exc})")
        if stats.job_type != "Completed":
            from_event = self._from_source_event(migration, instance_name)
            if from_event is not None:
                return from_event
        return figure_from_stats(stats, host)

    def _from_source_event(self, migration: MigrationRecord, instance_name: str) -> ProbeFigure | None:
        """The figure from the source's job-completed event of this migration; None without one."""
        if self.events is None or self._origin is None:
            return None
        text = self.events.take(migration.source_host, instance_name, self._origin + migration.requested_at)
        if text is None:
            return None
        try:
            stats = parse_domjobinfo(text)
        except JobInfoParseError as exc:
            why = f"libvirt's job-completed event on {migration.source_host}: unreadable ({exc})"
            return ProbeFigure(None, None, why)
        return figure_from_source_event(stats, migration.source_host)

    def _domjobinfo(self, host: str, instance_name: str) -> str:
        """domjobinfo with the options this virsh accepts: an option it does not know is dropped
        and the call repeated (at most once per option)."""
        options = self._options
        for _ in range(len(FULL_OPTIONS)):
            try:
                return self.ssh(host, domjobinfo_command(instance_name, options))
            except TRANSPORT_ERRORS as exc:
                match = _UNSUPPORTED.search(str(exc))
                dropped = f"--{match.group(1)}" if match else None
                if dropped is None or dropped == "--completed" or dropped not in options:
                    raise
                options = tuple(o for o in options if o != dropped)
                log.info("virsh on %s has no %s; asking without it", host, dropped)
                with self._lock:
                    self._options = options
        return self.ssh(host, domjobinfo_command(instance_name, options))


def _stale(place: DomainPlace, host: str, check_latest: int | None) -> str | None:
    """Why the statistics on `host` now are not this migration's (None: they are): a later
    migration replaced them (when `check_latest` is the migration's id), or the server moved on."""
    if check_latest is not None and place.last_migration_id != check_latest:
        return (
            "a later migration of this server replaced libvirt's statistics, and none were "
            "captured right after this one"
        )
    if place.host is not None and place.host != host:
        return f"the server is on {place.host} now, no longer on the destination {host}"
    return None


def figure_from_stats(stats: JobStats, host: str) -> ProbeFigure:
    """The ProbeFigure of one parsed answer from the destination `host`."""
    if stats.job_type != "Completed":
        why = f"libvirt on {host} holds no completed job for the domain (job type {stats.job_type})"
        return ProbeFigure(None, None, why)
    details = {**stats.figures(), "libvirt_host": host, "format": "rawstats" if stats.raw else "human"}
    if stats.operation is not None and stats.operation != "Incoming migration":
        why = f"libvirt's completed job on {host} is not the incoming migration ({stats.operation})"
        return ProbeFigure(None, None, why, details)
    if stats.total_downtime_ms is None:
        return ProbeFigure(None, None, f"libvirt on {host} reported no downtime for the job", details)
    return ProbeFigure(float(stats.total_downtime_ms), 1.0, None, details)


def figure_from_source_event(stats: JobStats, host: str) -> ProbeFigure:
    """The ProbeFigure of the source `host`'s job-completed event (``Outgoing migration``): the
    same statistics libvirt would keep on the destination, refreshed at the end of post-copy."""
    details = {**stats.figures(), "libvirt_host": host, "format": "job-completed event"}
    if stats.operation != "Outgoing migration":
        why = f"libvirt's job-completed event on {host} is not the outgoing migration ({stats.operation})"
        return ProbeFigure(None, None, why, details)
    if stats.total_downtime_ms is None:
        return ProbeFigure(None, None, f"libvirt's job-completed event on {host} has no downtime", details)
    return ProbeFigure(float(stats.total_downtime_ms), 1.0, None, details)


_Key = tuple[str, int | None, float]


def _key(migration: MigrationRecord, server_id: str, migration_id: int | None) -> _Key:
    return (server_id, migration_id, migration.requested_at)


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:400]
