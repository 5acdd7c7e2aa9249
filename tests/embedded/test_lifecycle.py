"""``novamig cloud up|status|down`` and start-up failures: what runs, what is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from novamig import process_state
from novamig.embedded import processes
from novamig.embedded.controller import CloudStartError, EmbeddedCloud


def _cloud_cmd(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `novamig cloud ACTION` the way the CLI does (its own process, returning to the shell)."""
    code = f"import sys; from novamig.embedded.commands import cmd_cloud; sys.exit(cmd_cloud({action!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


@pytest.mark.qemu
def test_up_status_down_leave_nothing_behind(tmp_path: Path) -> None:
    workdir = tmp_path / "state" / "cloud"
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        yaml.safe_dump({"clouds": {"devstack": {"auth": {"auth_url": "http://192.0.2.1/identity"}}}})
    )
    env = {**os.environ, "NOVAMIG_EMBEDDED_DIR": str(workdir), "OS_CLIENT_CONFIG_FILE": str(clouds)}

    up = _cloud_cmd("up", env)
    assert up.returncode == 0, up.stderr
    assert "novamig-embedded: ready in" in up.stdout
    ready = json.loads((workdir / "ready.json").read_text())
    cloud_pid, keystone_pid = ready["pid"], ready["keystone_pid"]
    assert process_state.alive(cloud_pid) and process_state.alive(keystone_pid)  # outlived `up`
    assert os.getpgid(cloud_pid) == cloud_pid  # its own process group
    passwords = json.loads((workdir / "secrets.json").read_text()).values()
    for password in passwords:
        assert password not in up.stdout + up.stderr
        for log in (workdir / "logs").iterdir():
            assert password not in log.read_text(errors="replace"), f"a password in {log.name}"

    entries = yaml.safe_load(clouds.read_text())["clouds"]
    assert {"devstack", "novamig-embedded", "novamig-embedded-member"} <= set(entries)
    # A user's program: find the cloud by name, boot a server from the tiny image.
    check = (
        "import openstack; c = openstack.connect(cloud='novamig-embedded'); "
        "img = c.image.find_image('novamig-tiny', ignore_missing=False); "
        "fl = c.compute.find_flavor('m1.nano', ignore_missing=False); "
        "s = c.compute.create_server(name='cli', image_id=img.id, flavor_id=fl.id, networks='auto'); "
        "s = c.compute.wait_for_server(s, wait=240); print(s.status, len(list(c.compute.services())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ACTIVE 4"
    guest_pids = [int(p.read_text()) for p in (workdir / "guests").glob("*/*.pid")]
    assert len(guest_pids) == 1 and process_state.alive(guest_pids[0])
    own_netns = json.loads((workdir / "netns.json").read_text())[0] if os.geteuid() == 0 else None
    assert own_netns is None or own_netns in _netns()

    status = _cloud_cmd("status", env)
    assert status.returncode == 0
    assert f"running, pid {cloud_pid}" in status.stdout
    assert "Stand-ins:" in status.stdout and "  image: Glance v2 subset" in status.stdout

    again = _cloud_cmd("up", env)
    assert again.returncode == 3
    assert "already running" in again.stderr

    down = _cloud_cmd("down", env)
    assert down.returncode == 0, down.stderr
    assert not process_state.alive(cloud_pid)
    assert not process_state.alive(keystone_pid)
    assert processes.group_members(cloud_pid) == []
    assert not process_state.alive(guest_pids[0])
    assert not workdir.exists()
    # Only this cloud's namespaces: other test runs on the machine may hold their own meanwhile.
    # The hypervisor layer names a namespace after the process that made it (the cloud process).
    assert own_netns not in _netns()
    assert not [n for n in _netns() if n.startswith(f"novamig-{cloud_pid}-")]
    assert set(yaml.safe_load(clouds.read_text())["clouds"]) == {"devstack"}
    assert "not running" in _cloud_cmd("status", env).stdout


def test_a_failing_service_is_named_and_its_log_kept(tmp_path: Path) -> None:
    cloud = EmbeddedCloud(tmp_path / "cloud", driver="no_such_module.NoDriver")
    with pytest.raises(CloudStartError) as info:
        cloud.start()
    err = info.value
    assert err.service == "nova-compute@compute1"
    assert err.log is not None and err.log.exists()
    assert "no_such_module" in err.log.read_text()
    ready_pid = int((tmp_path / "cloud" / "cloud.pid").read_text())
    assert not process_state.alive(ready_pid)
    assert processes.group_members(ready_pid) == []
    cloud.stop()
    assert not (tmp_path / "cloud").exists()


def test_stop_after_the_cloud_process_was_killed_still_ends_keystone(tmp_path: Path) -> None:
    """SIGKILL of the cloud process: Keystone goes with it (PDEATHSIG), stop() cleans the rest."""
    cloud = EmbeddedCloud(tmp_path / "cloud", driver="fake.FakeDriver")  # no guests needed here
    ready = cloud.start()
    os.kill(ready["pid"], 9)
    deadline_ok = False
    for _ in range(100):
        if not process_state.alive(ready["keystone_pid"]):
            deadline_ok = True
            break
        time.sleep(0.05)
    assert deadline_ok, "keystone outlived the cloud process"
    cloud.stop()
    assert not (tmp_path / "cloud").exists()
