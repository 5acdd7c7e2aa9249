"""The ``[novamig]`` group of tempest.conf and ``[service_available] novamig``.

A DevStack job writes them (``devstack/plugin.sh``, test-config phase); every option has a default
that works on a DevStack node running the tests, so an empty group is valid.
"""

from __future__ import annotations

from oslo_config import cfg

service_option = cfg.BoolOpt(
    "novamig",
    default=True,
    help="Whether novamig's live-migration scenarios should run (its image uploaded, two computes)",
)

novamig_group = cfg.OptGroup(name="novamig", title="novamig live-migration measurement")

NovamigGroup = [
    cfg.ListOpt(
        "scenarios",
        default=[],
        help="Scenario files run by the novamig tests, each one test (a file of novamig's scenarios/ "
        "directory or an operator's own); empty: the tests skip, saying so",
    ),
    cfg.ListOpt(
        "overrides",
        default=[],
        help="KEY=VALUE settings applied to every scenario, as `novamig run --set` takes them: SLA "
        "limits (sla.downtime_ms.max=800), counts (migration.count=1), …",
    ),
    cfg.StrOpt(
        "cloud",
        default=None,
        help="A clouds.yaml entry novamig runs on instead of Tempest's admin credentials (DevStack's "
        "devstack-admin; an embedded cloud's name, which lets novamig read its hosts); unset: a "
        "clouds.yaml written from Tempest's admin credentials",
    ),
    cfg.StrOpt("image", default="novamig-full", help="Glance image name of the guests (fleet.image)"),
    cfg.StrOpt(
        "heartbeat_collector",
        default=None,
        help="IPV4:PORT of the node running Tempest where the guests send their UDP heartbeat "
        "(measure.heartbeat_collector); unset: the scenario's own, and where the scenario sets none "
        "novamig finds the address from the route to the guests",
    ),
    cfg.StrOpt(
        "ssh_hosts",
        default=None,
        help="YAML file mapping each compute host to user@address, for libvirt's figures over SSH "
        "(novamig's NOVAMIG_SSH_HOSTS); unset: the environment's",
    ),
    cfg.StrOpt(
        "network",
        default=None,
        help="Network the guests boot on (fleet.network); unset: the scenario's own",
    ),
    cfg.StrOpt(
        "floating_ip_network",
        default=None,
        help="External network (name or id) each guest gets a floating IP from, for guests on a "
        "tenant network that the node running Tempest reaches only through a router "
        "(fleet.floating_ip_network): `auto` for the cloud's one external network, `none` for no "
        "floating IPs; unset: the scenario's own",
    ),
    cfg.StrOpt(
        "out_dir",
        default=None,
        help="Folder for each scenario's results.json, index.html and junit.xml; unset: a temporary "
        "folder kept after the run and named in the test's output",
    ),
    cfg.IntOpt("timeout_s", default=7200, help="Longest a scenario may run, seconds"),
]


def scenario_overrides(group: cfg.ConfigOpts.GroupAttr, block_migration: bool) -> list[str]:
    """The `--set` settings a scenario gets from tempest.conf: the image, the optional collector,
    network and floating IP network, the operator's own overrides last (they win). An unset option
    sets nothing, so the scenario's own value (or novamig's discovery) stands."""
    sets = [f"fleet.image={group.image}"]
    if group.heartbeat_collector:
        sets.append(f"measure.heartbeat_collector={group.heartbeat_collector}")
    if group.network:
        sets.append(f"fleet.network={group.network}")
    if group.floating_ip_network:
        sets.append(f"fleet.floating_ip_network={group.floating_ip_network}")
    if block_migration:
        sets.append("migration.block_migration=true")
    return [*sets, *group.overrides]
