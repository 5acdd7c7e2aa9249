"""A sample of the interruption trials (bench/interrupt.py): five of them, each kind of signal.

The benchmark runs many trials at random instants and prints the table docs/reliability.md quotes; CI runs
SIGINT, SIGTERM and SIGKILL just after the first migration completed, with the next one starting (a
figure measured that must be kept, and a migration in flight that must be aborted and its server
deleted), and SIGINT and SIGKILL while the guest boots (a server half made, no case measured yet).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "interrupt.py"
BOOTING = re.compile(r"booting")


@pytest.fixture(scope="module")
def trials() -> ModuleType:
    spec = importlib.util.spec_from_file_location("novamig_bench_interrupt", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["SIGINT", "SIGTERM"])
def test_stop_mid_run_loses_nothing_and_leaves_nothing(trials: ModuleType, tmp_path: Path, kind: str) -> None:
    trial = trials.run_trial(kind, 0.5, tmp_path, after=trials.COMPLETED)
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


def test_sigint_while_the_guest_boots_leaves_nothing(trials: ModuleType, tmp_path: Path) -> None:
    trial = trials.run_trial("SIGINT", 0.5, tmp_path, after=BOOTING)
    assert trial.rc == 130, trial
    assert trial.results_ok, trial.note
    assert trial.leftovers == []


def test_sigkill_while_the_guest_boots_then_cleanup_clears_all(trials: ModuleType, tmp_path: Path) -> None:
    trial = trials.run_trial("SIGKILL", 0.5, tmp_path, after=BOOTING)
    assert trial.rc == -9, trial
    assert trial.cleanup_rc == 0, trial.note
    assert trial.leftovers == [], trial.note
