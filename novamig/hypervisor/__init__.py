"""QEMU guests and QEMU live migration, driven over QMP: the physics under novamig.

Public API (used by the embedded cloud's virt driver, the runner and `novamig selfcheck`):

* `GuestSpec`, `NetworkAttachment`, `QemuMachine`: one QEMU process (context manager);
  `QemuMachine.agent` is the guest agent channel (`AgentChannel`) with its heartbeat log.
* `QemuMigrationSettings`, `migrate`, `start_migration` → `MigrationJob` (`switch_to_postcopy()`,
  `cancel()`, `result()`, `state`), `MigrationResult` (its `status` a `MigrationOutcome`),
  `QemuProgress`.
* `HeartbeatCollector`, `measure_noise_floor`, `inject_pause`: guest-side downtime.
* `GuestNetwork`, `UserModeNetwork`: the guests' network (namespace + bridge + taps, or user-mode).
* `accelerator_for`, `AccelVerdict`: KVM only when a guest really boots under it, else TCG.
* errors: `HypervisorError` and subclasses, each carrying its context.

Every name is re-exported from the module that defines it; none of those modules imports this
package, so importing it never goes round in a circle.
"""

from novamig.hypervisor.accel import AccelVerdict
from novamig.hypervisor.agent import AgentChannel, Beat, BeatLog
from novamig.hypervisor.binary import default_machine_type, qemu_binary, qemu_version
from novamig.hypervisor.errors import (
    AgentError,
    AgentTimeout,
    GuestBootError,
    HypervisorError,
    MachineUnusable,
    NetworkError,
    QemuError,
    QemuLaunchError,
    QmpCommandError,
)
from novamig.hypervisor.heartbeat import (
    HeartbeatCollector,
    MigrationHeartbeat,
    NoiseFloor,
    PauseEstimate,
    PauseMeasurement,
    inject_pause,
    measure_noise_floor,
    measure_pause,
)
from novamig.hypervisor.machine import (
    GuestSpec,
    MachineState,
    NetworkAttachment,
    QemuMachine,
    accelerator_for,
)
from novamig.hypervisor.migration import (
    MigrationControl,
    MigrationEvent,
    MigrationJob,
    MigrationOutcome,
    MigrationResult,
    MigrationState,
    QemuProgress,
    migrate,
    start_migration,
)
from novamig.hypervisor.netns import GuestAddress, GuestNetwork, UserModeNetwork, netns_supported
from novamig.hypervisor.policy import QemuMigrationSettings

__all__ = [
    "AccelVerdict",
    "AgentChannel",
    "AgentError",
    "AgentTimeout",
    "Beat",
    "BeatLog",
    "GuestAddress",
    "GuestBootError",
    "GuestNetwork",
    "GuestSpec",
    "HeartbeatCollector",
    "HypervisorError",
    "MachineState",
    "MachineUnusable",
    "MigrationControl",
    "MigrationEvent",
    "MigrationHeartbeat",
    "MigrationJob",
    "MigrationOutcome",
    "MigrationResult",
    "MigrationState",
    "NetworkAttachment",
    "NetworkError",
    "NoiseFloor",
    "PauseEstimate",
    "PauseMeasurement",
    "QemuError",
    "QemuLaunchError",
    "QemuMachine",
    "QemuMigrationSettings",
    "QemuProgress",
    "QmpCommandError",
    "UserModeNetwork",
    "accelerator_for",
    "default_machine_type",
    "inject_pause",
    "measure_noise_floor",
    "measure_pause",
    "migrate",
    "netns_supported",
    "qemu_binary",
    "qemu_version",
    "start_migration",
]
