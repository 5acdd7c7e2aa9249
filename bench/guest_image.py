"""Figures for the tiny guest image and its agent (prints them; not a test).

    .venv/bin/python bench/guest_image.py [--boots N] [--cold] [--migrations N [--pti-off]]

Build time (fresh image directory; downloads from the cache unless --cold), cached-build time,
image sizes, boot-to-READY under TCG, achieved dirty rates for a range of targets, integrity-check
time, and optionally how many live migrations of a guest running the dirtier next to the 1 kHz
heartbeat survive (a QEMU 7.2 TCG problem, worked around with `pti=on`: see docs/guest-agent.md;
`--pti-off` boots those guests with `pti=off` to reproduce it).
Guests run on novamig's hypervisor layer (QemuMachine, user-mode networking, the migration engine).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from novamig.guest.image import GuestImage, build_tiny_image, cache_dir
from novamig.guest.protocol import IntegrityResult
from novamig.hypervisor import (
    GuestSpec,
    QemuMachine,
    QemuMigrationSettings,
    UserModeNetwork,
    accelerator_for,
    migrate,
)

READY_TIMEOUT_S = 90.0


def _spec(
    image: GuestImage, name: str, net: UserModeNetwork, memory_mib: int = 256, extra: tuple[str, ...] = ()
) -> GuestSpec:
    return GuestSpec(
        name=name,
        image=image,
        memory_mib=memory_mib,
        network=net.source_attachment(),
        kernel_args=(*net.kernel_args(), *extra),
    )


def _ready_after_s(vm: QemuMachine) -> float:
    """QEMU started → READY arrived on the host (both host monotonic times)."""
    assert vm.launched_ns is not None and vm.agent.ready_host_ns is not None
    return (vm.agent.ready_host_ns - vm.launched_ns) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boots", type=int, default=5, help="boots to time (default 5)")
    ap.add_argument("--cold", action="store_true", help="include downloading the packages")
    ap.add_argument("--migrations", type=int, default=0, help="dirtier+heartbeat migrations to try")
    ap.add_argument(
        "--pti-off",
        action="store_true",
        help="migrate guests booted with pti=off (without the TCG workaround), to reproduce the problem",
    )
    args = ap.parse_args()

    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=True)
    print(
        f"machine: {platform.node()} {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cpus"
    )

    shared = cache_dir()
    image = build_tiny_image()  # make sure the shared cache (and its downloads) exist
    verdict = accelerator_for(image)
    print(f"qemu: {qemu.stdout.splitlines()[0]}, accel {verdict.accelerator} ({verdict.reason})")
    with tempfile.TemporaryDirectory(prefix="novamig-bench-") as tmp:
        root = Path(tmp)
        if not args.cold:
            (root / "downloads").symlink_to(shared / "downloads")
        t0 = time.monotonic()
        built = build_tiny_image(cache_dir=root)
        build_s = time.monotonic() - t0
        t0 = time.monotonic()
        again = build_tiny_image(cache_dir=root)
        cached_s = time.monotonic() - t0
        assert again.cached and not built.cached
        print(f"build: {build_s:.1f} s ({'with' if args.cold else 'without'} downloads)")
        print(f"cached build: {cached_s * 1000:.0f} ms (apt answers memoised while its lists are unchanged)")
    print(f"kernel: {image.kernel_version}, vmlinux {image.kernel.stat().st_size / 1e6:.1f} MB")
    print(f"initrd: {image.initrd.stat().st_size / 1e6:.2f} MB (uncompressed cpio)")

    work = Path(tempfile.mkdtemp(prefix="novamig-bench-"))
    try:
        times = []
        for i in range(args.boots):
            with QemuMachine(_spec(image, f"boot{i}", UserModeNetwork()), work) as g:
                g.wait_ready(READY_TIMEOUT_S)
                times.append(_ready_after_s(g))
        if times:
            print(
                f"boot to READY (QEMU start → READY on the host, {args.boots} boots): "
                f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s"
            )

        with QemuMachine(_spec(image, "load", UserModeNetwork(), memory_mib=512), work) as g:
            g.wait_ready(READY_TIMEOUT_S)
            for target in (20, 50, 100, 200, 400):
                assert g.agent.dirty(target, 128).ok
                time.sleep(3)
                s = g.agent.dirty_stats()
                print(
                    f"dirtier target {target:4d} MiB/s (128 MiB working set): "
                    f"achieved {s.achieved_mib_s:6.1f} MiB/s over {s.seconds:.1f} s, "
                    f"last second {s.recent_mib_s:6.1f}"
                )
            g.agent.dirty(0, 0)
            for mib in (32, 128):
                assert g.agent.integrity_start(mib).ok
                r = g.agent.command("integrity-check", 60.0, check=False)
                res = IntegrityResult.from_reply(r)
                print(f"integrity-check of {mib} MiB: {r.fields.get('check_ms')} ms (ok={res.ok})")
                g.agent.command("integrity-stop")

        survived = 0
        pti = "without pti=on"
        extra = ("pti=off",) if args.pti_off else ()
        policy = QemuMigrationSettings(bandwidth_mib_s=1024, timeout_s=120, transport="tcp")
        for i in range(args.migrations):
            net = UserModeNetwork()
            with QemuMachine(_spec(image, f"src{i}", net, extra=extra), work) as src:
                src.wait_ready(READY_TIMEOUT_S)
                if "pti=on" in src.argv[src.argv.index("-append") + 1].split():
                    pti = "with pti=on"
                src.agent.dirty(20, 32)
                dst_spec = src.spec.for_destination(network=net.destination_attachment(), name=f"dst{i}")
                with QemuMachine(dst_spec, work) as dst:
                    result = migrate(src, dst, policy)
                    time.sleep(2)
                    alive = dst.poll() is None and "Kernel panic" not in dst.console_log()
                    survived += alive
                    state = "alive" if alive else "CRASHED"
                    print(f"  migration {i + 1}: {result.status}, destination {state}", flush=True)
        if args.migrations:
            print(
                f"dirtier (20 MiB/s) + 1 kHz heartbeat migrations surviving ({pti}): "
                f"{survived}/{args.migrations}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
