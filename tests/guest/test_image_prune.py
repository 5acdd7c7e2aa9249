"""`novamig image prune`: which cached builds go, which stay (the newest per kind, those a process
has open), and that a dry run removes nothing. The cache is a temporary one laid out as the
builders lay theirs out (a directory per digest with its manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from novamig.guest.commands import cmd_image_prune
from novamig.guest.prune import cached_images, prune


def _image(images: Path, name: str, built_at: str, size: int = 4096) -> Path:
    path = images / name
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"digest": name.rpartition("-")[2], "built_at": built_at}))
    (path / "vmlinux").write_bytes(b"\0" * size)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    _image(images, "tiny-aaaaaaaaaaaaaaaaaaaa", "2026-11-20T10:00:00Z")
    _image(images, "tiny-bbbbbbbbbbbbbbbbbbbb", "2026-11-25T10:00:00Z")
    _image(images, "tiny-cccccccccccccccccccc", "2026-11-22T10:00:00Z")
    _image(images, "full-dddddddddddddddddddd", "2026-11-21T10:00:00Z", size=1 << 20)
    _image(images, "full-cloud-eeeeeeeeeeeeeeeeeeee", "2026-11-21T10:00:00Z")
    (images / "tiny-ffffffffffffffffffff").mkdir()  # no manifest: not a finished image, not touched
    (images / ".tiny-build-x1y2").mkdir()  # a killed build's temporary directory
    (images / "notes").mkdir()
    return images


def test_the_newest_of_each_kind_stays(images: Path) -> None:
    assert {i.kind for i in cached_images(images)} == {"tiny", "full", "full-cloud"}
    outcome = prune(images, keep=1)
    assert [i.path.name for i in outcome.removed] == [
        "tiny-cccccccccccccccccccc",
        "tiny-aaaaaaaaaaaaaaaaaaaa",
    ]
    assert sorted(i.path.name for i in outcome.kept) == [
        "full-cloud-eeeeeeeeeeeeeeeeeeee", "full-dddddddddddddddddddd", "tiny-bbbbbbbbbbbbbbbbbbbb",
    ]  # fmt: skip
    assert outcome.freed_bytes >= 2 * 4096
    left = sorted(p.name for p in images.iterdir() if not p.name.endswith(".lock"))
    assert left == [
        "full-cloud-eeeeeeeeeeeeeeeeeeee", "full-dddddddddddddddddddd", "notes",
        "tiny-bbbbbbbbbbbbbbbbbbbb", "tiny-ffffffffffffffffffff",
    ]  # fmt: skip


def test_an_image_a_process_has_open_stays(images: Path) -> None:
    with (images / "tiny-aaaaaaaaaaaaaaaaaaaa" / "vmlinux").open("rb"):
        outcome = prune(images, keep=0)
    assert [i.path.name for i in outcome.in_use] == ["tiny-aaaaaaaaaaaaaaaaaaaa"]
    assert (images / "tiny-aaaaaaaaaaaaaaaaaaaa").is_dir()
    assert not (images / "tiny-bbbbbbbbbbbbbbbbbbbb").exists()


def test_dry_run_and_the_command(
    images: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOVAMIG_CACHE_DIR", str(images.parent))
    before = sorted(p.name for p in images.iterdir())
    assert cmd_image_prune(1, dry_run=True) == 0
    out = capsys.readouterr().out
    assert (
        "would remove: " in out
        and "tiny-aaaaaaaaaaaaaaaaaaaa" in out
        and "left by an interrupted build" in out
    )
    assert "would remove 2 image(s)" in out
    assert sorted(p.name for p in images.iterdir() if not p.name.endswith(".lock")) == before
    assert cmd_image_prune(-1, dry_run=False) == 2
    assert "--keep" in capsys.readouterr().err
    assert cmd_image_prune(2, dry_run=False) == 0
    assert "removed 1 image(s)" in capsys.readouterr().out
    assert (
        not (images / "tiny-aaaaaaaaaaaaaaaaaaaa").exists()
        and (images / "tiny-cccccccccccccccccccc").exists()
    )
