"""End to end on the embedded cloud (real Nova, novamig's QEMU driver, tiny TCG guests).

Each test runs `cmd_run` — what `novamig run` calls — against one session cloud named through
clouds.yaml, and checks the outcome from results.json only, as a user or CI job would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from novamig.embedded.controller import EmbeddedCloud
from novamig.results import Results, load_results
from novamig.runner.commands import cmd_cleanup, cmd_run

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

ROOT = Path(__file__).resolve().parents[2]
TINY = "fleet: {count: %d, flavor: {vcpus: 1, ram_mb: 256, disk_gb: 1}, image: novamig-tiny}\n"
HYPERVISOR_ONLY = "measure: {probes: [hypervisor], noise_floor_s: 0}\n"
# 1 MiB/s: a 256 MiB guest cannot finish for minutes, so abort/timeout/post-copy policies get to act.
SLOW_HOSTS = "host_policy: {live_migration_bandwidth: 1}\n"


Spawn = Callable[[list[str], dict[str, str]], "subprocess.Popen[str]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start a novamig process (stderr piped); one still running when the test ends is killed."""
    procs: list[subprocess.Popen[str]] = []

    def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def run(tmp_path: Path, cloud: str, body: str, *overrides: str) -> tuple[int, Results]:
    path = tmp_path / "scenario.yaml"
    path.write_text(body)
    out = tmp_path / "out"
    rc = cmd_run(str(path), cloud, str(out), list(overrides))
    return rc, load_results(out / "results.json")


def migrations(results: Results) -> list[Any]:
    return [m for c in results.cases for m in c.migrations]


def assert_nothing_left(cloud: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cmd_cleanup(cloud, yes=False) == 0
    assert "nothing tagged by novamig" in capsys.readouterr().out


def test_smoke_scenario(
    tmp_path: Path, cloud: str, embedded_cloud: EmbeddedCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    assert embedded_cloud.layout is not None
    nova_log = embedded_cloud.layout.logs / "nova.log"
    log_start = nova_log.stat().st_size
    body = (ROOT / "scenarios" / "smoke.yaml").read_text()
    rc, results = run(tmp_path, cloud, body, "migration.interval_s=0.5", "measure.noise_floor_s=2")
    case = results.cases[0]
    migs = migrations(results)
    assert len(migs) == 4
    for m in migs:
        assert m.status == "completed", m.events
        assert m.duration_s is not None and 0 < m.duration_s < 120
        assert m.dest_host and m.dest_host != m.source_host
        assert m.downtime_ms.hypervisor is not None and m.hypervisor is not None
        assert m.downtime_ms.guest is not None and m.resolution_ms.guest is not None
        # the network probe, from the runner's side inside the guests' namespace
        assert m.downtime_ms.network is not None, m.events
        assert m.resolution_ms.network == pytest.approx(2.0)  # 500 Hz
        # the integrity region the user-data asked for was verified on every destination
        assert m.memory_integrity is True, m.hypervisor
        assert m.brownout_ms.guest is not None
    assert case.noise_floor_ms.network is not None and case.noise_floor_ms.guest is not None
    assert "network" in case.probe_cost and case.probe_cost["network"].cpu_percent < 50
    assert case.duration_s is not None and case.duration_s > 2
    failed = [c for c in case.sla if not c.passed]
    assert not failed and rc == 0, failed
    assert {c.name for c in case.sla} >= {"memory_integrity", "duration_s.max", "downtime_ms.guest.max"}
    assert (tmp_path / "out" / "junit.xml").exists() and (tmp_path / "out" / "index.html").exists()
    assert (tmp_path / "out" / "probes").is_dir()
    assert_nothing_left(cloud, capsys)
    with nova_log.open("rb") as fh:  # a normal run: no ERROR line (a traceback) in Nova's log
        fh.seek(log_start)
        errors = [line for line in fh.read().decode(errors="replace").splitlines() if " ERROR " in line]
    assert errors == [], "\n".join(errors[:20])


def test_locust_web_scenario_gives_locust_statistics_and_four_figures(tmp_path: Path, cloud: str) -> None:
    """The shipped locust-web scenario, cut to one full guest and one migration: Locust runs inside
    the guest, and every vantage point gives its figure."""
    body = (ROOT / "scenarios" / "locust-web.yaml").read_text()
    overrides = ("fleet.count=1", "migration.count=1", "migration.interval_s=0", "measure.noise_floor_s=3")
    rc, results = run(tmp_path, cloud, body, *overrides)
    case = results.cases[0]
    assert case.error is None, case.error
    (m,) = migrations(results)
    assert m.status == "completed", m.events
    for probe in ("guest", "network", "locust", "hypervisor"):
        assert getattr(m.downtime_ms, probe) is not None, (probe, m.events)
        assert getattr(m.resolution_ms, probe) is not None, probe
    assert case.locust is not None and case.locust["where"] == "guest"
    total = case.locust["total"]
    assert total["requests"] > 50 and total["failure_ratio"] is not None
    assert total["latency_ms"]["p50"] is not None
    assert case.noise_floor_ms.locust is not None and case.noise_floor_ms.network is not None
    assert m.memory_integrity is True
    names = {c.name for c in case.sla}
    assert names >= {"locust_failure_ratio.max", "memory_integrity", "downtime_ms.locust.max"}
    assert rc == (0 if case.passed else 1)


USER_LOCUSTFILE = """
from locust import FastHttpUser, constant, task


class Mine(FastHttpUser):
    wait_time = constant(0.01)

    @task
    def health(self):
        self.client.get("/health", name="mine /health")
"""


def test_user_locustfile_in_the_guest_beside_the_memory_dirtier(tmp_path: Path, cloud: str) -> None:
    """`where: guest` with the user's own locustfile (a path relative to the scenario file), memory
    dirtier asked for too (memory + locust together): the file reaches the guest, its requests
    give the Locust figure, and Locust's own statistics carry its request names."""
    (tmp_path / "load").mkdir()
    (tmp_path / "load" / "mine.py").write_text(USER_LOCUSTFILE)
    body = (ROOT / "scenarios" / "locust-web.yaml").read_text()
    overrides = (
        "fleet.count=1", "migration.count=1", "migration.interval_s=0", "measure.noise_floor_s=3",
        "workload.locust.locustfile=load/mine.py", "workload.memory.dirty_rate_mib_s=8",
        "workload.memory.working_set_mib=16",
    )  # fmt: skip
    rc, results = run(tmp_path, cloud, body, *overrides)
    case = results.cases[0]
    assert case.error is None, case.error
    (m,) = migrations(results)
    assert m.status == "completed", m.events
    assert m.downtime_ms.locust is not None and m.resolution_ms.locust is not None, m.events
    assert case.locust is not None and case.locust["locustfile"] == "load/mine.py", case.locust
    [server] = case.locust["servers"].values()
    assert server["error"] is None, server
    assert set(server["locust_reported"]["by_name"]) == {"GET mine /health"}, server["locust_reported"]
    assert server["requests"] > 50 and server["failures"] == 0, server
    assert rc == (0 if case.passed else 1)


def test_guest_heartbeat_over_udp_when_a_collector_is_named(tmp_path: Path, cloud: str) -> None:
    """measure.heartbeat_collector: the DevStack path of the guest figure (the agent's beats as UDP
    datagrams to a runner-side collector), run here with the collector on the guests' gateway
    inside the embedded cloud's namespace."""
    body = (
        "name: udp-heartbeat\n"
        + TINY % 1
        + "measure: {probes: [guest, hypervisor], noise_floor_s: 2, heartbeat_hz: 500,"
        + " heartbeat_collector: '192.168.1.1:47000'}\n"
        + "migration: {count: 1, interval_s: 0}\n"
        + "sla: {downtime_ms: {probe: guest, max: 5000}}\n"
    )
    rc, results = run(tmp_path, cloud, body)
    (m,) = migrations(results)
    assert rc == 0 and m.status == "completed", m.events
    assert m.downtime_ms.guest is not None and m.resolution_ms.guest == pytest.approx(2.0), m.events
    assert "lost" in m.details["guest"]  # the UDP probe's figure, not the driver's
    assert m.downtime_ms.guest >= (m.downtime_ms.hypervisor or 0)
    assert results.cases[0].probe_cost["guest"].cpu_percent < 50
    assert results.cases[0].noise_floor_ms.guest is not None


def test_concurrency_2_round_robin(tmp_path: Path, cloud: str) -> None:
    body = (
        "name: rr\n"
        + TINY % 2
        + HYPERVISOR_ONLY
        + "migration: {count: 2, concurrency: 2, target: round-robin, interval_s: 0}\n"
        + "sla: {downtime_ms: {probe: hypervisor, max: 5000}, duration_s: {max: 120}}\n"
    )
    rc, results = run(tmp_path, cloud, body)
    migs = migrations(results)
    assert rc == 0, results.cases[0]
    assert len(migs) == 4 and all(m.status == "completed" for m in migs)
    first = sorted(migs, key=lambda m: m.requested_at)[:2]
    assert first[0].server != first[1].server
    assert first[1].requested_at < (first[0].finished_at or 0), "the two servers did not migrate at once"
    for m in migs:
        assert any(e.what.startswith("live-migrate requested:") and m.dest_host in e.what for e in m.events)


def test_ping_pong_returns_to_the_source(tmp_path: Path, cloud: str) -> None:
    body = (
        "name: pingpong\n"
        + TINY % 1
        + HYPERVISOR_ONLY
        + "migration: {count: 3, concurrency: 1, target: auto, ping_pong: true, interval_s: 0}\n"
        + "sla: {downtime_ms: {probe: hypervisor}}\n"
    )
    rc, results = run(tmp_path, cloud, body)
    migs = sorted(migrations(results), key=lambda m: m.requested_at)
    assert rc == 0, results.cases[0]
    assert [m.status for m in migs] == ["completed"] * 3
    home = migs[0].source_host
    away = migs[0].dest_host
    assert away and away != home
    assert [(m.source_host, m.dest_host) for m in migs] == [(home, away), (away, home), (home, away)]
    # each record carries Nova's migration id, its phases and the poll period that bounds them
    assert len({m.migration_id for m in migs}) == 3 and all(m.migration_id for m in migs)
    for m in migs:
        assert "running" in m.phases_s and m.poll_period_s is not None and 0 < m.poll_period_s <= 0.6


def test_drain_moves_every_server_off_the_host(tmp_path: Path, cloud: str) -> None:
    body = (
        "name: drain\n"
        + TINY % 2
        + HYPERVISOR_ONLY
        + "migration: {count: 1, concurrency: 2, target: 'drain:compute1', interval_s: 0}\n"
        + "sla: {downtime_ms: {probe: hypervisor}}\n"
    )
    rc, results = run(tmp_path, cloud, body)
    migs = migrations(results)
    assert rc == 0
    assert len(migs) == 2
    assert all(m.source_host == "compute1" and m.dest_host == "compute2" for m in migs)


def run_one_slow_migration(
    tmp_path: Path, cloud: str, name: str, policy: str, sla: str
) -> tuple[int, Results, Any]:
    """One tiny server, one migration on slow hosts (the policy gets time to act), `policy` the
    migration's policy and `sla` the case's SLA (YAML flow mappings).
    → (exit code, results, the migration)."""
    body = (
        f"name: {name}\n"
        + TINY % 1
        + HYPERVISOR_ONLY
        + SLOW_HOSTS
        + f"migration: {{count: 1, policy: {policy}}}\n"
        + f"sla: {sla}\n"
    )
    rc, results = run(tmp_path, cloud, body)
    [m] = migrations(results)
    return rc, results, m


def test_abort_policy_gives_cancelled(tmp_path: Path, cloud: str) -> None:
    rc, _, m = run_one_slow_migration(
        tmp_path,
        cloud,
        "abort",
        "{abort_after_s: 3, timeout_s: 120}",
        "{downtime_ms: {probe: hypervisor}, migrations_completed_ratio: 0}",
    )
    assert m.status == "cancelled", m.events
    assert m.duration_s is None
    assert any(e.what.startswith("abort sent") for e in m.events)
    assert rc == 0  # an abort the scenario asked for is not a failure


def test_timeout_gives_timeout_and_exit_1(tmp_path: Path, cloud: str) -> None:
    rc, results, m = run_one_slow_migration(
        tmp_path, cloud, "timeout", "{timeout_s: 3}", "{downtime_ms: {probe: hypervisor}}"
    )
    assert m.status == "timeout", m.events
    assert rc == 1
    assert {c.name: c.passed for c in results.cases[0].sla}["migrations.failed"] is False


def test_post_copy_policy_force_completes(tmp_path: Path, cloud: str) -> None:
    rc, _, m = run_one_slow_migration(
        tmp_path,
        cloud,
        "postcopy",
        "{post_copy_after_s: 2, timeout_s: 120}",
        "{downtime_ms: {probe: hypervisor}}",
    )
    assert m.status == "completed", m.events
    assert any(e.what.startswith("force-complete sent") for e in m.events)
    assert m.hypervisor is not None and m.hypervisor.get("postcopy") is True
    assert rc == 0


def test_sigint_mid_run(
    tmp_path: Path, cloud: str, embedded_cloud: Any, capsys: pytest.CaptureFixture[str], spawn: Spawn
) -> None:
    scenario = tmp_path / "slow.yaml"
    scenario.write_text(
        "name: sigint\n"
        + TINY % 2
        + HYPERVISOR_ONLY
        + SLOW_HOSTS
        + "migration: {count: 2, concurrency: 2, policy: {timeout_s: 300}}\n"
        + "sla: {downtime_ms: {probe: hypervisor}}\n"
    )
    out = tmp_path / "out"
    code = (
        "import sys; from novamig.runner.commands import cmd_run; "
        f"sys.exit(cmd_run({str(scenario)!r}, {cloud!r}, {str(out)!r}, []))"
    )
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(embedded_cloud.clouds_yaml))
    proc = spawn([sys.executable, "-c", code], env)
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stderr:  # wait until a migration is in flight
        lines.append(line)
        if ": running" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=240)
    assert proc.returncode == 130, "".join(lines) + rest
    results = load_results(out / "results.json")
    assert results.interrupted and not results.passed
    migs = migrations(results)
    assert migs and all(m.status in ("cancelled", "completed") for m in migs)
    assert any(m.status == "cancelled" for m in migs)
    assert_nothing_left(cloud, capsys)


def test_cleanup_sweeps_what_a_killed_run_left(cloud: str, capsys: pytest.CaptureFixture[str]) -> None:
    from novamig.cloud.compute import Compute
    from novamig.cloud.connection import connect
    from novamig.cloud.keys import generate_keypair
    from novamig.cloud.resources import FlavorRequest, Resources, ServerSpec, find_image, resource_name

    conn = connect(cloud)
    try:
        compute = Compute(conn)
        left = Resources(compute, "dead01")  # never closed: what a SIGKILLed run leaves behind
        flavor = left.flavor(FlavorRequest(1, 256, 1))
        left.keypair(generate_keypair()[1])
        server = left.server(
            ServerSpec(resource_name("dead01", "c1", "s0"), find_image(conn, "novamig-tiny"), flavor, "auto")
        )
        left.wait_active([server], timeout_s=240)
        capsys.readouterr()
        assert cmd_cleanup(cloud, yes=False) == 0
        listed = capsys.readouterr().out
        for name in ("novamig-dead01-c1-s0", "novamig-dead01-flavor-1c256m1g", "novamig-dead01-key"):
            assert name in listed, listed
        assert "dry run: nothing deleted" in listed
        assert cmd_cleanup(cloud, yes=True) == 0
        assert "deleted 3 of 3" in capsys.readouterr().out
        assert_nothing_left(cloud, capsys)
    finally:
        conn.close()


def test_sigint_with_the_run_s_own_embedded_cloud(tmp_path: Path, spawn: Spawn) -> None:
    """No cloud named: the run starts the embedded cloud, and on Ctrl-C takes it down with it."""
    scenario = tmp_path / "own.yaml"
    scenario.write_text(
        "name: own\n"
        + TINY % 1
        + HYPERVISOR_ONLY
        + SLOW_HOSTS
        + "migration: {count: 1, policy: {timeout_s: 300}}\n"
        + "sla: {downtime_ms: {probe: hypervisor}}\n"
    )
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("OS_CLOUD", "OS_CLIENT_CONFIG_FILE")}
    proc = spawn([sys.executable, "-m", "novamig.cli", "run", str(scenario), "--out", str(out)], env)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if ": running" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=240)
    assert proc.returncode == 130, "".join(lines) + rest
    results = load_results(out / "results.json")
    assert results.interrupted
    assert results.environment.nova_version
    [m] = migrations(results)
    assert m.status == "cancelled"
    log = (out / "logs" / "novamig.log").read_text()
    workdir = log.split("embedded cloud started in ", 1)[1].split(" ", 1)[0]
    assert not Path(workdir).exists()
    assert (out / "logs" / "embedded" / "nova.log").exists()
    leftover = subprocess.run(["pgrep", "-f", workdir], capture_output=True, text=True, check=False)
    assert leftover.stdout == "", f"processes of the stopped cloud: {leftover.stdout}"


def test_destination_failure_is_an_error_and_the_run_continues(
    tmp_path: Path,
    cloud: str,
    embedded_qemu: Callable[..., dict[int, float]],
    capsys: pytest.CaptureFixture[str],
    spawn: Spawn,
) -> None:
    scenario = tmp_path / "destfail.yaml"
    scenario.write_text(
        "name: destfail\n"
        + TINY % 1
        + HYPERVISOR_ONLY
        + "migration: {count: 1, policy: {timeout_s: 120}}\n"
        + "sla: {downtime_ms: {probe: hypervisor}}\n"
        + "matrix: {host_policy.live_migration_bandwidth: [1, 0]}\n"  # case 1 slow: time to fail it
    )
    out = tmp_path / "out"
    code = (
        "import sys; from novamig.runner.commands import cmd_run; "
        f"sys.exit(cmd_run({str(scenario)!r}, {cloud!r}, {str(out)!r}, []))"
    )
    env = dict(os.environ)  # `cloud` pointed OS_CLIENT_CONFIG_FILE at the session cloud
    proc = spawn([sys.executable, "-c", code], env)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if ": running" in line:
            break
    incoming = embedded_qemu(incoming_only=True)
    assert incoming, "".join(lines)
    victim = max(incoming, key=lambda pid: incoming[pid])  # the newest: this migration's destination
    os.kill(victim, signal.SIGKILL)  # the destination hypervisor dies mid-migration
    _, rest = proc.communicate(timeout=300)
    assert proc.returncode == 1, "".join(lines) + rest
    results = load_results(out / "results.json")
    assert [len(c.migrations) for c in results.cases] == [1, 1]
    assert results.cases[0].migrations[0].status == "error"
    assert results.cases[1].migrations[0].status == "completed"
    assert not results.cases[0].passed and results.cases[1].passed
    assert_nothing_left(cloud, capsys)
