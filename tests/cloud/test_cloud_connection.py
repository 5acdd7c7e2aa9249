"""Which cloud a run chooses and why; cloud names from a clouds.yaml the test writes itself.

Every test hands its own file to openstacksdk explicitly (`clouds_yaml=`): openstacksdk fixes its
search path (the user's ``~/.config/openstack``) when it is imported, so no environment variable set
in a test could keep the user's clouds out.
"""

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
def clouds_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "clouds.yaml"
    path.write_text(CLOUDS)
    return path


def test_cloud_choice_precedence() -> None:
    env = {"OS_CLOUD": "from-env"}
    assert choose_cloud("flag", "scen", env).name == "flag"
    assert choose_cloud(None, "scen", env).source == "scenario"
    assert choose_cloud(None, None, env).name == "from-env"
    choice = choose_cloud(None, None, {})
    assert choice.name is None and choice.source == "embedded"


def test_cloud_choice_says_why() -> None:
    """The reason names the rule that decided and any OS_* variable it passed over."""
    env = {"OS_CLOUD": "prod"}
    assert choose_cloud("lab", None, env).reason == "cloud lab: named by --cloud (OS_CLOUD=prod ignored)"
    assert choose_cloud(None, "lab", {}).reason == "cloud lab: named by the scenario's cloud:"
    assert "OS_CLOUD=prod ignored" in choose_cloud(None, "lab", env).reason
    assert "ignored" not in choose_cloud("prod", None, env).reason  # the same cloud: nothing passed over
    from_env = choose_cloud(None, None, env).reason
    assert from_env.startswith("cloud prod: from OS_CLOUD in the environment")
    assert "unset OS_CLOUD for the embedded cloud" in from_env
    embedded = choose_cloud(None, None, {"OS_AUTH_URL": "http://192.0.2.1/v3", "OS_PASSWORD": "pw"})
    assert embedded.name is None
    assert embedded.reason.startswith("no cloud named")
    assert "OS_AUTH_URL, OS_PASSWORD in the environment are ignored" in embedded.reason
    assert "pw" not in embedded.reason.replace("OS_PASSWORD", "")


def test_unknown_cloud_lists_known_names(clouds_yaml: Path) -> None:
    with pytest.raises(UnknownCloud) as info:
        resolve("devstak", clouds_yaml)
    err = info.value
    assert err.exit_code == 2
    assert err.known == ["devstack-admin", "lab"]
    assert "known clouds: devstack-admin, lab" in str(err)
    assert str(clouds_yaml) in str(err)


def test_known_clouds_reads_the_file(clouds_yaml: Path) -> None:
    names, files = known_clouds(clouds_yaml)
    assert names == ["devstack-admin", "lab"]
    assert files == [str(clouds_yaml)]


def test_identity_never_shows_the_password(clouds_yaml: Path) -> None:
    _, ident = resolve("devstack-admin", clouds_yaml)
    text = str(ident) + repr(ident)
    assert "http://127.0.0.1:1/identity" in text and "admin@admin" in text
    assert "s3cr3t-pw" not in text


def test_no_clouds_yaml_means_no_names(tmp_path: Path) -> None:
    with pytest.raises(UnknownCloud, match="known clouds: none"):
        resolve("anything", tmp_path / "absent.yaml")


def test_an_explicit_file_ignores_the_environment(clouds_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OS_* variables and another secure.yaml reach neither the names nor the credentials."""
    other = clouds_yaml.parent / "other.yaml"
    other.write_text("clouds:\n  elsewhere: {auth: {auth_url: 'http://192.0.2.9/v3'}}\n")
    secure = clouds_yaml.parent / "secure.yaml"
    secure.write_text("clouds:\n  lab: {auth: {password: from-secure}}\n  ghost: {auth: {password: x}}\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(other))
    monkeypatch.setenv("OS_CLIENT_SECURE_FILE", str(secure))
    monkeypatch.setenv("OS_CLOUD", "elsewhere")
    monkeypatch.setenv("OS_AUTH_URL", "http://192.0.2.10/v3")
    monkeypatch.setenv("OS_PASSWORD", "from-env")
    names, files = known_clouds(clouds_yaml)
    assert names == ["devstack-admin", "lab"]
    assert files == [str(clouds_yaml)]
    region, ident = resolve("lab", clouds_yaml)
    assert region.config["auth"]["password"] == "other-pw"
    assert ident.auth_url == "http://127.0.0.1:2/v3"


def test_the_users_configuration_is_openstacksdks(clouds_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit file a named cloud comes from where the `openstack` command looks:
    OS_CLIENT_CONFIG_FILE first, secure.yaml merged in, OS_* variables as the cloud 'envvars'."""
    secure = clouds_yaml.parent / "secure.yaml"
    secure.write_text("clouds:\n  lab: {auth: {password: from-secure}}\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml))
    monkeypatch.setenv("OS_CLIENT_SECURE_FILE", str(secure))
    monkeypatch.setenv("OS_AUTH_URL", "http://192.0.2.10/v3")
    names, files = known_clouds()
    assert names == ["devstack-admin", "envvars", "lab"]
    assert files == [str(clouds_yaml), str(secure)]
    region, _ = resolve("lab")
    assert region.config["auth"]["password"] == "from-secure"
