"""The embedded cloud answers the OpenStack clients people already have, unmodified, as the real
services do: python-glanceclient, python-novaclient, python-neutronclient and the ``openstack``
command line (run as a program that reads only the cloud's own clouds.yaml). And a run of polling a
live migration at microversion 2.80 leaves no ERROR line in Nova's log (Nova validates its
responses against its schemas and logs every mismatch as an ERROR with a traceback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from glanceclient import Client as GlanceClient
from glanceclient import exc as glance_exc
from neutronclient.common import exceptions as neutron_exc
from neutronclient.v2_0 import client as neutron_client
from novaclient import client as nova_client
from novaclient import exceptions as nova_exc
from openstack import connection

from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import TINY_IMAGE_ID, TINY_IMAGE_NAME

pytestmark = pytest.mark.slow

OPENSTACK = Path(sys.executable).with_name("openstack")
LOGS = ("nova.log", "keystone.log", "placement.log")


def _error_lines(path: Path, start: int = 0) -> list[str]:
    if not path.exists():
        return []
    with path.open("rb") as fh:
        fh.seek(start)
        return [line for line in fh.read().decode(errors="replace").splitlines() if " ERROR " in line]


@pytest.fixture(scope="module")
def log_offsets(embedded_cloud: EmbeddedCloud) -> dict[str, int]:
    """Where each of the cloud's logs ended when this module began (the cloud is the session's)."""
    assert embedded_cloud.layout is not None
    logs = embedded_cloud.layout.logs
    return {name: (logs / name).stat().st_size if (logs / name).exists() else 0 for name in LOGS}


def test_log_offsets_taken_first(log_offsets: dict[str, int]) -> None:
    """Runs first in this module so that the last test sees every line the clients caused."""
    assert set(log_offsets) == set(LOGS)


def test_glanceclient_lists_filters_shows_and_reports_a_404(embedded_conn: Any) -> None:
    glance = GlanceClient("2", session=embedded_conn.session)
    schema = glance.schemas.get("image")
    assert "disk_format" in schema.raw()["properties"]
    names = [i["name"] for i in glance.images.list()]
    assert TINY_IMAGE_NAME in names
    found = list(glance.images.list(filters={"name": TINY_IMAGE_NAME}))
    assert [i["id"] for i in found] == [TINY_IMAGE_ID]
    assert [i["id"] for i in glance.images.list(filters={"tag": ["novamig"], "visibility": "public"})]
    assert list(glance.images.list(filters={"name": "no-such-image"})) == []
    paged = [i["id"] for i in glance.images.list(page_size=1, sort_key="name", sort_dir="asc")]
    assert sorted(paged) == sorted(i["id"] for i in glance.images.list())
    image = glance.images.get(TINY_IMAGE_ID)
    assert image.name == TINY_IMAGE_NAME and image.disk_format == "raw"
    missing = str(uuid.uuid4())
    with pytest.raises(glance_exc.HTTPNotFound, match=f"No image found with ID {missing}"):
        glance.images.get(missing)
    with pytest.raises(glance_exc.HTTPBadRequest, match="Invalid sort key"):
        list(glance.images.list(sort_key="colour"))


def test_novaclient_lists_and_reports_not_found(embedded_conn: Any) -> None:
    nova = nova_client.Client("2.80", session=embedded_conn.session)
    assert {f.name for f in nova.flavors.list()} >= {"m1.tiny", "m1.small"}
    assert {h.hypervisor_hostname for h in nova.hypervisors.list()} >= {"compute1", "compute2"}
    assert isinstance(nova.servers.list(), list)
    with pytest.raises(nova_exc.NotFound):
        nova.servers.get(str(uuid.uuid4()))
    with pytest.raises(nova_exc.NotFound):
        nova.flavors.get("no-such-flavor")
    assert nova.glance.find_image(TINY_IMAGE_NAME).id == TINY_IMAGE_ID  # through the image API


def test_neutronclient_lists_and_reports_not_found(embedded_conn: Any) -> None:
    neutron = neutron_client.Client(session=embedded_conn.session)
    networks = neutron.list_networks(name="novamig-net")["networks"]
    assert len(networks) == 1 and networks[0]["shared"] is True
    assert neutron.show_network(networks[0]["id"])["network"]["name"] == "novamig-net"
    assert neutron.list_subnets(network_id=networks[0]["id"])["subnets"][0]["cidr"] == "192.168.1.0/24"
    everything = [n["id"] for n in neutron.list_networks()["networks"]]  # with novamig-ext as root
    paged = neutron.list_networks(limit=1)["networks"]  # the client follows networks_links
    assert [n["id"] for n in paged] == everything and networks[0]["id"] in everything
    with pytest.raises(neutron_exc.NetworkNotFoundClient):
        neutron.show_network(str(uuid.uuid4()))
    with pytest.raises(neutron_exc.PortNotFoundClient):
        neutron.show_port(str(uuid.uuid4()))


def _cli_env(cloud: EmbeddedCloud, tmp_path: Path) -> dict[str, str]:
    """The environment of an ``openstack`` program: the cloud's clouds.yaml, no OS_* variable of
    this process and a home directory of its own (no user's clouds.yaml or secure.yaml)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(cloud.env(), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"))
    return env


def _openstack(cloud: EmbeddedCloud, tmp_path: Path, *args: str, output: bool = True) -> Any:
    """``openstack <args> -f json`` as a program: only the cloud's clouds.yaml, no user files."""
    env = _cli_env(cloud, tmp_path)
    command = [str(OPENSTACK), *args, *(["-f", "json"] if output else [])]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"openstack {' '.join(args)}: {out.stderr}"
    return json.loads(out.stdout) if output else out.stdout


def _openstack_fails(cloud: EmbeddedCloud, tmp_path: Path, *args: str) -> str:
    """``openstack <args>`` that must fail (exit status 1, not a crash); its error output."""
    env = _cli_env(cloud, tmp_path)
    out = subprocess.run(
        [str(OPENSTACK), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    return out.stderr


def test_openstacksdk_at_the_oldest_and_newest_microversion(embedded_cloud: EmbeddedCloud) -> None:
    conn = embedded_cloud.connection()
    major, minor = conn.compute.get_endpoint_data().max_microversion  # keystoneauth's (2, N)
    assert (major, minor) >= (2, 80)
    newest = f"{major}.{minor}"
    for version in ("2.1", newest):
        proxy = connection.Connection(session=conn.session, compute_api_version=version).compute
        assert proxy.default_microversion == version
        assert "m1.tiny" in [f.name for f in proxy.flavors()]
        assert isinstance(list(proxy.servers()), list)
        assert {h.name for h in proxy.hypervisors()} >= {"compute1", "compute2"}


@pytest.mark.skipif(shutil.which(str(OPENSTACK)) is None, reason="python-openstackclient is not installed")
def test_openstack_command_line(embedded_cloud: EmbeddedCloud, tmp_path: Path) -> None:
    images = _openstack(embedded_cloud, tmp_path, "image", "list")
    assert TINY_IMAGE_NAME in [i["Name"] for i in images]
    shown = _openstack(embedded_cloud, tmp_path, "image", "show", TINY_IMAGE_NAME)
    assert shown["id"] == TINY_IMAGE_ID
    assert isinstance(_openstack(embedded_cloud, tmp_path, "server", "list"), list)
    assert "m1.tiny" in [f["Name"] for f in _openstack(embedded_cloud, tmp_path, "flavor", "list")]
    hypervisors = _openstack(embedded_cloud, tmp_path, "hypervisor", "list")
    assert {h["Hypervisor Hostname"] for h in hypervisors} >= {"compute1", "compute2"}
    assert "novamig-net" in [n["Name"] for n in _openstack(embedded_cloud, tmp_path, "network", "list")]
    for kind in ("image", "server", "network"):
        failed = _openstack_fails(embedded_cloud, tmp_path, kind, "show", "no-such-thing")
        assert f"No {kind.capitalize()} found for no-such-thing" in failed
    # an upload as users make one: created, tagged, listed by tag, a property set, deleted
    data = tmp_path / "disk.raw"
    data.write_bytes(b"\0" * 65536)
    create = ("image", "create", "--file", str(data), "--disk-format", "raw", "--container-format", "bare")
    made = _openstack(embedded_cloud, tmp_path, *create, "--tag", "osc", "novamig-osc-image")
    assert made["status"] == "active" and made["size"] == 65536
    try:
        tagged = _openstack(embedded_cloud, tmp_path, "image", "list", "--tag", "osc")
        assert [i["Name"] for i in tagged] == ["novamig-osc-image"]
        _openstack(embedded_cloud, tmp_path, "image", "set", "--property", "k=v", made["id"], output=False)
        assert _openstack(embedded_cloud, tmp_path, "image", "show", made["id"])["properties"]["k"] == "v"
    finally:
        _openstack(embedded_cloud, tmp_path, "image", "delete", made["id"], output=False)
    assert "Only shared images have members." in _openstack_fails(
        embedded_cloud, tmp_path, "image", "member", "list", TINY_IMAGE_NAME
    )


def _wait_active(nova: Any, server_id: str, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = nova.servers.get(server_id)
        if server.status == "ACTIVE" and not getattr(server, "OS-EXT-STS:task_state"):
            return server
        assert server.status != "ERROR", getattr(server, "fault", None)
        time.sleep(0.5)
    raise AssertionError(f"server {server_id} not ACTIVE within {timeout} s")


def _delete(nova: Any, server_id: str, timeout: float = 60) -> None:
    """Delete the server and wait until it is gone (its QEMU stopped) before the next test."""
    nova.servers.delete(server_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(s.id == server_id for s in nova.servers.list()):
        time.sleep(0.5)


def _poll_until_ended(nova: Any, server_id: str, timeout: float = 240) -> tuple[Any, int]:
    """Poll the server's in-progress migrations (2.80) until its migration record ends; (record,
    number of polls that saw it running)."""
    running = 0
    record: Any = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running += sum(1 for m in nova.server_migrations.list(server_id) if m.status == "running")
        records = nova.migrations.list(instance_uuid=server_id, migration_type="live-migration")
        record = max(records, key=lambda m: m.id, default=None)  # none until the conductor writes it
        if record is not None and record.status in ("completed", "error", "failed", "cancelled"):
            return record, running
        time.sleep(0.2)
    raise AssertionError(f"the live migration of {server_id} did not end within {timeout} s: {record}")


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which(str(OPENSTACK)) is None, reason="python-openstackclient is not installed")
def test_boot_and_live_migrate_with_the_standard_clients_and_no_error_in_novas_log(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, default_policies: None, tmp_path: Path
) -> None:
    """Boot with python-novaclient (image found by name with python-glanceclient), live-migrate
    with ``openstack server migrate --live-migration`` at 2.30, poll with python-novaclient at 2.80,
    then ``openstack server migration list`` and ``server event list``."""
    assert embedded_cloud.layout is not None
    nova_log = embedded_cloud.layout.logs / "nova.log"
    nova = nova_client.Client("2.80", session=embedded_conn.session)
    glance = GlanceClient("2", session=embedded_conn.session)
    image = next(iter(glance.images.list(filters={"name": TINY_IMAGE_NAME})))
    server = nova.servers.create(
        "novamig-clients", image["id"], nova.flavors.find(name="m1.tiny"), nics="auto"
    )
    try:
        server = _wait_active(nova, server.id)
        source = getattr(server, "OS-EXT-SRV-ATTR:host")
        # 4 MiB/s: the copy lasts a few seconds, long enough for several polls of the running record
        embedded_cloud.set_host_policy(source, {"live_migration_bandwidth": 4})
        start = nova_log.stat().st_size
        migrate = ("server", "migrate", "--live-migration", "--os-compute-api-version", "2.30", server.id)
        _openstack(embedded_cloud, tmp_path, *migrate, output=False)
        record, running = _poll_until_ended(nova, server.id)
        assert record.status == "completed" and running >= 1
        assert getattr(_wait_active(nova, server.id), "OS-EXT-SRV-ATTR:host") != source
        listed = _openstack(
            embedded_cloud, tmp_path, "server", "migration", "list", "--server", server.id,
            "--os-compute-api-version", "2.80",
        )  # fmt: skip
        assert [(m["Id"], m["Status"]) for m in listed] == [(record.id, "completed")]
        events = _openstack(embedded_cloud, tmp_path, "server", "event", "list", server.id)
        assert {e["Action"] for e in events} >= {"create", "live-migration"}
        errors = _error_lines(nova_log, start)
        assert errors == [], "\n".join(errors[:20])
    finally:
        _delete(nova, server.id)


def _running_migration(nova: Any, server_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [m for m in nova.server_migrations.list(server_id) if m.status == "running"]
        if running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError(f"no running migration of {server_id} within {timeout} s")


@pytest.mark.qemu
def test_novaclient_aborts_and_force_completes_a_live_migration(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, default_policies: None
) -> None:
    """python-novaclient at 2.80: abort a slow migration (the server stays), then force-complete
    another one (post-copy; the server moves)."""
    nova = nova_client.Client("2.80", session=embedded_conn.session)
    image = nova.glance.find_image(TINY_IMAGE_NAME)
    server = nova.servers.create(
        "novamig-clients-2", image.id, nova.flavors.find(name="m1.tiny"), nics="auto"
    )
    try:
        source = getattr(_wait_active(nova, server.id), "OS-EXT-SRV-ATTR:host")
        # 1 MiB/s: the copy takes long enough to act on the running migration
        slow = {"live_migration_bandwidth": 1, "live_migration_permit_post_copy": True}
        embedded_cloud.set_host_policy(source, slow)
        nova.servers.live_migrate(server.id, host=None, block_migration="auto")
        nova.server_migrations.live_migration_abort(server.id, _running_migration(nova, server.id).id)
        record, _ = _poll_until_ended(nova, server.id)
        assert record.status == "cancelled"
        assert getattr(_wait_active(nova, server.id), "OS-EXT-SRV-ATTR:host") == source
        nova.servers.live_migrate(server.id, host=None, block_migration="auto")
        nova.server_migrations.live_migrate_force_complete(server.id, _running_migration(nova, server.id).id)
        record, _ = _poll_until_ended(nova, server.id)
        assert record.status == "completed"
        assert getattr(_wait_active(nova, server.id), "OS-EXT-SRV-ATTR:host") != source
    finally:
        _delete(nova, server.id)


def test_no_error_line_in_the_clouds_logs(embedded_cloud: EmbeddedCloud, log_offsets: dict[str, int]) -> None:
    """Nothing the clients above did made Nova, Keystone or Placement log an ERROR; and in the whole
    logs, none of the cloud's own making: Nova's response validation, or dogpile's cache backend
    search (stevedore), which fired on the first cache use in each process."""
    assert embedded_cloud.layout is not None
    logs = embedded_cloud.layout.logs
    for name in LOGS:
        errors = _error_lines(logs / name, log_offsets[name])
        assert errors == [], f"{name}:\n" + "\n".join(errors[:20])
        ours = [e for e in _error_lines(logs / name) if "stevedore" in e or "nova.api.validation" in e]
        assert ours == [], f"{name}:\n" + "\n".join(ours[:20])
