"""Ctrl-C in `pytest --novamig-scenario`: the run stops, cleans up and exits as pytest does.

A real pytest in its own process group, running a scenario on its own embedded cloud; when a
migration is under way (its destination QEMU is up), the whole group gets SIGINT, as a terminal's
Ctrl-C sends it. Every process the run started (found by a marker in their environment: the
embedded cloud's service and its QEMU guests) must end, every network namespace it created must be
removed, and pytest must exit with its own "interrupted" status (2).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

# One server, migrations every 3 s for long enough that SIGINT lands mid-case.
LONG = """\
name: long
fleet: {count: 1, flavor: {vcpus: 1, ram_mb: 256, disk_gb: 1}, image: novamig-tiny}
workload: {kind: idle}
migration: {count: 20, concurrency: 1, target: auto, interval_s: 3, policy: {timeout_s: 120}}
measure: {probes: [hypervisor], noise_floor_s: 0}
sla:
  downtime_ms: {probe: hypervisor}
  duration_s: {max: 120}
  migrations_completed_ratio: 1.0
"""


def _marked(marker: bytes) -> dict[int, list[bytes]]:
    """PID → argv of every process whose environment carries `marker`."""
    found: dict[int, list[bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
    return found


def _netns() -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith("novamig")}
    except FileNotFoundError:
        return set()


def _poll(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.qemu
def test_ctrl_c_mid_migration_cleans_up_and_exits_interrupted(tmp_path: Path, tiny_image: object) -> None:
    (tmp_path / "long.yaml").write_text(LONG)
    key, value = "NOVAMIG_INTERRUPT_TEST", uuid.uuid4().hex
    marker = f"{key}={value}"
    env = {k: v for k, v in os.environ.items() if k not in ("OS_CLOUD", "PYTEST_ADDOPTS")}
    env[key] = value
    netns_before = _netns()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--novamig-scenario", "long.yaml",
         "--novamig-out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    started: dict[int, list[bytes]] = {}
    try:

        def migrating() -> bool:
            started.update(_marked(marker.encode()))
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            return any(b"-incoming" in argv for argv in started.values())

        _poll(migrating, 300.0, "a migration to start (a destination QEMU)")
        new_netns = _netns() - netns_before
        assert new_netns, "the embedded cloud runs its guests in a namespace of its own"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        output = proc.communicate(timeout=180)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "stopped by SIGINT" in output, output
    qemu = {pid for pid, argv in started.items() if b"qemu-system" in argv[0]}
    assert qemu, started
    _poll(lambda: not _marked(marker.encode()), 30.0, "every process of the run to end")
    assert not (new_netns & _netns()), f"namespaces left behind: {new_netns & _netns()}"
