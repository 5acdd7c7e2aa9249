"""An output folder that cannot take the run's output is refused before the cloud is touched.

Real file systems, no stand-ins: a read-only tmpfs and a 64 KiB tmpfs already holding an earlier
run's results (the tests run as root, for whom a chmod'ed folder is still writable, so read-only
must come from the mount). The run must end with one line naming the folder, exit 2 (read-only) or
3 (disk full), no traceback, before it prints its run id (which it does before any cloud is touched),
and leave what the folder held byte for byte.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from novamig.runner.commands import OUT_PROBE_NAME, out_dir_problem

NOVAMIG = str(Path(sys.executable).parent / "novamig")
EARLIER = b'{"schema": "novamig.results/1", "earlier": true}\n'


def _mount(target: Path, options: str) -> Iterator[Path]:
    target.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB file system holding an earlier run's results.json."""
    for mounted in _mount(tmp_path / "small", "size=64k"):
        (mounted / "results.json").write_bytes(EARLIER)
        yield mounted


@pytest.fixture
def read_only_fs(tmp_path: Path) -> Iterator[Path]:
    yield from _mount(tmp_path / "ro", "ro,size=64k")


def _run(tmp_path: Path, out: Path) -> subprocess.CompletedProcess[str]:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: a\nmeasure: {probes: [hypervisor]}\n", encoding="utf-8")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OS_CLIENT_CONFIG_FILE": str(tmp_path / "none.yaml"),
    }
    argv = [NOVAMIG, "run", str(scenario), "--out", str(out)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_full_disk_is_refused_before_the_cloud_and_the_earlier_results_stay(
    tmp_path: Path, small_fs: Path
) -> None:
    proc = _run(tmp_path, small_fs)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"output folder {small_fs}: no space left for the run's output" in proc.stderr
    assert "novamig: run " not in proc.stderr  # stopped before the cloud was chosen
    assert (small_fs / "results.json").read_bytes() == EARLIER
    assert sorted(p.name for p in small_fs.iterdir()) == ["results.json"]  # probe removed


def test_read_only_folder_is_bad_input(tmp_path: Path, read_only_fs: Path) -> None:
    for out in (read_only_fs, read_only_fs / "run1"):  # the folder itself, and one to be created in it
        proc = _run(tmp_path, out)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert f"output folder {out}: cannot write the run's output (Read-only file system)" in proc.stderr
        assert "novamig: run " not in proc.stderr
    assert list(read_only_fs.iterdir()) == []


def test_a_file_in_place_of_the_folder_and_a_good_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").write_bytes(EARLIER)
    problem = out_dir_problem(tmp_path / "taken")
    assert problem is not None and int(problem.code) == 2
    assert (tmp_path / "taken").read_bytes() == EARLIER
    assert out_dir_problem(tmp_path / "new" / "out") is None
    assert list((tmp_path / "new" / "out").iterdir()) == []
    assert not (tmp_path / "new" / "out" / OUT_PROBE_NAME).exists()
