"""Which accelerator actually runs guests here: decided by booting one, never by /dev/kvm alone.

On some hosts /dev/kvm exists and `query-kvm` says enabled, yet a stock guest kernel hangs or aborts
under it (nested virtualisation through PVM runs only PVM-enabled kernels). So the probe boots the
real guest image under KVM and waits for the agent's READY within a short deadline; anything else
means TCG. The verdict is cached per process and always recorded with its reason.

Booting is the machine's job: the caller hands in the boot test (`machine.accelerator_for` does),
so this module needs nothing above the errors and a machine can ask for the verdict at launch.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from novamig.hypervisor.errors import HypervisorError, QemuError

if TYPE_CHECKING:
    from novamig.hypervisor.machine import BootImage

KVM_PROBE_TIMEOUT_S = 15.0

#: Boots an image under KVM within a timeout (s); raises `HypervisorError` when the guest does not
#: come up and answer.
KvmBootTest = Callable[["BootImage", float], None]


@dataclass(frozen=True)
class AccelVerdict:
    """The accelerator novamig uses on this machine and why."""

    accelerator: str  # "kvm" | "tcg"
    reason: str
    probe_s: float  # time spent probing (0 when nothing was booted)
    kvm_tried: bool


_lock = threading.Lock()
_verdict: dict[str, AccelVerdict] = {}


def _kvm_device_usable() -> str | None:
    """None if /dev/kvm can be opened read-write, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm not usable: {exc.strerror}"
    os.close(fd)
    return None


def probe_accelerator(
    image: BootImage, boot_test: KvmBootTest, timeout: float = KVM_PROBE_TIMEOUT_S
) -> AccelVerdict:
    """KVM if `boot_test(image, timeout)` succeeds, else TCG with QEMU's own complaint as the reason.

    `NOVAMIG_ACCEL=tcg|kvm` skips the probe (recorded as the reason).
    """
    forced = os.environ.get("NOVAMIG_ACCEL")
    if forced:
        if forced not in ("tcg", "kvm"):
            raise HypervisorError(f"NOVAMIG_ACCEL={forced!r}: expected 'tcg' or 'kvm'")
        return AccelVerdict(forced, f"forced by NOVAMIG_ACCEL={forced}", 0.0, False)
    why_not = _kvm_device_usable()
    if why_not is not None:
        return AccelVerdict("tcg", why_not, 0.0, False)
    start = time.monotonic()
    try:
        boot_test(image, timeout)
    except HypervisorError as exc:
        why = str(exc).splitlines()[0]
        if isinstance(exc, QemuError):
            said = [ln.strip() for ln in exc.qemu_log.splitlines() if ln.strip()]
            if said:
                why = "QEMU: " + re.sub(r"^qemu-system-\S+:\s*", "", said[-1])[:160]
        return AccelVerdict(
            "tcg",
            f"KVM present but a guest did not boot under it ({why})",
            time.monotonic() - start,
            True,
        )
    return AccelVerdict("kvm", "a guest booted under KVM", time.monotonic() - start, True)


def decide_accelerator(image: BootImage, boot_test: KvmBootTest) -> AccelVerdict:
    """The cached verdict for this process, probing with `image` and `boot_test` the first time."""
    with _lock:
        if "verdict" not in _verdict:
            _verdict["verdict"] = probe_accelerator(image, boot_test)
        return _verdict["verdict"]


def cached_verdict() -> AccelVerdict | None:
    """The verdict if one was reached in this process (nothing is probed)."""
    with _lock:
        return _verdict.get("verdict")
