"""Tie a child process's life to its parent's without ``preexec_fn`` (unsafe with threads).

The parent passes its PID in ``NOVAMIG_PARENT_PID``; the child calls ``arm()`` first thing: it asks
the kernel for SIGKILL when the parent goes (PR_SET_PDEATHSIG), then checks the parent is still the
one expected, closing the window where the parent died before the request was made.
"""

from __future__ import annotations

import ctypes
import os
import signal

ENV = "NOVAMIG_PARENT_PID"
PR_SET_PDEATHSIG = 1


def env_for_child() -> dict[str, str]:
    return {ENV: str(os.getpid())}


def arm() -> None:
    expected = os.environ.pop(ENV, "")
    if not expected.isdigit():
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(expected):
        os._exit(1)  # the parent is already gone
