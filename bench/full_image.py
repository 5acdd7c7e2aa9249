"""Full guest image figures: build time, cached time, sizes, boot to READY, web app ready, Locust
started, and Locust's request rate inside a TCG guest.

Run as root: ``.venv/bin/python bench/full_image.py [--force] [--cloud] [--users 5] [--run-time 10]``.
``--force`` rebuilds the image (otherwise the build figure is the cached lookup's). Everything
it starts (QEMU, the network namespace) is ended before it exits. Figures, not assertions: the
machine is shared, so they vary from run to run.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from novamig.guest.full import build_cloud_image, build_full_image
from novamig.hypervisor.machine import GuestSpec, QemuMachine
from novamig.hypervisor.netns import GuestNetwork


def _http(sock: socket.socket, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    with sock as s:
        s.settimeout(30)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: g\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    header, _, payload = data.partition(b"\r\n\r\n")
    return int(header.split(b" ", 2)[1]), payload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild the image")
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--run-time", type=int, default=10, help="Locust run time, seconds")
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--cloud", action="store_true", help="also build the Glance form (qcow2)")
    args = parser.parse_args()

    t0 = time.monotonic()
    image = build_full_image(force=args.force)
    build_s = time.monotonic() - t0
    t0 = time.monotonic()
    cached = build_full_image()
    cached_s = time.monotonic() - t0
    mib = 1 << 20
    print(f"build:            {build_s:6.1f} s ({'cache hit' if image.cached else 'built'}; "
          f"recorded build {image.build_seconds:.1f} s)")  # fmt: skip
    print(f"cached lookup:    {cached_s:6.1f} s (cache hit: {cached.cached})")
    s = image.sizes
    print(f"sizes:            rootfs {s['rootfs'] / mib:.0f} MiB, disk qcow2 {s['disk'] / mib:.0f} MiB "
          f"(ext4 {s['disk_virtual'] / mib:.0f} MiB), stage-1 initrd {s['initrd'] / mib:.1f} MiB, "
          f"vmlinux {s['vmlinux'] / mib:.0f} MiB")  # fmt: skip

    if args.cloud:
        t0 = time.monotonic()
        cloud = build_cloud_image(force=args.force)
        how = "cache hit" if cloud.cached else "built"
        print(f"Glance qcow2:     {time.monotonic() - t0:6.1f} s ({how}; "
              f"recorded build {cloud.build_seconds:.1f} s), {cloud.sizes['disk'] / mib:.0f} MiB "
              f"(rootfs with cloud-init {cloud.sizes['rootfs'] / mib:.0f} MiB)")  # fmt: skip

    with (
        tempfile.TemporaryDirectory(prefix="novamig-bench-full-") as tmp,
        GuestNetwork("10.77.6.0/24") as net,
    ):
        addr = net.new_address()
        spec = GuestSpec(
            name="bench-full", image=image, memory_mib=args.memory_mib, kernel_args=addr.kernel_args(),
            machine_type="pc-q35-7.2", accelerator="tcg", cpu_model="qemu64",
            network=net.attach(addr), extra_args=image.drive_args(),
        )  # fmt: skip

        def connect() -> socket.socket:
            sock = net.socket(socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect((addr.ip, image.web_port))
            return sock

        with QemuMachine(spec, Path(tmp)) as vm:
            t_launch = time.monotonic()
            vm.wait_ready(180)
            ready_s = time.monotonic() - t_launch
            print(f"boot to READY:    {ready_s:6.1f} s ({args.memory_mib} MiB, TCG)")
            while True:
                try:
                    if _http(connect(), "GET", "/health")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() - t_launch > 180:
                    print("web app did not answer within 180 s", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            print(f"web app answers:  {time.monotonic() - t_launch:6.1f} s after launch")

            params = {"users": args.users, "spawn_rate": args.users, "run_time_s": args.run_time}
            t_start = time.monotonic()
            status, body = _http(connect(), "POST", "/_novamig/locust/start", json.dumps(params).encode())
            if status != 202:
                print(f"Locust start failed: {status} {body!r}", file=sys.stderr)
                return 1
            state: dict[str, Any] = {}
            while time.monotonic() - t_start < 300:
                state = json.loads(_http(connect(), "GET", "/_novamig/locust/status")[1])
                if state["state"] not in ("running", "stopping"):
                    break
                time.sleep(1)
            result = json.loads(_http(connect(), "GET", "/_novamig/locust/result")[1])
            if result["state"] != "finished" or not result["stats"]:
                log = _http(connect(), "GET", "/_novamig/locust/log")[1].decode(errors="replace")
                print(f"Locust did not finish: {result}\n{log[-2000:]}", file=sys.stderr)
                return 1
            records = [
                line.split(",", 4)
                for line in _http(connect(), "GET", "/_novamig/locust/records")[1].decode().splitlines()
            ]
            stats = result["stats"]
            requests = sum(x["num_requests"] for x in stats)
            failures = sum(x["num_failures"] for x in stats)
            span = (int(records[-1][0]) - int(records[0][0])) / 1e9 if len(records) > 1 else 0.0
            latencies = sorted(float(r[2]) for r in records)
            print(f"Locust started:   {result['first_request_s']:6.1f} s from the start request "
                  f"to the first completed request (imports under TCG)")  # fmt: skip
            print(f"Locust in guest:  {requests} requests, {failures} failures, "
                  f"{requests / span if span else 0:.0f} req/s over {span:.1f} s, {args.users} users; "
                  f"median {latencies[len(latencies) // 2]:.0f} ms, max {latencies[-1]:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
