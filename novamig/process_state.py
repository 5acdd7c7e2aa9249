"""Whether a PID still names a live process: one answer for every layer that judges leftovers.

The embedded cloud's process control, `novamig cleanup`'s orphan sweep and the compute
configuration backups (whose owner file records a PID) all ask it, so it sits below all of them.
"""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int) -> bool:
    """True while `pid` runs; a process we may not signal counts as running, a zombie as ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
