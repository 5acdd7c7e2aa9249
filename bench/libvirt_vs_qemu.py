"""Side by side: the same tiny guest live-migrated by novamig's QEMU driver and by Nova's libvirt
driver (the embedded cloud's two modes). Prints figures, asserts nothing.

    .venv/bin/python bench/libvirt_vs_qemu.py [--migrations 4] [--dirty-mib-s 64] [--json]

For each mode a cloud is started, and ``novamig run scenarios/smoke.yaml`` runs on it with one
guest, idle and then dirtying memory, with the heartbeat collected over UDP in both modes (the
libvirt mode has no virtio-serial reader; the same vantage point in both makes them comparable).
Per mode and workload: migration duration (API request to ``completed``) and the four vantage
points' downtime — ``guest`` (UDP heartbeat gap), ``network`` (echo probe), ``hypervisor`` (QEMU's
own figure under the QEMU driver, libvirt's completed-job statistics under the libvirt driver),
and the guest heartbeat's gap minus the hypervisor's figure — as medians and ranges.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from novamig.embedded.controller import EmbeddedCloud

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR = "192.168.1.1:7070"  # the runner's address on the cloud's guest network (both modes)
MODES = ("novamig", "libvirt")
FIGURES = ("guest", "network", "hypervisor")


def run_smoke(cloud: EmbeddedCloud, out: Path, migrations: int, dirty_mib_s: int | None) -> dict[str, Any]:
    sets = [
        "fleet.count=1",
        f"migration.count={migrations}",
        f"measure.heartbeat_collector={COLLECTOR}",
        "sla.memory_integrity=false",
    ]
    if dirty_mib_s is not None:
        sets += [
            "workload.kind=memory",
            f"workload.memory={{dirty_rate_mib_s: {dirty_mib_s}, working_set_mib: 128}}",
        ]
    novamig = Path(sys.executable).parent / "novamig"  # the console script beside this Python
    argv = [str(novamig), "run", str(ROOT / "scenarios" / "smoke.yaml")]
    argv += ["--cloud", cloud.cloud_name, "--out", str(out)]
    for item in sets:
        argv += ["--set", item]
    env = {**os.environ, **cloud.env()}
    env.pop("OS_CLOUD", None)
    proc = subprocess.run(argv, env=env, check=False, capture_output=True, text=True, timeout=1800)
    if not (out / "results.json").exists():
        raise SystemExit(f"novamig run wrote no results (exit {proc.returncode}): {proc.stderr[-2000:]}")
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    migrations = [m for c in results["cases"] for m in c["migrations"]]
    done = [m for m in migrations if m["status"] == "completed"]
    row: dict[str, Any] = {"completed": f"{len(done)}/{len(migrations)}"}
    row["duration_s"] = _stats([m["duration_s"] for m in done])
    for figure in FIGURES:
        row[f"{figure}_ms"] = _stats([m["downtime_ms"][figure] for m in done])
    gaps = [
        m["downtime_ms"]["guest"] - m["downtime_ms"]["hypervisor"]
        for m in done
        if m["downtime_ms"]["guest"] is not None and m["downtime_ms"]["hypervisor"] is not None
    ]
    row["guest_minus_hypervisor_ms"] = _stats(gaps)
    return row


def _stats(values: list[float | None]) -> dict[str, float | int] | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {
        "n": len(known),
        "median": round(statistics.median(known), 1),
        "min": min(known),
        "max": max(known),
    }


def _text(stats: dict[str, float | int] | None) -> str:
    if stats is None:
        return "-"
    return f"{stats['median']:g} ({stats['min']:.0f}–{stats['max']:.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=4)
    parser.add_argument("--dirty-mib-s", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="novamig-bench-") as tmp:
        for mode in MODES:
            with EmbeddedCloud(Path(tmp) / mode / "cloud", driver=mode) as cloud:
                for workload, dirty in (
                    ("idle", None),
                    (f"memory {args.dirty_mib_s} MiB/s", args.dirty_mib_s),
                ):
                    out = Path(tmp) / mode / workload.split()[0]
                    summary = summarize(run_smoke(cloud, out, args.migrations, dirty))
                    rows.append({"driver": mode, "workload": workload, **summary})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = (
        "driver",
        "workload",
        "done",
        "duration s",
        "guest ms",
        "network ms",
        "hypervisor ms",
        "guest−hyp ms",
    )
    print(" | ".join(head))
    for r in rows:
        cells = [r["driver"], r["workload"], r["completed"], _text(r["duration_s"])]
        cells += [_text(r[f"{f}_ms"]) for f in FIGURES] + [_text(r["guest_minus_hypervisor_ms"])]
        print(" | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
