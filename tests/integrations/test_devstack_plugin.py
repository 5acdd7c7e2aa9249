"""devstack/plugin.sh under stand-ins of DevStack's functions, phase by phase.

A real DevStack run is not part of CI (it needs a machine of its own for an hour). Instead the
plugin's settings and plugin.sh are sourced the way stack.sh, unstack.sh and clean.sh source them,
with DevStack's functions (`is_service_enabled`, `iniset`, `trueorfalse`, `echo_summary`, …), `sudo`
and the novamig virtualenv's `pip` and `novamig` replaced by stand-ins that record their calls;
each phase's recorded calls are then checked.
"""

from __future__ import annotations

import configparser
import socket
import subprocess
from pathlib import Path

import yaml
from oslo_config import cfg
from tempest.test_discover.plugins import TempestTestPluginManager

from novamig.scenario.loader import load_scenario
from novamig.tempest_plugin.config import scenario_overrides

ROOT = Path(__file__).resolve().parents[2]
DEVSTACK = ROOT / "devstack"

# DevStack's functions as the plugin uses them; each records its call in $CALLS.
STAND_INS = r"""
set -eu
record() { echo "$*" >> "$CALLS"; }
define_plugin() { record define_plugin "$@"; }
enable_service() { record enable_service "$@"; ENABLED="$ENABLED $*"; }
is_service_enabled() {
    local s; for s in "$@"; do [[ " $ENABLED " == *" $s "* ]] && return 0; done; return 1
}
echo_summary() { record echo_summary "$@"; }
iniset() { record iniset "$@"; }
sudo() {  # `sudo tee FILE` records what it would write, indented
    record sudo "$@"
    if [[ $1 == tee ]]; then while IFS= read -r line; do record "  $line"; done; fi
}
trueorfalse() {  # DevStack's: the variable's value as True/False, else the default
    local default=$1 name=$2 value=${!2:-}
    case "$value" in
        [Tt]rue|1|yes|on) echo True ;;
        [Ff]alse|0|no|off) echo False ;;
        *) echo "$default" ;;
    esac
}
"""

# novamig's virtualenv as install_novamig makes it: the stand-in python creates pip and novamig
# stand-ins that record their arguments.
FAKE_PYTHON = r"""#!/bin/bash
echo "python $*" >> "$CALLS"
venv=${@: -1}
mkdir -p "$venv/bin"
for tool in python pip novamig; do
    printf '#!/bin/bash\necho "%s $*" >> "$CALLS"\n' "$tool" > "$venv/bin/$tool"
    chmod +x "$venv/bin/$tool"
done
"""


def run_phase(tmp_path: Path, mode: str, phase: str = "", enabled: str = "", **env: str) -> list[str]:
    """Source settings, then plugin.sh <mode> <phase>, as DevStack does; the recorded calls."""
    calls = tmp_path / "calls"
    calls.write_text("")
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    script = (
        STAND_INS
        + f'ENABLED="{enabled}"\n'
        + f"source {DEVSTACK / 'settings'}\n"
        + f"source {DEVSTACK / 'plugin.sh'} {mode} {phase}\n"
    )
    variables = {
        "PATH": "/usr/bin:/bin",
        "HOST_IP": "192.0.2.10",
        "CALLS": str(calls),
        "DEST": str(tmp_path / "opt"),
        "NOVAMIG_PYTHON": str(python),
        "NOVA_CONF": "/etc/nova/nova.conf",
        "TEMPEST_CONFIG": "/opt/stack/tempest/etc/tempest.conf",
        **env,
    }
    done = subprocess.run(
        ["bash", "-c", script], check=False, env=variables, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines()


def test_plugin_files_parse_and_every_phase_has_its_handler() -> None:
    for name in ("settings", "plugin.sh"):
        subprocess.run(["bash", "-n", str(DEVSTACK / name)], check=True, timeout=30)
    text = (DEVSTACK / "plugin.sh").read_text()
    for phase in ("install", "post-config", "extra", "test-config"):
        assert f'"$2" == "{phase}"' in text
    for mode in ("unstack", "clean"):
        assert f'"$1" == "{mode}"' in text
    assert (DEVSTACK / "files" / "bindep.txt").exists()


def test_shellcheck_is_clean() -> None:
    done = subprocess.run(
        ["shellcheck", str(DEVSTACK / "plugin.sh"), str(DEVSTACK / "settings")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout


def test_settings_define_and_enable_the_plugin(tmp_path: Path) -> None:
    calls = run_phase(tmp_path, "stack", "pre-install")
    assert calls[:2] == ["define_plugin novamig", "enable_service novamig"]


def test_install_puts_novamig_in_its_own_virtualenv(tmp_path: Path) -> None:
    calls = run_phase(tmp_path, "stack", "install")
    venv = tmp_path / "opt" / "novamig-venv"
    assert f"python -m venv {venv}" in calls
    assert f"pip install {tmp_path / 'opt' / 'novamig'}" in calls
    assert f"sudo ln -sf {venv}/bin/novamig /usr/local/bin/novamig" in calls


def test_post_config_leaves_the_computes_alone_unless_asked(tmp_path: Path) -> None:
    assert not [c for c in run_phase(tmp_path, "stack", "post-config") if c.startswith("iniset")]
    asked = run_phase(tmp_path, "stack", "post-config", NOVAMIG_PERMIT_POST_COPY="True")
    assert "iniset /etc/nova/nova.conf libvirt live_migration_permit_post_copy True" in asked


def test_extra_uploads_the_image_and_opens_the_heartbeat_port(tmp_path: Path) -> None:
    run_phase(tmp_path, "stack", "install")  # the virtualenv the extra phase uses
    calls = run_phase(
        tmp_path, "stack", "extra", FLOATING_RANGE="172.24.4.0/24",
        NOVAMIG_SSH_HOSTS_MAP="compute1=stack@192.0.2.10,compute2=stack@192.0.2.11",
    )  # fmt: skip
    assert (
        "novamig image upload full --cloud devstack-admin --name novamig-full --visibility public --replace"
        in calls
    )
    rule = [c for c in calls if c.startswith("sudo iptables -I INPUT")]
    assert rule == [
        "sudo iptables -I INPUT -p udp --dport 47100 -s 172.24.4.0/24 -j ACCEPT "
        "-m comment --comment novamig-heartbeat"
    ]
    hosts_file = calls.index("sudo tee /etc/novamig/ssh-hosts.yaml")
    assert calls[hosts_file + 1 : hosts_file + 3] == [
        "  compute1: stack@192.0.2.10",
        "  compute2: stack@192.0.2.11",
    ]
    skipped = run_phase(
        tmp_path, "stack", "extra", NOVAMIG_UPLOAD_IMAGE="False", NOVAMIG_OPEN_FIREWALL="False"
    )
    assert not [c for c in skipped if c.startswith(("novamig", "sudo iptables"))]
    # no map given: this node alone, as the stack user at HOST_IP
    assert f"  {socket.gethostname().split('.')[0]}: stack@192.0.2.10" in skipped


def test_test_config_writes_the_novamig_group_only_with_tempest(tmp_path: Path) -> None:
    conf = "/opt/stack/tempest/etc/tempest.conf"
    assert not [c for c in run_phase(tmp_path, "stack", "test-config") if c.startswith("iniset")]
    calls = run_phase(
        tmp_path, "stack", "test-config", enabled="tempest",
        NOVAMIG_TEMPEST_OVERRIDES="sla.downtime_ms.max=800",
    )  # fmt: skip
    inisets = [c for c in calls if c.startswith("iniset")]
    # the guests on DevStack's tenant network with floating IPs from its external one; no
    # heartbeat collector forced (the scenario's own, else novamig's discovery from the route)
    assert inisets == [
        f"iniset {conf} service_available novamig True",
        f"iniset {conf} novamig scenarios {tmp_path}/opt/novamig/scenarios/devstack-acceptance.yaml",
        f"iniset {conf} novamig image novamig-full",
        f"iniset {conf} novamig ssh_hosts /etc/novamig/ssh-hosts.yaml",
        f"iniset {conf} novamig network private",
        f"iniset {conf} novamig floating_ip_network public",
        f"iniset {conf} novamig overrides sla.downtime_ms.max=800",
    ]


def test_test_config_follows_devstack_s_network_names_and_the_operator_s_choices(tmp_path: Path) -> None:
    conf = "/opt/stack/tempest/etc/tempest.conf"
    renamed = run_phase(
        tmp_path, "stack", "test-config", enabled="tempest",
        PRIVATE_NETWORK_NAME="tenant", PUBLIC_NETWORK_NAME="ext",
    )  # fmt: skip
    assert f"iniset {conf} novamig network tenant" in renamed
    assert f"iniset {conf} novamig floating_ip_network ext" in renamed
    chosen = run_phase(
        tmp_path, "stack", "test-config", enabled="tempest", NOVAMIG_NETWORK="public",
        NOVAMIG_FLOATING_IP_NETWORK="none", NOVAMIG_HEARTBEAT_COLLECTOR="172.24.4.1:47100",
    )  # fmt: skip
    assert [c for c in chosen if c.startswith(f"iniset {conf} novamig ") and "scenarios" not in c][-3:] == [
        f"iniset {conf} novamig network public",
        f"iniset {conf} novamig floating_ip_network none",
        f"iniset {conf} novamig heartbeat_collector 172.24.4.1:47100",
    ]


def test_the_written_group_reaches_the_acceptance_scenario_through_the_tempest_plugin(
    tmp_path: Path,
) -> None:
    """The recorded `iniset` calls as a tempest.conf, read with the Tempest plugin's options
    (Tempest's own plugin manager registers them), turned into the `--set` settings its test
    passes: the shipped acceptance scenario then boots on `private` with floating IPs from
    `public` and keeps its own heartbeat collector."""
    calls = run_phase(tmp_path, "stack", "test-config", enabled="tempest")
    ini = configparser.ConfigParser()
    for call in calls:
        if call.startswith("iniset "):
            _, _, section, option, value = call.split(" ", 4)
            ini.setdefault(section, {})[option] = value
    tempest_conf = tmp_path / "tempest.conf"
    with tempest_conf.open("w") as out:
        ini.write(out)
    conf = cfg.ConfigOpts()
    TempestTestPluginManager().register_plugin_opts(conf)
    conf([], default_config_files=[str(tempest_conf)])
    assert conf.novamig.floating_ip_network == "public"
    assert conf.novamig.heartbeat_collector is None
    sets = scenario_overrides(conf.novamig, block_migration=False)
    scenario = load_scenario(ROOT / "scenarios" / "devstack-acceptance.yaml", sets)
    assert (scenario.fleet.network, scenario.fleet.floating_ip_network) == ("private", "public")
    assert scenario.fleet.image == "novamig-full"
    # unset: the run takes the source of the route to `public`, br-ex's 172.24.4.1, port 47100
    assert scenario.measure.heartbeat_collector is None


def test_unstack_and_clean_undo_what_stack_did(tmp_path: Path) -> None:
    unstack = run_phase(tmp_path, "unstack")
    assert any(c.startswith("sudo iptables -D INPUT -p udp --dport 47100") for c in unstack)
    venv = tmp_path / "opt" / "novamig-venv"
    venv.mkdir(parents=True)
    clean = run_phase(tmp_path, "clean")
    assert not venv.exists()
    assert "sudo rm -f /usr/local/bin/novamig" in clean


def test_the_samples_configure_a_two_node_live_migration_lab() -> None:
    samples = DEVSTACK / "samples"
    controller = (samples / "local.conf.controller").read_text()
    subnode = (samples / "local.conf.subnode").read_text()
    assert "enable_plugin novamig " in controller and "enable_plugin" not in subnode
    for conf in (controller, subnode):
        assert "LIVE_MIGRATION_AVAILABLE=True" in conf
        assert "USE_BLOCK_MIGRATION_FOR_LIVE_MIGRATION=True" in conf
        assert "live_migration_scheme = ssh" in conf
    (job,) = yaml.safe_load((samples / "zuul-job.yaml").read_text())
    assert job["job"]["name"] == "novamig-live-migration"
    assert job["job"]["parent"] == "nova-live-migration"
    assert "novamig" in job["job"]["vars"]["devstack_plugins"]
    assert job["job"]["vars"]["devstack_local_conf"]["test-config"]["$TEMPEST_CONFIG"]["novamig"]["scenarios"]
    assert "pytest" in (samples / "zuul-job.yaml").read_text().split("--novamig-scenario")[0]
