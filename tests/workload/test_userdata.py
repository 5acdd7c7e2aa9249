"""The user-data script: which agent settings a case renders, and what the script does when run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from novamig.scenario.models import Measure, MemoryLoad, Workload
from novamig.workload.userdata import INTEGRITY_MIB, ROOT_ENV, GuestSetup, agent_settings, render_user_data

#: The `wait_until(predicate, timeout, what)` fixture (tests/conftest.py).
WaitUntil = Callable[[Callable[[], bool], float, str], None]


def _plan(workload: Workload | None = None, *, hz: int = 1000, integrity: bool = False) -> GuestSetup:
    return GuestSetup("dirty_rate_mib_s=64#r1", workload or Workload(), Measure(heartbeat_hz=hz), integrity)


def _run(script: str, root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = root.parent / f"{root.name}.user-data"
    path.write_text(script)
    return subprocess.run(
        ["sh", str(path)],
        env={"PATH": os.environ["PATH"], ROOT_ENV: str(root), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_idle_case_sets_only_the_heartbeat() -> None:
    assert agent_settings(_plan(hz=250)) == {
        "hb_hz": "250",
        "dirty_mib_s": "0",
        "wset_mib": "0",
        "integrity_mib": "0",
    }


def test_memory_case_sets_the_dirtier() -> None:
    plan = _plan(Workload(kind="memory", memory=MemoryLoad(dirty_rate_mib_s=12.5, working_set_mib=48)))
    settings = agent_settings(plan)
    assert (settings["dirty_mib_s"], settings["wset_mib"]) == ("12.5", "48")


def test_locust_case_dirties_only_with_a_rate() -> None:
    without = _plan(Workload(kind="locust"))
    with_rate = _plan(Workload(kind="locust", memory=MemoryLoad(dirty_rate_mib_s=8, working_set_mib=16)))
    assert agent_settings(without)["dirty_mib_s"] == "0"
    assert (agent_settings(with_rate)["dirty_mib_s"], agent_settings(with_rate)["wset_mib"]) == ("8", "16")


def test_memory_integrity_sla_starts_a_region() -> None:
    assert agent_settings(_plan(integrity=True))["integrity_mib"] == str(INTEGRITY_MIB)
    assert agent_settings(_plan(integrity=False))["integrity_mib"] == "0"


def test_script_is_posix_sh_and_passes_sh_n(tmp_path: Path) -> None:
    script = render_user_data(
        _plan(Workload(kind="memory", memory=MemoryLoad(dirty_rate_mib_s=64)), integrity=True)
    )
    assert script.startswith("#!/bin/sh\n")
    path = tmp_path / "ud"
    path.write_text(script)
    checked = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, timeout=10, check=False)
    assert checked.returncode == 0, checked.stderr
    if shutil.which("dash"):  # Debian's /bin/sh is dash; check with it explicitly when present
        dash = subprocess.run(
            ["dash", "-n", str(path)], capture_output=True, text=True, timeout=10, check=False
        )
        assert dash.returncode == 0, dash.stderr


def test_running_the_script_writes_the_settings_file(tmp_path: Path) -> None:
    plan = _plan(
        Workload(kind="memory", memory=MemoryLoad(dirty_rate_mib_s=3, working_set_mib=8)),
        hz=250,
        integrity=True,
    )
    result = _run(render_user_data(plan), tmp_path / "guest")
    assert result.returncode == 0, result.stderr
    conf = tmp_path / "guest" / "run" / "novamig" / "agent.conf"
    tokens = conf.read_text().split()
    assert tokens == [
        "novamig.hb_hz=250",
        "novamig.dirty_mib_s=3",
        "novamig.wset_mib=8",
        f"novamig.integrity_mib={INTEGRITY_MIB}",
    ]
    assert "no agent running yet" in result.stdout
    assert [p.name for p in conf.parent.iterdir()] == ["agent.conf"]  # no temp file left


def test_running_it_again_replaces_the_file(tmp_path: Path) -> None:
    _run(render_user_data(_plan(hz=100)), tmp_path)
    _run(render_user_data(_plan(hz=300)), tmp_path)
    assert (tmp_path / "run" / "novamig" / "agent.conf").read_text().split()[0] == "novamig.hb_hz=300"


def _named_process(tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    """A long sleep whose command name (/proc/PID/comm) is `name`."""
    binary = tmp_path / name
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy(sleep, binary)
    return subprocess.Popen([str(binary), "60"])


def _ended(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize(("name", "signalled"), [("novamig-agent", True), ("not-the-agent", False)])
def test_a_running_agent_is_restarted_and_nothing_else_is(
    tmp_path: Path, name: str, signalled: bool, wait_until: WaitUntil
) -> None:
    """The PID file names the agent: it gets SIGTERM (init restarts it); a PID that is not the
    agent (a stale file, a reused PID) is left alone."""
    proc = _named_process(tmp_path, name)
    try:
        comm = Path(f"/proc/{proc.pid}/comm")
        wait_until(lambda: comm.read_text().strip() == name[:15], 5.0, "the stand-in process to get its name")
        piddir = tmp_path / "run" / "novamig"
        piddir.mkdir(parents=True)
        (piddir / "agent.pid").write_text(f"{proc.pid}\n")
        result = _run(render_user_data(_plan()), tmp_path)
        assert result.returncode == 0, result.stderr
        code = _ended(proc, 5.0 if signalled else 0.5)
        if signalled:
            assert code == -15
            assert f"restarting the running agent (pid {proc.pid})" in result.stdout
        else:
            assert code is None
            assert "no agent running yet" in result.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def test_garbage_in_the_pid_file_is_ignored(tmp_path: Path) -> None:
    piddir = tmp_path / "run" / "novamig"
    piddir.mkdir(parents=True)
    (piddir / "agent.pid").write_text("1; rm -rf /\n")
    result = _run(render_user_data(_plan()), tmp_path)
    assert result.returncode == 0, result.stderr
    assert (piddir / "agent.conf").exists()


def test_unwritable_root_fails_the_script(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _run(render_user_data(_plan()), blocker)
    assert result.returncode != 0


def test_case_id_cannot_break_out_of_the_comment() -> None:
    script = render_user_data(GuestSetup("a\nrm -rf /\n#"))
    assert "\nrm -rf /" not in script


def test_script_workload_runs_the_command_with_its_environment_unexpanded(
    tmp_path: Path, wait_until: WaitUntil
) -> None:
    from novamig.scenario.models import ScriptLoad

    out = tmp_path / "out.txt"
    command = f"printf '%s|%s|%s' \"$GREETING\" \"$TOKEN\" '$HOME' > {out}"
    plan = _plan(
        Workload(
            kind="script",
            script=ScriptLoad(command=command, env={"GREETING": "hello world", "TOKEN": "a'b$(x)`y`"}),
        )
    )
    text = render_user_data(plan)
    assert "a'b$(x)" not in text.split("NOVAMIG_WORKLOAD_EOF")[0]  # values only inside the quoted file
    result = _run(text, tmp_path / "guest")
    assert result.returncode == 0, result.stderr
    assert "started the workload script" in result.stdout
    assert "hello world" not in result.stdout  # values are not echoed
    wait_until(lambda: out.exists() and bool(out.read_text()), 10.0, "the workload script's output")
    assert out.read_text() == "hello world|a'b$(x)`y`|$HOME"
    script = tmp_path / "guest" / "run" / "novamig" / "workload.sh"
    assert oct(script.stat().st_mode & 0o777) == "0o700"


def test_other_workloads_start_no_script() -> None:
    assert "workload.sh" not in render_user_data(
        _plan(Workload(kind="memory", memory=MemoryLoad(dirty_rate_mib_s=8)))
    )
    assert "workload.sh" not in render_user_data(_plan())


def test_heartbeat_udp_is_written_only_when_asked_for(tmp_path: Path) -> None:
    from dataclasses import replace

    assert "hb_udp" not in agent_settings(_plan())
    plan = replace(_plan(hz=250), heartbeat_udp="192.168.1.1:7070")
    assert agent_settings(plan)["hb_udp"] == "192.168.1.1:7070"
    result = _run(render_user_data(plan), tmp_path / "guest")
    assert result.returncode == 0, result.stderr
    tokens = (tmp_path / "guest" / "run" / "novamig" / "agent.conf").read_text().split()
    assert tokens[0] == "novamig.hb_hz=250"
    assert tokens[-1] == "novamig.hb_udp=192.168.1.1:7070"


@pytest.mark.parametrize(
    "bad", ["192.168.1.1", "192.168.1.1:0", "192.168.1.1:70000", "host:7070", "::1:7070", "1.2.3.4:7'"]
)
def test_heartbeat_udp_must_be_ipv4_and_port(bad: str) -> None:
    with pytest.raises(ValueError, match="heartbeat_udp"):
        GuestSetup("c", heartbeat_udp=bad)
