"""Run Tempest tests by name in a child process, as Tempest's workers do, and read their outcome.

Tempest's own runner (`tempest run`) needs a workspace registered in the user's home; the suite never
touches the user's home, so the tests are loaded by name and run with unittest in a child process
whose TEMPEST_CONFIG_DIR points at a tempest.conf the test wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_CHILD = """
import json, sys, unittest
suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[1:])
result = unittest.TestResult()
suite.run(result)
print("NOVAMIG-RESULT " + json.dumps({
    "run": result.testsRun,
    "failures": [[str(t), tb[-4000:]] for t, tb in result.failures + result.errors],
    "skipped": [[str(t), reason] for t, reason in result.skipped],
}))
"""


def run_tempest_tests(conf: Path, names: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """`{"run": N, "failures": [[test, traceback]], "skipped": [[test, reason]]}` for `names`
    run against `conf`; fails the calling test with the child's stderr when it reported nothing."""
    env = {**os.environ, "TEMPEST_CONFIG_DIR": str(conf.parent), "TEMPEST_CONFIG": conf.name}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *names],
        env=env,
        cwd=conf.parent,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("NOVAMIG-RESULT ")), None)
    assert line is not None, out.stderr[-4000:]
    result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return result
