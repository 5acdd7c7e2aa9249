"""Errors of the cloud layer, each mapped to one exit code of the CLI contract.

The runner never inspects openstacksdk's exception zoo: everything that leaves `novamig.cloud`
is one of these, so the command can say what went wrong in one line and pick the exit code
(bad input → 2, infrastructure → 3) without guessing.
"""

from __future__ import annotations

from collections.abc import Sequence


class CloudError(Exception):
    """Something about the cloud prevents the run: infrastructure (exit 3) unless a subclass says."""

    exit_code = 3


class UnknownCloud(CloudError):
    """The cloud name is in no clouds.yaml: bad input (exit 2), listing the names that exist."""

    exit_code = 2

    def __init__(self, name: str, known: Sequence[str], files: Sequence[str]) -> None:
        self.name = name
        self.known = sorted(known)
        self.files = list(files)
        where = ", ".join(self.files) if self.files else "no clouds.yaml found"
        names = ", ".join(self.known) if self.known else "none"
        super().__init__(f"cloud {name!r} is not defined; known clouds: {names} (searched: {where})")


class CloudConfigInvalid(CloudError):
    """clouds.yaml exists but cannot be used (syntax, missing auth): bad input (exit 2)."""

    exit_code = 2


class CloudUnreachable(CloudError):
    """The cloud did not answer (or refused our credentials)."""


class PreflightFailed(CloudError):
    """The cloud answers but cannot run a live migration test; `problems` says every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("preflight failed: " + "; ".join(self.problems))


class BootFailure(CloudError):
    """A server did not become ACTIVE; the message carries Nova's fault message."""


class MigrationRequestRefused(CloudError):
    """Nova refused a live-migrate request (the migration never started): a migration error."""


class MigrationRequestLost(MigrationRequestRefused):
    """The live-migrate request got no answer (connection dropped, timeout). Nova may have started
    the migration, so the request is not repeated: the migration is recorded as an error naming the
    call, like a refused one, and the case goes on."""
