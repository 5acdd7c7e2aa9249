from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from novamig.cloud import conf_backup
from novamig.cloud.host_policy import NoHostPolicy, SshHostPolicy, applied, libvirt_options, set_ini_options
from novamig.runner.orphans import Swept, restore_ssh_backups


def test_policy_maps_to_libvirt_options_and_host_policy_wins() -> None:
    policy = {
        "downtime_limit_ms": 300,
        "bandwidth_mib_s": 0,
        "auto_converge": True,
        "post_copy_after_s": 5,
        "abort_after_s": None,
        "timeout_s": 600,
    }
    assert libvirt_options(policy, {}) == {
        "live_migration_downtime": 300,
        "live_migration_bandwidth": 0,
        "live_migration_permit_auto_converge": True,
        "live_migration_permit_post_copy": True,
    }
    assert libvirt_options(policy, {"live_migration_downtime": 1000})["live_migration_downtime"] == 1000
    # defaults leave the hosts alone, so a plain scenario needs no host access at all
    assert (
        libvirt_options({"downtime_limit_ms": None, "auto_converge": False, "post_copy_after_s": None}, {})
        == {}
    )


NOVA_CPU_CONF = """[DEFAULT]
debug = True

[libvirt]
# DevStack's comment stays
live_migration_uri = qemu+ssh://stack@%s/system
live_migration_downtime = 500
cpu_mode = none

[workarounds]
x = 1
"""


def test_ini_edit_changes_only_the_options() -> None:
    out = set_ini_options(
        NOVA_CPU_CONF, "libvirt", {"live_migration_downtime": 300, "live_migration_permit_post_copy": True}
    )
    assert "live_migration_downtime = 300\n" in out
    assert "live_migration_downtime = 500" not in out
    assert "# DevStack's comment stays" in out
    section = out.split("[libvirt]")[1].split("[workarounds]")[0]
    assert "live_migration_permit_post_copy = True" in section
    assert out.endswith("[workarounds]\nx = 1\n")
    # idempotent, and a missing section is appended
    assert set_ini_options(out, "libvirt", {"live_migration_downtime": 300}) == out
    assert set_ini_options("[DEFAULT]\n", "libvirt", {"a": 1}).endswith("[libvirt]\na = 1\n")


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail_on = fail_on

    def apply(self, host: str, options: object) -> None:
        self.calls.append(f"apply {host}")
        if host == self.fail_on:
            raise RuntimeError("ssh failed")

    def restore(self, host: str) -> None:
        self.calls.append(f"restore {host}")


def test_applied_restores_every_touched_host_on_failure() -> None:
    rec = Recorder()
    with pytest.raises(ZeroDivisionError), applied(rec, ["a", "b"], {"x": 1}):
        1 / 0  # noqa: B018
    assert rec.calls == ["apply a", "apply b", "restore b", "restore a"]
    rec = Recorder(fail_on="b")
    with pytest.raises(RuntimeError), applied(rec, ["a", "b", "c"], {"x": 1}):
        pass
    assert rec.calls == ["apply a", "apply b", "restore b", "restore a"]


def test_empty_policy_touches_nothing_and_no_host_policy_refuses() -> None:
    with applied(NoHostPolicy("no ssh"), ["a"], {}):
        pass
    with pytest.raises(RuntimeError, match="no ssh"), applied(NoHostPolicy("no ssh"), ["a"], {"x": 1}):
        pass


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`ssh` is a local stand-in that runs the remote command here, on a copy of nova-cpu.conf
    (tmp_path/nova-cpu.conf); every remote command and restart is logged to tmp_path/ssh.log."""
    conf = tmp_path / "nova-cpu.conf"
    conf.write_text(NOVA_CPU_CONF)
    log = tmp_path / "ssh.log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in {
        # ssh -o X -o Y TARGET COMMAND: log "TARGET COMMAND", run COMMAND here
        "ssh": f'#!/bin/sh\nshift 4\necho "$1 $2" >> {log}\nshift\nexec sh -c "$*"\n',
        "sudo": '#!/bin/sh\nexec "$@"\n',
        "systemctl": f'#!/bin/sh\necho "systemctl $*" >> {log}\n',
    }.items():
        (bindir / name).write_text(body)
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr("novamig.cloud.host_policy.time.sleep", lambda s: None)
    return tmp_path


def _policy(conf: Path, waited: list[str] | None = None) -> SshHostPolicy:
    return SshHostPolicy(
        targets={"compute1": "stack@192.0.2.10"},
        wait_up=lambda host, timeout: None if waited is None else waited.append(host),
        conf_path=str(conf),
    )


def test_ssh_host_policy_edits_restarts_waits_and_restores(stand_in: Path) -> None:
    conf, log = stand_in / "nova-cpu.conf", stand_in / "ssh.log"
    waited: list[str] = []
    policy = _policy(conf, waited)
    with applied(policy, ["compute1"], {"live_migration_downtime": 300, "max_concurrent_live_migrations": 2}):
        text = conf.read_text()
        assert "live_migration_downtime = 300" in text
        assert text.startswith("[DEFAULT]\ndebug = True\nmax_concurrent_live_migrations = 2\n\n[libvirt]\n")
        # the original waits beside the file, with its owner, until it is put back
        assert Path(conf_backup.backup_of(str(conf))).read_text() == NOVA_CPU_CONF
        assert Path(conf_backup.owner_of(str(conf))).read_text().strip() == conf_backup.this_owner()
    assert conf.read_text() == NOVA_CPU_CONF
    assert sorted(p.name for p in stand_in.glob("nova-cpu.conf*")) == ["nova-cpu.conf"]
    assert waited == ["compute1", "compute1"]
    lines = log.read_text().splitlines()
    assert lines.count("systemctl restart devstack@n-cpu.service") == 2  # the restarts really ran
    remote = [line for line in lines if not line.startswith("systemctl ")]
    assert len(remote) == 5  # apply: back up and read, write, restart; restore: move back, restart
    assert all(line.startswith("stack@192.0.2.10 sudo ") for line in remote)
    with pytest.raises(RuntimeError, match="no SSH target for compute host 'compute9'"):
        policy.apply("compute9", {"a": 1})


APPLY_AND_DIE = """
import os, signal, sys
from novamig.cloud import conf_backup
from novamig.cloud.host_policy import SshHostPolicy
import novamig.cloud.host_policy as hp
hp.time.sleep = lambda s: None
targets = {"compute1": "stack@192.0.2.10"}
policy = SshHostPolicy(targets=targets, wait_up=lambda h, t: None, conf_path=sys.argv[1])
policy.apply("compute1", {"live_migration_downtime": 42})
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_run_s_nova_cpu_conf_is_restored_by_cleanup(stand_in: Path) -> None:
    """A real run process applies the policy over the stand-in and is SIGKILLed before restoring."""
    conf, log = stand_in / "nova-cpu.conf", stand_in / "ssh.log"
    proc = subprocess.run(
        [sys.executable, "-c", APPLY_AND_DIE, str(conf)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "live_migration_downtime = 42" in conf.read_text()
    waited: list[str] = []
    policy = _policy(conf, waited)
    (leftover,) = [lo for _, lo in policy.leftovers()]
    assert leftover.where == f"compute1:{conf}" and conf_backup.owner_gone(leftover.owner)

    out = io.StringIO()
    assert restore_ssh_backups(policy, False, out) == Swept(1, [])  # dry run: listed, not touched
    assert "live_migration_downtime = 42" in conf.read_text() and "dry run" in out.getvalue()
    restarts = log.read_text().splitlines().count("systemctl restart devstack@n-cpu.service")
    assert restore_ssh_backups(policy, True, out) == Swept(1, [])
    assert conf.read_text() == NOVA_CPU_CONF
    assert sorted(p.name for p in stand_in.glob("nova-cpu.conf*")) == ["nova-cpu.conf"]
    assert log.read_text().splitlines().count("systemctl restart devstack@n-cpu.service") == restarts + 1
    assert waited == ["compute1"]
    assert policy.leftovers() == []


def test_a_new_run_takes_a_dead_run_s_backup_and_a_live_one_is_kept(stand_in: Path) -> None:
    conf = stand_in / "nova-cpu.conf"
    proc = subprocess.run([sys.executable, "-c", APPLY_AND_DIE, str(conf)], capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL
    policy = _policy(conf)
    with applied(policy, ["compute1"], {"live_migration_bandwidth": 7}):
        text = conf.read_text()
        assert "live_migration_bandwidth = 7" in text and "live_migration_downtime = 500" in text
        out = io.StringIO()
        assert restore_ssh_backups(_policy(conf), True, out) == Swept(0, [])  # this run still goes
        assert "its run is still going, kept" in out.getvalue()
    assert conf.read_text() == NOVA_CPU_CONF
