"""Which accelerator actually runs guests here: decided by booting one, never by /dev/kvm alone.

On some hosts /dev/kvm exists and `query-kvm` says enabled, yet a stock guest kernel hangs or aborts
under it (nested virtualisation through PVM runs only PVM-enabled kernels). So the probe boots the
real guest image under KVM and waits for the agent's READY within a short deadline; anything else
means TCG. The verdict is cached per process and always recorded with its reason.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from novamig.hypervisor.errors import HypervisorError, QemuError

if TYPE_CHECKING:
    from novamig.hypervisor.machine import BootImage

KVM_PROBE_TIMEOUT_S = 15.0


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


def probe_accelerator(image: BootImage, timeout: float = KVM_PROBE_TIMEOUT_S) -> AccelVerdict:
    """Boot `image` under KVM; KVM if the agent reports READY within `timeout`, else TCG.

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

    from novamig.hypervisor.machine import GuestSpec, QemuMachine

    spec = GuestSpec(name="accel-probe", image=image, memory_mib=128, accelerator="kvm", cpu_model="host")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="novamig-accel-") as tmp:
        vm = QemuMachine(spec, Path(tmp))
        try:
            vm.launch(timeout=timeout)
            vm.wait_ready(timeout)
            vm.agent.command("ping", timeout=5.0)
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
        finally:
            vm.shutdown(timeout=2.0, soft=False)
    return AccelVerdict("kvm", "a guest booted under KVM", time.monotonic() - start, True)


def accelerator_for(image: BootImage) -> AccelVerdict:
    """The cached verdict for this process, probing with `image` the first time."""
    with _lock:
        if "verdict" not in _verdict:
            _verdict["verdict"] = probe_accelerator(image)
        return _verdict["verdict"]


def cached_verdict() -> AccelVerdict | None:
    with _lock:
        return _verdict.get("verdict")
