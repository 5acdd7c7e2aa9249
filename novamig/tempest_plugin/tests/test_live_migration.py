"""novamig's scenarios as one Tempest test each, on the cloud Tempest is configured for.

The test writes a clouds.yaml holding Tempest's admin credentials (live migration is admin-only in
Nova's default policy) and runs ``novamig run`` in a child process, as an operator would: the
scenario's cases, probes and SLA are exactly `novamig run`'s, and the child's signals and logging
stay its own. Tempest's compute flags decide whether the test runs at all (live migration on, at
least two computes) and ``block_migration_for_live_migration`` asks for block migration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import yaml
from tempest import config  # type: ignore[import-untyped]
from tempest import test as tempest_test
from testtools import content

from novamig.cloud.host_policy import SSH_HOSTS_ENV
from novamig.results import load_results
from novamig.runner.junit import sla_message
from novamig.tempest_plugin.config import scenario_overrides

CONF: Any = config.CONF
CLOUD_NAME = "tempest-novamig"


class NovamigLiveMigrationTest(tempest_test.BaseTestCase):  # type: ignore[misc]  # tempest ships no types
    credentials: ClassVar[list[str]] = ["admin"]  # Tempest makes an admin user for the class

    @classmethod
    def skip_checks(cls) -> None:
        super().skip_checks()
        if not CONF.service_available.novamig:
            raise cls.skipException("novamig is not enabled ([service_available] novamig)")
        if not CONF.compute_feature_enabled.live_migration:
            raise cls.skipException("live migration is not enabled ([compute-feature-enabled])")
        if CONF.compute.min_compute_nodes < 2:
            raise cls.skipException("live migration needs two computes ([compute] min_compute_nodes)")
        if not CONF.novamig.scenarios:
            raise cls.skipException("no scenario configured ([novamig] scenarios)")

    def test_scenarios(self) -> None:
        """Each configured scenario, one sub-test each: an SLA miss fails it with its numbers."""
        env = dict(os.environ)
        cloud = CONF.novamig.cloud
        if not cloud:  # Tempest's admin credentials, in a clouds.yaml of their own, gone after the test
            cloud = CLOUD_NAME
            credentials = Path(tempfile.mkdtemp(prefix="tempest-novamig-auth-"))
            self.addCleanup(shutil.rmtree, credentials, ignore_errors=True)
            clouds_yaml = credentials / "clouds.yaml"
            clouds_yaml.write_text(yaml.safe_dump({"clouds": {CLOUD_NAME: self._cloud_entry()}}))
            clouds_yaml.chmod(0o600)
            env = {k: v for k, v in env.items() if not k.startswith("OS_")}
            env["OS_CLIENT_CONFIG_FILE"] = str(clouds_yaml)
        if CONF.novamig.ssh_hosts:
            env[SSH_HOSTS_ENV] = CONF.novamig.ssh_hosts
        # Results stay after the test: they are the report a failure points at.
        base = Path(CONF.novamig.out_dir or tempfile.mkdtemp(prefix="tempest-novamig-"))
        for scenario in CONF.novamig.scenarios:
            with self.subTest(scenario=scenario):
                self._run(scenario, cloud, env, base / Path(scenario).stem)

    def _cloud_entry(self) -> dict[str, Any]:
        creds = self.os_admin.credentials
        return {
            "auth": {
                "auth_url": CONF.identity.uri_v3,
                "username": creds.username,
                "password": creds.password,
                "project_name": creds.project_name,
                "user_domain_name": creds.user_domain_name or "Default",
                "project_domain_name": creds.project_domain_name or "Default",
            },
            "region_name": CONF.identity.region,
            "identity_api_version": 3,
            "verify": not CONF.identity.disable_ssl_certificate_validation,
        }

    def _run(self, scenario: str, cloud: str, env: dict[str, str], out: Path) -> None:
        sets = scenario_overrides(
            CONF.novamig, CONF.compute_feature_enabled.block_migration_for_live_migration
        )
        argv = [sys.executable, "-m", "novamig.cli", "run", scenario, "--cloud", cloud, "--out", str(out)]
        for item in sets:
            argv += ["--set", item]
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=CONF.novamig.timeout_s, check=False
        )
        self.addDetail(f"novamig run {scenario}", content.text_content(done.stderr))  # shown on failure
        results_file = out / "results.json"
        if done.returncode not in (0, 1) or not results_file.exists():
            self.fail(f"novamig run {scenario} ended with {done.returncode}:\n{done.stderr[-4000:]}")
        results = load_results(results_file)
        missed = [
            f"{case.id}: {sla_message(check)}"
            for case in results.cases
            for check in case.sla
            if not check.passed
        ]
        broken = [f"{case.id}: {case.error}" for case in results.cases if case.error]
        if not results.passed:
            self.fail(
                f"{scenario}: SLA missed (report: {out / 'index.html'}):\n" + "\n".join(missed + broken)
            )
