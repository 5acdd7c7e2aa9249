"""A tempest.conf for the embedded cloud, so Tempest's own compute tests run against it.

``write_tempest_conf(cloud, directory)`` renders one from a started ``EmbeddedCloud``: Keystone's
admin account (Tempest makes its own projects and users with dynamic credentials), the tiny image,
two flavors, both computes. Features the embedded cloud does not offer are switched off, so the
tests that need them are skipped by Tempest itself, each with its reason:

- volumes (Cinder), object storage: not served; volume-backed and attached-volume live
  migrations skip; the network API is read-only (no trunk ports: the trunk migration test skips);
- serial/VNC/SPICE consoles: not offered by the driver; the remote-console migration test skips;
- shelve, rescue, snapshots, resize, cold migration, interface attach: not implemented by the
  driver (suspend/resume are: the vCPUs stop, memory stays in QEMU);
- guest validation over SSH: the tiny guest runs no SSH server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from novamig.embedded import config
from novamig.embedded.layout import ADMIN_PROJECT, ADMIN_USER, REGION, TINY_IMAGE_ID


def tempest_sections(cloud: Any, lock_path: Path) -> config.Sections:
    layout = cloud.layout
    secret = layout.load_secrets()
    conn = cloud.connection()
    nano = conn.compute.find_flavor("m1.nano", ignore_missing=False)
    micro = conn.compute.find_flavor("m1.micro", ignore_missing=False)
    off = False
    return {
        "DEFAULT": {"log_file": "", "use_stderr": False},
        "oslo_concurrency": {"lock_path": lock_path},
        "auth": {
            "admin_username": ADMIN_USER,
            "admin_password": secret.admin_password,
            "admin_project_name": ADMIN_PROJECT,
            "admin_domain_name": "Default",
            "use_dynamic_credentials": True,
            "tempest_roles": "member",
            "create_isolated_networks": off,
        },
        "identity": {
            "uri_v3": layout.keystone_url,
            "auth_version": "v3",
            "region": REGION,
            "v3_endpoint_type": "public",
        },
        "identity-feature-enabled": {"api_v2": off, "security_compliance": off},
        "compute": {
            "image_ref": TINY_IMAGE_ID,
            "image_ref_alt": TINY_IMAGE_ID,
            "flavor_ref": nano.id,
            "flavor_ref_alt": micro.id,
            "min_compute_nodes": len(layout.hosts),
            "region": REGION,
            "build_timeout": 300,
            "min_microversion": "2.1",
            "max_microversion": "latest",
            "fixed_network_name": "novamig-net",
        },
        "compute-feature-enabled": {
            "live_migration": True,
            "live_migrate_back_and_forth": True,
            "can_migrate_between_any_hosts": True,
            # The tiny guest has no disk: a block live migration copies memory only and is allowed.
            # Not in the libvirt mode: its computes share the instances path, and Nova refuses a
            # block migration on shared storage.
            "block_migration_for_live_migration": layout.driver != "libvirt",
            "block_migrate_cinder_iscsi": off,
            "volume_backed_live_migration": off,
            "pause": True,
            "suspend": True,
            "shelve": off,
            "shelve_migrate": off,
            "rescue": off,
            "resize": off,
            "cold_migration": off,
            "snapshot": off,
            "console_output": True,
            "serial_console": off,
            "vnc_console": off,
            "spice_console": off,
            "interface_attach": off,
            "attach_encrypted_volume": off,
            "config_drive": off,
            "personality": off,
            "change_password": off,
            "metadata_service": off,
            "nova_policy_roles": "admin,manager,member,reader,service",
        },
        "service_available": {
            "nova": True,
            "glance": True,
            "neutron": True,
            "cinder": off,
            "swift": off,
            "horizon": off,
        },
        "image-feature-enabled": {"api_v2": True},
        "validation": {"run_validation": off},
        # Nova runs with its new RBAC defaults and scope enforcement (the manager role exists).
        "enforce_scope": {"nova": True, "keystone": off, "placement": off, "glance": off},
        "network": {"region": REGION, "shared_physical_network": off},
        # No extension Tempest would exercise (trunk, port-security, ...): the network API is a
        # read-only view of the cloud's one network.
        "network-feature-enabled": {"api_extensions": "binding", "ipv6": off},
    }


def write_tempest_conf(cloud: Any, directory: Path) -> Path:
    """Write ``tempest.conf`` (0600: it holds the admin password) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tempest.conf"
    config.write_private(path, config.render_ini(tempest_sections(cloud, directory / "locks")))
    return path
