"""Building the tiny image: a full build, the cache, and failures that name their step."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from novamig.guest import image as image_mod
from novamig.guest.commands import cmd_image_build
from novamig.guest.image import GuestImage, ImageBuildError, build_tiny_image, cache_dir

pytestmark = pytest.mark.qemu  # needs apt lists, dpkg-deb and gcc like the QEMU tests need QEMU


def _seeded_cache(tmp_path: Path, tiny_image: GuestImage) -> Path:
    """An empty image cache that shares the session's downloaded .debs (no 70 MB re-download)."""
    shared_downloads = tiny_image.kernel.parent.parent.parent / "downloads"
    root = tmp_path / "cache"
    root.mkdir()
    if shared_downloads.is_dir():
        (root / "downloads").symlink_to(shared_downloads)
    return root


def test_build_then_cache_hit(tmp_path: Path, tiny_image: GuestImage) -> None:
    root = _seeded_cache(tmp_path, tiny_image)
    messages: list[str] = []
    built = build_tiny_image(cache_dir=root, progress=messages.append)
    assert not built.cached
    assert any("compiling the agent" in m for m in messages)
    assert built.kernel.read_bytes()[:4] == b"\x7fELF"  # uncompressed vmlinux, for PVH boot
    head = built.initrd.read_bytes()[:6]
    assert head == b"070701", "initramfs is a newc cpio archive"
    assert (
        built.kernel_version
        and built.kernel_version in built.kernel.parent.joinpath("manifest.json").read_text()
    )
    assert "console=ttyS0" in built.append
    assert built.digest == tiny_image.digest, "same inputs must give the same cache key"
    # no temporary build directory left behind
    assert [p.name for p in (root / "images").iterdir() if p.name.startswith(".tiny-build-")] == []

    again: list[str] = []
    hit = build_tiny_image(cache_dir=root, progress=again.append)
    assert hit.cached
    assert any(m.startswith("cache hit") for m in again)
    assert not any("compiling" in m for m in again)
    assert (hit.kernel, hit.initrd, hit.digest) == (built.kernel, built.initrd, built.digest)


def test_build_is_reproducible_and_force_rebuilds(tmp_path: Path, tiny_image: GuestImage) -> None:
    root = _seeded_cache(tmp_path, tiny_image)
    first = build_tiny_image(cache_dir=root)
    initrd_before = first.initrd.read_bytes()
    forced = build_tiny_image(cache_dir=root, force=True)
    assert not forced.cached
    assert forced.initrd.read_bytes() == initrd_before, "the initramfs build is not deterministic"
    assert forced.initrd.read_bytes() == tiny_image.initrd.read_bytes()


def test_compressed_variant_has_its_own_cache_key(tmp_path: Path, tiny_image: GuestImage) -> None:
    root = _seeded_cache(tmp_path, tiny_image)
    gz = build_tiny_image(cache_dir=root, compress=True)
    assert gz.digest != tiny_image.digest
    assert gzip.decompress(gz.initrd.read_bytes())[:6] == b"070701"


def test_unknown_kernel_package_names_the_step(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError) as info:
        build_tiny_image(cache_dir=tmp_path, kernel_package="linux-image-novamig-does-not-exist")
    err = info.value
    assert err.step == "resolve package linux-image-novamig-does-not-exist"
    assert err.command is not None and "apt-get" in err.command[0]
    assert "linux-image-novamig-does-not-exist" in str(err)
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").iterdir())


def test_wrong_package_content_names_the_step(tmp_path: Path, tiny_image: GuestImage) -> None:
    """A real package without a kernel in it fails at the extraction step, leaving no temp dir."""
    root = _seeded_cache(tmp_path, tiny_image)
    with pytest.raises(ImageBuildError) as info:
        build_tiny_image(cache_dir=root, kernel_package="busybox-static")
    assert info.value.step == "extract kernel and modules from busybox-static"
    assert "vmlinuz" in str(info.value)
    leftovers = [p.name for p in (root / "images").iterdir() if p.name.startswith(".tiny-build-")]
    assert leftovers == []


def test_vmlinux_extraction_rejects_garbage() -> None:
    with pytest.raises(ImageBuildError) as info:
        image_mod._extract_vmlinux(b"MZ" + b"\0" * 4096, "extract vmlinux from test")
    assert info.value.step == "extract vmlinux from test"


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOVAMIG_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("NOVAMIG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "novamig"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "novamig"


def test_command_line_adds_novamig_arguments(tiny_image: GuestImage) -> None:
    line = tiny_image.command_line(hb_hz=500, ip="10.77.0.2/24")
    assert line == f"{tiny_image.append} novamig.hb_hz=500 novamig.ip=10.77.0.2/24"
    with pytest.raises(ValueError):
        tiny_image.command_line(ip="10.0.0.1 rm")


def test_cli_build_tiny_prints_paths(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_image: GuestImage
) -> None:
    monkeypatch.setenv("NOVAMIG_CACHE_DIR", str(tiny_image.kernel.parent.parent.parent))
    assert cmd_image_build("tiny", None, False) == 0
    out = capsys.readouterr().out
    assert "from cache" in out
    assert str(tiny_image.kernel) in out and str(tiny_image.initrd) in out


def test_cli_bad_kind_and_format_are_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_image_build("huge", None, False) == 2
    assert "unknown image kind 'huge'" in capsys.readouterr().err
    assert cmd_image_build("full", "initramfs", False) == 2
    assert "not available for the full image (choose: qcow2)" in capsys.readouterr().err
    assert cmd_image_build("tiny", "qcow2", False) == 2
    assert "qcow2" in capsys.readouterr().err


def test_manifest_records_inputs(tiny_image: GuestImage) -> None:
    manifest = json.loads((tiny_image.kernel.parent / "manifest.json").read_text())
    assert manifest["digest"] == tiny_image.digest
    assert manifest["inputs"]["kernel_deb"].startswith("linux-image-")
    assert "virtio_console" in manifest["modules"] and "e1000" in manifest["modules"]
    assert shutil.which("qemu-system-x86_64")


@pytest.mark.parametrize(
    ("package", "name"), [("novamig.guest", "agent/init.sh"), ("novamig.guest.full", "init.sh")]
)
def test_both_inits_get_the_one_user_data_snippet_and_parse(package: str, name: str, tmp_path: Path) -> None:
    from importlib import resources

    from novamig.guest.build import INCLUDE_USER_DATA, init_script

    source = resources.files(package).joinpath(name).read_bytes()
    composed = init_script(source)
    assert INCLUDE_USER_DATA not in composed
    assert composed.count(b"run_fw_cfg_user_data() {") == 1 and composed.count(b"run_fw_cfg_user_data\n") == 1
    script = tmp_path / "init"
    script.write_bytes(composed)
    done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr  # busybox sh reads what dash accepts here
    with pytest.raises(ValueError, match="exactly once"):
        init_script(source.replace(INCLUDE_USER_DATA, b""))
