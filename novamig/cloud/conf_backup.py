"""Backups of compute configuration a run changes, kept beside the file until it is put back.

A host policy changes a compute host's configuration (DevStack's ``nova-cpu.conf`` over SSH, the
libvirt mode's ``nova/nova-cpu-<host>.conf`` with the same commands run locally, the embedded
cloud's ``policies/<host>.json``) for the length of a case. A run that dies in between —
SIGKILL, the machine's OOM killer, a lost SSH session — cannot restore what it kept in memory, so
before the first change the original goes to ``<file>.novamig-backup`` beside it, with
``<file>.novamig-backup.owner`` naming the run's machine and process. Restoring moves the backup
back over the file (one rename: the file is never half written) and removes both. `novamig cleanup`
finds backups whose owner is gone and does the same.

An existing backup is never overwritten: it holds the configuration from before the first change
(a dead run's leftover means the file in place is that run's change), so a new run takes it as the
original and records itself as its owner. The owner file is written before the backup, so a backup
without one was left by a run killed in between, and is a leftover too.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

from novamig.process_state import alive

BACKUP_SUFFIX = ".novamig-backup"
OWNER_SUFFIX = ".owner"


def backup_of(path: str) -> str:
    """The backup's path for configuration file `path`."""
    return path + BACKUP_SUFFIX


def owner_of(path: str) -> str:
    """The owner file's path for configuration file `path`."""
    return path + BACKUP_SUFFIX + OWNER_SUFFIX


def this_owner() -> str:
    """``<machine> <pid>``: what the owner file records for this process."""
    return f"{socket.gethostname()} {os.getpid()}"


def owner_gone(owner: str | None) -> bool:
    """True when a backup's recorded owner can no longer restore it: no (or an unreadable) owner, or
    a process of this machine that has ended. A process of another machine may still run: False."""
    if not owner:
        return True
    machine, _, pid = owner.strip().rpartition(" ")
    if not pid.isdigit():
        return True
    return machine == socket.gethostname() and not alive(int(pid))


@dataclass(frozen=True)
class Leftover:
    """A configuration file with a backup beside it; `owner` as recorded (None: none)."""

    where: str  # the file, or ``host:file`` for a remote one
    owner: str | None

    def __str__(self) -> str:
        return f"{self.where} (backup of run {self.owner or 'unknown'})"


# -- a file on this machine ------------------------------------------------------------------------
def take_local(path: Path, current: str) -> str:
    """Back `path` up (its text is `current`, as the caller read it) unless a backup exists; record
    this process as the owner; return the original: the existing backup's text, else `current`."""
    backup, owner = Path(backup_of(str(path))), Path(owner_of(str(path)))
    owner.write_text(this_owner() + "\n", encoding="utf-8")
    if backup.exists():
        return backup.read_text(encoding="utf-8")
    tmp = backup.with_name(backup.name + f".{os.getpid()}.tmp")
    tmp.write_text(current, encoding="utf-8")
    tmp.replace(backup)
    return current


def restore_local(path: Path) -> bool:
    """Move `path`'s backup back over it and drop the owner file; False when there was none."""
    backup = Path(backup_of(str(path)))
    if not backup.exists():
        return False
    backup.replace(path)
    with contextlib.suppress(FileNotFoundError):
        Path(owner_of(str(path))).unlink()
    return True


def drop_local(path: Path) -> None:
    """Forget `path`'s backup (the file was put back another way)."""
    for name in (backup_of(str(path)), owner_of(str(path))):
        with contextlib.suppress(FileNotFoundError):
            Path(name).unlink()


def find_local(folder: Path) -> list[Leftover]:
    """Configuration files in `folder` with a backup beside them."""
    found: list[Leftover] = []
    for backup in sorted(folder.glob(f"*{BACKUP_SUFFIX}")):
        original = str(backup)[: -len(BACKUP_SUFFIX)]
        try:
            owner: str | None = Path(owner_of(original)).read_text(encoding="utf-8").strip()
        except OSError:
            owner = None
        found.append(Leftover(original, owner))
    return found


# -- a file on a compute host, as shell commands run with sudo over SSH ----------------------------
# (`sudo=False`: the same commands where the transport runs them as root already, e.g. inside the
# namespaces of the embedded cloud's libvirt hosts, which have no sudo)
def _as_root(script: str, sudo: bool) -> str:
    return f"{'sudo ' if sudo else ''}sh -c {shlex.quote(script)}"


def take_remote_command(path: str, *, sudo: bool = True) -> str:
    """Records this process as the owner, backs `path` up unless a backup exists, and prints the
    original (the backup). One command, so a death between its steps leaves a consistent pair."""
    conf, backup, owner = shlex.quote(path), shlex.quote(backup_of(path)), shlex.quote(owner_of(path))
    tmp = shlex.quote(backup_of(path) + ".tmp")
    script = (
        f"echo {shlex.quote(this_owner())} > {owner} && "
        f"{{ test -e {backup} || {{ cp -p {conf} {tmp} && mv -f {tmp} {backup}; }}; }} && cat {backup}"
    )
    return _as_root(script, sudo)


def restore_remote_command(path: str, *, sudo: bool = True) -> str:
    """Moves `path`'s backup back over it and removes the owner file."""
    conf, backup, owner = shlex.quote(path), shlex.quote(backup_of(path)), shlex.quote(owner_of(path))
    return _as_root(f"mv -f {backup} {conf} && rm -f {owner}", sudo)


FOUND_MARK = "novamig-backup-present"


def find_remote_command(path: str, *, sudo: bool = True) -> str:
    """Prints `FOUND_MARK` and the owner line when `path` has a backup; nothing otherwise."""
    backup, owner = shlex.quote(backup_of(path)), shlex.quote(owner_of(path))
    script = f"if test -e {backup}; then echo {FOUND_MARK}; cat {owner} 2>/dev/null; fi; true"
    return _as_root(script, sudo)


def parse_find_remote(where: str, output: str) -> Leftover | None:
    """`find_remote_command`'s output as a `Leftover` at `where`, or None."""
    lines = output.splitlines()
    if not lines or lines[0].strip() != FOUND_MARK:
        return None
    owner = lines[1].strip() if len(lines) > 1 and lines[1].strip() else None
    return Leftover(where, owner)
