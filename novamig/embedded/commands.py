"""``novamig cloud up|down|status``: the embedded cloud for other tools (openstack CLI, Tempest, ...).

``up`` starts the cloud in ``$NOVAMIG_EMBEDDED_DIR`` (default ``~/.local/state/novamig/
novamig-embedded``), returns to the shell with it running, and merges the clouds.yaml entries
``novamig-embedded`` (admin) and ``novamig-embedded-member`` into ``$OS_CLIENT_CONFIG_FILE`` or
``~/.config/openstack/clouds.yaml``. ``down`` stops every process and guest, removes the work
directory and those entries. ``status`` says what runs. Exit codes: 0 done, 3 infrastructure error.
"""

from __future__ import annotations

import sys
from typing import TextIO

from novamig.embedded import clouds_yaml
from novamig.embedded.controller import CloudStartError, EmbeddedCloud, default_workdir
from novamig.embedded.layout import CloudLayout
from novamig.exitcodes import ExitCode


def cmd_cloud(action: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    workdir = default_workdir()
    if action == "up":
        return _up(out, err)
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
        layout = CloudLayout.load(workdir)
        cloud.stop()
        removed = clouds_yaml.remove_from(clouds_yaml.user_clouds_yaml(), layout)
        print(
            f"novamig-embedded: stopped; removed {workdir}"
            + (f" and clouds.yaml entries {', '.join(removed)}" if removed else ""),
            file=out,
        )
        return int(ExitCode.OK)
    print(f"novamig cloud: unknown action {action!r} (up, down, status)", file=err)
    return int(ExitCode.BAD_INPUT)


def _up(out: TextIO, err: TextIO) -> int:
    workdir = default_workdir()
    cloud = EmbeddedCloud(workdir, die_with_parent=False)
    try:
        ready = cloud.start()
    except CloudStartError as exc:
        print(f"novamig cloud up: {exc}", file=err)
        print(
            f"novamig cloud up: logs kept in {workdir / 'logs'}; `novamig cloud down` removes them", file=err
        )
        return int(ExitCode.INFRASTRUCTURE)
    layout = CloudLayout.load(workdir)
    target = clouds_yaml.user_clouds_yaml()
    clouds_yaml.merge_into(target, layout, layout.load_secrets())
    print(
        f"novamig-embedded: ready in {ready['elapsed_s']:.1f} s; pid {ready['pid']}; "
        f"identity {layout.keystone_url}; computes {', '.join(layout.hosts)}; "
        f"clouds.yaml entries {layout.cloud_name}, {layout.cloud_name}-member in {target}; "
        f"work dir {workdir}",
        file=out,
    )
    return int(ExitCode.OK)


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
        f"computes {', '.join(layout.hosts)}; work dir {st.workdir}",
        file=out,
    )
    return int(ExitCode.OK)
