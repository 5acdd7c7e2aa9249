"""``novamig cloud up|down`` edit a clouds.yaml they share with the user the way a careful tool does.

Fast: only the file editing (`novamig.embedded.clouds_yaml`), on files the tests write themselves;
`novamig cloud up` is run only as far as its refusal, which comes before anything starts.
"""

from __future__ import annotations

import io
import multiprocessing
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from novamig.embedded import clouds_yaml
from novamig.embedded.commands import cmd_cloud
from novamig.embedded.layout import CloudLayout, Ports, Secrets

USERS_FILE = """\
# My clouds. The lab one needs the VPN.
clouds:
  # the lab, RegionOne only
  lab:
    auth:
      auth_url: "https://lab.example.org:5000/v3"   # keystone behind haproxy
      username: 'bob'
      project_name: lab
    region_name: RegionOne

  prod: {auth: {auth_url: https://prod.example.org/v3, username: alice}, interface: public}
  # staging comes last on purpose
  staging:
    profile: vexxhost
    auth:
      project_id: 0123456789abcdef
# the cache settings below are shared with the openstack CLI

cache:
  expiration_time: 3600
"""


def layout(workdir: Path, name: str = "novamig-embedded") -> CloudLayout:
    workdir.mkdir(parents=True, exist_ok=True)
    return CloudLayout(workdir=workdir, cloud_name=name, ports=Ports(5000, 5001, 5002, 5003, 5004))


def clouds(path: Path) -> dict[str, object]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data["clouds"] or {}


def no_temporary_files(directory: Path) -> None:
    assert [p.name for p in directory.iterdir() if p.name.endswith(".tmp")] == []


def test_up_then_down_gives_back_the_users_file_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text(USERS_FILE)
    path.chmod(0o644)
    lay = layout(tmp_path / "work")

    clouds_yaml.merge_into(path, lay, Secrets.generate())
    text = path.read_text()
    assert list(clouds(path)) == ["lab", "prod", "staging", "novamig-embedded", "novamig-embedded-member"]
    assert text.startswith(
        USERS_FILE.split("# the cache", maxsplit=1)[0]
    )  # everything before: untouched text
    assert text.endswith(
        "# the cache settings below are shared with the openstack CLI\n\ncache:\n  expiration_time: 3600\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds a password now
    no_temporary_files(tmp_path)

    assert clouds_yaml.remove_from(path, lay) == ["novamig-embedded", "novamig-embedded-member"]
    assert path.read_text() == USERS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    no_temporary_files(tmp_path)


@pytest.mark.parametrize(
    "original",
    [
        b"clouds: {}\n",
        b"clouds:\n",
        b"clouds: {}  # none yet\nclient:\n  force_ipv4: true\n",
        b"",
        b"# nothing here yet\n",
        b"clouds:\n  lab:\n    auth: {auth_url: 'http://192.0.2.1/v3'}",  # no final newline
        b"clouds:\r\n  lab:\r\n    auth: {auth_url: 'http://192.0.2.1/v3'}\r\n",  # written on Windows
    ],
)
def test_round_trip_of_unusual_but_valid_files(tmp_path: Path, original: bytes) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_bytes(original)
    lay = layout(tmp_path / "work")
    clouds_yaml.merge_into(path, lay, Secrets.generate())
    assert {"novamig-embedded", "novamig-embedded-member"} <= set(clouds(path))
    if b"lab" in original:
        assert "lab" in clouds(path)
    clouds_yaml.remove_from(path, lay)
    assert path.read_bytes() == original


def test_a_file_novamig_created_goes_again_with_its_directories(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    path = home / ".config" / "openstack" / "clouds.yaml"
    lay = layout(tmp_path / "work")
    clouds_yaml.merge_into(path, lay, Secrets.generate())
    assert path.read_text().startswith(clouds_yaml.HEADER)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert clouds_yaml.recorded_target(lay.workdir) == path

    clouds_yaml.remove_from(path, lay)
    assert not path.exists()
    assert list(home.iterdir()) == []  # .config and .config/openstack were novamig's: gone too


def test_a_file_novamig_created_stays_when_the_user_added_to_it(tmp_path: Path) -> None:
    path = tmp_path / "openstack" / "clouds.yaml"
    lay = layout(tmp_path / "work")
    clouds_yaml.merge_into(path, lay, Secrets.generate())
    with path.open("a") as fh:
        fh.write("  mine:\n    auth: {auth_url: 'http://192.0.2.7/v3'}\n")
    clouds_yaml.remove_from(path, lay)
    assert list(clouds(path)) == ["mine"]


def test_a_second_up_replaces_its_own_stale_entries(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text(USERS_FILE)
    lay = layout(tmp_path / "work")
    clouds_yaml.merge_into(path, lay, Secrets.generate())
    second = Secrets.generate()
    clouds_yaml.merge_into(path, lay, second)
    entries = clouds(path)
    assert list(entries) == ["lab", "prod", "staging", "novamig-embedded", "novamig-embedded-member"]
    assert entries["novamig-embedded"]["auth"]["password"] == second.admin_password  # type: ignore[index]
    clouds_yaml.remove_from(path, lay)
    assert list(clouds(path)) == ["lab", "prod", "staging"]


def test_an_entry_novamig_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    mine = USERS_FILE.replace(
        "  prod:", "  novamig-embedded:\n    auth: {auth_url: 'http://192.0.2.8/v3'}\n  prod:"
    )
    path.write_text(mine)
    with pytest.raises(clouds_yaml.CloudsYamlError, match="novamig did not write it"):
        clouds_yaml.merge_into(path, layout(tmp_path / "work"), Secrets.generate())
    assert path.read_text() == mine


def test_an_entry_of_a_cloud_running_elsewhere_is_never_replaced(tmp_path: Path) -> None:
    """The user's own `novamig cloud up` keeps its entries while another work directory starts."""
    path = tmp_path / "clouds.yaml"
    running = layout(tmp_path / "users-cloud")
    clouds_yaml.merge_into(path, running, Secrets.generate())
    before = path.read_bytes()
    # A live process whose command line names that work directory, as the cloud process's does.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", str(running.workdir)], stdin=subprocess.PIPE
    )
    try:
        running.pid_file.write_text(str(holder.pid))
        with pytest.raises(clouds_yaml.CloudsYamlError, match="running in"):
            clouds_yaml.merge_into(path, layout(tmp_path / "other"), Secrets.generate())
        assert path.read_bytes() == before
    finally:
        holder.communicate(b"", timeout=10)
    clouds_yaml.merge_into(path, layout(tmp_path / "other"), Secrets.generate())  # now a stale entry
    marker = clouds(path)["novamig-embedded"]["novamig_embedded_workdir"]  # type: ignore[index]
    assert marker == str(tmp_path / "other")


def test_a_layout_it_cannot_edit_without_touching_the_rest_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    flow = "clouds: {lab: {auth: {auth_url: 'http://192.0.2.1/v3'}}}  # one line\n"
    path.write_text(flow)
    with pytest.raises(clouds_yaml.CloudsYamlError, match="flow style"):
        clouds_yaml.merge_into(path, layout(tmp_path / "work"), Secrets.generate())
    assert path.read_text() == flow
    kept = "clouds:\n  lab: |+\n    text kept with its blank lines\n\n"  # a value that ends in blank lines
    path.write_text(kept)
    with pytest.raises(clouds_yaml.CloudsYamlError, match="change more than novamig's entries"):
        clouds_yaml.merge_into(path, layout(tmp_path / "work"), Secrets.generate())
    assert path.read_text() == kept


def test_a_symlinked_clouds_yaml_is_edited_at_its_target(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "clouds.yaml"
    real.parent.mkdir()
    real.write_text(USERS_FILE)
    link = tmp_path / "clouds.yaml"
    link.symlink_to(real)
    lay = layout(tmp_path / "work")
    clouds_yaml.merge_into(link, lay, Secrets.generate())
    assert link.is_symlink() and "novamig-embedded" in clouds(real)
    clouds_yaml.remove_from(link, lay)
    assert link.is_symlink() and real.read_text() == USERS_FILE


def _add_one(path: str, workdir: str, name: str) -> None:
    clouds_yaml.merge_into(Path(path), layout(Path(workdir), name), Secrets.generate())


def test_concurrent_writers_lose_no_entry(tmp_path: Path) -> None:
    """Eight processes add their clouds to one file at once: the lock serialises read-modify-write."""
    path = tmp_path / "clouds.yaml"
    path.write_text(USERS_FILE)
    names = [f"cloud{i}" for i in range(8)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_one, args=(str(path), str(tmp_path / name), name)) for name in names]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    present = set(clouds(path))
    assert {"lab", "prod", "staging"} <= present
    assert {f"{n}{suffix}" for n in names for suffix in ("", "-member")} <= present
    no_temporary_files(tmp_path)


def test_where_up_writes() -> None:
    home_default = clouds_yaml.target(None, {"XDG_CONFIG_HOME": "/x/cfg"})
    assert home_default == (Path("/x/cfg/openstack/clouds.yaml"), "the per-user default")
    env = {"NOVAMIG_CLOUDS_YAML": "/n.yaml", "OS_CLIENT_CONFIG_FILE": "/o.yaml"}
    assert clouds_yaml.target("/flag.yaml", env) == (Path("/flag.yaml"), "--clouds-yaml")
    assert clouds_yaml.target(None, env) == (Path("/n.yaml"), "$NOVAMIG_CLOUDS_YAML")
    assert clouds_yaml.target(None, {"OS_CLIENT_CONFIG_FILE": "/o.yaml"}) == (
        Path("/o.yaml"),
        "$OS_CLIENT_CONFIG_FILE",
    )


def test_cloud_up_refuses_before_starting_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "state"
    monkeypatch.setenv("NOVAMIG_EMBEDDED_DIR", str(workdir))
    path = tmp_path / "clouds.yaml"
    taken = "clouds:\n  novamig-embedded:\n    auth: {auth_url: 'http://192.0.2.8/v3'}\n"
    path.write_text(taken)
    out, err = io.StringIO(), io.StringIO()
    assert cmd_cloud("up", out, err, clouds_yaml_path=str(path)) == 2
    assert "nothing started" in err.getvalue() and "--clouds-yaml" in err.getvalue()
    assert not workdir.exists()
    assert path.read_text() == taken
