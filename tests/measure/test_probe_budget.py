"""The probes' CPU budget (measure.probe_cpu_budget_percent), on a real probe: the network prober
at a rate that costs real CPU, held to a budget it exceeds and to one it keeps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from novamig.measure.contract import CaseClock, ServerInfo
from novamig.measure.network import NetworkProbe
from novamig.measure.spawned_probe import proc_cpu
from novamig.results import ProbeCost
from novamig.runner.case import _case_figures

MEASURABLE_CPU_S = 0.1
WaitUntil = Callable[[Callable[[], bool], float, str], None]  # the `wait_until` fixture


def test_a_probe_over_its_cpu_budget_is_marked_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, wait_until: WaitUntil
) -> None:
    probe = NetworkProbe(5000, None, tmp_path, protocol="icmp", sched="none")  # the kernel answers
    probe.start([ServerInfo("id-1", "one", "h", "127.0.0.1")], CaseClock())
    try:
        # Until the prober has spent CPU worth measuring (0.1 s: ten clock ticks, so a rate read
        # from its own summary is not one tick's rounding); a prober that never gets there fails.
        pid = probe.pid
        assert pid is not None, "the prober did not start"
        wait_until(
            lambda: (proc_cpu(pid) or (0.0, 0.0))[0] >= MEASURABLE_CPU_S, 30.0, "the prober to use CPU"
        )
    finally:
        probe.stop()
    measured = probe.cost()
    assert measured is not None and measured.cpu_percent > 0, measured

    tight: dict[str, ProbeCost] = {}
    with caplog.at_level(logging.WARNING, logger="novamig.runner.case"):
        _case_figures([probe], tight, {}, measured.cpu_percent / 2)
    cost = tight["network"]
    assert cost.over_budget is True and cost.budget_percent == pytest.approx(measured.cpu_percent / 2)
    assert cost.cpu_percent == measured.cpu_percent  # the figure itself is untouched
    assert any("over its budget" in r.getMessage() for r in caplog.records), caplog.text

    roomy: dict[str, ProbeCost] = {}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="novamig.runner.case"):
        _case_figures([probe], roomy, {}, 1000)
    assert roomy["network"].over_budget is False and roomy["network"].budget_percent == 1000
    assert not caplog.records
