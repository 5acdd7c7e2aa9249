"""Planted secrets never reach an output file of a real run on the embedded cloud.

A clouds.yaml holding a password, a token and an application-credential secret, and a scenario whose
script workload carries `MYSQL_PWD` in its environment, `--password=…` and `-pSECRET` on its command
line, and a matrix over a secret-looking key (it names the case and is recorded in its params): after
`novamig run`, no file of the output folder (results.json, junit.xml, index.html, logs) and nothing
the run printed may contain any of them. The guest itself must get them (its script needs them),
so the user-data is the one place they may travel; what is echoed back must not show them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from novamig.embedded.controller import EmbeddedCloud

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

PASSWORD = "pw-Zq7xK2planted"
TOKEN = "tok-Hh4vN8planted"
APP_SECRET = "acs-Rr3mW9planted"
MYSQL_PWD = "mysql-Jj6tB1planted"
CLI_PASSWORD = "cli-Pp5sD0planted"
GLUED_PASSWORD = "glued-Gg2cL4planted"
MATRIX_SECRET = "matrix-Mm8qT3planted"
PLANTED = (PASSWORD, TOKEN, APP_SECRET, MYSQL_PWD, CLI_PASSWORD, GLUED_PASSWORD, MATRIX_SECRET)

SCENARIO = f"""\
name: secrets
fleet: {{count: 1, flavor: {{vcpus: 1, ram_mb: 256, disk_gb: 1}}, image: novamig-tiny}}
workload:
  kind: script
  script:
    command: "mysqlslap --user=bench --password={CLI_PASSWORD} -c 2 || mysql -p{GLUED_PASSWORD} || true"
    env: {{MYSQL_PWD: {MYSQL_PWD}, MODE: plain}}
migration: {{count: 1}}
measure: {{probes: [hypervisor], noise_floor_s: 0}}
matrix: {{workload.script.env.DB_PASSWORD: [{MATRIX_SECRET}]}}
"""


def _clouds_yaml(embedded_cloud: EmbeddedCloud, path: Path) -> None:
    """The session cloud's entry, plus entries that hold the planted credentials."""
    doc = yaml.safe_load(embedded_cloud.clouds_yaml.read_text(encoding="utf-8"))
    real = doc["clouds"][embedded_cloud.cloud_name]
    doc["clouds"]["planted-password"] = {**real, "auth": {**real["auth"], "password": PASSWORD}}
    doc["clouds"]["planted-token"] = {
        "auth_type": "token",
        "auth": {"auth_url": "http://127.0.0.1:9", "token": TOKEN},
    }
    doc["clouds"]["planted-appcred"] = {
        "auth_type": "v3applicationcredential",
        "auth": {
            "auth_url": "http://127.0.0.1:9",
            "application_credential_id": "x",
            "application_credential_secret": APP_SECRET,
        },
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")


def _leaks(root: Path, secrets: tuple[str, ...]) -> list[str]:
    found = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        data = file.read_bytes()
        found += [f"{file.relative_to(root)}: {s}" for s in secrets if s.encode() in data]
    return found


def test_planted_secrets_appear_in_no_output(tmp_path: Path, embedded_cloud: EmbeddedCloud) -> None:
    clouds = tmp_path / "clouds.yaml"
    _clouds_yaml(embedded_cloud, clouds)
    real_password = yaml.safe_load(clouds.read_text())["clouds"][embedded_cloud.cloud_name]["auth"][
        "password"
    ]
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    out = tmp_path / "out"
    env = {"OS_CLIENT_CONFIG_FILE": str(clouds), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "novamig"),
            "run",
            str(scenario),
            "--cloud",
            embedded_cloud.cloud_name,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert (
        (out / "results.json").is_file() and (out / "junit.xml").is_file() and (out / "index.html").is_file()
    )
    secrets = (*PLANTED, real_password)
    printed = [s for s in secrets if s in proc.stdout or s in proc.stderr]
    assert printed == [], printed
    assert _leaks(out, secrets) == []
    # The embedded cloud's own logs (Nova, the driver, the guests' consoles where the agent echoes
    # its user-data) hold the script's secrets only if something logged them.
    assert embedded_cloud.layout is not None
    assert _leaks(embedded_cloud.layout.logs, PLANTED) == []
    assert {p.name for p in (out / "logs").iterdir()}, "the run wrote no logs"
    # The script's environment and command were recorded, redacted, not dropped.
    text = (out / "results.json").read_text()
    assert "MYSQL_PWD" in text and "mysqlslap" in text
