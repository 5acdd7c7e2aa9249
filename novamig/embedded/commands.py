"""``novamig cloud up|down|status``: the embedded cloud for other tools (openstack CLI, Tempest, ...).

``up`` starts the cloud in ``$NOVAMIG_EMBEDDED_DIR`` (default ``~/.local/state/novamig/
novamig-embedded``), returns to the shell with it running, and adds the clouds.yaml entries
``novamig-embedded`` (admin) and ``novamig-embedded-member`` to one clouds.yaml: ``--clouds-yaml
PATH``, else ``$NOVAMIG_CLOUDS_YAML``, else ``$OS_CLIENT_CONFIG_FILE``, else
``~/.config/openstack/clouds.yaml`` (edited in place, everything else in it kept: see
`novamig.embedded.clouds_yaml`). It refuses before starting anything when that file already has an
entry of that name novamig did not write. ``down`` takes the entries out of the file ``up`` put them
in, stops every process and guest and removes the work directory. ``status`` says what runs.
Exit codes: 0 done, 2 the clouds.yaml cannot take the entries, 3 infrastructure error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from novamig.embedded import clouds_yaml
from novamig.embedded.controller import CloudStartError, EmbeddedCloud, compute_hosts, default_workdir
from novamig.embedded.layout import DEFAULT_CLOUD_NAME, CloudLayout
from novamig.exitcodes import ExitCode


def cmd_cloud(
    action: str,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    *,
    clouds_yaml_path: str | None = None,
    driver: str = "novamig",
    computes: int = 2,
    fake_migration_s: float | None = None,
) -> int:
    """`clouds_yaml_path`: ``--clouds-yaml`` (None: see `clouds_yaml.target`; for ``down``, the file
    ``up`` wrote to). `driver`, `computes`, `fake_migration_s`: the mode ``up`` starts (see
    `EmbeddedCloud`)."""
    workdir = default_workdir()
    if action == "up":
        return _up(clouds_yaml_path, out, err, (driver, computes, fake_migration_s))
    if not (workdir / "cloud.json").exists():
        if action == "status":
            print(f"novamig-embedded: not running (no cloud in {workdir})", file=out)
            return int(ExitCode.OK)
        print(f"novamig-embedded: nothing to stop (no cloud in {workdir})", file=out)
        return int(ExitCode.OK)
    cloud = EmbeddedCloud.attach(workdir)
    if action == "status":
        return _status(cloud, out)
    if action == "down":
        return _down(cloud, clouds_yaml_path, out, err)
    print(f"novamig cloud: unknown action {action!r} (up, down, status)", file=err)
    return int(ExitCode.BAD_INPUT)


def _up(flag: str | None, out: TextIO, err: TextIO, mode: tuple[str, int, float | None]) -> int:
    """`mode`: the driver, how many computes, how long a fake migration takes."""
    driver, computes, fake_migration_s = mode
    if computes < 1:
        print(f"novamig cloud up: --computes must be at least 1, not {computes}", file=err)
        return int(ExitCode.BAD_INPUT)
    workdir = default_workdir()
    target, why = clouds_yaml.target(flag)
    names = [DEFAULT_CLOUD_NAME, f"{DEFAULT_CLOUD_NAME}-member"]
    try:
        clouds_yaml.check_free(target, names, workdir.resolve())
    except (clouds_yaml.CloudsYamlError, OSError) as exc:
        print(f"novamig cloud up: nothing started: {exc}", file=err)
        bad_file = isinstance(exc, clouds_yaml.CloudsYamlError)
        return int(ExitCode.BAD_INPUT if bad_file else ExitCode.INFRASTRUCTURE)
    cloud = EmbeddedCloud(
        workdir,
        die_with_parent=False,
        hosts=compute_hosts(computes),
        driver=driver,
        fake_migration_s=fake_migration_s,
    )
    try:
        ready = cloud.start()
    except CloudStartError as exc:
        print(f"novamig cloud up: {exc}", file=err)
        print(
            f"novamig cloud up: logs kept in {workdir / 'logs'}; `novamig cloud down` removes them", file=err
        )
        return int(ExitCode.INFRASTRUCTURE)
    layout = CloudLayout.load(workdir)
    try:
        clouds_yaml.merge_into(target, layout, layout.load_secrets())
    except (clouds_yaml.CloudsYamlError, OSError) as exc:
        cloud.stop()  # a cloud nobody can find by name is no use: `up` leaves nothing behind
        print(f"novamig cloud up: stopped the cloud again: {target} not updated: {exc}", file=err)
        bad_file = isinstance(exc, clouds_yaml.CloudsYamlError)
        return int(ExitCode.BAD_INPUT if bad_file else ExitCode.INFRASTRUCTURE)
    if cloud.no_guests is not None:
        print(
            f"novamig-embedded: SCALE MODE ({driver_label(cloud)}): servers have no guest, "
            "so no downtime is ever measured on this cloud",
            file=out,
        )
    print(
        f"novamig-embedded: ready in {ready['elapsed_s']:.1f} s; pid {ready['pid']}; "
        f"identity {layout.keystone_url}; computes {', '.join(layout.hosts)}; "
        f"clouds.yaml entries {', '.join(names)} in {target} ({why}); work dir {workdir}",
        file=out,
    )
    if why != "the per-user default" and os.environ.get("OS_CLIENT_CONFIG_FILE") != str(target):
        print(
            f"novamig-embedded: openstacksdk does not look in {target} by itself: "
            f"`export OS_CLIENT_CONFIG_FILE={target}` for the openstack command and `novamig run --cloud`",
            file=out,
        )
    return int(ExitCode.OK)


def driver_label(cloud: EmbeddedCloud) -> str:
    """How ``up`` and ``status`` name the cloud's mode."""
    return f"Nova's fake driver on {len(cloud.hosts)} computes" if cloud.driver == "fake" else cloud.driver


def _down(cloud: EmbeddedCloud, flag: str | None, out: TextIO, err: TextIO) -> int:
    """Entries first (their record is in the work directory), then the cloud, whatever the file says."""
    layout = CloudLayout.load(cloud.workdir)
    target = (
        Path(flag) if flag else clouds_yaml.recorded_target(layout.workdir) or clouds_yaml.target(None)[0]
    )
    removed: list[str] = []
    problem = None
    try:
        removed = clouds_yaml.remove_from(target, layout)
    except (clouds_yaml.CloudsYamlError, OSError) as exc:
        problem = exc
    cloud.stop()
    entries = f" and clouds.yaml entries {', '.join(removed)} from {target}" if removed else ""
    print(f"novamig-embedded: stopped; removed {cloud.workdir}{entries}", file=out)
    if problem is not None:
        print(f"novamig cloud down: its clouds.yaml entries are still in {target}: {problem}", file=err)
        return int(ExitCode.INFRASTRUCTURE)
    return int(ExitCode.OK)


# The APIs the embedded cloud serves with its own stand-ins rather than the real service, and what
# they leave out (answered as the real service answers a call it does not implement); the same
# table is in novamig/embedded/README.md.
STAND_INS: tuple[tuple[str, str, str], ...] = (
    (
        "image",
        "Glance v2 subset (novamig's stand-in)",
        "import and staging, locations, member changes, deactivation, tasks, metadefs, stores, cache "
        "(501, Glance's error format); every image is visible to every project",
    ),
    (
        "network",
        "Neutron v2.0, read-only (novamig's stand-in)",
        "every write, routers, floating IPs, trunks, QoS (501 NotImplementedError or 404, NeutronError)",
    ),
    ("block-storage", "none", "no Cinder: no volume endpoint in the catalog"),
)


def stand_in_lines() -> list[str]:
    """What ``status`` says about the stand-ins, one line per API."""
    return [f"  {api}: {what}; not served: {missing}" for api, what, missing in STAND_INS]


def _status(cloud: EmbeddedCloud, out: TextIO) -> int:
    st = cloud.status()
    if not st.running:
        state = "starting" if st.pid else "not running (stale work directory; `novamig cloud down` cleans it)"
        print(f"novamig-embedded: {state} ({st.workdir})", file=out)
        return int(ExitCode.OK)
    layout = CloudLayout.load(st.workdir)
    print(
        f"novamig-embedded: running, pid {st.pid} ({len(st.processes)} processes), "
        f"{len(st.guests)} guests; identity {layout.keystone_url}; compute {layout.compute_url}; "
        f"computes {', '.join(layout.hosts)}; driver {driver_label(cloud)}; work dir {st.workdir}",
        file=out,
    )
    print("real services: Keystone, Nova, Placement. Stand-ins:", file=out)
    for line in stand_in_lines():
        print(line, file=out)
    return int(ExitCode.OK)
