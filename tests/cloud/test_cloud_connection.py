"""Cloud names from clouds.yaml (a temporary one, via OS_CLIENT_CONFIG_FILE) and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from novamig.cloud.connection import choose_cloud, known_clouds, resolve
from novamig.cloud.errors import UnknownCloud

CLOUDS = """
clouds:
  devstack-admin:
    auth: {auth_url: "http://127.0.0.1:1/identity", username: admin, password: s3cr3t-pw,
           project_name: admin, user_domain_name: Default, project_domain_name: Default}
    region_name: RegionOne
  lab:
    auth: {auth_url: "http://127.0.0.1:2/v3", username: bob, password: other-pw, project_name: p}
"""


@pytest.fixture
def clouds_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "clouds.yaml"
    path.write_text(CLOUDS)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    for var in ("OS_CLOUD", "OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    return path


def test_cloud_choice_precedence() -> None:
    env = {"OS_CLOUD": "from-env"}
    assert choose_cloud("flag", "scen", env).name == "flag"
    assert choose_cloud(None, "scen", env).source == "scenario"
    assert choose_cloud(None, None, env).name == "from-env"
    choice = choose_cloud(None, None, {})
    assert choice.name is None and choice.source == "embedded"


def test_unknown_cloud_lists_known_names(clouds_yaml: Path) -> None:
    with pytest.raises(UnknownCloud) as info:
        resolve("devstak")
    err = info.value
    assert err.exit_code == 2
    assert err.known == ["devstack-admin", "lab"]
    assert "known clouds: devstack-admin, lab" in str(err)
    assert str(clouds_yaml) in str(err)


def test_known_clouds_reads_the_file(clouds_yaml: Path) -> None:
    names, files = known_clouds()
    assert names == ["devstack-admin", "lab"]
    assert files == [str(clouds_yaml)]


def test_identity_never_shows_the_password(clouds_yaml: Path) -> None:
    _, ident = resolve("devstack-admin")
    text = str(ident) + repr(ident)
    assert "http://127.0.0.1:1/identity" in text and "admin@admin" in text
    assert "s3cr3t-pw" not in text


def test_no_clouds_yaml_means_no_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "absent.yaml"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for var in ("OS_CLOUD", "OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UnknownCloud, match="known clouds: none"):
        resolve("anything")
