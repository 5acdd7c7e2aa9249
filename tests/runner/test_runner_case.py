"""Run-level rules that need no cloud: signal handling, exit codes, output folder.

The orchestration itself (targets, concurrency, policies, failures, SIGINT, cleanup) is tested on
the real embedded cloud in test_runner_e2e.py."""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

from novamig.results import Environment
from novamig.runner.run import default_out_dir, exit_code_for
from novamig.runner.signals import StopRequest, stop_on_signals


def env() -> Environment:
    return Environment(cloud="fake", novamig_version="0", started_at=dt.datetime.now(dt.UTC))


def test_second_signal_does_not_interrupt_cleanup() -> None:
    stop = StopRequest()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.is_set() and stop.signal_name == "SIGTERM" and stop.count == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_exit_codes() -> None:
    from novamig.results import Results

    r = Results(scenario={}, environment=env(), passed=True)
    assert exit_code_for(r, False) == 0
    assert exit_code_for(r, True) == 3
    r.passed = False
    assert exit_code_for(r, False) == 1
    r.interrupted = True
    assert exit_code_for(r, True) == 130


def test_default_out_dir() -> None:
    when = dt.datetime(2026, 11, 25, 23, 5, 9, tzinfo=dt.UTC)
    assert default_out_dir("smoke", when) == Path("reports/smoke-20261125T230509Z")
