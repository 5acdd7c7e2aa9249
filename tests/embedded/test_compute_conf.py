"""The libvirt mode's per-compute ``nova-cpu.conf`` path (fast): the file a compute starts with and
how it is read; novamig's DevStack host-policy code editing it through the local transport (the
commands run with ``nsenter`` into a host's namespaces — here this test's own) and waiting for the
compute's reload; a killed run's change put back by ``novamig cleanup``, which reloads the compute.

The cloud process is a stand-in here (a small process that answers SIGHUP the way the libvirt
driver does: parse the file with the same code, acknowledge it); the real one is exercised by the
libvirt mode's slow test."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from novamig.cloud import conf_backup
from novamig.cloud.host_policy import LocalConfHostPolicy, applied
from novamig.embedded import compute_conf
from novamig.embedded.host_policy import LiveMigrationOptions
from novamig.hypervisor.libvirt_hosts import LibvirtHost
from novamig.runner.orphans import find_orphans, remove_orphans

URI = "qemu+unix:///system?socket=/x/libvirt-sock"

# What the libvirt driver does on SIGHUP (`libvirt_compute.NovamigLibvirtDriver.load_conf`), minus
# Nova: parse each compute's file, acknowledge it or the refusal. Its command line names the work
# directory and it writes cloud.pid, so `compute_conf.reload` takes it for the cloud process.
CLOUD_STAND_IN = """
import signal, sys, threading
from pathlib import Path
from novamig.embedded import compute_conf
workdir = Path(sys.argv[1])
def load(*_):
    for path in sorted(compute_conf.conf_dir(workdir).glob("nova-cpu-*.conf")):
        text = path.read_text()
        try:
            compute_conf.parse(text)
        except ValueError as exc:
            compute_conf.acknowledge(path, text, error=str(exc))
        else:
            compute_conf.acknowledge(path, text)
signal.signal(signal.SIGHUP, load)
(workdir / "cloud.pid").write_text(f"{__import__('os').getpid()}\\n")
threading.Event().wait()
"""


def test_a_compute_starts_with_novas_defaults_and_reads_what_nova_reads() -> None:
    text = compute_conf.render("compute1", URI, LiveMigrationOptions())
    assert "[DEFAULT]\nhost = compute1\nmax_concurrent_live_migrations = 1\n" in text
    assert f"[libvirt]\nconnection_uri = {URI}\nlive_migration_downtime = 500\n" in text
    assert compute_conf.parse(text) == LiveMigrationOptions()
    edited = text.replace("live_migration_permit_post_copy = False", "live_migration_permit_post_copy = yes")
    edited += "live_migration_scheme = tcp\n"  # a [libvirt] option novamig does not vary: ignored
    assert compute_conf.parse(edited).live_migration_permit_post_copy is True
    # An option the file leaves out takes Nova's default, as nova.conf's would.
    assert compute_conf.parse("[libvirt]\nlive_migration_bandwidth = 64\n") == LiveMigrationOptions(
        live_migration_bandwidth=64
    )
    for bad, why in (
        ("live_migration_downtime_steps = 2", ">= 3"),
        ("live_migration_permit_post_copy = maybe", "not a boolean"),
        ("live_migration_downtime = fast", "not an integer"),
    ):
        with pytest.raises(ValueError, match=why):
            compute_conf.parse(f"[libvirt]\n{bad}\n")


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Path]:
    """A work directory (named as a run's own cloud's) with compute1's file and the stand-in
    cloud process answering reloads."""
    if os.geteuid() != 0:
        pytest.skip("the local transport enters a host's namespaces with nsenter: needs root")
    workdir = tmp_path / "novamig-embedded-t"
    path = compute_conf.conf_path(workdir, "compute1")
    path.parent.mkdir(parents=True)
    path.write_text(compute_conf.render("compute1", URI, LiveMigrationOptions()))
    proc = subprocess.Popen([sys.executable, "-c", CLOUD_STAND_IN, str(workdir)])
    try:
        deadline = time.monotonic() + 30
        while not (workdir / "cloud.pid").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.05)
        yield workdir
    finally:
        proc.kill()
        proc.wait()


def _policy(workdir: Path, reloads: list[str]) -> LocalConfHostPolicy:
    # The host's "namespaces" are this process's own: nsenter into them runs the command here.
    host = LibvirtHost("compute1", "10.88.0.1", "unused", workdir, libvirtd_pid=os.getpid())

    def reload(name: str) -> None:
        reloads.append(name)
        compute_conf.reload(workdir, name, timeout_s=30)

    return LocalConfHostPolicy({"compute1": host}, functools.partial(compute_conf.conf_path, workdir), reload)


def test_the_devstack_commands_edit_a_computes_file_and_wait_for_its_reload(cloud: Path) -> None:
    path = compute_conf.conf_path(cloud, "compute1")
    original = path.read_text()
    reloads: list[str] = []
    options = {"live_migration_permit_post_copy": True, "max_concurrent_live_migrations": 2}
    with applied(_policy(cloud, reloads), ["compute1"], options):
        text = path.read_text()
        assert compute_conf.parse(text) == LiveMigrationOptions(
            live_migration_permit_post_copy=True, max_concurrent_live_migrations=2
        )
        assert text.count("live_migration_permit_post_copy") == 1  # edited in place, comment kept
        assert text.startswith("# nova-cpu.conf of compute1")
        # The compute loaded this text (its acknowledgement), and the original waits beside it.
        assert compute_conf.loaded_path(path).read_text().strip() == compute_conf.digest(text)
        assert Path(conf_backup.backup_of(str(path))).read_text() == original
    assert path.read_text() == original
    assert compute_conf.loaded_path(path).read_text().strip() == compute_conf.digest(original)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, f"{path.name}.loaded"]
    assert reloads == ["compute1", "compute1"]  # after the edit and after the restore


def test_a_refused_file_fails_the_reload_with_the_computes_reason(cloud: Path) -> None:
    path = compute_conf.conf_path(cloud, "compute1")
    path.write_text(
        path.read_text().replace("live_migration_downtime_steps = 10", "live_migration_downtime_steps = 1")
    )
    with pytest.raises(compute_conf.ComputeConfError, match=r"compute1 refused .* must be >= 3"):
        compute_conf.reload(cloud, "compute1", timeout_s=30)


APPLY_AND_DIE = """
import functools, os, signal, sys
from pathlib import Path
from novamig.cloud.host_policy import LocalConfHostPolicy
from novamig.embedded import compute_conf
from novamig.hypervisor.libvirt_hosts import LibvirtHost
workdir = Path(sys.argv[1])
host = LibvirtHost("compute1", "10.88.0.1", "unused", workdir, libvirtd_pid=os.getpid())
policy = LocalConfHostPolicy({"compute1": host}, functools.partial(compute_conf.conf_path, workdir),
                             functools.partial(compute_conf.reload, workdir))
policy.apply("compute1", {"live_migration_downtime": 42})
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_change_is_put_back_and_reloaded_by_cleanup(cloud: Path) -> None:
    path = compute_conf.conf_path(cloud, "compute1")
    original = path.read_text()
    argv = [sys.executable, "-c", APPLY_AND_DIE, str(cloud)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert compute_conf.parse(path.read_text()).live_migration_downtime == 42
    found = [o for o in find_orphans(cloud.parent) if o.kind == "host policy"]
    assert [o.name for o in found] == [str(path)]
    assert remove_orphans(found) == []
    assert path.read_text() == original
    # The compute runs with the original again: cleanup asked it to reload.
    assert compute_conf.loaded_path(path).read_text().strip() == compute_conf.digest(original)
