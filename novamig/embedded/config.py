"""Render the configuration files of the cloud's services from a ``CloudLayout``.

Each service reads a real configuration file, as on DevStack, so a user debugging the cloud can read
exactly what runs. Files holding a password are written with mode 0600.
"""

from __future__ import annotations

import configparser
import io
import os
from pathlib import Path
from typing import Any

from novamig.embedded.layout import (
    REGION,
    SERVICE_PROJECT,
    SERVICE_USER,
    CloudLayout,
    Secrets,
)

Sections = dict[str, dict[str, Any]]

DRIVER_CHOICES = ("novamig", "fake", "libvirt")
"""The embedded cloud's modes (``novamig cloud up --driver``): novamig's QEMU guests (the
measurement), Nova's fake driver on many computes (the scale mode: no guests, no downtime figures)
and Nova's LibvirtDriver. Any other value is taken as a Nova driver path (``fake.FakeDriver``)."""

GUEST_DRIVERS = ("novamig", "libvirt")
"""The modes whose servers are real guests, booted from the novamig images."""

COMPUTE_DRIVERS = {
    "novamig": "novamig.NovamigDriver",
    # service/fake_mode.py, registered under nova.virt by the cloud process
    "fake": "novamig_fake.ScaleFakeDriver",
    # service/libvirt_compute.py: Nova's LibvirtDriver, each compute bound to its own libvirtd
    "libvirt": "novamig_libvirt.NovamigLibvirtDriver",
}
"""nova.conf's ``compute_driver`` (a path under ``nova.virt``) for each mode that is not one."""


def render_ini(sections: Sections) -> str:
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    for name, options in sections.items():
        if name != "DEFAULT":
            parser.add_section(name)
        for key, value in options.items():
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            parser.set(name, key, text)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (it may hold a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def keystone_conf(layout: CloudLayout) -> Sections:
    kdir = layout.keystone_dir
    return {
        "DEFAULT": {
            "log_file": layout.logs / "keystone.log",
            "use_stderr": False,
        },
        "database": {"connection": sqlite_url(kdir / "keystone.sqlite")},
        "token": {"provider": "fernet", "expiration": 86400},
        "fernet_tokens": {"key_repository": kdir / "fernet-keys", "max_active_keys": 3},
        "fernet_receipts": {"key_repository": kdir / "fernet-keys", "max_active_keys": 3},
        "credential": {"key_repository": kdir / "credential-keys"},
        # bcrypt's lowest cost: these passwords are random and live for one cloud only, and every
        # user creation and password login would otherwise cost ~0.3 s of a shared core.
        "identity": {"password_hash_rounds": 4},
        # Keystone's own cache, in its process's memory (one Keystone process: nothing to share, so
        # no memcached). Without it every validation re-reads role assignments, catalog and project
        # through ~150 SQL queries per token (0.5-0.9 s); with it a token is cached when issued
        # ([token] cache_on_issue, on by default) and its first validation is a lookup.
        "cache": {"enabled": True, "backend": "oslo_cache.dict", "expiration_time": 600},
    }


def placement_conf(layout: CloudLayout) -> Sections:
    return {
        "DEFAULT": {"log_file": layout.logs / "placement.log", "use_stderr": False},
        "api": {"auth_strategy": "noauth2"},
        "placement_database": {"connection": sqlite_url(layout.placement_dir / "placement.sqlite")},
        "oslo_policy": {"enforce_new_defaults": False, "enforce_scope": False},
    }


def nova_conf(layout: CloudLayout, secret: Secrets) -> Sections:
    ndir = layout.nova_dir
    return {
        "DEFAULT": {
            "transport_url": "fake:/",
            "compute_driver": COMPUTE_DRIVERS.get(layout.driver, layout.driver),
            "state_path": ndir,
            "instances_path": layout.guests_dir,
            "log_file": layout.logs / "nova.log",
            "use_stderr": False,
            "debug": False,
            "my_ip": "127.0.0.1",
            "use_rootwrap_daemon": False,
            "max_concurrent_live_migrations": 1,
            "allow_resize_to_same_host": True,
            # Guests come and go through the API only; the periodic resource audit runs, but rarely.
            "update_resources_interval": 60,
            "heal_instance_info_cache_interval": -1,
            "instance_usage_audit": False,
            "enable_new_services": True,
            "concurrency_backend": "threading",
        },
        "api": {"auth_strategy": "keystone"},
        "api_database": {"connection": sqlite_url(ndir / "nova_api.sqlite")},
        "database": {"connection": sqlite_url(ndir / "nova_cell1.sqlite")},
        "keystone_authtoken": {
            "www_authenticate_uri": layout.keystone_url,
            "auth_url": layout.keystone_url,
            "auth_type": "password",
            "username": SERVICE_USER,
            "password": secret.service_password,
            "project_name": SERVICE_PROJECT,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
            "region_name": REGION,
            "service_token_roles_required": True,
        },
        "placement": {
            "auth_type": "admin_token",
            "token": "admin",
            "endpoint_override": layout.placement_url,
            "region_name": REGION,
        },
        "quota": {
            "instances": -1,
            "cores": -1,
            "ram": -1,
            "metadata_items": -1,
            "key_pairs": -1,
            "server_groups": -1,
            "server_group_members": -1,
        },
        "scheduler": {"discover_hosts_in_cells_interval": -1, "workers": 1},
        "filter_scheduler": {"enabled_filters": "ComputeFilter,ImagePropertiesFilter"},
        "conductor": {"workers": 1},
        "oslo_concurrency": {"lock_path": ndir / "locks"},
        "oslo_policy": {"enforce_new_defaults": True, "enforce_scope": True},
        "oslo_messaging_notifications": {"driver": "noop"},
        "notifications": {"notification_format": "unversioned"},
        "vnc": {"enabled": False},
        "spice": {"enabled": False},
        "serial_console": {"enabled": False},
        "os_vif_linux_bridge": {},
        "wsgi": {"api_paste_config": ndir / "api-paste.ini"},
        "cinder": {"auth_type": "none"},
        "glance": {"region_name": REGION},
        "neutron": {"region_name": REGION},
        "libvirt": {},
        "workarounds": {"disable_group_policy_check_upcall": True},
        "compute": {"live_migration_wait_for_vif_plug": False},
    }


def libvirt_options(layout: CloudLayout) -> Sections:
    """nova.conf of the libvirt mode, on top of `nova_conf`: what a DevStack multinode
    live-migration job's computes run with, for TCG guests on one machine. Each compute's own
    libvirtd, node UUID and taps are set by its driver (``service/libvirt_compute.py``), not here:
    the configuration is one for the whole process. The instances path is shared by both computes
    (Nova's shared-storage check says shared: memory-only live migrations, as with NFS).
    ``live_migration_inbound_addr`` is left unset: Nova's source then dials
    ``qemu+tcp://<destination compute>/system``."""
    return {
        "DEFAULT": {
            "instances_path": layout.guests_dir / "instances",
            "force_raw_images": False,
            "use_cow_images": True,
            # Debian's genisoimage is not installed; xorriso's mkisofs emulation takes its options
            "mkisofs_cmd": "xorrisofs",
            # no metadata service: a disk image's cloud-init takes its user-data from this drive
            "force_config_drive": True,
        },
        "libvirt": {
            "virt_type": "qemu",
            "images_type": "qcow2",
            "cpu_mode": "custom",
            "cpu_models": "qemu64",
            "live_migration_scheme": "tcp",
            # The live_migration_* policy options are each compute's host policy, set at each
            # migration from EmbeddedCloud.set_host_policy (Nova's defaults until one is set).
        },
    }


def write_all(layout: CloudLayout, secret: Secrets) -> dict[str, Path]:
    """Write every service's configuration into the work directory; returns name → path."""
    paths = {
        "keystone": layout.keystone_dir / "keystone.conf",
        "placement": layout.placement_dir / "placement.conf",
        "nova": layout.nova_dir / "nova.conf",
    }
    write_private(paths["keystone"], render_ini(keystone_conf(layout)))
    write_private(paths["placement"], render_ini(placement_conf(layout)))
    sections = nova_conf(layout, secret)
    if layout.driver == "libvirt":
        for name, options in libvirt_options(layout).items():
            sections[name].update(options)
    write_private(paths["nova"], render_ini(sections))
    return paths
