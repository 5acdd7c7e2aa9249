"""Malformed clouds.yaml entries are bad input: one line naming the entry, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from novamig.cloud.connection import resolve
from novamig.cloud.errors import CloudConfigInvalid, UnknownCloud

SECRET = "pw-Kk2planted"
ENTRIES: dict[str, object] = {
    "no-auth": {"region_name": "RegionOne"},
    "auth-string": {"auth": "just a string"},
    "auth-list": {"auth": [1, 2]},
    "wrong-types": {"auth": {"auth_url": 5, "username": [1], "password": {"a": SECRET}, "project_name": "x"}},
    "null-entry": None,
    "string-entry": "hello",
    "unknown-auth-type": {"auth_type": "nosuchplugin", "auth": {"auth_url": "http://127.0.0.1:9"}},
    "no-auth-url": {"auth": {"username": "u", "password": SECRET, "project_name": "p"}},
}


@pytest.fixture
def clouds_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": ENTRIES}), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_malformed_entry_is_config_invalid(clouds_yaml: Path, name: str) -> None:
    with pytest.raises(CloudConfigInvalid) as info:
        resolve(name, clouds_yaml)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert message.startswith(f"cloud {name!r}: ") and "\n" not in message, message
    assert SECRET not in message


def test_unknown_cloud_lists_the_known_ones(clouds_yaml: Path) -> None:
    with pytest.raises(UnknownCloud) as info:
        resolve("nowhere", clouds_yaml)
    assert info.value.exit_code == 2 and "no-auth" in str(info.value)


@pytest.mark.parametrize("name", ["auth-list", "no-auth", "nowhere"])
def test_run_answers_with_one_line_and_exit_2(tmp_path: Path, clouds_yaml: Path, name: str) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: a\nmeasure: {probes: [hypervisor]}\n", encoding="utf-8")
    novamig = str(Path(sys.executable).parent / "novamig")
    env = {"OS_CLIENT_CONFIG_FILE": str(clouds_yaml), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    argv = [novamig, "run", str(scenario), "--cloud", name, "--out", str(tmp_path / "out")]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if f"cloud {name!r}" in line]
    assert len(errors) == 1, proc.stderr
