"""The ``novamig`` command's entry point: SIGTERM is made an interruption before anything heavy loads.

Why a module of its own: importing the command-line module pulls in pydantic, Jinja2 and the report
code (about half a second on 2 cores). A SIGTERM in that window used to end the process by the
default action (status 143 from the shell, no message), while a SIGINT already became a clean
"interrupted" (130). Installing the handler here, before that import, makes both signals mean the
same from the first milliseconds: nothing has been created yet, so stopping is all there is to do.
A run installs its own handlers later (`novamig.runner.signals`), which abort migrations and clean
up, and puts this one back when it is done.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from novamig.exitcodes import ExitCode


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from novamig.cli import main as cli_main  # noqa: PLC0415 - the handler must be in place before this import
    except KeyboardInterrupt:
        print("novamig: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
