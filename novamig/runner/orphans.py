"""What a killed run leaves on this machine, found and removed by `novamig cleanup`.

SIGINT and SIGTERM let a run stop its own embedded cloud; SIGKILL does not. The cloud's process dies
with the run (it holds a lifeline to it), and so do the QEMU guests it started, but its work
directory (`novamig-embedded-*` in the temp folder, holding the cloud's keys and logs), its network
namespace and the run's own temp folders (its private SSH key) stay. A cloud whose recorded process
is gone is an orphan: nothing can use it again, so cleanup stops whatever of it still runs and
removes it; so is a temp folder whose recorded owner is gone. Namespaces named by novamig
(`novamig-<creator pid>-<hex>`) whose creator is gone are removed too; one whose creator pid is
alive, even by reuse, is kept: a leftover is better than breaking a live run.

A run that changed a compute host's configuration (a host policy) keeps the original in a backup
beside it (`novamig.cloud.conf_backup`); a backup whose owner is gone is a leftover too, put back by
moving it over the file: in a live embedded cloud's work directory here (``policies/<host>.json``,
read at each migration, so nothing restarts), and on DevStack computes over SSH
(`restore_ssh_backups`, which restarts the compute service as a run's own restore does).

The same owner files say which runs are still going: every run keeps its private SSH key in an
owned temp folder named after its run id (``novamig-<run id>-ssh-…``), removed when it ends. A
cleanup of the cloud (`novamig.cloud.sweep.select`) keeps those runs' resources unless the user
confirms (`confirm_live_run`) or names the run with ``--run``: two runs on one cloud never clean
up each other.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from novamig import process_state
from novamig.cloud import conf_backup
from novamig.cloud.host_policy import SshHostPolicy
from novamig.cloud.sweep import Found
from novamig.embedded import compute_conf, host_policy, processes
from novamig.embedded.controller import EmbeddedCloud, default_workdir
from novamig.hypervisor.netns import NETNS_PREFIX, list_novamig_netns

#: Prefix of a run's own embedded cloud's work directory (`EmbeddedCloud` makes it with mkdtemp).
WORKDIR_PREFIX = "novamig-embedded-"
#: A work directory without a recorded process is being created by a starting cloud for this long.
STARTING_GRACE_S = 120.0
#: The file in a run's own temp folder (its SSH key's) naming the process that made it.
OWNER_FILE = ".novamig-owner"


def owned_temp_dir(prefix: str) -> Path:
    """A temp folder that records its creating process, so cleanup can tell a dead run's folder
    (a SIGKILLed run leaves its private SSH key there) from a live one's."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / OWNER_FILE).write_text(f"{os.getpid()}\n", encoding="ascii")
    return path


#: A run's own SSH-key folder (`owned_temp_dir(f"novamig-{run_id}-ssh-")` in the run command).
RUN_KEY_DIR = re.compile(r"^novamig-([0-9a-f]+)-ssh-")


def _owner(folder: Path) -> int | None:
    try:
        return int((folder / OWNER_FILE).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None  # not one of ours, or being written


def _dead_owner(folder: Path) -> bool:
    owner = _owner(folder)
    return owner is not None and not process_state.alive(owner)


def live_runs(tmp: Path | None = None) -> dict[str, int]:
    """The runs going on on this machine: run id → its process (from their SSH-key folders)."""
    root = tmp or Path(tempfile.gettempdir())
    live: dict[str, int] = {}
    for folder in root.glob("novamig-*-ssh-*"):
        named = RUN_KEY_DIR.match(folder.name)
        owner = _owner(folder) if named else None
        if named and owner is not None and process_state.alive(owner):
            live[named.group(1)] = owner
    return live


def confirm_live_run(inp: IO[str], out: IO[str]) -> Callable[[str, int, list[Found]], bool]:
    """`novamig.cloud.sweep.select`'s question about a run still going: asked on a terminal only;
    without one (a script, CI) the answer is no, and the run's resources are kept."""

    def confirm(run_id: str, pid: int, items: list[Found]) -> bool:
        question = (
            f"run {run_id} is still going (process {pid} on this machine): "
            f"delete its {len(items)} resource(s) under it? [y/N] "
        )
        if not inp.isatty():
            kept = f"its {len(items)} resource(s) kept (name it with --run {run_id} to delete them)"
            print(f"run {run_id} is still going (process {pid}): {kept}", file=out)
            return False
        print(question, end="", file=out, flush=True)
        return inp.readline().strip().lower() in ("y", "yes")

    return confirm


@dataclass(frozen=True)
class Orphan:
    kind: str  # "embedded cloud", "temp folder", "host policy" (a backup to put back) or "namespace"
    name: str

    def __str__(self) -> str:
        return f"{self.kind:<14} {self.name}"


def _orphaned_workdir(workdir: Path, now: float) -> bool:
    pid_file = workdir / "cloud.pid"
    if processes.cloud_pid(pid_file, workdir) is not None:
        return False
    if pid_file.exists():
        return True  # it ran, and its process is gone
    return now - workdir.stat().st_mtime > STARTING_GRACE_S


def _creator_alive(netns: str) -> bool:
    """True unless the namespace's name says which process made it and that process is gone."""
    creator = netns.removeprefix(NETNS_PREFIX).split("-", 1)[0]
    return not creator.isdigit() or process_state.alive(int(creator))


def _policy_dir(workdir: Path) -> Path:
    """The folder of an embedded cloud's per-host policy files (``host_policy.path``'s)."""
    return host_policy.path(workdir, "any").parent


def find_orphans(tmp: Path | None = None) -> list[Orphan]:
    """Dead embedded clouds' work directories under `tmp` and namespaces whose creator is gone."""
    root = tmp or Path(tempfile.gettempdir())
    now = time.time()
    found = [
        Orphan("embedded cloud", str(d))
        for d in sorted(root.glob(f"{WORKDIR_PREFIX}*"))
        if d.is_dir() and _orphaned_workdir(d, now)
    ]
    found += [
        Orphan("temp folder", str(d))
        for d in sorted(root.glob("novamig-*"))
        if not d.name.startswith(WORKDIR_PREFIX) and d.is_dir() and _dead_owner(d)
    ]
    live_own = [d for d in sorted(root.glob(f"{WORKDIR_PREFIX}*")) if d.is_dir()]
    found += [
        Orphan("host policy", leftover.where)
        # `cloud up`'s cloud, running or not (its folder stays); a run's own, while it runs
        # (a dead one's folder goes as a whole)
        for workdir in [default_workdir(), *(d for d in live_own if not _orphaned_workdir(d, now))]
        for folder in (_policy_dir(workdir), compute_conf.conf_dir(workdir))  # libvirt mode: nova-cpu confs
        for leftover in conf_backup.find_local(folder)
        if conf_backup.owner_gone(leftover.owner)
    ]
    found += [Orphan("namespace", n) for n in list_novamig_netns() if not _creator_alive(n)]
    return found


def remove_orphans(found: list[Orphan]) -> list[str]:
    """Stop and remove what `find_orphans` listed (clouds first: they delete their namespaces);
    returns what is still there."""
    for orphan in found:
        if orphan.kind == "embedded cloud":
            EmbeddedCloud(Path(orphan.name)).stop()
        elif orphan.kind == "temp folder":
            shutil.rmtree(orphan.name, ignore_errors=True)
        elif orphan.kind == "host policy" and conf_backup.restore_local(Path(orphan.name)):
            with contextlib.suppress(compute_conf.ComputeConfError):  # the file is back either way
                compute_conf.reload_put_back(Path(orphan.name))
    left = [o for o in found if o.kind not in ("namespace", "host policy") and Path(o.name).exists()]
    left += [o for o in found if o.kind == "host policy" and Path(conf_backup.backup_of(o.name)).exists()]
    present = set(list_novamig_netns())
    for orphan in found:
        if orphan.kind == "namespace" and orphan.name in present:
            subprocess.run(
                ["ip", "netns", "delete", orphan.name], capture_output=True, timeout=30, check=False
            )
    present = set(list_novamig_netns())
    left += [o for o in found if o.kind == "namespace" and o.name in present]
    return [str(o) for o in left]


@dataclass(frozen=True)
class Swept:
    """What `sweep_local` found on this machine and what of it is still there."""

    found: int
    left: list[str]


def sweep_local(yes: bool, out: IO[str], tmp: Path | None = None) -> Swept:
    """List this machine's leftovers of killed runs; remove them with `yes`. Prints nothing when
    there are none, so a cleanup of a clean machine reads as before."""
    found = find_orphans(tmp)
    if not found:
        return Swept(0, [])
    print(f"this machine: {len(found)} leftover(s) of killed runs:", file=out)
    for orphan in found:
        print(f"  {orphan}", file=out)
    if not yes:
        print("dry run: nothing removed (add --yes to remove)", file=out)
        return Swept(len(found), [])
    left = remove_orphans(found)
    for item in left:
        print(f"novamig: could not remove {item}", file=sys.stderr)
    print(f"this machine: removed {len(found) - len(left)} of {len(found)}", file=out)
    return Swept(len(found), left)


def restore_ssh_backups(policy: SshHostPolicy, yes: bool, out: IO[str]) -> Swept:
    """List the compute hosts whose configuration a dead run left changed (a backup beside
    ``nova-cpu.conf`` whose owner is gone); with `yes`, put each back and restart its compute
    service. A backup whose owner still runs is named and kept."""
    found = policy.leftovers()
    dead = [(host, leftover) for host, leftover in found if conf_backup.owner_gone(leftover.owner)]
    for _, leftover in found:
        if not conf_backup.owner_gone(leftover.owner):
            print(f"compute configuration {leftover}: its run is still going, kept", file=out)
    if not dead:
        return Swept(0, [])
    print(f"compute hosts: {len(dead)} configuration(s) left changed by killed runs:", file=out)
    for _, leftover in dead:
        print(f"  {leftover}", file=out)
    if not yes:
        print("dry run: nothing restored (add --yes to restore)", file=out)
        return Swept(len(dead), [])
    left: list[str] = []
    for host, leftover in dead:
        try:
            policy.restore_leftover(host)
        except Exception as exc:  # one host's failure must not keep the others changed
            print(f"novamig: could not restore {leftover.where}: {exc}", file=sys.stderr)
            left.append(leftover.where)
    print(f"compute hosts: restored {len(dead) - len(left)} of {len(dead)}", file=out)
    return Swept(len(dead), left)
