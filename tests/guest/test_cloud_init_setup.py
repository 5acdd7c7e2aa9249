"""The Glance form's cloud-init set-up: which datasources and modules it keeps, the one-process
stage runner PID 1 starts, and that both are inputs of the image's cache key (so CI rebuilds the
image when either changes). No root, no QEMU, no image build: the boot itself is covered by
``test_cloud_image_boots_by_itself_with_dhcp_and_cloud_init`` in test_full_image.py."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from novamig.guest.full import cloud_init_stages
from novamig.guest.full import layout as full_layout
from novamig.guest.full import variants as full_variants
from novamig.guest.image import GuestImage

STAGES_FILE = Path(str(resources.files("novamig.guest.full").joinpath("cloud_init_stages.py")))


def test_cloud_init_config_keeps_nova_datasources_and_the_user_data_path() -> None:
    cfg = yaml.safe_load(full_layout.CLOUD_INIT_CONFIG)
    # config drive first (no network wait), the metadata service for DevStack, then nothing
    assert cfg["datasource_list"] == ["ConfigDrive", "OpenStack", "None"]
    assert cfg["network"] == {"config": "disabled"}
    # novamig's user-data is a shell script: scripts_user runs it; cloud-config keeps its basics
    assert "scripts_user" in cfg["cloud_final_modules"]
    assert {"bootcmd", "write_files", "set_hostname"} <= set(cfg["cloud_init_modules"])
    assert cfg["cloud_config_modules"] == ["runcmd"]
    # what cost seconds under TCG and has nothing to act on in this image is gone
    sections = ("cloud_init_modules", "cloud_config_modules", "cloud_final_modules")
    listed = {m for key in sections for m in cfg[key]}
    for slow in ("grub_dpkg", "locale", "users_groups", "ssh", "apt_configure", "growpart", "resizefs"):
        assert slow not in listed, slow
    # no key cloud-init's schema rejects (an empty ssh_genkeytypes did: a warning at every boot)
    assert "ssh_genkeytypes" not in cfg


def test_only_the_glance_form_carries_the_stage_runner_and_init_runs_it() -> None:
    path = full_layout.CLOUD_INIT_STAGES.lstrip("/")
    cloud = full_variants._guest_sources(cloud=True)
    embedded = full_variants._guest_sources(cloud=False)
    assert cloud[path] == STAGES_FILE.read_bytes()
    assert path not in embedded
    init = cloud["sbin/novamig-init"].decode()
    assert f"/usr/bin/python3 {full_layout.CLOUD_INIT_STAGES}" in init
    assert "cloud-init $stage" not in init  # no longer one process per stage


def _cloud_key(tmp_path: Path) -> full_variants._VariantKey:
    tiny = GuestImage(
        kernel=tmp_path / "vmlinux", initrd=tmp_path / "initrd", append="", kernel_version="6", digest="t"
    )
    return full_variants._variant_key("cloud", tmp_path, tiny, "2.0")


def test_cache_key_covers_the_stage_runner_and_the_cloud_init_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _cloud_key(tmp_path)
    stages = key.inputs[f"file:{full_layout.CLOUD_INIT_STAGES.lstrip('/')}"]
    assert stages == hashlib.sha256(STAGES_FILE.read_bytes()).hexdigest()
    # a changed cloud-init configuration is a different image (another cache directory)
    monkeypatch.setattr(full_variants, "CLOUD_INIT_CONFIG", full_layout.CLOUD_INIT_CONFIG + "# changed\n")
    changed = _cloud_key(tmp_path)
    assert changed.inputs["cloud_config"] != key.inputs["cloud_config"]
    assert changed.digest != key.digest and changed.final != key.final


#: A stand-in for Debian's ``cloudinit.cmd.main`` (cloud-init is not installed on the host): it
#: records each call's arguments and fails the way a stage can (an exception in ``init``, a
#: non-zero status in ``modules:config``), which a healthy real cloud-init does not do on demand.
FAKE_CLOUDINIT_MAIN = """\
import os
def main(argv):
    prog = argv.pop(0)
    with open(os.environ["STAGES_LOG"], "a") as f:
        f.write(prog + " " + " ".join(argv) + "\\n")
    if argv == ["init"]:
        raise RuntimeError("datasource exploded")
    if argv == ["modules", "--mode=config"]:
        return 2
    return 0
"""


def test_stage_runner_runs_the_four_stages_in_order_whatever_one_reports(tmp_path: Path) -> None:
    package = tmp_path / "cloudinit" / "cmd"
    package.mkdir(parents=True)
    (tmp_path / "cloudinit" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(FAKE_CLOUDINIT_MAIN)
    log = tmp_path / "stages.log"
    proc = subprocess.run(
        [sys.executable, "-S", str(STAGES_FILE)],
        env={"PYTHONPATH": str(tmp_path), "STAGES_LOG": str(log)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # every stage ran, in systemd's order, each with a fresh argv (main() pops argv[0])
    expected = [" ".join(("cloud-init", *stage)) for stage in cloud_init_stages.STAGES]
    assert log.read_text().splitlines() == expected
    assert expected == [
        "cloud-init init --local",
        "cloud-init init",
        "cloud-init modules --mode=config",
        "cloud-init modules --mode=final",
    ]
    # the exception is reported and the status is the last non-zero one
    assert "RuntimeError: datasource exploded" in proc.stderr
    assert proc.returncode == 2, proc.stderr
