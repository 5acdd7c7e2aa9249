"""How QEMU runs one live migration: the knobs Nova and the scenario file expose, typed and checked.

Named `QemuMigrationSettings` (not a policy) to keep it apart from the scenario file's
`novamig.scenario.models.MigrationPolicy`, whose keys it mirrors for the hypervisor layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

# QEMU rejects max-bandwidth above SIZE_MAX / 1000 in some versions; 1 TiB/s is "unlimited" for any
# loopback migration and far inside every version's bound.
UNLIMITED_BANDWIDTH_BYTES_S = 1 << 40


@dataclass(frozen=True)
class QemuMigrationSettings:
    """Settings of one QEMU live migration (names match the scenario file's `migration.policy`).

    bandwidth_mib_s = 0 means unlimited (QEMU's own default would be 128 MiB/s). Post-copy is
    *allowed* when either post_copy_after_s or post_copy_after_iterations is set (or
    `allow_post_copy`); the switch happens when the first trigger fires or when the caller asks
    for it. `abort_after_s` cancels on purpose (status `cancelled`); `timeout_s` cancels because the
    migration took too long (status `timeout`). In both cases the source keeps running.
    """

    downtime_limit_ms: int = 300
    bandwidth_mib_s: float = 0
    auto_converge: bool = False
    post_copy_after_s: float | None = None
    post_copy_after_iterations: int | None = None
    allow_post_copy: bool = False
    abort_after_s: float | None = None
    timeout_s: float = 600.0
    cpu_throttle_initial: int | None = None
    cpu_throttle_increment: int | None = None
    sample_interval_s: float = 0.05
    transport: str = "unix"  # "unix" (works across network namespaces) or "tcp" (127.0.0.1)

    def __post_init__(self) -> None:
        problems = []
        if self.downtime_limit_ms <= 0:
            problems.append("downtime_limit_ms must be > 0")
        if self.bandwidth_mib_s < 0:
            problems.append("bandwidth_mib_s must be >= 0 (0 = unlimited)")
        if self.post_copy_after_s is not None and self.post_copy_after_s < 0:
            problems.append("post_copy_after_s must be >= 0")
        if self.post_copy_after_iterations is not None and self.post_copy_after_iterations < 1:
            problems.append("post_copy_after_iterations must be >= 1")
        if self.abort_after_s is not None and self.abort_after_s < 0:
            problems.append("abort_after_s must be >= 0")
        if self.timeout_s <= 0:
            problems.append("timeout_s must be > 0")
        if not 0 < self.sample_interval_s <= 0.1:
            problems.append("sample_interval_s must be in (0, 0.1]")
        for name in ("cpu_throttle_initial", "cpu_throttle_increment"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 99:
                problems.append(f"{name} must be in 1..99")
        if self.transport not in ("unix", "tcp"):
            problems.append("transport must be 'unix' or 'tcp'")
        if problems:
            raise ValueError("invalid migration policy: " + "; ".join(problems))

    @property
    def post_copy_allowed(self) -> bool:
        return (
            self.allow_post_copy
            or self.post_copy_after_s is not None
            or self.post_copy_after_iterations is not None
        )

    @property
    def max_bandwidth_bytes_s(self) -> int:
        if self.bandwidth_mib_s == 0:
            return UNLIMITED_BANDWIDTH_BYTES_S
        return int(self.bandwidth_mib_s * 1024 * 1024)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> QemuMigrationSettings:
        """Build from a scenario's `migration.policy` mapping; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown migration policy keys: {', '.join(unknown)}")
        return cls(
            **{k: v for k, v in data.items() if v is not None or k.endswith(("_after_s", "_iterations"))}
        )
