"""QemuMachine: launch, QMP, agent channel, soft/hard shutdown, launch errors, process cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from novamig.guest.image import GuestImage
from novamig.hypervisor.errors import QemuLaunchError, QmpCommandError
from novamig.hypervisor.machine import FwCfgFile, GuestSpec, MachineState, QemuMachine

from .conftest import MachineFactory, _alive

pytestmark = pytest.mark.qemu


def test_boot_qmp_agent_and_clean_shutdown(machines: MachineFactory) -> None:
    vm = machines("boot")
    assert vm.spec.machine_type and vm.spec.machine_type.startswith("pc-q35-")
    assert vm.spec.accelerator in ("tcg", "kvm")
    assert vm.command("query-status")["status"] == "running"
    assert vm.agent.ping().ok
    assert vm.agent.beats.wait_for(100, 5.0)
    assert "novamig" in vm.console_log()
    with pytest.raises(QmpCommandError, match="no-such-command"):
        vm.command("no-such-command")
    pid, rundir = vm.pid, vm.rundir
    assert pid is not None and _alive(pid)
    vm.shutdown()
    assert vm.state is MachineState.STOPPED
    assert vm.exit_code == 0, "QMP quit should end QEMU normally"
    assert not _alive(pid)
    assert not rundir.exists()
    assert "novamig" in vm.console_log(), "console log must stay readable after shutdown"


def test_hard_shutdown_kills_the_process_group(machines: MachineFactory) -> None:
    vm = machines("hard", ready=False)
    pid = vm.pid
    assert pid is not None
    vm.shutdown(soft=False)
    assert "terminating on signal 15" in vm.qemu_log(), "without soft shutdown QEMU gets SIGTERM"
    assert not _alive(pid)


def test_bad_option_names_the_command_line_and_qemu_complaint(tiny_image: GuestImage, workdir: Path) -> None:
    spec = GuestSpec(name="bad", image=tiny_image, extra_args=("-device", "no-such-device-xyz"))
    vm = QemuMachine(spec, workdir)
    with pytest.raises(QemuLaunchError) as info:
        vm.launch()
    err = info.value
    assert "no-such-device-xyz" in err.command_line
    assert "no-such-device-xyz" in err.qemu_log
    assert "command line:" in str(err)
    assert vm.state is MachineState.FAILED
    assert vm.poll() is not None
    assert not any(workdir.glob("novamig-bad-*")), "run directory of a failed launch must be removed"


def test_machine_started_from_a_short_lived_thread_survives_it(tiny_image: GuestImage, workdir: Path) -> None:
    """PDEATHSIG fires when the forking *thread* exits; the launcher thread avoids that trap."""
    box: list[QemuMachine] = []

    def start() -> None:
        vm = QemuMachine(GuestSpec(name="thread", image=tiny_image, memory_mib=128), workdir)
        box.append(vm)
        vm.launch()

    t = threading.Thread(target=start)
    t.start()
    t.join()
    vm = box[0]
    try:
        time.sleep(0.5)
        assert vm.poll() is None, "QEMU died with the thread that asked for it"
        assert vm.command("query-status")["status"] in ("running", "prelaunch")
    finally:
        vm.shutdown()


def test_qemu_dies_with_the_harness_killed_by_sigkill(tiny_image: GuestImage, workdir: Path) -> None:
    """The harness gets SIGKILL (no cleanup code runs): PDEATHSIG must still take QEMU down."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from novamig.guest.image import GuestImage
        from novamig.hypervisor.machine import GuestSpec, QemuMachine
        img = GuestImage(
            Path({str(tiny_image.kernel)!r}), Path({str(tiny_image.initrd)!r}), {tiny_image.append!r}, "", ""
        )
        spec = GuestSpec(name="orphan", image=img, memory_mib=128, accelerator="tcg")
        vm = QemuMachine(spec, Path({str(workdir)!r}))
        vm.launch()
        print(vm.pid, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        qemu_pid = int(child.stdout.readline())
        assert _alive(qemu_pid)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 5
        while _alive(qemu_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(qemu_pid), "QEMU outlived its SIGKILLed parent"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for d in workdir.glob("novamig-orphan-*"):  # the killed harness could not remove its run dir
            subprocess.run(["rm", "-rf", str(d)], check=False)


def test_fw_cfg_name_rules_and_comma_escape(tmp_path: Path) -> None:
    entry = FwCfgFile("opt/org.novamig/user-data", tmp_path / "a,b")
    assert entry.qemu_arg() == f"name=opt/org.novamig/user-data,file={tmp_path}/a,,b"
    for bad in ("etc/user-data", "opt/a,b", "opt/a b", "opt/" + "x" * 52):
        with pytest.raises(ValueError, match="fw_cfg name"):
            FwCfgFile(bad, tmp_path / "f")


USER_DATA = """#!/bin/sh
echo "fw-cfg-test: ran as user-data, marker $(cat /proc/sys/kernel/random/boot_id | cut -c1-8)"
mkdir -p /run/novamig
echo "novamig.hb_hz=333" > /run/novamig/agent.conf
"""


def test_fw_cfg_user_data_runs_in_the_guest_and_both_ends_of_a_migration_carry_it(
    machines: MachineFactory, tiny_image: GuestImage, workdir: Path
) -> None:
    """The guest's init finds the fw_cfg file and runs it before the agent (which then beats at
    the rate the script set); a live migration to a destination with the same entry completes and
    the guest runs on there."""
    from novamig.hypervisor.migration import migrate
    from novamig.hypervisor.policy import QemuMigrationSettings

    script = workdir / "user-data"
    script.write_text(USER_DATA)
    entry = FwCfgFile("opt/org.novamig/user-data", script)
    src = machines("fwcfg", spec=GuestSpec(name="fwcfg", image=tiny_image, memory_mib=192, fw_cfg=(entry,)))
    assert src.agent.ready is not None and src.agent.ready.fields["hb_hz"] == "333"
    console = src.console_log()
    assert "novamig-init: user-data: running /run/novamig/user-data" in console
    assert "fw-cfg-test: ran as user-data, marker" in console
    assert "novamig-init: user-data: done" in console
    assert ["-fw_cfg", entry.qemu_arg()] == src.argv[
        src.argv.index("-fw_cfg") : src.argv.index("-fw_cfg") + 2
    ]

    dst = machines(spec=src.spec.for_destination())
    assert dst.spec.fw_cfg == (entry,)
    assert entry.qemu_arg() in dst.argv
    result = migrate(src, dst, QemuMigrationSettings(timeout_s=60))
    assert result.status == "completed", result.error
    now = time.monotonic_ns()
    assert dst.agent.beats.wait_after(now, 5.0), "no heartbeat from the destination"
    assert dst.agent.command("info").fields["hb_hz"] == "333"


def test_without_fw_cfg_the_guest_says_so_and_uses_its_command_line(machines: MachineFactory) -> None:
    vm = machines("nofwcfg")
    assert "-fw_cfg" not in vm.argv
    assert "novamig-init: user-data: none" in vm.console_log()
    assert vm.agent.ready is not None and vm.agent.ready.fields["hb_hz"] == "1000"
