"""A sample of the interruption trials (bench/interrupt.py): one SIGINT, one SIGKILL + cleanup.

The benchmark runs many trials at random instants and prints the table docs/reliability.md quotes; CI runs
these two just after the first migration completed, with the next one starting: a figure measured
that must be kept, and a migration in flight that must be aborted and its server deleted.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "interrupt.py"


@pytest.fixture(scope="module")
def trials() -> ModuleType:
    spec = importlib.util.spec_from_file_location("novamig_bench_interrupt", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_sigint_mid_run_loses_nothing_and_leaves_nothing(trials: ModuleType, tmp_path: Path) -> None:
    trial = trials.run_trial("SIGINT", 0.5, tmp_path, after=trials.COMPLETED)
    assert trial.rc == 130, trial
    assert trial.completed_before >= 1, trial
    assert trial.results_ok, trial.note
    assert trial.completed_in_results >= trial.completed_before, trial
    assert trial.leftovers == []
    assert trial.ok


def test_sigkill_then_cleanup_leaves_nothing(trials: ModuleType, tmp_path: Path) -> None:
    trial = trials.run_trial("SIGKILL", 0.5, tmp_path, after=trials.COMPLETED)
    assert trial.rc == -9, trial
    assert trial.cleanup_rc == 0, trial.note
    assert trial.leftovers == [], trial.note
