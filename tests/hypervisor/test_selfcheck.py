"""`novamig selfcheck --json`: the contract keys, real figures, exit code."""

from __future__ import annotations

import json

import pytest

from novamig.guest.image import GuestImage
from novamig.hypervisor.selfcheck import cmd_selfcheck

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def test_selfcheck_json(capsys: pytest.CaptureFixture[str], tiny_image: GuestImage) -> None:
    code = cmd_selfcheck(as_json=True)
    out = json.loads(capsys.readouterr().out)
    if out["problems"] and all("too loaded" in p for p in out["problems"]):
        pytest.skip(f"host too loaded to measure: {out['problems']}")
    assert code == 0, out.get("problems")
    assert out["accelerator"] in ("tcg", "kvm")
    assert out["qemu_version"][0].isdigit()
    assert out["noise_floor_ms"] > 0
    assert [p["injected_ms"] for p in out["pauses"]] == [50, 100, 500]
    for p in out["pauses"]:
        assert p["measured_ms"] >= p["injected_ms"] - 5
    mig = out["migration"]
    assert mig["status"] == "completed"
    for key in ("total_ms", "qemu_downtime_ms", "stop_resume_ms", "heartbeat_gap_ms"):
        assert isinstance(mig[key], (int, float)), key
    assert mig["heartbeat_gap_ms"] >= mig["qemu_downtime_ms"] - 1


def test_selfcheck_exit_3_when_qemu_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from novamig.hypervisor import binary

    monkeypatch.setenv("NOVAMIG_QEMU", "")
    monkeypatch.setenv("PATH", "/nonexistent")
    binary.qemu_binary.cache_clear()
    binary.qemu_version.cache_clear()
    try:
        assert cmd_selfcheck(as_json=True) == 3
        out = json.loads(capsys.readouterr().out)
        assert "qemu-system-x86_64 not found" in out["unusable"]
    finally:
        binary.qemu_binary.cache_clear()
        binary.qemu_version.cache_clear()
