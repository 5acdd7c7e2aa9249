"""Two runs on one cloud never clean up each other: `novamig cleanup` and the runs still going.

Fast tier, no cloud: the live run is a real process owning a real SSH-key folder (what every
`novamig run` keeps in the temp folder while it runs, named after its run id), the dead run's owner
is a process that has exited, and the question is asked on a real pseudo-terminal. The resources
are `Found` as `find_tagged` builds them, with their run read from the marks `resources` puts on.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from novamig.cloud.resources import resource_name, run_tag
from novamig.cloud.sweep import Found, run_of, select
from novamig.runner.orphans import OWNER_FILE, confirm_live_run, find_orphans, live_runs

LIVE, DEAD, OTHER = "a1b2c3", "d4e5f6", "0a0b0c"


def _key_dir(tmp: Path, run_id: str, pid: int) -> Path:
    folder = tmp / f"novamig-{run_id}-ssh-x1y2"
    folder.mkdir()
    (folder / OWNER_FILE).write_text(f"{pid}\n")
    return folder


@pytest.fixture
def live_process() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _found(run_id: str) -> list[Found]:
    """One of each kind, marked as a run marks them."""
    return [
        Found("server", f"id-{run_id}", resource_name(run_id, "c0", "s0"), "ACTIVE on compute1",
              run_of("renamed-by-someone", ["novamig", run_tag(run_id)])),
        Found("flavor", f"f-{run_id}", resource_name(run_id, "flavor", "1c256m1g"), "",
              run_of(resource_name(run_id, "flavor", "1c256m1g"), (), f"novamig run {run_id}")),
        Found("keypair", resource_name(run_id, "key"), resource_name(run_id, "key"), "",
              run_of(resource_name(run_id, "key"))),
        Found("floating_ip", f"fip-{run_id}", "192.0.2.7", "not associated",
              run_of("", (), f"novamig run {run_id} server s0")),
    ]  # fmt: skip


def test_every_kind_of_resource_names_its_run() -> None:
    assert {f.run_id for f in _found(LIVE)} == {LIVE}
    assert run_of("novamig-something-else") is None  # a name without a run id: unknown, not guessed
    assert "[run a1b2c3]" in str(_found(LIVE)[0])


def test_a_live_run_is_found_by_its_key_folder_and_a_dead_one_is_not(
    tmp_path: Path, live_process: int
) -> None:
    _key_dir(tmp_path, LIVE, live_process)
    dead = _key_dir(tmp_path, DEAD, _dead_pid())
    assert live_runs(tmp_path) == {LIVE: live_process}
    # the dead run's folder is a leftover for the machine sweep; the live run's is not
    assert [o.name for o in find_orphans(tmp_path) if o.kind == "temp folder"] == [str(dead)]


def test_cleanup_of_everything_keeps_a_live_runs_resources_unless_confirmed(
    tmp_path: Path, live_process: int
) -> None:
    _key_dir(tmp_path, LIVE, live_process)
    _key_dir(tmp_path, DEAD, _dead_pid())
    found = _found(LIVE) + _found(DEAD) + [Found("keypair", "novamig-key", "novamig-key")]
    out = io.StringIO()
    asked: list[tuple[str, int, int]] = []

    def no(run_id: str, pid: int, items: list[Found]) -> bool:
        asked.append((run_id, pid, len(items)))
        return confirm_live_run(io.StringIO("y\n"), out)(run_id, pid, items)  # not a terminal: no

    chosen = select(found, run=None, live=live_runs(tmp_path), confirm=no)
    assert asked == [(LIVE, live_process, 4)]  # asked once, about the live run only
    assert {f.run_id for f in chosen.kept} == {LIVE} and len(chosen.kept) == 4
    assert {f.run_id for f in chosen.delete} == {DEAD, None} and len(chosen.delete) == 5
    said = out.getvalue()
    assert f"run {LIVE} is still going (process {live_process})" in said
    assert f"--run {LIVE}" in said

    everything = select(found, run=None, live=live_runs(tmp_path), confirm=lambda *_: True)
    assert set(everything.delete) == set(found) and everything.kept == []


def test_cleanup_of_one_run_touches_that_run_only(tmp_path: Path, live_process: int) -> None:
    _key_dir(tmp_path, LIVE, live_process)
    found = _found(LIVE) + _found(OTHER)

    def never(*_: object) -> bool:
        raise AssertionError("naming the run is the confirmation")

    mine = select(found, run=LIVE, live=live_runs(tmp_path), confirm=never)
    assert mine.delete == _found(LIVE) and mine.kept == []
    assert select(found, run=DEAD, live={}, confirm=never).delete == []


def test_the_question_is_asked_on_a_terminal(live_process: int) -> None:
    leader, follower = os.openpty()
    try:
        with os.fdopen(os.dup(follower), "r") as terminal:
            assert terminal.isatty()
            os.write(leader, b"y\n")
            out = io.StringIO()
            assert confirm_live_run(terminal, out)(LIVE, live_process, _found(LIVE)) is True
            assert out.getvalue().startswith(f"run {LIVE} is still going (process {live_process} on this")
            assert "delete its 4 resource(s) under it? [y/N]" in out.getvalue()
            os.write(leader, b"\n")  # just Enter: the default is no
            assert confirm_live_run(terminal, io.StringIO())(LIVE, live_process, _found(LIVE)) is False
    finally:
        os.close(leader)
        os.close(follower)
