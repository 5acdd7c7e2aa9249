"""The scenario model: every key a scenario file may hold, its default, unit and range.

Units are part of field names (`_ms`, `_s`, `_mib_s`, `_mb`, `_gb`, `_hz`) so a value can never be
read in the wrong unit. Every model is strict (no silent `"3"` → 3 coercion), rejects unknown keys
and is frozen: a validated scenario is a value that the runner, the report and results.json share.
Rules that relate several fields live in `novamig.scenario.rules`; each model's validator only
calls them, so the rules are listed in one place and each names the exact key it is about (the
rules module never imports this one at run time, so the import goes one way).

The `host_policy` keys keep Nova's own option names so an operator can copy them to nova.conf.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_serializer,
    field_validator,
    model_validator,
)

from novamig.scenario.rules import (
    check_matrix_entries,
    check_migration,
    check_policy,
    check_scenario,
    check_sla,
    check_workload,
)

Probe = Literal["guest", "network", "locust", "hypervisor"]
PROBES: tuple[Probe, ...] = ("guest", "network", "locust", "hypervisor")
DEFAULT_PROBES: tuple[Probe, ...] = ("guest", "network", "hypervisor")

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}$"
TARGET_PATTERN = r"^(auto|round-robin|drain:[A-Za-z0-9][A-Za-z0-9._-]*|[A-Za-z0-9][A-Za-z0-9._-]*)$"
MATRIX_KEY_PATTERN = r"^[a-z_][a-z0-9_]*(\.[A-Za-z0-9_]+)*$"
LOCUSTFILE_PATTERN = r"^(builtin:[a-z0-9_-]+|[^\s:][^\n]*\.py)$"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
HEARTBEAT_COLLECTOR_PATTERN = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}:{_PORT}$"


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        validate_default=True,
        use_attribute_docstrings=True,
        hide_input_in_errors=True,
        allow_inf_nan=False,
    )


class FlavorSpec(_Model):
    """A flavor described by its size; novamig creates (and later removes) a matching flavor."""

    vcpus: Annotated[int, Field(ge=1, le=64)] = 1
    """Virtual CPUs."""
    ram_mb: Annotated[int, Field(ge=64, le=1_048_576)] = 256
    """Guest RAM in MiB (Nova's `ram` unit)."""
    disk_gb: Annotated[int, Field(ge=0, le=10_000)] = 1
    """Root disk in GiB; 0 means the image's size (Nova's convention)."""


FlavorName = Annotated[str, Field(pattern=NAME_PATTERN, description="An existing Nova flavor's name.")]


def _flavor_kind(value: Any) -> str:
    return "flavor-name" if isinstance(value, str) else "flavor-spec"


Flavor = Annotated[
    Annotated[FlavorSpec, Tag("flavor-spec")] | Annotated[FlavorName, Tag("flavor-name")],
    Discriminator(_flavor_kind),
]


class Fleet(_Model):
    """The guests a case boots, all alike."""

    count: Annotated[int, Field(ge=1, le=200)] = 2
    """Number of servers."""
    flavor: Flavor = Field(default_factory=FlavorSpec)
    """A size (`{vcpus, ram_mb, disk_gb}`) or the name of an existing flavor."""
    image: Annotated[str, Field(pattern=NAME_PATTERN)] = "novamig-tiny"
    """Glance image name: `novamig-tiny` (agent only) or `novamig-full` (Debian with Locust), or your own."""
    network: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    """Neutron network name; null → the cloud's only/default network (the embedded cloud's own)."""
    floating_ip_network: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    """External network (name or id) each server gets a floating IP from once it is ACTIVE, for
    guests on a tenant network behind a router that the runner cannot reach otherwise; the probes
    then aim at the floating address and the guests' traffic to the runner leaves from it.
    `auto` → the cloud's one external network (an error naming them when there are several);
    null or `none` → no floating IPs, the servers' own addresses."""
    boot_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 600
    """How long the servers may take to become ACTIVE, s. Nova's scheduling, the image download to
    a compute and the hypervisor's start all count; a loaded or nested cloud may need more."""
    ready_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 300
    """How long a guest may take from ACTIVE to its agent's first UDP echo answer, s (waited for only
    when the heartbeat goes over UDP, `measure.heartbeat_collector`). ACTIVE means the domain runs,
    not that the guest has booted: the tiny guest answers within seconds, a full guest after its
    cloud-init, which on a slow cloud (nested TCG, a loaded machine) can take longer than 300 s."""

    @field_validator("floating_ip_network")
    @classmethod
    def _no_floating_ips(cls, value: str | None) -> str | None:
        """`none` is spelled out in files that want to say so; it means the same as null."""
        return None if value == "none" else value


class MemoryLoad(_Model):
    """The guest agent's memory dirtier: what makes pre-copy hard to converge."""

    dirty_rate_mib_s: Annotated[float, Field(ge=0, le=100_000)] = 0
    """Memory written per second, MiB/s; 0 → the dirtier is off."""
    working_set_mib: Annotated[int, Field(ge=1, le=1_048_576)] = 64
    """Size of the region the dirtier writes to, MiB; must fit in the flavor's RAM."""


class LocustLoad(_Model):
    """Locust load against the web endpoint of each guest."""

    users: Annotated[int, Field(ge=1, le=100_000)] = 10
    """Concurrent Locust users (per guest when `where: guest`)."""
    spawn_rate: Annotated[float, Field(gt=0, le=100_000)] = 5
    """Users started per second."""
    where: Literal["guest", "runner"] = "guest"
    """`guest`: Locust runs inside each guest against itself (needs `novamig-full`);
    `runner`: Locust runs on the machine running novamig, against every guest."""
    locustfile: Annotated[str, Field(pattern=LOCUSTFILE_PATTERN)] = "builtin:web"
    """`builtin:NAME` (shipped with novamig) or a path to a `.py` file, relative to the scenario file."""
    run_time_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    """How long Locust runs, s; null → from before the first migration until after the last one."""


class ScriptLoad(_Model):
    """A command run inside each guest for the whole case (needs a shell in the image)."""

    command: Annotated[str, Field(min_length=1)]
    """Shell command line."""
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(default_factory=dict)
    """Environment variables for the command; values of secret-looking names are never printed."""


class Workload(_Model):
    """What the guests do while they are migrated."""

    kind: Literal["idle", "memory", "locust", "script"] = "idle"
    """`idle`: nothing; `memory`: the memory dirtier; `locust`: Locust load (the dirtier also runs
    when `memory.dirty_rate_mib_s` > 0); `script`: your command."""
    memory: MemoryLoad = Field(default_factory=MemoryLoad)
    """Memory dirtier settings."""
    locust: LocustLoad = Field(default_factory=LocustLoad)
    """Locust settings (used when `kind: locust`)."""
    script: ScriptLoad | None = None
    """Command settings (required when `kind: script`)."""

    @model_validator(mode="after")
    def _rules(self) -> Workload:
        check_workload(self)
        return self


class MigrationPolicy(_Model):
    """How each live migration is steered while it runs."""

    downtime_limit_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None
    """Maximum switchover downtime the hypervisor may take, ms; null → as the cloud is configured
    (Nova's `live_migration_downtime`, 500 ms by default)."""
    bandwidth_mib_s: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    """Migration bandwidth cap, MiB/s; 0 → unlimited; null → as the cloud is configured."""
    auto_converge: bool = False
    """Throttle the guest's vCPUs until pre-copy converges."""
    post_copy_after_s: Annotated[float, Field(ge=0, le=86_400)] | None = None
    """Switch to post-copy (Nova's force-complete) this many seconds after the live-migrate request,
    once Nova's record shows the copy has begun (at most 10 s later); null → never."""
    abort_after_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    """Abort the migration this many seconds after it starts; null → never."""
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 600
    """Give up waiting for the migration after this many seconds (status `timeout`)."""

    @model_validator(mode="after")
    def _rules(self) -> MigrationPolicy:
        check_policy(self)
        return self


class Migration(_Model):
    """Which live migrations a case performs."""

    count: Annotated[int, Field(ge=0, le=10_000)] = 2
    """Live migrations per server; 0 → boot, load and measure only (a noise-floor run)."""
    concurrency: Annotated[int, Field(ge=1, le=1_000)] = 1
    """Migrations in flight at once (each server has at most one); at most `fleet.count`."""
    target: Annotated[str, Field(pattern=TARGET_PATTERN)] = "auto"
    """`auto` (the scheduler chooses), a host name, `round-robin` over the compute hosts, or
    `drain:HOST` (move every server away from HOST)."""
    block_migration: Literal["auto", True, False] = "auto"
    """Copy local disks too; `auto` lets Nova decide from the storage."""
    interval_s: Annotated[float, Field(ge=0, le=86_400)] = 5
    """Pause between two migrations of the same server, s."""
    ping_pong: bool = False
    """Migrate each server back and forth between its first two hosts."""
    policy: MigrationPolicy = Field(default_factory=MigrationPolicy)
    """Per-migration steering."""

    @model_validator(mode="after")
    def _rules(self) -> Migration:
        check_migration(self)
        return self


class HostPolicy(_Model):
    """nova.conf settings of the compute hosts for the run; null → leave the host's setting alone.

    All are `[libvirt]` options except `max_concurrent_live_migrations`, which is in `[DEFAULT]`.
    Ranges are Nova's own.
    """

    live_migration_downtime: Annotated[int, Field(ge=100, le=600_000)] | None = None
    """Maximum permitted downtime, ms (Nova default 500, minimum 100)."""
    live_migration_downtime_steps: Annotated[int, Field(ge=3, le=1_000)] | None = None
    """Number of steps to reach the maximum downtime (Nova default 10, minimum 3)."""
    live_migration_downtime_delay: Annotated[int, Field(ge=3, le=86_400)] | None = None
    """Seconds between downtime steps, per GiB of RAM and disk, at least 2 GiB counted
    (Nova default 75, minimum 3)."""
    live_migration_bandwidth: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    """Maximum bandwidth, MiB/s; 0 → unlimited (Nova default 0)."""
    live_migration_permit_post_copy: bool | None = None
    """Allow switching to post-copy (Nova default false)."""
    live_migration_permit_auto_converge: bool | None = None
    """Allow auto-converge throttling (Nova default false)."""
    live_migration_completion_timeout: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    """Seconds per GiB of RAM and disk (at least 2 GiB counted) before the timeout action;
    0 → no timeout (Nova default 800)."""
    live_migration_timeout_action: Literal["abort", "force_complete"] | None = None
    """What Nova does at the completion timeout (Nova default `abort`)."""
    max_concurrent_live_migrations: Annotated[int, Field(ge=0, le=1_000)] | None = None
    """`[DEFAULT]` option: outgoing live migrations per host at once; 0 → unlimited (Nova default 1)."""


class Measure(_Model):
    """What is measured and how finely."""

    heartbeat_hz: Annotated[int, Field(ge=1, le=10_000)] = 1000
    """Guest agent heartbeat rate, Hz; the guest downtime's resolution is 1000/heartbeat_hz ms."""
    network_probe_hz: Annotated[int, Field(ge=1, le=10_000)] = 500
    """Network echo probe rate from the runner, Hz."""
    network_protocol: Literal["udp", "icmp"] = "udp"
    """What the network probe sends: `udp` — echo to the novamig guest agent (port 7); `icmp` —
    ICMP echo, which any guest's kernel answers (images without the agent). ICMP needs a ping
    socket (`net.ipv4.ping_group_range`) or root/CAP_NET_RAW on the runner, and security groups
    that let ICMP in."""
    probes: Annotated[list[Probe], Field(min_length=1, max_length=4)] = Field(
        default_factory=lambda: list(DEFAULT_PROBES)
    )
    """Vantage points that measure downtime; `locust` needs `workload.kind: locust`."""
    probe_cpu_budget_percent: Annotated[float, Field(gt=0, le=1_000)] = 20
    """CPU a measuring probe may use on the runner, % of one core (the network prober, the UDP
    heartbeat collector; measured: 5 % per guest at 500 Hz, 10 % at 1 kHz). Above it the case's
    `probe_cost` marks the probe `over_budget` and the run warns: the probe may have disturbed
    what it measured. Runner-side Locust is the load, not a probe: reported, never budgeted."""
    noise_floor_s: Annotated[float, Field(ge=0, le=3_600)] = 10
    """Seconds measured with no migration before the first one, to report the noise floor; 0 → skip."""
    heartbeat_collector: Annotated[str, Field(pattern=HEARTBEAT_COLLECTOR_PATTERN)] | None = None
    """`IPV4:PORT` on the machine running novamig where the guests send their heartbeat over UDP
    (the guest figure on clouds whose hosts novamig cannot read, such as DevStack: an address the
    guests route to without NAT, or through a router whose SNAT uses their floating IPs when
    `fleet.floating_ip_network` is set). Null → the embedded cloud's driver reads the heartbeat over
    virtio-serial, and elsewhere the guest figure is null with the reason."""


class DowntimeSla(_Model):
    """Limits on switchover downtime."""

    max: Annotated[float, Field(ge=0)] | None = None
    """Largest downtime allowed for any migration, ms; null → no limit."""
    p95: Annotated[float, Field(ge=0)] | None = None
    """95th percentile allowed over the case's migrations, ms; null → no limit."""
    probe: Probe = "guest"
    """Which probe's figure the limits apply to; must be one of `measure.probes`. Unwritten → `guest`
    when it is measured, else the first of `measure.probes`."""


class DurationSla(_Model):
    """Limits on migration duration (request → completed and ACTIVE on the destination)."""

    max: Annotated[float, Field(gt=0)] | None = None
    """Longest duration allowed, s; null → no limit."""
    p95: Annotated[float, Field(gt=0)] | None = None
    """95th percentile allowed, s; null → no limit."""


class RatioSla(_Model):
    """A limit on a fraction."""

    max: Annotated[float, Field(ge=0, le=1)] | None = None
    """Largest fraction allowed (0..1); null → no limit."""


class Sla(_Model):
    """What a case must achieve to pass."""

    downtime_ms: DowntimeSla = Field(default_factory=DowntimeSla)
    """Downtime limits, ms, read from one probe."""
    duration_s: DurationSla = Field(default_factory=DurationSla)
    """Duration limits, s."""
    locust_failure_ratio: RatioSla = Field(default_factory=RatioSla)
    """Failed Locust requests / all requests; needs `workload.kind: locust`."""
    memory_integrity: bool = False
    """Guest memory must read back intact after every migration (checked by the agent)."""
    migrations_completed_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Fraction of migrations that must end `completed` (1.0 → every one, and any failed migration fails
    the case; below 1 this alone says how many may fail, e.g. a sweep whose pre-copy cells may time out)."""

    @model_validator(mode="after")
    def _rules(self) -> Sla:
        check_sla(self)
        return self


class CellSla(_Model):
    """An SLA of its own for some matrix cells, and why: a sweep whose cells are expected to differ
    (pre-copy above the bandwidth is expected not to converge; how often it still does is the finding).
    """

    cells: Annotated[
        dict[Annotated[str, Field(pattern=MATRIX_KEY_PATTERN)], Any],
        Field(max_length=10, json_schema_extra={"propertyNames": {"pattern": MATRIX_KEY_PATTERN}}),
    ]
    """Matrix key, written as in `matrix` → one of its values or a list of them; the entry applies to
    every cell whose values match all of them (`{}` → every cell)."""
    sla: Sla
    """A partial `sla` block, merged key by key over the scenario's `sla` for those cells (later
    entries over earlier ones); a key it does not write keeps the scenario's value."""
    reason: Annotated[str, Field(min_length=1, max_length=1_000)]
    """Why these cells are judged differently; recorded in their cases' results and shown in the report."""

    @field_validator("reason")
    @classmethod
    def _says_why(cls, value: str) -> str:
        """A blank reason would hide the very thing the key exists to say."""
        if not value.strip():
            raise ValueError("must say why these cells have their own SLA (it is blank)")
        return value

    @field_serializer("sla")
    def _written_only(self, sla: Sla) -> dict[str, Any]:
        """Only the keys the entry writes: its unwritten defaults are not limits it sets, and the
        scenario recorded in results.json must not read as if they were."""
        return sla.model_dump(exclude_unset=True)


MatrixValues = Annotated[list[Any], Field(min_length=1, max_length=100)]


class Scenario(_Model):
    """A live-migration experiment: guests, their load, the migrations, what to measure and the SLA."""

    name: Annotated[str, Field(pattern=SLUG_PATTERN)]
    """Slug (lowercase letters, digits, `-`, `_`): names the report folder and the cloud resources."""
    description: str = ""
    """Free text for the report."""
    cloud: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    """clouds.yaml entry to run on; null → the embedded cloud (unless `--cloud` or `OS_CLOUD` names one)."""
    fleet: Fleet = Field(default_factory=Fleet)
    """The guests."""
    workload: Workload = Field(default_factory=Workload)
    """What the guests do."""
    migration: Migration = Field(default_factory=Migration)
    """The live migrations."""
    host_policy: HostPolicy | None = None
    """Compute-host nova.conf settings for the run; null → the hosts as they are."""
    measure: Measure = Field(default_factory=Measure)
    """Probes and rates."""
    sla: Sla = Field(default_factory=Sla)
    """Pass criteria of each case."""
    matrix: Annotated[
        dict[Annotated[str, Field(pattern=MATRIX_KEY_PATTERN)], MatrixValues],
        Field(max_length=10, json_schema_extra={"propertyNames": {"pattern": MATRIX_KEY_PATTERN}}),
    ] = Field(default_factory=dict)
    """Dotted key path → values; one case per combination, first key varying slowest."""
    sla_by_cell: Annotated[list[CellSla], Field(max_length=100)] = Field(default_factory=list)
    """SLAs of some matrix cells, each merged over `sla` for the cells it picks, with its reason."""
    repeat: Annotated[int, Field(ge=1, le=1_000)] = 1
    """Times each case runs; repetitions are interleaved (all cases once, then again)."""

    _downtime_probe_defaulted: bool = PrivateAttr(default=False)
    """True when `sla.downtime_ms.probe` was not written and follows `measure.probes`: a matrix
    cell that changes the probes then derives its own instead of inheriting this one."""

    def model_post_init(self, context: Any, /) -> None:
        """Resolve an unwritten downtime probe from the probes measured, before the rules run.

        A fixed default (`guest`) would refuse a scenario that measures only, say, the hypervisor
        and never mentions an SLA: the user would be told about a key they did not write.
        """
        downtime = self.sla.downtime_ms
        if "probe" in downtime.model_fields_set:
            return
        self._downtime_probe_defaulted = True
        probe = default_downtime_probe(self.measure.probes)
        if probe != downtime.probe:
            # The models are frozen; this is their construction, so the one write goes around it.
            resolved = self.sla.model_copy(
                update={"downtime_ms": downtime.model_copy(update={"probe": probe})}
            )
            object.__setattr__(self, "sla", resolved)

    @field_validator("matrix")
    @classmethod
    def _matrix_entries(cls, matrix: dict[str, list[Any]]) -> dict[str, list[Any]]:
        check_matrix_entries(cls, matrix)
        return matrix

    @model_validator(mode="after")
    def _rules(self) -> Scenario:
        check_scenario(self)
        return self


def default_downtime_probe(probes: list[Probe]) -> Probe:
    """The probe an unwritten `sla.downtime_ms.probe` reads: `guest` if measured, else the first."""
    return "guest" if "guest" in probes or not probes else probes[0]
