"""`novamig cleanup` on this machine: a dead run's folders go, a live run's stay."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

from novamig.runner.orphans import OWNER_FILE, find_orphans, owned_temp_dir, remove_orphans, sweep_local


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _ours(tmp: Path) -> list[str]:
    return sorted(o.name for o in find_orphans(tmp) if o.kind != "namespace")


def test_dead_run_folders_are_found_and_live_ones_kept(tmp_path: Path) -> None:
    dead_cloud = tmp_path / "novamig-embedded-dead"
    (dead_cloud / "guests").mkdir(parents=True)
    (dead_cloud / "cloud.pid").write_text(f"{_dead_pid()}\n")
    live_cloud = tmp_path / "novamig-embedded-live"
    live_cloud.mkdir()
    (live_cloud / "cloud.pid").write_text(f"{os.getpid()}\n")  # alive, but not running this cloud
    starting = tmp_path / "novamig-embedded-starting"
    starting.mkdir()  # no cloud.pid yet and young: a cloud being started
    dead_keys = tmp_path / "novamig-abc123-ssh-x"
    dead_keys.mkdir()
    (dead_keys / OWNER_FILE).write_text(f"{_dead_pid()}\n")
    (dead_keys / "id_ed25519").write_text("PRIVATE")
    live_keys = tmp_path / "novamig-def456-ssh-y"
    live_keys.mkdir()
    (live_keys / OWNER_FILE).write_text(f"{os.getpid()}\n")
    unknown = tmp_path / "novamig-someone-else"
    unknown.mkdir()

    # A cloud.pid whose process does not run this work directory is a dead cloud's (pid reuse).
    assert _ours(tmp_path) == sorted(str(p) for p in (dead_cloud, live_cloud, dead_keys))
    found = [o for o in find_orphans(tmp_path) if o.kind != "namespace"]
    assert remove_orphans(found) == []
    assert not dead_cloud.exists() and not dead_keys.exists() and not live_cloud.exists()
    assert starting.exists() and live_keys.exists() and unknown.exists()
    assert _ours(tmp_path) == []


def test_owned_temp_dir_names_its_owner(tmp_path: Path) -> None:
    folder = owned_temp_dir("novamig-test-")
    try:
        assert (folder / OWNER_FILE).read_text().strip() == str(os.getpid())
        assert str(folder) not in _ours(folder.parent)
    finally:
        (folder / OWNER_FILE).unlink()
        folder.rmdir()


def test_sweep_is_silent_on_a_clean_machine_and_a_dry_run_removes_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    keys = tmp_path / "novamig-aa-ssh-z"
    keys.mkdir()
    (keys / OWNER_FILE).write_text(f"{_dead_pid()}\n")
    swept = sweep_local(False, out, tmp_path)
    assert swept.found >= 1 and keys.exists()
    assert "dry run: nothing removed" in out.getvalue()
    keys_only = [o for o in find_orphans(tmp_path) if o.kind == "temp folder"]
    assert remove_orphans(keys_only) == [] and not keys.exists()
