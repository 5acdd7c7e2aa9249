"""A server's user-data reaches its guest agent (fw_cfg → init → /run/novamig/agent.conf), on both
ends of a live migration; the integrity region is checked after each migration; the downtime limit
is raised in steps as Nova's libvirt driver raises it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from novamig import process_state
from novamig.embedded import processes
from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import FULL_IMAGE_NAME
from novamig.scenario.models import Measure, MemoryLoad, ScriptLoad, Workload
from novamig.workload.userdata import INTEGRITY_MIB, GuestSetup, render_user_data

from .conftest import BOOT_TIMEOUT_S, wait_for_migration_end, wait_for_status

pytestmark = pytest.mark.qemu

FW_CFG_NAME = "opt/org.novamig/user-data"


def _user_data(
    *,
    hz: int,
    dirty_mib_s: float = 0,
    wset_mib: int = 64,
    integrity: bool = False,
    workload: Workload | None = None,
) -> str:
    """The user-data the runner would give a case's servers, base64 as the compute API wants it."""
    if workload is None:
        workload = (
            Workload(kind="memory", memory=MemoryLoad(dirty_rate_mib_s=dirty_mib_s, working_set_mib=wset_mib))
            if dirty_mib_s
            else Workload()
        )
    setup = GuestSetup("user-data-test#r1", workload, Measure(heartbeat_hz=hz), integrity)
    return base64.b64encode(render_user_data(setup).encode()).decode()


def _qemu_cmdline(cloud: EmbeddedCloud, host: str, server_id: str) -> str:
    pid = int((cloud.workdir / "guests" / host / f"{server_id}.pid").read_text())
    assert process_state.alive(pid)
    return processes.cmdline(pid)


def _figures(cloud: EmbeddedCloud, record: Any) -> dict[str, Any]:
    figures: dict[str, Any] = json.loads((cloud.workdir / "migrations" / f"{record.uuid}.json").read_text())
    return figures


def _other(host: str) -> str:
    return "compute2" if host == "compute1" else "compute1"


def _agent_up_fields(console: str) -> dict[str, str]:
    """The `key=value` fields of the agent's last `novamig-agent: up:` console line."""
    lines = [ln for ln in console.replace("\r", "").splitlines() if ln.startswith("novamig-agent: up:")]
    assert lines, console[-3000:]
    return dict(t.split("=", 1) for t in lines[-1].split() if "=" in t)


def _console(conn: Any, server: Any) -> str:
    return str(conn.compute.get_server_console_output(server)["output"])


def test_without_user_data_there_is_no_fw_cfg_entry_and_the_agent_keeps_its_defaults(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any]
) -> None:
    server = boot_server(name="novamig-no-ud")
    assert "-fw_cfg" not in _qemu_cmdline(embedded_cloud, server.compute_host, server.id)
    console = _console(embedded_conn, server)
    assert "novamig-init: user-data: none" in console
    assert "hb_hz=1000" in console and "settings=cmdline\n" in console.replace("\r", "")
    assert not (embedded_cloud.workdir / "guests" / "instances" / server.id).exists()


@pytest.mark.slow
def test_user_data_sets_the_agent_and_survives_a_live_migration(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any]
) -> None:
    """hb_hz 250 and a 3 MiB/s dirtier over 8 MiB are nobody's defaults: the agent shows them only
    if the user-data went API → fw_cfg → init → settings file → agent. The integrity region it
    starts is checked after the migration, on the destination, before Nova says completed."""
    user_data = _user_data(hz=250, dirty_mib_s=3, wset_mib=8, integrity=True)
    server = boot_server(name="novamig-ud", user_data=user_data)
    source = server.compute_host
    path = embedded_cloud.workdir / "guests" / "instances" / server.id / "user-data"
    assert path.read_bytes() == base64.b64decode(user_data)
    assert path.stat().st_mode & 0o777 == 0o600
    assert f"-fw_cfg name={FW_CFG_NAME},file={path}" in _qemu_cmdline(embedded_cloud, source, server.id)

    console = _console(embedded_conn, server)
    assert "novamig-init: user-data: running /run/novamig/user-data" in console
    assert "novamig-userdata: wrote /run/novamig/agent.conf" in console
    assert "READY version=1 hb_hz=250 " in console  # the agent's handshake with the host
    up = _agent_up_fields(console)
    assert up["hb_hz"] == "250" and up["settings"] == "cmdline+/run/novamig/agent.conf", up
    assert (up["dirty_mib_s"], up["wset_mib"], up["integrity_mib"]) == ("3", "8", str(INTEGRITY_MIB)), up

    dest = _other(source)
    embedded_conn.compute.live_migrate_server(server, host=dest, block_migration="auto")
    record = wait_for_migration_end(embedded_conn, server.id)
    assert record.status == "completed"
    moved = wait_for_status(embedded_conn, server.id, "ACTIVE")
    assert moved.compute_host == dest
    assert f"-fw_cfg name={FW_CFG_NAME},file={path}" in _qemu_cmdline(embedded_cloud, dest, server.id)

    figures = _figures(embedded_cloud, record)
    assert figures["status"] == "completed"
    assert figures["heartbeat"]["hz"] == 250
    integrity = figures["integrity"]
    assert integrity["ok"] is True, integrity
    assert integrity["pages"] == INTEGRITY_MIB * 256
    assert integrity["check_ms"] >= 0 and integrity["generation"] >= 2

    # and once more, back: the file is still there for the next destination
    embedded_conn.compute.live_migrate_server(server, host=source, block_migration="auto")
    back = wait_for_migration_end(embedded_conn, server.id)
    assert back.status == "completed" and back.uuid != record.uuid
    assert _figures(embedded_cloud, back)["integrity"]["ok"] is True

    embedded_conn.compute.delete_server(server)
    embedded_conn.compute.wait_for_delete(server, wait=60)
    assert not path.parent.exists(), "the instance directory outlived its server"


#: Ramp set-up. A dirtier rewriting 36 MiB at 64 MiB/s, faster than the 32 MiB/s link sends it,
#: keeps about 30 MiB dirty per round (measured: 31.7 MB sent in the downtime), so QEMU can switch
#: over only once 32 MiB/s × limit exceeds that: not at step 0 (500 ms → 16 MiB), from step 1 (950
#: ms → 30.4 MiB; or step 2, 1400 ms → 44.8 MiB). Steps come every 3 s/GiB × 2 GiB (libvirt's minimum
#: data size) = 6 s. Measured here (2 cores, TCG): completed at 6.56 s and 6.56 s, each 0.4 s after
#: step 1 was set at 6.09/6.19 s, after 10 dirty-sync rounds; with steps every 20 s instead the same
#: guest went on for 31 rounds and switched over at 20.7 s, 0.7 s after step 1 at 20.05 s: the ramp,
#: not the initial copy (about 2 s), decides when it converges.
RAMP_POLICY = {
    "live_migration_bandwidth": 32,
    "live_migration_downtime": 5000,
    "live_migration_downtime_steps": 10,
    "live_migration_downtime_delay": 3,
}


@pytest.mark.slow
def test_downtime_limit_is_raised_in_steps_until_the_migration_converges(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any], default_policies: None
) -> None:
    server = boot_server(name="novamig-ramp", user_data=_user_data(hz=100, dirty_mib_s=64, wset_mib=36))
    source = server.compute_host
    embedded_cloud.set_host_policy(source, RAMP_POLICY)
    embedded_conn.compute.live_migrate_server(server, host=_other(source), block_migration="auto")
    record = wait_for_migration_end(embedded_conn, server.id, timeout=240)
    figures = _figures(embedded_cloud, record)
    steps = [e for e in figures["events"] if e["what"] == "downtime-step"]
    summary = {
        "status": record.status,
        "duration_s": figures.get("duration_s"),
        "dirty_sync_count": figures.get("dirty_sync_count"),
        "qemu_downtime_ms": figures.get("qemu_downtime_ms"),
        "steps": steps,
    }
    print(json.dumps(summary))
    assert record.status == "completed", summary
    ramp = figures["downtime_steps"]  # Nova's steps for these options and 2 GiB
    assert (ramp[:4], ramp[-1], len(ramp)) == ([[0, 500], [6, 950], [12, 1400], [18, 1850]], [60, 5000], 11)
    assert len(steps) >= 2, summary  # it cannot converge at step 0
    assert [s["step"] for s in steps] == list(range(len(steps)))
    assert steps[0]["t"] == 0.0 and steps[0]["downtime_limit_ms"] == 500
    for step in steps[1:]:
        # set when its time was past (libvirt's rule), and QEMU reports the new limit back
        assert step["t"] > step["after_s"] - 0.5, summary
        assert step["qemu_downtime_limit_ms"] == step["downtime_limit_ms"], summary
    # the switchover came only after the last step that was set: the ramp is what let it converge
    stop = next(e for e in figures["events"] if e["what"] == "STOP" and e["side"] == "source")
    assert stop["t"] > steps[-1]["t"], summary
    assert figures["qemu_downtime_ms"] is not None


@pytest.mark.slow
def test_full_image_runs_user_data_before_its_agent(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any]
) -> None:
    """The full image's embedded form reads fw_cfg the same way (its own init.sh); its smallest
    flavor (m1.micro, 192 MiB) holds the 16 MiB integrity region, checked after a migration."""
    image = embedded_conn.image.find_image(FULL_IMAGE_NAME)
    if image is None:
        pytest.skip("the full image is not in the image cache (novamig image build full)")
    flavor = embedded_conn.compute.find_flavor("m1.micro", ignore_missing=False)
    server = embedded_conn.compute.create_server(
        name="novamig-full-ud",
        image_id=image.id,
        flavor_id=flavor.id,
        networks="auto",
        user_data=_user_data(hz=250, integrity=True),
    )
    try:
        server = embedded_conn.compute.wait_for_server(server, wait=BOOT_TIMEOUT_S)
        console = _console(embedded_conn, server)
        assert "novamig-init: user-data: running /run/novamig/user-data" in console
        assert "novamig-init: user-data: done" in console
        up = _agent_up_fields(console)
        assert up.get("hb_hz") == "250" and up.get("integrity_mib") == str(INTEGRITY_MIB), console[-3000:]
        assert up.get("settings") == "cmdline+/run/novamig/agent.conf", console[-3000:]
        source = server.compute_host
        embedded_conn.compute.live_migrate_server(server, host=_other(source), block_migration="auto")
        record = wait_for_migration_end(embedded_conn, server.id)
        assert record.status == "completed"
        figures = _figures(embedded_cloud, record)
        assert figures["heartbeat"]["hz"] == 250
        assert figures["integrity"]["ok"] is True, figures["integrity"]
        assert figures["integrity"]["pages"] == INTEGRITY_MIB * 256
    finally:
        embedded_conn.compute.delete_server(server, ignore_missing=True)
        embedded_conn.compute.wait_for_delete(server, wait=60)


def test_script_workload_runs_inside_the_guest(embedded_conn: Any, boot_server: Callable[..., Any]) -> None:
    """`workload.kind: script`: the user's command runs in the guest's shell, with its environment.
    The arithmetic happens in the guest: the text "answer-42" is in neither the user-data nor the
    command, so only a command that ran can put it on the console."""
    workload = Workload(
        kind="script",
        script=ScriptLoad(
            command='echo "novamig-script: $WORD-$((6 * 7))" > /dev/console', env={"WORD": "answer"}
        ),
    )
    user_data = _user_data(hz=1000, workload=workload)
    assert "answer-42" not in base64.b64decode(user_data).decode()
    server = boot_server(name="novamig-script", user_data=user_data)
    deadline = time.monotonic() + 30
    console = _console(embedded_conn, server)
    while "novamig-script: answer-42" not in console and time.monotonic() < deadline:
        time.sleep(0.5)
        console = _console(embedded_conn, server)
    assert "novamig-script: answer-42" in console, console[-2000:]
    embedded_conn.compute.delete_server(server)
    embedded_conn.compute.wait_for_delete(server, wait=60)
