"""Fast tests of the embedded cloud's pieces that need no cloud: clouds.yaml, policies, image API."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from novamig.cloud.host_policy import EmbeddedHostPolicy
from novamig.embedded import clouds_yaml, config, host_policy
from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import TINY_IMAGE_ID, CloudLayout, Ports, Secrets
from novamig.embedded.service.downtime_ramp import DowntimeRamp, downtime_steps, live_migration_data_gb
from novamig.embedded.service.image_api import ImageApi, to_v2
from novamig.embedded.service.migration_monitor import migration_policy
from novamig.embedded.service.network_api import NetworkApi
from novamig.embedded.service.stand_ins import tiny_image_meta


def layout(tmp_path: Path) -> CloudLayout:
    return CloudLayout(
        workdir=tmp_path, cloud_name="novamig-embedded", ports=Ports(5000, 5001, 5002, 5003, 5004)
    )


def test_layout_round_trips_and_keeps_secrets_apart(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    secret = Secrets.generate()
    lay.save(secret)
    assert CloudLayout.load(tmp_path) == lay
    assert lay.load_secrets() == secret
    assert secret.admin_password not in (tmp_path / "cloud.json").read_text()
    assert stat.S_IMODE(lay.secrets_file.stat().st_mode) == 0o600


def test_nova_api_is_configured_behind_keystone(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    paths = config.write_all(lay, Secrets.generate())
    text = paths["nova"].read_text()
    assert "auth_strategy = keystone" in text
    assert "[keystone_authtoken]" in text
    assert stat.S_IMODE(paths["nova"].stat().st_mode) == 0o600
    assert "instances = -1" in text


def test_clouds_yaml_merge_keeps_other_entries_and_remove_takes_only_ours(tmp_path: Path) -> None:
    target = tmp_path / "clouds.yaml"
    target.write_text(yaml.safe_dump({"clouds": {"devstack": {"auth": {"auth_url": "http://x"}}}}))
    lay = layout(tmp_path)
    clouds_yaml.merge_into(target, lay, Secrets.generate())
    data = yaml.safe_load(target.read_text())
    assert set(data["clouds"]) == {"devstack", "novamig-embedded", "novamig-embedded-member"}
    assert data["clouds"]["novamig-embedded"]["auth"]["auth_url"] == lay.keystone_url
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    removed = clouds_yaml.remove_from(target, lay)
    assert sorted(removed) == ["novamig-embedded", "novamig-embedded-member"]
    assert set(yaml.safe_load(target.read_text())["clouds"]) == {"devstack"}


def test_clouds_yaml_remove_leaves_an_entry_of_another_cloud_with_our_name(tmp_path: Path) -> None:
    target = tmp_path / "clouds.yaml"
    ours, other = layout(tmp_path / "a"), layout(tmp_path / "b")
    clouds_yaml.merge_into(target, other, Secrets.generate())
    assert clouds_yaml.remove_from(target, ours) == []
    assert "novamig-embedded" in yaml.safe_load(target.read_text())["clouds"]


def test_host_policy_defaults_are_novas_and_unknown_options_are_refused(tmp_path: Path) -> None:
    assert host_policy.read(tmp_path, "compute1").live_migration_downtime == 500
    host_policy.write(tmp_path, "compute1", {"live_migration_bandwidth": 8})
    assert host_policy.read(tmp_path, "compute1").live_migration_bandwidth == 8
    assert host_policy.read(tmp_path, "compute2").live_migration_bandwidth == 0
    with pytest.raises(ValueError, match="live_migration_downtme"):
        host_policy.write(tmp_path, "compute1", {"live_migration_downtme": 100})
    with pytest.raises(ValueError, match="timeout_action"):
        host_policy.write(tmp_path, "compute1", {"live_migration_timeout_action": "explode"})


def test_the_runner_s_host_policy_applier_restores_the_policy_in_force_before(tmp_path: Path) -> None:
    """cloud.host_policy.EmbeddedHostPolicy reaches the policy files through EmbeddedCloud's
    get/set_host_policy (the cloud package never imports the embedded one)."""
    cloud = EmbeddedCloud(tmp_path)
    cloud.layout = layout(tmp_path)  # a cloud's files without its processes: policies need no more
    host_policy.write(tmp_path, "compute1", {"live_migration_downtime": 300})
    before = cloud.get_host_policy("compute1")
    assert before["live_migration_downtime"] == 300
    assert before["live_migration_permit_post_copy"] is False

    applier = EmbeddedHostPolicy(cloud)
    applier.apply("compute1", {"live_migration_permit_post_copy": True})
    during = host_policy.read(tmp_path, "compute1")
    assert during.live_migration_permit_post_copy is True
    assert during.live_migration_downtime == 300  # the rest of the policy in force is kept

    applier.restore("compute1")
    assert cloud.get_host_policy("compute1") == before
    with pytest.raises(ValueError, match="unknown compute host"):
        cloud.get_host_policy("compute9")


def test_migration_policy_follows_libvirt_rules() -> None:
    both = host_policy.LiveMigrationOptions(
        live_migration_permit_post_copy=True, live_migration_permit_auto_converge=True
    )
    policy = migration_policy(both)
    assert policy.allow_post_copy and not policy.auto_converge  # libvirt prefers post-copy
    policy = migration_policy(
        host_policy.LiveMigrationOptions(live_migration_downtime=123, live_migration_bandwidth=5)
    )
    assert policy.downtime_limit_ms == 123
    assert policy.max_bandwidth_bytes_s == 5 * 1024 * 1024


class _Store:
    def __init__(self) -> None:
        self.images = {TINY_IMAGE_ID: tiny_image_meta()}


def _get(app: Any, path: str, query: str = "") -> tuple[str, Any]:
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    environ = {
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REQUEST_METHOD": "GET",
        "HTTP_ACCEPT": "application/json",
    }
    body = b"".join(app(environ, start_response))
    return seen["status"], json.loads(body)


def test_image_api_finds_by_name_and_id_and_flattens_properties() -> None:
    app = ImageApi(_Store(), "http://127.0.0.1:1")
    status, body = _get(app, "/v2/images", "name=novamig-tiny")
    assert status.startswith("200")
    assert [i["id"] for i in body["images"]] == [TINY_IMAGE_ID]
    assert body["images"][0]["novamig_guest"] == "tiny"
    assert _get(app, "/v2/images", "name=other")[1]["images"] == []
    assert _get(app, f"/v2/images/{TINY_IMAGE_ID}")[1]["name"] == "novamig-tiny"
    assert _get(app, "/v2/images/nope")[0].startswith("404")


def test_to_v2_visibility() -> None:
    meta = dict(tiny_image_meta(), visibility=None, is_public=False)
    del meta["visibility"]
    assert to_v2(meta)["visibility"] == "private"


class _Neutron:
    def __init__(self) -> None:
        self._networks = {"n1": {"id": "n1", "name": "novamig-net", "shared": True}}
        self._subnets = {"s1": {"id": "s1", "network_id": "n1", "cidr": "192.168.1.0/24"}}
        self._ports = {
            "p1": {"id": "p1", "device_id": "vm1", "network_id": "n1"},
            "p2": {"id": "p2", "device_id": "vm2", "network_id": "n1"},
        }
        self._port_bindings = {"p1": {"compute2": {"status": "ACTIVE"}, "compute1": {"status": "INACTIVE"}}}

    def list_extensions(self) -> dict[str, Any]:
        return {"extensions": []}


def test_network_api_filters_like_neutron_and_shows_the_active_binding() -> None:
    app: Any = NetworkApi(_Neutron(), "http://127.0.0.1:1")
    assert [n["id"] for n in _get(app, "/v2.0/networks", "name=novamig-net")[1]["networks"]] == ["n1"]
    assert _get(app, "/v2.0/networks", "shared=true")[1]["networks"][0]["id"] == "n1"
    assert _get(app, "/v2.0/networks", "shared=false")[1]["networks"] == []
    ports = _get(app, "/v2.0/ports", "device_id=vm1&device_id=vm2")[1]["ports"]
    assert sorted(p["id"] for p in ports) == ["p1", "p2"]
    port = _get(app, "/v2.0/ports/p1")[1]["port"]
    assert port["binding:host_id"] == "compute2"
    assert _get(app, "/v2.0/ports/nope")[0].startswith("404")


_NOVA_STEPS = """
import json, sys, warnings
warnings.simplefilter("ignore")
import nova.conf
from nova.virt.libvirt import migration
CONF = nova.conf.CONF
CONF([], project="nova", default_config_files=[])
out = []
for downtime, steps, delay, data_gb in json.loads(sys.argv[1]):
    CONF.set_override("live_migration_downtime", downtime, group="libvirt")
    CONF.set_override("live_migration_downtime_steps", steps, group="libvirt")
    CONF.set_override("live_migration_downtime_delay", delay, group="libvirt")
    out.append([list(s) for s in migration.downtime_steps(data_gb)])
print(json.dumps(out))
"""


def test_downtime_steps_are_novas() -> None:
    """The ramp equals nova.virt.libvirt.migration.downtime_steps (run in its own process: Nova's
    global configuration must not leak into this one)."""
    cases = [(500, 10, 75, 2.0), (400, 10, 30, 3.0), (1500, 3, 3, 2.0), (100, 3, 3, 2.0), (777, 7, 11, 2.5)]
    out = subprocess.run(
        [sys.executable, "-c", _NOVA_STEPS, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    nova = json.loads(out.stdout)
    for (downtime, steps, delay, data_gb), expected in zip(cases, nova, strict=True):
        policy = host_policy.LiveMigrationOptions(
            live_migration_downtime=downtime,
            live_migration_downtime_steps=steps,
            live_migration_downtime_delay=delay,
        )
        assert [list(s) for s in downtime_steps(policy, data_gb)] == expected
    # Nova's own docstring example, and libvirt's "at least 2 GiB" of RAM to transfer
    assert downtime_steps(host_policy.LiveMigrationOptions(400, 10, 30), 3.0)[:3] == [
        (0, 40),
        (90, 76),
        (180, 112),
    ]
    assert live_migration_data_gb(256) == 2.0
    assert live_migration_data_gb(4096) == 4.0


def test_downtime_ramp_applies_each_step_once_when_its_time_is_past() -> None:
    ramp = DowntimeRamp([(0, 50), (6, 95), (12, 140)])
    assert ramp.due(0.0) is None  # libvirt: a step applies once elapsed is strictly past its time
    assert ramp.due(0.1) == (0, 0, 50)
    ramp.current = 50
    assert ramp.due(5.9) is None
    assert ramp.due(6.0) is None
    assert ramp.due(6.01) == (1, 6, 95)
    ramp.current = 95
    assert ramp.due(100.0) == (2, 12, 140)  # a late look jumps to the step due now, as libvirt


def test_host_policy_refuses_what_nova_conf_refuses(tmp_path: Path) -> None:
    assert (
        host_policy.write(
            tmp_path, "compute1", {"live_migration_downtime_steps": 3}
        ).live_migration_downtime_steps
        == 3
    )
    with pytest.raises(ValueError, match="downtime_steps must be >= 3"):
        host_policy.write(tmp_path, "compute1", {"live_migration_downtime_steps": 2})
    with pytest.raises(ValueError, match="downtime_delay must be >= 3"):
        host_policy.write(tmp_path, "compute1", {"live_migration_downtime_delay": 0})
    with pytest.raises(ValueError, match="live_migration_downtime must be >= 1"):
        host_policy.write(tmp_path, "compute1", {"live_migration_downtime": 0})


def test_status_names_each_stand_in_and_the_readme_table_agrees() -> None:
    """`novamig cloud status` and novamig/embedded/README.md name the same stand-in APIs."""
    from novamig.embedded.commands import STAND_INS, stand_in_lines

    lines = stand_in_lines()
    assert [line.split(":")[0].strip() for line in lines] == ["image", "network", "block-storage"]
    assert all("not served:" in line for line in lines)
    readme = (Path(__file__).resolve().parents[2] / "novamig" / "embedded" / "README.md").read_text()
    for api, _what, _missing in STAND_INS:
        assert f"| {api.replace('-', ' ')}" in readme, api
