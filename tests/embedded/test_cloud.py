"""The embedded cloud through openstacksdk, as a user's code reaches DevStack."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import requests
from openstack import connection, exceptions

from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import TINY_IMAGE_NAME


def test_password_auth_and_catalog(embedded_cloud: EmbeddedCloud, embedded_conn: Any) -> None:
    assert embedded_conn.authorize()  # a Keystone token, from a password
    layout = embedded_cloud.layout
    assert layout is not None
    endpoint = embedded_conn.session.get_endpoint(service_type="compute", interface="public")
    assert endpoint == layout.compute_url
    types = {
        s["type"]
        for s in embedded_conn.session.auth.get_access(embedded_conn.session).service_catalog.catalog
    }
    assert {"identity", "compute", "placement", "image", "network"} <= types


def test_wrong_password_is_refused(embedded_cloud: EmbeddedCloud) -> None:
    layout = embedded_cloud.layout
    assert layout is not None
    conn = connection.Connection(
        auth_url=layout.keystone_url,
        username="admin",
        password="not-the-password",
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
    )
    with pytest.raises(exceptions.SDKException, match="401"):
        conn.authorize()


def test_compute_api_refuses_requests_without_a_token(embedded_cloud: EmbeddedCloud) -> None:
    layout = embedded_cloud.layout
    assert layout is not None
    reply = requests.get(f"{layout.compute_url}/servers", timeout=10)
    assert reply.status_code == 401


def test_compute_services_up_on_both_hosts(embedded_conn: Any) -> None:
    services = {(s.binary, s.host): s for s in embedded_conn.compute.services()}
    for host in ("compute1", "compute2"):
        assert services[("nova-compute", host)].state == "up"
        assert services[("nova-compute", host)].status == "enabled"
    assert services[("nova-conductor", "controller")].state == "up"
    assert services[("nova-scheduler", "controller")].state == "up"
    hypervisors = {h.name for h in embedded_conn.compute.hypervisors()}
    assert hypervisors == {"compute1", "compute2"}


def test_member_is_not_admin(embedded_cloud: EmbeddedCloud) -> None:
    member = embedded_cloud.connection(member=True)
    assert member.authorize()
    with pytest.raises(exceptions.ForbiddenException):
        list(member.compute.hypervisors())


def test_tiny_image_found_by_name_through_image_and_compute(
    embedded_conn: Any, embedded_cloud: EmbeddedCloud
) -> None:
    image = embedded_conn.image.find_image(TINY_IMAGE_NAME, ignore_missing=False)
    assert image.status == "active"
    member = embedded_cloud.connection(member=True)
    assert member.image.find_image(TINY_IMAGE_NAME, ignore_missing=False).id == image.id
    assert embedded_conn.compute.find_image(TINY_IMAGE_NAME, ignore_missing=False).id == image.id
    assert embedded_conn.image.find_image("no-such-image") is None


def test_flavors_usable_by_a_member(embedded_cloud: EmbeddedCloud) -> None:
    member = embedded_cloud.connection(member=True)
    flavor = member.compute.find_flavor("m1.tiny", ignore_missing=False)
    assert flavor.ram == 256
    assert flavor.vcpus == 1


def test_admin_can_create_a_flavor(embedded_conn: Any) -> None:
    flavor = embedded_conn.compute.create_flavor(name="novamig-test-flavor", ram=192, vcpus=1, disk=1)
    try:
        assert embedded_conn.compute.find_flavor("novamig-test-flavor").id == flavor.id
    finally:
        embedded_conn.compute.delete_flavor(flavor)


def test_clouds_yaml_reaches_the_cloud_by_name(embedded_cloud: EmbeddedCloud) -> None:
    """A separate program with only OS_CLIENT_CONFIG_FILE and OS_CLOUD set finds the cloud."""
    code = (
        "import openstack; c = openstack.connect(); "
        "print(sorted(s.host for s in c.compute.services(binary='nova-compute')))"
    )
    env = {**os.environ, **embedded_cloud.env()}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['compute1', 'compute2']"


def test_set_host_policy_rejects_unknown_hosts_and_options(embedded_cloud: EmbeddedCloud) -> None:
    with pytest.raises(ValueError, match="compute9"):
        embedded_cloud.set_host_policy("compute9", {})
    with pytest.raises(ValueError, match="bogus"):
        embedded_cloud.set_host_policy("compute1", {"bogus": 1})


def test_network_found_by_name_by_a_member(embedded_cloud: EmbeddedCloud) -> None:
    member = embedded_cloud.connection(member=True)
    network = member.network.find_network("novamig-net", ignore_missing=False)
    assert network.is_shared
    subnets = list(member.network.subnets(network_id=network.id))
    assert [s.cidr for s in subnets] == ["192.168.1.0/24"]
