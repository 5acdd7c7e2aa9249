"""SIGTERM before the command-line module has loaded is an interruption (exit 130), not a silent kill.

The entry point installs its handler before importing `novamig.cli` (half a second of imports on
2 cores). The test sends a real SIGTERM from inside that import — an import hook that fires when
`novamig.cli` is looked up — so the signal lands exactly in the window the handler must cover.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from novamig.exitcodes import ExitCode

SIGNAL_DURING_IMPORT = """
import os, signal, sys
import novamig.__main__ as entry

class SignalWhenCliIsImported:
    def find_spec(self, name, path=None, target=None):
        if name == "novamig.cli":
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SignalWhenCliIsImported())
sys.exit(entry.main())
"""


def test_sigterm_while_the_cli_module_loads_exits_130_with_a_message() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_DURING_IMPORT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == ExitCode.INTERRUPTED, done.stderr
    assert done.stderr.strip().endswith("novamig: interrupted"), done.stderr
    assert "Traceback" not in done.stderr


def test_the_novamig_command_starts_at_the_entry_point_that_handles_sigterm() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts", name="novamig")
    assert [s.value for s in scripts] == ["novamig.__main__:main"]
