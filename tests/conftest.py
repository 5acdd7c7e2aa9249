"""Suite-wide guard: whatever the tests start, they end.

Every QEMU process and network namespace that appeared during the session must be gone when it
finishes; a leak fails the run even when every test passed. Processes are recognised by a marker in
their environment that this session sets and every child inherits, so QEMUs of other programs on
the same machine never count.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SESSION_MARKER = f"NOVAMIG_TEST_SESSION={uuid.uuid4().hex}".encode()
os.environ["NOVAMIG_TEST_SESSION"] = SESSION_MARKER.split(b"=", 1)[1].decode()


def qemu_pids() -> set[int]:
    """QEMU processes started (directly or not) by this test session."""
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not (cmdline.startswith(b"qemu-system") or b"/qemu-system" in cmdline.split(b"\0", 1)[0]):
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if SESSION_MARKER in environ.split(b"\0"):
            pids.add(int(entry.name))
    return pids


def novamig_netns() -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith("novamig")}
    except FileNotFoundError:
        return set()


def _orphaned_or_ours(netns: str) -> bool:
    """A namespace is named `novamig-<creator pid>-<random>`. One whose creator is still alive and
    is not this process belongs to a concurrent run (another xdist worker) that will remove it."""
    parts = netns.split("-")
    if len(parts) < 3 or not parts[1].isdigit():
        return True
    pid = int(parts[1])
    return pid == os.getpid() or not Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    netns_before = novamig_netns()
    yield
    leaked_qemu = qemu_pids()
    leaked_netns = {n for n in novamig_netns() - netns_before if _orphaned_or_ours(n)}
    assert not leaked_qemu, f"QEMU processes left running: {sorted(leaked_qemu)}"
    assert not leaked_netns, f"network namespaces left behind: {sorted(leaked_netns)}"


# -- the user's own OpenStack configuration: nobody here reads it, nobody changes it --------------
# openstacksdk fixes its search path (~/.config/openstack, /etc/openstack) when it is imported, so no
# test could hide those files by changing HOME. Instead the session hands openstacksdk files of its
# own through the variables it reads first, drops the user's OS_* variables (OS_CLOUD, OS_AUTH_URL,
# ... would otherwise send a test to the user's cloud) and points `novamig cloud up|down` at a work
# directory of its own (the user's own `novamig cloud up` keeps running). Afterwards every file of
# the user's configuration must be byte for byte as before, with the same permission bits.

_SESSION_VARIABLES = ("NOVAMIG_CLOUDS_YAML", "NOVAMIG_EMBEDDED_DIR")


def _openstack_config_snapshot(environ: dict[str, str]) -> dict[str, str]:
    """Every place openstacksdk or `novamig cloud up` reads or writes the user's configuration:
    path -> "sha256 mode" for a file, "directory" or "absent"."""
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    places = {
        Path(environ.get("HOME", home)) / ".config" / "openstack",
        home / ".config" / "openstack",
        Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "openstack",
        Path("/etc/openstack"),
    }
    files = {Path.cwd() / f"{name}{ext}" for name in ("clouds", "secure") for ext in (".yaml", ".yml")}
    files |= {Path(environ[v]) for v in ("OS_CLIENT_CONFIG_FILE", "OS_CLIENT_SECURE_FILE") if environ.get(v)}
    for place in places:
        files.add(place)
        if place.is_dir():
            files |= set(place.rglob("*"))
    snapshot: dict[str, str] = {}
    for path in sorted(files):
        try:
            if path.is_dir():
                snapshot[str(path)] = "directory"
            elif path.exists():
                snapshot[str(path)] = (
                    f"{hashlib.sha256(path.read_bytes()).hexdigest()} {path.stat().st_mode:o}"
                )
            else:
                snapshot[str(path)] = "absent"
        except OSError as exc:
            snapshot[str(path)] = f"unreadable: {exc.strerror}"
    return snapshot


@pytest.fixture(scope="session", autouse=True)
def users_openstack_config_untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    before = _openstack_config_snapshot(dict(os.environ))
    own = tmp_path_factory.mktemp("openstack-config")
    (own / "clouds.yaml").write_text("clouds: {}\n")
    (own / "secure.yaml").write_text("clouds: {}\n")
    replaced = {v: os.environ.get(v) for v in os.environ if v.startswith("OS_")}
    replaced.update({v: os.environ.get(v) for v in _SESSION_VARIABLES})
    for var in replaced:
        os.environ.pop(var, None)
    session_env = {
        "OS_CLIENT_CONFIG_FILE": str(own / "clouds.yaml"),
        "OS_CLIENT_SECURE_FILE": str(own / "secure.yaml"),
        "NOVAMIG_EMBEDDED_DIR": str(own / "embedded"),
    }
    replaced.update({v: os.environ.get(v) for v in session_env if v not in replaced})
    os.environ.update(session_env)
    try:
        yield
    finally:
        for var, value in replaced.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    after = _openstack_config_snapshot(dict(os.environ))
    changed = {p: (before.get(p, "absent"), after.get(p, "absent")) for p in before.keys() | after.keys()}
    changed = {p: ba for p, ba in changed.items() if ba[0] != ba[1]}
    assert not changed, f"the tests changed the user's OpenStack configuration (before, after): {changed}"
