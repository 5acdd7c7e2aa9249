"""Figures for the tiny guest image and its agent (prints them; not a test).

    .venv/bin/python bench/guest_image.py [--boots N] [--cold] [--migrations N]

Build time (fresh image directory; downloads from the cache unless --cold), cached-build time,
image sizes, boot-to-READY under TCG, achieved dirty rates for a range of targets, integrity-check
time, and optionally how many live migrations of a guest running the dirtier next to the 1 kHz
heartbeat survive (a QEMU 7.2 TCG problem: see docs/guest-agent.md).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "guest"))

from guestvm import boot_guest, free_port  # noqa: E402

from novamig.guest.image import build_tiny_image, cache_dir  # noqa: E402
from novamig.guest.protocol import DirtyStats, IntegrityResult  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boots", type=int, default=5, help="boots to time (default 5)")
    ap.add_argument("--cold", action="store_true", help="include downloading the packages")
    ap.add_argument("--migrations", type=int, default=0, help="dirtier+heartbeat migrations to try")
    args = ap.parse_args()

    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=True)
    print(
        f"machine: {platform.node()} {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cpus"
    )
    print(f"qemu: {qemu.stdout.splitlines()[0]}, accel tcg")

    shared = cache_dir()
    image = build_tiny_image()  # make sure the shared cache (and its downloads) exist
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
            d = work / f"boot{i}"
            d.mkdir()
            with boot_guest(image, d) as g:
                times.append(g.ready_after_s)
        print(
            f"boot to READY (QEMU start → READY on the host, {args.boots} boots): "
            f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s"
        )

        d = work / "load"
        d.mkdir()
        with boot_guest(image, d, mem_mib=512) as g:
            for target in (20, 50, 100, 200, 400):
                assert g.agent.command("dirty", target, 128).ok
                time.sleep(3)
                s = DirtyStats.from_reply(g.agent.command("dirty-stats"))
                print(
                    f"dirtier target {target:4d} MiB/s (128 MiB working set): "
                    f"achieved {s.achieved_mib_s:6.1f} MiB/s over {s.seconds:.1f} s, "
                    f"last second {s.recent_mib_s:6.1f}"
                )
            g.agent.command("dirty", 0, 0)
            for mib in (32, 128):
                assert g.agent.command("integrity-start", mib).ok
                r = g.agent.command("integrity-check")
                res = IntegrityResult.from_reply(r)
                print(f"integrity-check of {mib} MiB: {r.fields.get('check_ms')} ms (ok={res.ok})")
                g.agent.command("integrity-stop")

        survived = 0
        for i in range(args.migrations):
            sd, dd = work / f"src{i}", work / f"dst{i}"
            sd.mkdir()
            dd.mkdir()
            port = free_port()
            with boot_guest(image, sd) as src:
                src.agent.command("dirty", 20, 32)
                with boot_guest(image, dd, incoming=f"tcp:127.0.0.1:{port}") as dst:
                    src.qmp.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 30})
                    src.qmp.execute("migrate", uri=f"tcp:127.0.0.1:{port}")
                    while src.qmp.execute("query-migrate")["status"] not in (
                        "completed",
                        "failed",
                        "cancelled",
                    ):
                        time.sleep(0.1)
                    time.sleep(2)
                    alive = dst.proc.poll() is None and "Kernel panic" not in dst.console
                    survived += alive
                    print(f"  migration {i + 1}: destination {'alive' if alive else 'CRASHED'}", flush=True)
        if args.migrations:
            print(f"dirtier (20 MiB/s) + 1 kHz heartbeat migrations surviving: {survived}/{args.migrations}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
