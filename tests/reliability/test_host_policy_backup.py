"""A run killed while a host policy is applied: `novamig cleanup` puts the embedded cloud's policy back.

The run is a real process that applies a policy through the runner's applier on an embedded cloud's
work directory (its ``policies/<host>.json``, which the cloud's driver reads at each migration) and
is then SIGKILLed: nothing of it restores anything. What it leaves must be a backup beside the file,
which `find_orphans` lists and `remove_orphans` moves back, while a live run's backup is kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from novamig.cloud import conf_backup
from novamig.cloud.host_policy import EmbeddedHostPolicy
from novamig.embedded import host_policy
from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import CloudLayout, Ports
from novamig.runner.orphans import find_orphans, remove_orphans

APPLY_AND_DIE = """
import functools, os, signal, sys
from pathlib import Path
from novamig.cloud.host_policy import EmbeddedHostPolicy
from novamig.embedded import host_policy
from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import CloudLayout, Ports
workdir = Path(sys.argv[1])
cloud = EmbeddedCloud(workdir)
ports = Ports(5000, 5001, 5002, 5003, 5004)
cloud.layout = CloudLayout(workdir=workdir, cloud_name="novamig-embedded", ports=ports)
applier = EmbeddedHostPolicy(cloud, policy_file=functools.partial(host_policy.path, workdir))
applier.apply("compute1", {"live_migration_permit_post_copy": True, "live_migration_downtime": 42})
os.kill(os.getpid(), signal.SIGKILL)
"""


def _cloud(workdir: Path) -> EmbeddedCloud:
    cloud = EmbeddedCloud(workdir)
    cloud.layout = CloudLayout(
        workdir=workdir, cloud_name="novamig-embedded", ports=Ports(5000, 5001, 5002, 5003, 5004)
    )
    return cloud


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A live embedded cloud's work directory as cleanup sees it (the default one, `cloud up`'s),
    holding a policy of its own (set when it was started) that a case changes."""
    path = tmp_path / "state" / "novamig-embedded"
    path.mkdir(parents=True)
    monkeypatch.setenv("NOVAMIG_EMBEDDED_DIR", str(path))
    host_policy.write(path, "compute1", {"live_migration_downtime": 300})
    return path


def _policy_orphans(tmp: Path) -> list[str]:
    return [o.name for o in find_orphans(tmp) if o.kind == "host policy"]


def test_killed_run_s_policy_is_put_back_by_cleanup(tmp_path: Path, workdir: Path) -> None:
    before = (host_policy.path(workdir, "compute1")).read_text()
    proc = subprocess.run(
        [sys.executable, "-c", APPLY_AND_DIE, str(workdir)], capture_output=True, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    changed = host_policy.read(workdir, "compute1")
    assert changed.live_migration_downtime == 42 and changed.live_migration_permit_post_copy
    policy_file = str(host_policy.path(workdir, "compute1"))
    assert _policy_orphans(tmp_path) == [policy_file]

    found = [o for o in find_orphans(tmp_path) if o.kind == "host policy"]
    assert remove_orphans(found) == []
    restored = host_policy.read(workdir, "compute1")
    assert restored.live_migration_downtime == 300 and not restored.live_migration_permit_post_copy
    assert json.loads(host_policy.path(workdir, "compute1").read_text()) == json.loads(before)
    assert sorted(p.name for p in host_policy.path(workdir, "compute1").parent.iterdir()) == ["compute1.json"]
    assert _policy_orphans(tmp_path) == []


def test_a_live_run_s_backup_is_kept_and_its_own_restore_removes_it(tmp_path: Path, workdir: Path) -> None:
    applier = EmbeddedHostPolicy(_cloud(workdir), policy_file=lambda host: host_policy.path(workdir, host))
    applier.apply("compute1", {"live_migration_downtime": 42})
    applier.apply("compute1", {"live_migration_bandwidth": 7})  # a second change keeps the first original
    backup = Path(conf_backup.backup_of(str(host_policy.path(workdir, "compute1"))))
    assert json.loads(backup.read_text())["live_migration_downtime"] == 300
    assert _policy_orphans(tmp_path) == []  # its owner (this process) still runs
    applier.restore("compute1")
    assert host_policy.read(workdir, "compute1").live_migration_downtime == 300
    assert host_policy.read(workdir, "compute1").live_migration_bandwidth == 0
    assert not backup.exists()


def test_a_new_run_takes_a_dead_run_s_backup_as_the_original(tmp_path: Path, workdir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", APPLY_AND_DIE, str(workdir)], capture_output=True, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    applier = EmbeddedHostPolicy(_cloud(workdir), policy_file=lambda host: host_policy.path(workdir, host))
    applier.apply("compute1", {"live_migration_bandwidth": 7})
    during = host_policy.read(workdir, "compute1")
    # the dead run's change is not taken for the host's own setting
    assert during.live_migration_downtime == 300 and not during.live_migration_permit_post_copy
    owner = Path(conf_backup.owner_of(str(host_policy.path(workdir, "compute1")))).read_text().strip()
    assert owner == conf_backup.this_owner()
    applier.restore("compute1")
    assert host_policy.read(workdir, "compute1").live_migration_bandwidth == 0
    assert _policy_orphans(tmp_path) == []


def test_owner_judgement() -> None:
    assert conf_backup.owner_gone(None) and conf_backup.owner_gone("garbage")
    assert not conf_backup.owner_gone(conf_backup.this_owner())
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert conf_backup.owner_gone(f"{os.uname().nodename} {dead.pid}")
    assert not conf_backup.owner_gone(f"another-machine.example {dead.pid}")  # cannot tell: kept
