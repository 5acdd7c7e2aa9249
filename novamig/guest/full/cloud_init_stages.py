"""cloud-init's four boot stages in one Python process: what the Glance form's PID 1 runs.

This file is not used on the host: the image build copies it into the Glance form, whose
``/sbin/novamig-init`` runs it with the guest's ``python3`` (Debian's cloud-init is importable
there). Importing it runs nothing.

Why one process rather than the four ``cloud-init`` commands systemd would start (``init
--local``, ``init``, ``modules --mode=config``, ``modules --mode=final``): under TCG every start of
``/usr/bin/cloud-init`` costs 2.2–3.6 s before the stage does any work (the interpreter, the
entry script's scan of every installed distribution's metadata, cloud-init's own imports), more
than the stages' work itself (4.5 s in all, by ``cloud-init analyze``). Four starts were about 10
of the 13 s between PID 1 starting cloud-init and cloud-init running the user-data that gives
the agent its settings; this path pays one. The stages still run in systemd's order and each
through cloud-init's own ``main()``, so status files, logs, semaphores and ``cloud-init
analyze`` see four ordinary stages.

Exit status: 0 when every stage reported success, else the last non-zero status (as a shell
loop over the four commands would report it).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from types import ModuleType

#: The stages in systemd's order (cloud-init-local, cloud-init, cloud-config, cloud-final).
#: The network is up before the first one: PID 1 takes its DHCP lease before starting this.
STAGES: tuple[tuple[str, ...], ...] = (
    ("init", "--local"),
    ("init",),
    ("modules", "--mode=config"),
    ("modules", "--mode=final"),
)


def run_stage(main: ModuleType, stage: tuple[str, ...]) -> int:
    """One stage through ``cloudinit.cmd.main.main``; its status, an error never stops the
    next stage (under systemd each stage runs whatever the one before reported)."""
    try:
        # main() pops argv[0] from the list it is given: a fresh list for each stage
        status = main.main(["cloud-init", *stage])
    except SystemExit as e:
        status = e.code
    except Exception:  # report it and go on to the next stage, as systemd would
        traceback.print_exc()
        status = 1
    if status is None or status == 0:
        return 0
    return status if isinstance(status, int) else 1


def run_stages() -> int:
    """Every stage in order; the last non-zero status, or 0."""
    main = importlib.import_module("cloudinit.cmd.main")
    last = 0
    for stage in STAGES:
        last = run_stage(main, stage) or last
    return last


if __name__ == "__main__":
    sys.exit(run_stages())
