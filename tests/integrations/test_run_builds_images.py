"""`novamig run` on its own embedded cloud builds a missing novamig image itself, with progress;
on other clouds the preflight error names the command that fixes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from novamig.guest.ensure import FULL, TINY, build_missing_images, image_hint
from novamig.guest.image import cache_dir
from novamig.results import load_results
from novamig.runner.commands import cmd_run

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"


def test_the_preflight_hint_names_the_command_that_fixes_a_missing_image() -> None:
    missing_full, missing_tiny = f"image {FULL!r} not found", f"image {TINY!r} not found"
    assert image_hint(missing_full, "devstack-admin", embedded=False) == (
        "upload it: novamig image upload full --cloud devstack-admin"
    )
    tiny_hint = image_hint(missing_tiny, "devstack-admin", embedded=False)
    assert tiny_hint is not None and "novamig image upload full --cloud devstack-admin" in tiny_hint
    embedded_hint = image_hint(missing_full, "novamig-embedded", embedded=True)
    assert embedded_hint is not None and "novamig image build full" in embedded_hint
    assert image_hint("image 'cirros' not found", "devstack-admin", embedded=False) is None
    assert image_hint("quota: cores needed 4, room 2", "devstack-admin", embedded=False) is None


def test_images_that_are_not_novamigs_are_never_built() -> None:
    said: list[str] = []
    assert build_missing_images(["cirros-0.6.2", "ubuntu-24.04"], said.append) == []
    assert said == []


@pytest.mark.slow
@pytest.mark.qemu
def test_run_builds_the_missing_tiny_image_before_its_cloud_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty image cache (the package downloads shared, so the build needs no network): the
    run builds novamig-tiny with the builder's steps on stderr, its cloud serves it, and the
    migrations complete."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for shared in ("downloads", "resolved"):
        if (cache_dir() / shared).is_dir():
            (cache / shared).symlink_to(cache_dir() / shared)
    monkeypatch.setenv("NOVAMIG_CACHE_DIR", str(cache))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    monkeypatch.delenv("NOVAMIG_EMBEDDED_DRIVER", raising=False)
    out = tmp_path / "out"
    overrides = ["fleet.count=1", "migration.count=1", "measure.noise_floor_s=0"]
    assert cmd_run(str(SMOKE), None, str(out), overrides) == 0
    err = capsys.readouterr().err
    assert "compiling the agent" in err and "built novamig-tiny" in err, err
    assert len(list((cache / "images").glob("tiny-*"))) == 1  # built into the run's cache
    results = load_results(out / "results.json")
    assert results.passed
    assert [m.status for case in results.cases for m in case.migrations] == ["completed"]
