"""Exit codes of the `novamig` command: a contract CI jobs rely on (README, "Exit codes")."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # an SLA was missed or a migration failed
    BAD_INPUT = 2  # scenario, override or argument invalid
    INFRASTRUCTURE = 3  # cloud unreachable, boot failure, missing machinery
    INTERRUPTED = 130  # Ctrl-C / SIGTERM: cleaned up, partial results written
