"""Benchmark of the embedded cloud: prints figures, asserts nothing.

    .venv/bin/python bench/embedded_cloud.py [--guests 4] [--repeat 1] [--json]

Measures: ready time of `EmbeddedCloud.start()` (wall, and the cloud's own per-stage figures),
Keystone token issue and validation and a fresh token's first Nova call (bench/embedded_api.py),
boot → ACTIVE of one tiny guest through the API, live migration end to end (API call → migration
record `completed`) of an idle tiny guest, and resident memory of the cloud process (and of Keystone)
with 0 and N guests (QEMU processes counted apart).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from embedded_api import measure_api  # bench/embedded_api.py: the script's folder is on sys.path

from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import TINY_IMAGE_NAME


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def boot(conn: Any, name: str) -> tuple[Any, float]:
    image = conn.image.find_image(TINY_IMAGE_NAME, ignore_missing=False)
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    started = time.monotonic()
    server = conn.compute.create_server(name=name, image_id=image.id, flavor_id=flavor.id, networks="auto")
    server = conn.compute.wait_for_server(server, wait=300, interval=0.2)
    return server, time.monotonic() - started


def live_migrate(conn: Any, server: Any) -> tuple[str, float]:
    started = time.monotonic()
    conn.compute.live_migrate_server(server, host=None, block_migration="auto")
    while time.monotonic() - started < 300:
        records = sorted(conn.compute.migrations(instance_uuid=server.id), key=lambda m: m.id)
        if records and records[-1].status in ("completed", "error", "failed", "cancelled"):
            return records[-1].status, time.monotonic() - started
        time.sleep(0.1)
    return "timeout", time.monotonic() - started


def run(guests: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    started = time.monotonic()
    with EmbeddedCloud() as cloud:
        figures["ready_s"] = round(time.monotonic() - started, 2)
        info = cloud.ready_info or {}
        figures["ready_stages_s"] = info.get("stages_s")
        pid, keystone = info["pid"], info["keystone_pid"]
        # token issue and validation, a fresh token's first Nova call (median and max of 15)
        figures["api"] = measure_api(cloud, 15)
        conn = cloud.connection()
        figures["rss_mib_0_guests"] = {
            "cloud": round(rss_mib(pid), 1),
            "keystone": round(rss_mib(keystone), 1),
        }
        servers = []
        boots = []
        for i in range(max(1, guests)):
            server, took = boot(conn, f"bench-{i}")
            servers.append(server)
            boots.append(took)
        figures["boot_to_active_s"] = [round(b, 2) for b in boots]
        figures[f"rss_mib_{len(servers)}_guests"] = {
            "cloud": round(rss_mib(pid), 1),
            "keystone": round(rss_mib(keystone), 1),
            "qemu_each": [round(rss_mib(p), 1) for p in cloud.status().guests],
        }
        status, took = live_migrate(conn, servers[0])
        figures["live_migration_s"] = round(took, 2)
        figures["live_migration_status"] = status
    figures["total_s"] = round(time.monotonic() - started, 2)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [run(args.guests) for _ in range(args.repeat)]
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    for i, fig in enumerate(runs, 1):
        print(f"run {i}:")
        for key, value in fig.items():
            print(f"  {key}: {value}")
    if len(runs) > 1:
        print(f"ready_s median {statistics.median(r['ready_s'] for r in runs):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
