"""The DevStack hypervisor figure: `virsh domjobinfo --completed` parsed, and read over SSH.

The sample texts are built with virsh's own format strings (libvirt's tools/virsh-domain.c,
cmdDomjobinfo; the same strings are in Debian 12's libvirt-clients 9.0 ``/usr/bin/virsh``):
``"%-17s %-12s"`` for job type and operation, ``"%-17s %-12llu ms"`` for times, ``"%-17s %-.3lf %s"``
for sizes (vshPrettyCapacity: B, KiB, MiB, GiB …), ``"%-17s %-.3lf %s/s"`` for bandwidth,
``"%-17s %-12llu pages/s"``, ``"%-17s %-12llu bytes"``, ``"%-17s %-12llu"`` for counts and
``"%-17s %-13d"`` for the auto-converge throttle — so padding and trailing blanks are virsh's.
``--rawstats`` prints ``Job type: %d`` and then ``name: value`` per typed parameter.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from novamig.measure.contract import CapturesEachMigration, Unavailable
from novamig.measure.embedded_figures import EmbeddedMigrationFigures
from novamig.measure.libvirt_jobstats import (
    DomainPlace,
    JobInfoParseError,
    LibvirtJobFigures,
    figure_from_stats,
    parse_domjobinfo,
)
from novamig.results import MigrationRecord, MigrationStatus


def _s(label: str, value: str) -> str:
    return "%-17s %-12s\n" % (label, value)  # noqa: UP031 - virsh's format string, verbatim


def _ms(label: str, value: int) -> str:
    return "%-17s %-12d ms\n" % (label, value)  # noqa: UP031


def _size(label: str, value: float, unit: str, per_s: str = "") -> str:
    return "%-17s %-.3f %s%s\n" % (label, value, unit, per_s)  # noqa: UP031


def _count(label: str, value: int, unit: str = "") -> str:
    if unit:
        return "%-17s %-12d %s\n" % (label, value, unit)  # noqa: UP031
    return "%-17s %-12d\n" % (label, value)  # noqa: UP031


def _incoming(
    *,
    elapsed: tuple[int, int],
    gib: tuple[float, float, float],
    bandwidth_mib_s: float,
    pages: tuple[int, int, int],
    iteration: int,
    postcopy_requests: int,
    downtime: tuple[int, int],
    setup: int,
) -> str:
    """virsh's answer for a completed incoming migration: `elapsed` and `downtime` with and without
    the network, `gib` processed / total / normal data, `pages` dirty per second / constant /
    normal — printed in virsh's order, every size as it prints sizes."""
    processed, total, normal_data = gib
    dirty, constant, normal = pages
    return (
        _s("Job type:", "Completed")
        + _s("Operation:", "Incoming migration")
        + _ms("Time elapsed:", elapsed[0])
        + _ms("Time elapsed w/o network:", elapsed[1])
        + _size("Data processed:", processed, "GiB")
        + _size("Data remaining:", 0, "B")
        + _size("Data total:", total, "GiB")
        + _size("Memory processed:", processed, "GiB")
        + _size("Memory remaining:", 0, "B")
        + _size("Memory total:", total, "GiB")
        + _size("Memory bandwidth:", bandwidth_mib_s, "MiB", "/s")
        + _count("Dirty rate:", dirty, "pages/s")
        + _count("Page size:", 4096, "bytes")
        + _count("Iteration:", iteration)
        + _count("Postcopy requests:", postcopy_requests)
        + _count("Constant pages:", constant)
        + _count("Normal pages:", normal)
        + _size("Normal data:", normal_data, "GiB")
        + _ms("Total downtime:", downtime[0])
        + _ms("Downtime w/o network:", downtime[1])
        + _ms("Setup time:", setup)
    )


PRECOPY = _incoming(
    elapsed=(5321, 5318),
    gib=(1.234, 2.008, 1.231),
    bandwidth_mib_s=238.917,
    pages=(0, 213453, 322714),
    iteration=3,
    postcopy_requests=0,
    downtime=(57, 54),
    setup=12,
)

POSTCOPY = _incoming(
    elapsed=(14873, 14869),
    gib=(4.102, 4.008, 3.994),
    bandwidth_mib_s=117.301,
    pages=(20871, 902113, 1046920),
    iteration=7,
    postcopy_requests=1532,
    downtime=(243, 239),
    setup=31,
) + "%-17s %-13d\n" % ("Auto converge throttle:", 40)  # noqa: UP031

RAWSTATS = """Job type: 3

operation: 4
time_elapsed: 5321
time_elapsed_net: 5318
downtime: 57
downtime_net: 54
setup_time: 12
data_total: 2156396544
data_processed: 1325223936
data_remaining: 0
memory_total: 2156396544
memory_processed: 1325223936
memory_remaining: 0
memory_constant: 213453
memory_normal: 322714
memory_normal_bytes: 1321836544
memory_bps: 250522112
memory_dirty_rate: 0
memory_page_size: 4096
memory_iteration: 3
memory_postcopy_requests: 0
success: yes
"""


def test_precopy_human_output_parses_into_the_typed_record() -> None:
    stats = parse_domjobinfo(PRECOPY)
    assert stats.job_type == "Completed" and stats.operation == "Incoming migration" and not stats.raw
    assert stats.time_elapsed_ms == 5321 and stats.time_elapsed_net_ms == 5318
    assert stats.total_downtime_ms == 57 and stats.downtime_net_ms == 54 and stats.setup_time_ms == 12
    assert stats.memory_processed_bytes == round(1.234 * 2**30)  # exact to 0.001 GiB only
    assert stats.data_remaining_bytes == 0
    assert stats.memory_bandwidth_bytes_s == round(238.917 * 2**20)
    assert stats.dirty_rate_pages_s == 0 and stats.page_size_bytes == 4096 and stats.iteration == 3
    assert stats.postcopy_requests == 0 and stats.constant_pages == 213453 and stats.normal_pages == 322714
    assert stats.auto_converge_throttle_pct is None and stats.other == {}
    fig = figure_from_stats(stats, "compute2")
    assert (fig.downtime_ms, fig.resolution_ms, fig.reason, fig.brownout_ms) == (57.0, 1.0, None, None)
    assert fig.details is not None
    assert fig.details["total_downtime_ms"] == 57 and fig.details["libvirt_host"] == "compute2"
    assert fig.details["format"] == "human" and "expected_downtime_ms" not in fig.details


def test_postcopy_human_output() -> None:
    stats = parse_domjobinfo(POSTCOPY)
    assert stats.postcopy_requests == 1532 and stats.iteration == 7 and stats.dirty_rate_pages_s == 20871
    assert stats.auto_converge_throttle_pct == 40 and stats.total_downtime_ms == 243
    fig = figure_from_stats(stats, "compute1")
    # a throttle percentage and a count of page requests are not times: no brownout
    assert fig.downtime_ms == 243.0 and fig.brownout_ms is None


def test_rawstats_are_exact_and_agree_with_the_human_format() -> None:
    raw = parse_domjobinfo(RAWSTATS)
    human = parse_domjobinfo(PRECOPY)
    assert raw.raw and raw.job_type == "Completed" and raw.operation == "Incoming migration"
    assert raw.total_downtime_ms == 57 and raw.expected_downtime_ms is None
    assert raw.memory_processed_bytes == 1325223936
    assert human.memory_processed_bytes is not None
    assert abs(raw.memory_processed_bytes - human.memory_processed_bytes) <= 0.0005 * 2**30
    assert raw.other == {"success": "yes"}
    assert figure_from_stats(raw, "c").details == {
        **raw.figures(),
        "libvirt_host": "c",
        "format": "rawstats",
    }
    # a running job's raw "downtime" is QEMU's expectation, not a downtime
    running = parse_domjobinfo("Job type: 2\n\noperation: 5\ndowntime: 300\n")
    assert running.job_type == "Unbounded" and running.expected_downtime_ms == 300
    assert running.total_downtime_ms is None


def test_missing_fields_and_no_completed_job() -> None:
    # no completed job: virsh prints the job type alone (and exits 0)
    none = parse_domjobinfo(_s("Job type:", "None"))
    assert none.job_type == "None" and none.total_downtime_ms is None
    fig = figure_from_stats(none, "compute2")
    assert fig.downtime_ms is None and "no completed job" in (fig.reason or "")
    # an old libvirt: no operation, no downtime
    old = parse_domjobinfo(_s("Job type:", "Completed") + _ms("Time elapsed:", 900))
    assert old.operation is None and old.time_elapsed_ms == 900
    fig = figure_from_stats(old, "compute2")
    assert fig.downtime_ms is None and fig.reason == "libvirt on compute2 reported no downtime for the job"
    assert fig.details is not None and fig.details["time_elapsed_ms"] == 900
    # the completed job is something else (a save), not our migration
    save = parse_domjobinfo(
        _s("Job type:", "Completed") + _s("Operation:", "Save") + _ms("Total downtime:", 5)
    )
    assert figure_from_stats(save, "h").downtime_ms is None
    # unknown lines of newer libvirts are kept, not fatal
    newer = parse_domjobinfo(PRECOPY + "%-17s %s\n" % ("VFIO data transferred:", "1.000 MiB"))  # noqa: UP031
    assert newer.other == {"VFIO data transferred": "1.000 MiB"} and newer.total_downtime_ms == 57


@pytest.mark.parametrize(
    "text",
    [
        "",
        "error: failed to get domain 'instance-00000001'\n",
        "<html><body>login</body></html>",
        PRECOPY.replace("57           ms", "fast ms"),
        PRECOPY.replace("1.234 GiB", "1.234 GB"),
        PRECOPY.replace("5321         ms", "5.3 s"),
    ],
)
def test_garbage_is_a_parse_error(text: str) -> None:
    with pytest.raises(JobInfoParseError):
        parse_domjobinfo(text)


# -- over SSH ---------------------------------------------------------------------------------------

DEST = "stack@192.0.2.20"
SOURCE = "stack@192.0.2.10"
TARGETS = {"compute1": SOURCE, "compute2": DEST}


def _fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, rawstats: bool = True) -> Path:
    """`ssh -o X -o Y TARGET COMMAND`: logs "TARGET COMMAND"; the destination answers domjobinfo
    with a captured text (refusing --rawstats like an old virsh when told), any other target fails
    the way ssh does when a host is unreachable."""
    out = tmp_path / "precopy.txt"
    out.write_text(PRECOPY)
    log = tmp_path / "ssh.log"
    refuse = (
        "case \"$2\" in *--rawstats*) echo \"error: command 'domjobinfo' doesn't support option "
        '--rawstats" >&2; exit 1;; esac\n'
        if not rawstats
        else ""
    )
    body = (
        "#!/bin/sh\nshift 4\n"
        f'echo "$1 $2" >> {log}\n'
        f'if [ "$1" != "{DEST}" ]; then echo "ssh: connect to host 192.0.2.10 port 22: '
        'Connection timed out" >&2; exit 255; fi\n'
        f"{refuse}"
        f"cat {out}\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(body)
    (bindir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def _record(
    dest: str | None = "compute2", status: MigrationStatus = "completed", at: float = 10.0
) -> MigrationRecord:
    return MigrationRecord(
        server="vm-1",
        source_host="compute1",
        dest_host=dest,
        status=status,
        requested_at=at,
    )


def test_figure_over_ssh_from_the_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _fake_ssh(tmp_path, monkeypatch)
    place = DomainPlace("instance-0000002a", "compute2", 7)
    probe = LibvirtJobFigures.over_ssh(TARGETS, lambda server_id: place, timeout_s=10)
    assert probe.name == "hypervisor"
    fig = probe.figure(_record(), "srv-1", 7)
    assert (fig.downtime_ms, fig.resolution_ms, fig.reason) == (57.0, 1.0, None)
    assert fig.details is not None and fig.details["iteration"] == 3
    assert log.read_text().splitlines() == [
        f"{DEST} virsh -c qemu:///system domjobinfo --completed --keep-completed --rawstats instance-0000002a"
    ]
    assert probe.noise_floor(0.0, 5.0) is None and probe.cost() is None and probe.case_stats() is None


def test_capture_keeps_the_figure_of_each_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ssh(tmp_path, monkeypatch)
    places = {"now": DomainPlace("instance-0000002a", "compute2", 7)}
    probe = LibvirtJobFigures.over_ssh(TARGETS, lambda server_id: places["now"])
    first = _record(at=10.0)
    probe.capture(first, "srv-1", 7)
    # the server migrates on (back to compute1); the first figure is the captured one
    places["now"] = DomainPlace("instance-0000002a", "compute1", 8)
    assert probe.figure(first, "srv-1", 7).downtime_ms == 57.0
    # not captured, and a later migration came: no figure, and the reason says why
    other = _record(at=30.0)
    fig = probe.figure(other, "srv-1", 6)
    assert fig.downtime_ms is None and "later migration" in (fig.reason or "")


def test_unreachable_host_and_other_failures_give_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _fake_ssh(tmp_path, monkeypatch)
    # the stand-in destination is compute1 now: ssh fails
    probe = LibvirtJobFigures.over_ssh(TARGETS, lambda sid: DomainPlace("instance-1", "compute1", 3))
    fig = probe.figure(_record(dest="compute1"), "srv-1", 3)
    assert fig.downtime_ms is None and fig.reason is not None
    assert fig.reason.startswith("virsh domjobinfo on compute1: SshError: ssh stack@192.0.2.10:")
    assert "Connection timed out" in fig.reason
    # a host missing from the hosts file
    probe = LibvirtJobFigures.over_ssh(TARGETS, lambda sid: DomainPlace("instance-1", "compute9", 3))
    fig = probe.figure(_record(dest="compute9"), "srv-1", 3)
    assert "no SSH target for compute host 'compute9'" in (fig.reason or "")
    # the server left the destination
    probe = LibvirtJobFigures.over_ssh(TARGETS, lambda sid: DomainPlace("instance-1", "compute1", 3))
    fig = probe.figure(_record(dest="compute2"), "srv-1", 3)
    assert fig.reason == "the server is on compute1 now, no longer on the destination compute2"

    def broken(server_id: str) -> DomainPlace:
        raise LookupError("Nova shows no instance_name (the API user is not admin?)")

    probe = LibvirtJobFigures.over_ssh(TARGETS, broken)
    assert "not admin" in (probe.figure(_record(), "srv-1", 3).reason or "")
    # failed migration, no migration id: no ssh at all
    before = log.read_text().count("\n")
    assert (
        probe.figure(_record(status="cancelled"), "srv-1", 3).reason
        == "the migration did not complete (cancelled)"
    )
    assert probe.figure(_record(), "srv-1", None).downtime_ms is None
    probe.capture(_record(status="error"), "srv-1", 3)
    assert log.read_text().count("\n") == before


def test_an_old_virsh_is_asked_again_without_the_option_it_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _fake_ssh(tmp_path, monkeypatch, rawstats=False)
    probe = LibvirtJobFigures.over_ssh(TARGETS, lambda sid: DomainPlace("inst'ance", "compute2", 1))
    assert probe.figure(_record(), "srv-1", 1).downtime_ms == 57.0
    assert probe.figure(_record(at=20.0), "srv-1", 1).downtime_ms == 57.0
    lines = log.read_text().splitlines()
    assert len(lines) == 3  # refused once, then remembered
    assert lines[0].endswith("--completed --keep-completed --rawstats 'inst'\"'\"'ance'")
    assert lines[1] == lines[2] and "--rawstats" not in lines[1] and "--keep-completed" in lines[1]


def test_the_runner_captures_libvirt_figures_after_each_migration() -> None:
    """libvirt forgets a domain's completed job at its next one: the runner must call `capture`
    right after every migration, which it does for probes of this protocol only."""
    probe = LibvirtJobFigures.over_ssh(
        {"compute1": "stack@192.0.2.1"}, lambda _sid: DomainPlace("i-1", None, None)
    )
    assert isinstance(probe, CapturesEachMigration)
    assert not isinstance(Unavailable("hypervisor", "x"), CapturesEachMigration)
    assert not isinstance(EmbeddedMigrationFigures(Path("/nonexistent")), CapturesEachMigration)
