"""`cmd_run` / `cmd_cleanup` input errors: exit 2 with a message that lets the user fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from novamig.runner.commands import cmd_cleanup, cmd_run

SCENARIO = """name: cmdtest
fleet: {count: 1}
migration: {count: 1}
measure: {probes: [hypervisor], noise_floor_s: 0}
sla: {downtime_ms: {probe: hypervisor}}
"""


@pytest.fixture
def clouds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "clouds.yaml"
    path.write_text(
        "clouds:\n"
        "  alpha: {auth: {auth_url: 'http://127.0.0.1:9/v3', username: u, password: pw, project_name: p}}\n"
        "  beta: {auth: {auth_url: 'http://127.0.0.1:9/v3', username: u, password: pw, project_name: p}}\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    return path


def scenario(tmp_path: Path, text: str = SCENARIO) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return str(path)


def test_bad_cloud_name_exits_2_listing_known_names(
    tmp_path: Path, clouds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cmd_run(scenario(tmp_path), "gamma", str(tmp_path / "out"), [])
    err = capsys.readouterr().err
    assert rc == 2
    assert "'gamma' is not defined" in err and "known clouds: alpha, beta" in err
    assert "pw" not in err


def test_unreachable_cloud_exits_3(tmp_path: Path, clouds: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cmd_run(scenario(tmp_path), "alpha", str(tmp_path / "out"), [])
    assert rc == 3
    assert "cannot authenticate" in capsys.readouterr().err


def test_an_embedded_driver_with_a_named_cloud_exits_2_before_the_cloud_is_touched(
    tmp_path: Path, clouds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """alpha is unreachable: reaching it would exit 3, so exit 2 shows nothing was tried."""
    rc = cmd_run(scenario(tmp_path), "alpha", str(tmp_path / "out"), [], embedded_driver="libvirt")
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "cloud 'alpha' (from --cloud)" in err and "novamig cloud up --driver libvirt" in err
    assert "cannot authenticate" not in err


def test_invalid_scenario_exits_2_with_positions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = scenario(tmp_path, "name: x\nmigration: {count: -1}\n")
    assert cmd_run(path, None, str(tmp_path / "out"), []) == 2
    assert f"{path}:2:" in capsys.readouterr().err
    assert cmd_run(str(tmp_path / "absent.yaml"), None, str(tmp_path / "out"), []) == 2


def test_cleanup_without_a_cloud_name_exits_2(clouds: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_cleanup(None, yes=False) == 2
    assert "known clouds: alpha, beta" in capsys.readouterr().err
    assert cmd_cleanup("nope", yes=False) == 2


def test_every_shipped_scenario_plans(tmp_path: Path) -> None:
    from novamig.runner.plan import plan_from_case
    from novamig.scenario import expand_cases, load_scenario

    root = Path(__file__).resolve().parents[2] / "scenarios"
    shipped = sorted(root.glob("*.yaml"))
    assert shipped
    for path in shipped:
        plans = [plan_from_case(c) for c in expand_cases(load_scenario(path))]
        assert plans, path
        for plan in plans:
            assert plan.servers >= 1 and plan.policy.timeout_s
            if plan.policy.post_copy_after_s is not None:
                assert plan.host_options.get("live_migration_permit_post_copy") is True


def test_locust_in_the_guest_with_a_missing_user_locustfile_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        SCENARIO.replace("fleet: {count: 1}", "fleet: {count: 1, image: novamig-full}")
        + "workload: {kind: locust, locust: {where: guest, locustfile: mine.py}}\n"
    )
    assert cmd_run(scenario(tmp_path, body), None, str(tmp_path / "out"), []) == 2
    err = capsys.readouterr().err
    assert "mine.py" in err and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_a_case_plan_carries_its_cells_sla_reasons_and_the_fleet_timeouts() -> None:
    from novamig.runner.plan import plan_from_case
    from novamig.scenario import expand_cases, load_scenario

    path = Path(__file__).resolve().parents[2] / "scenarios" / "precopy-vs-postcopy.yaml"
    overrides = ["fleet.ready_timeout_s=900", "fleet.boot_timeout_s=1200", "repeat=1"]
    plans = {c.id: plan_from_case(c) for c in expand_cases(load_scenario(path, overrides))}
    assert {(p.boot_timeout_s, p.ready_timeout_s) for p in plans.values()} == {(1200, 900)}
    own = plans.pop("dirty_rate_mib_s=200,post_copy_after_s=null#r1")
    assert own.sla.migrations_completed_ratio == 0 and own.sla_reasons and "128 MiB/s" in own.sla_reasons[0]
    assert {(p.sla.migrations_completed_ratio, p.sla_reasons) for p in plans.values()} == {(0.5, ())}
