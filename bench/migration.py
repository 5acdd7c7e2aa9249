"""Migration figures on this machine: boot time, and for idle / 50 / 100 MiB/s dirtying / post-copy
(and 200 MiB/s with auto-converge) the total time, the three downtime figures (QEMU's,
STOP→RESUME, heartbeat gap), bytes, dirty-sync iterations, and the ratio of total time to the
RAM/bandwidth bound. Prints a table; not a test.

    .venv/bin/python bench/migration.py [--memory-mib 256] [--repeat 1]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from novamig.guest.image import build_tiny_image
from novamig.hypervisor import (
    GuestSpec,
    HeartbeatCollector,
    QemuMachine,
    QemuMigrationSettings,
    accelerator_for,
    migrate,
    qemu_version,
)

GBIT_MIB_S = 1e9 / 8 / 2**20
CASES: list[tuple[str, float, dict[str, object]]] = [
    ("idle", 0, {}),
    ("50 MiB/s", 50, {}),
    ("100 MiB/s", 100, {}),
    ("200 MiB/s post-copy@2s", 200, {"post_copy_after_s": 2.0}),
    ("200 MiB/s auto-converge", 200, {"auto_converge": True}),
]


def _fmt(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--memory-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    console = Console(width=200)
    image = build_tiny_image()
    verdict = accelerator_for(image)
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    console.print(
        f"machine: {platform.node()} {cpu}, QEMU {qemu_version()}, {verdict.accelerator}, "
        f"guest {args.memory_mib} MiB / 1 vCPU, kernel {image.kernel_version}, bandwidth 1 Gbit/s"
    )
    table = Table(title="live migration (loopback, unix socket)")
    for col in (
        "case",
        "boot s",
        "status",
        "total ms",
        "QEMU downtime ms",
        "STOP→RESUME ms",
        "heartbeat gap ms",
        "src stall ms",
        "dst stall ms",
        "MiB sent",
        "iterations",
        "max throttle %",
        "total / (RAM/bw)",
    ):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory(prefix="novamig-bench-") as tmp:
        for _ in range(args.repeat):
            for name, rate, extra in CASES:
                spec = GuestSpec(name="bench", image=image, memory_mib=args.memory_mib)
                t0 = time.monotonic()
                with QemuMachine(spec, Path(tmp)) as src:
                    src.wait_ready(90)
                    boot_s = time.monotonic() - t0
                    if rate:
                        src.agent.dirty(rate, min(128, args.memory_mib // 2))
                    time.sleep(1.0)
                    with QemuMachine(src.spec.for_destination(), Path(tmp)) as dst:
                        policy = QemuMigrationSettings(bandwidth_mib_s=GBIT_MIB_S, timeout_s=120, **extra)  # type: ignore[arg-type]
                        r = migrate(src, dst, policy)
                        hb = HeartbeatCollector(src.agent, dst.agent).analyse(r)
                bound_ms = (r.ram_total_bytes or 0) / (GBIT_MIB_S * 2**20) * 1000
                table.add_row(
                    name,
                    _fmt(boot_s, 2),
                    r.status,
                    _fmt(r.total_ms, 0),
                    _fmt(r.qemu_downtime_ms, 0),
                    _fmt(r.stop_resume_ms),
                    _fmt(hb.switchover_gap_ms),
                    _fmt(hb.source_longest_gap_ms),
                    _fmt(hb.destination_longest_gap_ms),
                    _fmt((r.bytes_total or 0) / 2**20, 0),
                    str(r.dirty_sync_count),
                    str(max((p for _, p in r.throttle_series), default=0)),
                    _fmt(r.total_ms / bound_ms if r.total_ms and bound_ms else None, 2),
                )
    console.print(table)


if __name__ == "__main__":
    main()
