"""Suite-wide guard: whatever the tests start, they end.

Every QEMU process and network namespace that appeared during the session must be gone when it
finishes; a leak fails the run even when every test passed. Processes are recognised by a marker in
their environment that this session sets and every child inherits, so QEMUs of other programs on
the same machine never count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import pwd
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.pytest_fixtures import embedded_cloud, embedded_conn
from novamig.guest.image import GuestImage, build_tiny_image
from novamig.hypervisor.binary import qemu_binary
from novamig.hypervisor.errors import MachineUnusable
from novamig.results import CaseResult, Environment, MigrationRecord, Results, SlaCheck

__all__ = ["embedded_cloud", "embedded_conn"]

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


# -- shared fixtures: QEMU, the tiny guest image, the embedded cloud, a results document -----------


@pytest.fixture(scope="session")
def qemu_path() -> str:
    """qemu-system-x86_64 found the way novamig finds it (`NOVAMIG_QEMU`, else PATH): a test that
    needs QEMU on a machine without it is skipped, saying why, rather than failing."""
    try:
        return qemu_binary()
    except MachineUnusable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tiny_image(qemu_path: str) -> GuestImage:
    """The tiny guest image, built once per session (a cache hit in the user's image cache)."""
    return build_tiny_image()


#: `embedded_qemu(incoming_only=False)`: PID → start time (clock ticks since boot) of the QEMU
#: processes the session's embedded cloud runs now.
EmbeddedQemu = Callable[..., dict[int, float]]


@pytest.fixture
def embedded_qemu(embedded_cloud: EmbeddedCloud) -> EmbeddedQemu:
    """The session cloud's QEMU processes, found by its work directory on their command line (so
    other clouds' and other tests' guests never count); `incoming_only` keeps the migration
    destinations (`-incoming`), the start time tells the newest."""
    workdir = str(Path(embedded_cloud.workdir).resolve()).encode()

    def find(incoming_only: bool = False) -> dict[int, float]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                started = float((entry / "stat").read_text().rsplit(")", 1)[1].split()[19])
            except (OSError, IndexError, ValueError):
                continue
            if not argv or b"qemu-system" not in argv[0] or workdir not in b" ".join(argv):
                continue
            if incoming_only and b"-incoming" not in argv:
                continue
            found[int(entry.name)] = started
        return found

    return find


@pytest.fixture
def cloud(
    embedded_cloud: EmbeddedCloud, embedded_qemu: EmbeddedQemu, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The session cloud's name, its clouds.yaml the only one openstacksdk reads; afterwards none
    of its QEMU processes may remain: every server a run creates is deleted, so every guest process
    must be gone too (Nova deletes asynchronously: polled for up to 30 s)."""
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(embedded_cloud.clouds_yaml))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    yield embedded_cloud.cloud_name
    _wait_until(lambda: not embedded_qemu(), 30.0, "the QEMU processes of deleted servers to end")


@pytest.fixture
def three_case_results() -> Results:
    """A results document with one case of each kind: passed, failed (an SLA missed, a migration
    in error), and broken (an error text with characters HTML must escape)."""
    ok = CaseResult(
        id="a=1#r1",
        passed=True,
        sla=[SlaCheck(name="duration_s.max", limit=10, value=2.5, passed=True)],
        migrations=[
            MigrationRecord(
                server="s0",
                source_host="h1",
                dest_host="h2",
                status="completed",
                requested_at=1.0,
                finished_at=3.5,
                duration_s=2.5,
            )
        ],
    )
    bad = CaseResult(
        id="a=2#r1",
        passed=False,
        sla=[SlaCheck(name="duration_s.max", limit=1, value=2.5, passed=False)],
        migrations=[
            MigrationRecord(
                server="s0",
                source_host="h1",
                dest_host=None,
                status="error",
                requested_at=1.0,
                finished_at=2.0,
            )
        ],
    )
    broken = CaseResult(id="a=3#r1", passed=False, error="BootFailure: server went to ERROR: <no host>")
    env = Environment(cloud="c", novamig_version="0", started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    return Results(scenario={"name": "demo"}, environment=env, cases=[ok, bad, broken], passed=False)


class SchedulingJitter:
    """The load on this host while a test runs: a thread asks for a 1 ms wake-up again and again
    and keeps the worst lateness. A host too busy to run a thread on time shows here as it does in
    a probe process, a guest's vCPU or the thread that reads a heartbeat; an accuracy test widens
    its bound by it instead of skipping itself on a busy host."""

    PERIOD_S = 0.001

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduling-jitter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asked = time.monotonic()
        while not self._stop.wait(self.PERIOD_S):
            now = time.monotonic()
            self.worst_ms = max(self.worst_ms, (now - asked - self.PERIOD_S) * 1000)
            asked = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def scheduling_jitter() -> Iterator[SchedulingJitter]:
    """Measures the host's worst scheduling stall from the test's start (`worst_ms`, read it
    whenever; it keeps measuring until the test ends)."""
    jitter = SchedulingJitter()
    try:
        yield jitter
    finally:
        jitter.stop()


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


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


#: `wait_until(predicate, timeout, what)`: the type of the `wait_until` fixture.
WaitUntil = Callable[[Callable[[], bool], float, str], None]


@pytest.fixture
def wait_until() -> WaitUntil:
    """Poll `predicate` until it holds; fail the test naming `what` when `timeout` seconds pass.

    Tests synchronise on something observable (a sample, a heartbeat, a port) this way, never by
    sleeping for a guessed time and hoping it has happened. A fixture rather than an import: the
    test directories each have a conftest module, so `import conftest` would be ambiguous.
    """
    return _wait_until
