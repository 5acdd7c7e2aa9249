"""clouds.yaml entries for the embedded cloud, the way DevStack writes ``devstack``/``devstack-admin``.

Two entries per cloud: ``<name>`` (admin user in project ``admin``: live migration and host
operations need it) and ``<name>-member`` (an ordinary user in project ``novamig``). Each cloud
writes its own file in its work directory (novamig reads only that one to reach a cloud it started).
``novamig cloud up`` also adds the entries to a clouds.yaml where other tools find them (`target`)
and ``down`` takes them out again.

That file is usually the user's own ``~/.config/openstack/clouds.yaml``, so it is edited the way a
careful tool edits a file it shares:

- only the text of novamig's entries changes: every other entry, comment, blank line, quote and the
  order stay byte for byte (PyYAML cannot write comments back, so the edit is made on the text at
  the positions PyYAML's parser reports). The result is parsed again and must hold exactly the old
  data plus or minus novamig's entries, or nothing is written;
- an entry of the same name that novamig did not write, or that belongs to an embedded cloud still
  running elsewhere, is never replaced;
- two novamig processes never interleave their read-modify-write: an exclusive ``flock`` on the
  file's directory (a lock on the file itself would be lost with the rename; a lock file would be
  left in the user's directory);
- the new text goes to a temporary file in the same directory, is fsynced and renamed over the old
  one: a crash leaves the old file or the new one, never half of either. The owner and permission
  bits stay, less group and other access, because the file now holds a password; ``down`` puts the
  bits back. A symlinked clouds.yaml is edited at its target and stays a symlink;
- a file novamig created starts with `HEADER`; when ``down`` leaves such a file holding nothing
  else it is removed (with the directories ``up`` created for it, if empty), not left as
  ``clouds: {}``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from novamig.embedded import processes
from novamig.embedded.layout import (
    ADMIN_PROJECT,
    ADMIN_USER,
    MEMBER_PROJECT,
    MEMBER_USER,
    REGION,
    CloudLayout,
    Secrets,
)

MARKER = "novamig_embedded_workdir"
"""The key every entry carries: the work directory of its cloud, so ``down`` takes only its own."""

ENV_VAR = "NOVAMIG_CLOUDS_YAML"
"""Names the clouds.yaml ``novamig cloud up`` adds its entries to (``--clouds-yaml`` wins)."""

HEADER = "# Created by `novamig cloud up`; `novamig cloud down` removes it again unless you add to it.\n"

RECORD = "user-clouds-yaml.json"
"""In the cloud's work directory: where ``up`` put the entries, so ``down`` finds them there."""


class CloudsYamlError(ValueError):
    """The file cannot be edited safely; the message says why and what to do instead."""


def entries(layout: CloudLayout, secret: Secrets) -> dict[str, dict[str, Any]]:
    def entry(user: str, project: str, password: str) -> dict[str, Any]:
        return {
            "auth": {
                "auth_url": layout.keystone_url,
                "username": user,
                "password": password,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": REGION,
            "identity_api_version": 3,
            "interface": "public",
            MARKER: str(layout.workdir),
        }

    return {
        layout.cloud_name: entry(ADMIN_USER, ADMIN_PROJECT, secret.admin_password),
        f"{layout.cloud_name}-member": entry(MEMBER_USER, MEMBER_PROJECT, secret.member_password),
    }


def target(flag: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """(the clouds.yaml ``cloud up`` writes to, why that one).

    ``--clouds-yaml``, else ``$NOVAMIG_CLOUDS_YAML``, else ``$OS_CLIENT_CONFIG_FILE`` (the file
    openstacksdk reads first, so the ``openstack`` command finds the entries), else the per-user
    default ``$XDG_CONFIG_HOME/openstack/clouds.yaml`` (``~/.config/openstack/clouds.yaml``).
    """
    env = os.environ if environ is None else environ
    if flag:
        return Path(flag), "--clouds-yaml"
    for var in (ENV_VAR, "OS_CLIENT_CONFIG_FILE"):
        if env.get(var):
            return Path(env[var]), f"${var}"
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "openstack" / "clouds.yaml", "the per-user default"


def user_clouds_yaml() -> Path:
    """Where ``cloud up`` writes without ``--clouds-yaml`` (see `target`)."""
    return target(None)[0]


# -- the cloud's own file ---------------------------------------------------------------------------
def write_own(layout: CloudLayout, secret: Secrets) -> Path:
    text = yaml.safe_dump({"clouds": entries(layout, secret)}, sort_keys=False)
    layout.clouds_yaml.parent.mkdir(parents=True, exist_ok=True)
    _replace(layout.clouds_yaml, text, 0o600)
    return layout.clouds_yaml


# -- the shared file ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    name: str
    first: int  # first line (the key)
    end: int  # one past the last line
    workdir: str | None  # MARKER's value; None: not written by novamig


@dataclass(frozen=True)
class _Doc:
    """A clouds.yaml as text plus where PyYAML's parser found the ``clouds`` entries in it."""

    lines: list[str]
    data: dict[str, Any]
    entries: list[_Entry]
    indent: int  # column of the entries' keys
    insert_at: int  # line after which new entries go
    cut: tuple[int, int] | None  # characters to drop first: an empty `{}` or `null` after `clouds:`
    has_clouds: bool


def check_free(path: Path, names: list[str], workdir: Path) -> None:
    """CloudsYamlError unless `names` can be added to `path` for the cloud in `workdir`.

    Called before the cloud starts, so a refusal costs nothing; `merge_into` checks again under the
    lock.
    """
    path = _real(path)
    if path.exists():
        _refuse_taken(path, _parse(_read(path), path), names, workdir)


def merge_into(path: Path, layout: CloudLayout, secret: Secrets) -> None:
    """Add (or refresh) this cloud's entries in `path`; record where, for ``down``."""
    new = entries(layout, secret)
    path = _real(path)
    created_dirs = _make_parents(path.parent)
    with _locked(path.parent):
        existed = path.exists()
        before = path.stat() if existed else None
        text = _read(path) if existed else HEADER
        doc = _parse(text, path)
        _refuse_taken(path, doc, list(new), layout.workdir)
        stale = [e for e in doc.entries if e.name in new]
        edited = _insert(_parse(_without(doc, stale), path), new)
        expected = _data_without(doc.data, [e.name for e in stale])
        expected.setdefault("clouds", {})
        expected["clouds"] = {**(expected["clouds"] or {}), **new}
        _verify(edited, expected, path)
        mode = 0o600 if before is None else before.st_mode & 0o700
        _replace(path, edited, mode, before)
    # Inserting lines is undone by deleting them; `{}` cut from `clouds: {}`, a `clouds:` key or a
    # final newline added are not: ``down`` puts the original text back if nothing else changed.
    after = _parse(edited, path)
    skeleton = _without(after, [e for e in after.entries if e.name in new])
    undo = {"original": text, "skeleton": skeleton} if existed and skeleton != text else {}
    _save_record(
        layout.workdir, path, created_dirs, None if before is None else before.st_mode & 0o7777, undo
    )


def remove_from(path: Path, layout: CloudLayout) -> list[str]:
    """Remove this cloud's entries (recognised by the work-directory marker); returns their names.

    A file left holding only what novamig wrote into it when it created it is removed.
    """
    path = _real(path)
    if not path.exists():
        return []
    record = load_record(layout.workdir)
    with _locked(path.parent):
        text = _read(path)
        doc = _parse(text, path)
        ours = [e for e in doc.entries if e.workdir == str(layout.workdir)]
        if not ours:
            return []
        edited = _without(doc, ours)
        if record.get("path") == str(path) and record.get("skeleton") == edited:
            edited = str(record["original"])  # exactly the text before `up`
        _verify(edited, _data_without(doc.data, [e.name for e in ours]), path)
        if _only_novamigs(edited):
            path.unlink()
            _fsync_dir(path.parent)
        else:
            mode = record.get("mode_before") if record.get("path") == str(path) else None
            current = path.stat()
            _replace(path, edited, current.st_mode & 0o7777 if mode is None else int(mode), current)
    if not path.exists() and record.get("path") == str(path):
        for directory in reversed(record.get("created_dirs", [])):
            with contextlib.suppress(OSError):  # not empty: somebody else's files are in it
                Path(directory).rmdir()
    return [e.name for e in ours]


def recorded_target(workdir: Path) -> Path | None:
    """The clouds.yaml ``up`` added the entries of the cloud in `workdir` to, if it said."""
    path = load_record(workdir).get("path")
    return Path(path) if path else None


def load_record(workdir: Path) -> dict[str, Any]:
    try:
        data = json.loads((workdir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_record(
    workdir: Path, path: Path, created_dirs: list[Path], mode_before: int | None, undo: dict[str, str]
) -> None:
    """0600: `undo` holds the file's earlier text, passwords of other clouds included."""
    if not workdir.is_dir():
        return  # entries for a cloud without a work directory (tests of the editing alone)
    if load_record(workdir).get("path") == str(path):  # a second `up` into the same file: the first knew more
        return
    record = {"path": str(path), "created_dirs": [str(d) for d in created_dirs], "mode_before": mode_before}
    _replace(workdir / RECORD, json.dumps({**record, **undo}, indent=2) + "\n", 0o600)


# -- reading the text ---------------------------------------------------------------------------------
def _parse(text: str, path: Path) -> _Doc:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CloudsYamlError(f"{path}: not valid YAML, left as it is: {exc}") from None
    lines = text.splitlines(keepends=True)
    if root is None:
        return _Doc(lines, {}, [], 2, len(lines), None, False)
    if not isinstance(root, yaml.MappingNode) or root.flow_style or not isinstance(data, dict):
        raise CloudsYamlError(f"{path}: not a clouds.yaml (its top level is not a block mapping)")
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "clouds":
            return _parse_clouds(lines, data, key, value, path)
    return _Doc(lines, data, [], 2, len(lines), None, False)


def _parse_clouds(
    lines: list[str], data: dict[str, Any], key: yaml.Node, value: yaml.Node, path: Path
) -> _Doc:
    if isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:null":
        return _Doc(lines, data, [], key.start_mark.column + 2, key.start_mark.line + 1, _span(value), True)
    if not isinstance(value, yaml.MappingNode):
        raise CloudsYamlError(f"{path}: `clouds:` is not a mapping of cloud names")
    if value.flow_style:
        if value.value:
            raise CloudsYamlError(
                f"{path}: `clouds:` is written in flow style ({{...}}); novamig edits only block style "
                "without touching the rest: add the entries by hand or choose another file"
            )
        return _Doc(lines, data, [], key.start_mark.column + 2, key.start_mark.line + 1, _span(value), True)
    keys = [k for k, _ in value.value if isinstance(k, yaml.ScalarNode)]
    if len(keys) != len(value.value):
        raise CloudsYamlError(f"{path}: `clouds:` has a key that is not a plain name")
    clouds_end = _end_line(lines, value)
    found: list[_Entry] = []
    for i, k in enumerate(keys):
        first, col = k.start_mark.line, k.start_mark.column
        if lines[first][:col].strip():
            raise CloudsYamlError(f"{path}:{first + 1}: cloud {k.value!r} does not start its line")
        end = keys[i + 1].start_mark.line if i + 1 < len(keys) else clouds_end
        while end > first + 1 and (not lines[end - 1].strip() or _indent(lines[end - 1]) <= col):
            end -= 1  # blank lines and comments at the key's level or left of it belong to what follows
        body = data["clouds"].get(k.value)
        marker = body.get(MARKER) if isinstance(body, dict) else None
        found.append(_Entry(k.value, first, end, None if marker is None else str(marker)))
    indent = keys[0].start_mark.column
    return _Doc(lines, data, found, indent, found[-1].end, None, True)


def _end_line(lines: list[str], node: yaml.Node) -> int:
    """One past the last line a block collection can own: its end mark is the next token's start."""
    mark = node.end_mark
    if mark.line >= len(lines) or not "".join(lines[mark.line :])[mark.column :].strip():
        return len(lines)
    return int(mark.line)


def _span(node: yaml.Node) -> tuple[int, int]:
    return int(node.start_mark.index), int(node.end_mark.index)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _refuse_taken(path: Path, doc: _Doc, names: list[str], workdir: Path) -> None:
    for entry in doc.entries:
        if entry.name not in names:
            continue
        if entry.workdir is None:
            raise CloudsYamlError(
                f"{path}: a cloud named {entry.name!r} is already there and novamig did not write it; "
                f"it stays: put novamig's entries in another file with --clouds-yaml PATH or ${ENV_VAR}"
            )
        other = Path(entry.workdir)
        if other != workdir and processes.cloud_pid(other / "cloud.pid", other) is not None:
            raise CloudsYamlError(
                f"{path}: {entry.name!r} belongs to the embedded cloud running in {other}; it stays: "
                f"stop that one first, or put these entries elsewhere with --clouds-yaml PATH or ${ENV_VAR}"
            )


# -- changing the text ---------------------------------------------------------------------------------
def _without(doc: _Doc, gone: list[_Entry]) -> str:
    lines = list(doc.lines)
    for entry in sorted(gone, key=lambda e: e.first, reverse=True):
        del lines[entry.first : entry.end]
    return "".join(lines)


def _insert(doc: _Doc, new: dict[str, dict[str, Any]]) -> str:
    newline = "\r\n" if doc.lines and doc.lines[0].endswith("\r\n") else "\n"
    text = "".join(doc.lines)
    if doc.cut is not None:  # `clouds: {}` or `clouds:` alone: the entries become its block
        start, end = doc.cut
        text = text[:start] + text[end:]
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += newline
    body = yaml.safe_dump(new, sort_keys=False, default_flow_style=False)
    block = [(" " * doc.indent + line if line.strip() else line) for line in body.splitlines()]
    if not doc.has_clouds:
        lines.append("clouds:" + newline)
        at = len(lines)
    else:
        at = doc.insert_at
    lines[at:at] = [line + newline for line in block]
    return "".join(lines)


def _data_without(data: dict[str, Any], names: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    clouds = out.get("clouds")
    if isinstance(clouds, dict):
        for name in names:
            clouds.pop(name, None)
    return out


def _verify(text: str, expected: dict[str, Any], path: Path) -> None:
    """The edit must change exactly novamig's entries; anything else and the file is left alone."""
    got = yaml.safe_load(text) or {}
    if _normal(got) != _normal(expected):
        raise CloudsYamlError(
            f"{path}: editing the text would change more than novamig's entries (its layout is one "
            "novamig does not edit); left as it is: add or remove the entries by hand, or use another "
            "file with --clouds-yaml PATH"
        )


def _normal(data: Any) -> Any:
    if isinstance(data, dict) and not data.get("clouds"):
        return {**data, "clouds": {}}  # `clouds:`, `clouds: {}` and no clouds at all say the same
    return data


def _only_novamigs(text: str) -> bool:
    """Nothing left but what novamig wrote when it created the file."""
    rest = [line.strip() for line in text.splitlines() if line.strip()]
    return rest in ([HEADER.strip(), "clouds:"], [HEADER.strip(), "clouds: {}"])


# -- the file itself ----------------------------------------------------------------------------------
def _read(path: Path) -> str:
    """The text as it is: no newline translation (a CRLF file stays CRLF)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CloudsYamlError(f"{path}: not UTF-8 text, left as it is: {exc}") from None


def _real(path: Path) -> Path:
    """The file a symlink points at (edited there, so the link stays a link)."""
    return Path(os.path.realpath(path.expanduser()))


def _make_parents(directory: Path) -> list[Path]:
    """mkdir -p; returns the directories it created, outermost first."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _replace(path: Path, text: str, mode: int, old: os.stat_result | None = None) -> None:
    tmp = path.with_name(f".{path.name}.novamig-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            if old is not None and os.geteuid() == 0 and (old.st_uid, old.st_gid) != (0, 0):
                os.fchown(fh.fileno(), old.st_uid, old.st_gid)  # root editing a user's file
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
