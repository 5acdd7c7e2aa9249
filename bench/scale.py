"""The harness's cost at scale: `novamig run` watching 1, 10, 50 (and 100) concurrent migrations on
the embedded cloud's scale mode (Nova's fake driver, 10 computes, no guests). Prints a table; not a
test.

For each concurrency N the run boots N servers spread over the computes, live-migrates each once
(all requested at once, every compute allowed any number of migrations at a time) and deletes them.
The runner is a child process of this script, attached to the cloud by name, so its own CPU time
and peak RSS are read from wait4(2) and include nothing of the cloud's. Figures:

- wall: the whole run (boot, migrate, delete) and the migration case's own duration;
- CPU/migration: the runner's user+system CPU seconds divided by N (boot and delete included);
- API calls/migration: compute API requests during the run (Nova's request log), divided by N,
  with the median server-side time of one request;
- poll period: the migration records' ``poll_period_s`` (how far apart the watcher's samples of a
  migration were), median and max over the N migrations;
- peak RSS of the runner.

The fake driver measures orchestration only: these are no downtime figures.

    .venv/bin/python bench/scale.py [--concurrency 1 10 50 100] [--computes 10] [--migration-s 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from novamig.embedded.controller import EmbeddedCloud, compute_hosts
from novamig.results import load_results

SCENARIO = """\
name: scale-{n}
fleet: {{count: {n}, flavor: {{vcpus: 1, ram_mb: 256, disk_gb: 1}}, image: novamig-tiny}}
workload: {{kind: idle}}
migration: {{count: 1, concurrency: {n}, target: auto, interval_s: 0, policy: {{timeout_s: 900}}}}
measure: {{probes: [guest, hypervisor], noise_floor_s: 0}}
sla: {{migrations_completed_ratio: 1.0}}
"""
REQUEST = re.compile(r"nova\.api\.openstack\.requestlog .* time: ([0-9.]+)$")


@dataclass(frozen=True)
class Row:
    n: int
    rc: int
    completed: int
    wall_s: float
    case_s: float
    cpu_s: float
    api_calls: int
    api_time_median_s: float
    poll_median_s: float | None
    poll_max_s: float | None
    peak_rss_mib: float


def _requests(nova_log: Path, offset: int) -> list[float]:
    """Server-side times of the compute API requests logged after `offset`."""
    with nova_log.open() as fh:
        fh.seek(offset)
        return [float(m.group(1)) for line in fh if (m := REQUEST.search(line.rstrip()))]


def run_one(cloud: EmbeddedCloud, n: int, work: Path) -> Row:
    assert cloud.layout is not None
    scenario = work / f"scale-{n}.yaml"
    scenario.write_text(SCENARIO.format(n=n))
    out = work / f"out-{n}"
    nova_log = cloud.layout.logs / "nova.log"
    offset = nova_log.stat().st_size
    env = dict(os.environ, PYTHONWARNINGS="ignore", **cloud.env())
    argv = [str(Path(sys.executable).with_name("novamig")), "run", str(scenario), "--cloud", cloud.cloud_name]
    started = time.monotonic()
    proc = subprocess.Popen(
        [*argv, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(stderr.decode(errors="replace")[-3000:])
    results = load_results(out / "results.json")
    migs = [m for c in results.cases for m in c.migrations]
    polls = [m.poll_period_s for m in migs if m.poll_period_s is not None]
    api = _requests(nova_log, offset)
    return Row(
        n=n,
        rc=proc.returncode,
        completed=sum(m.status == "completed" for m in migs),
        wall_s=wall,
        case_s=sum(c.duration_s or 0 for c in results.cases),
        cpu_s=usage.ru_utime + usage.ru_stime,
        api_calls=len(api),
        api_time_median_s=statistics.median(api) if api else 0.0,
        poll_median_s=statistics.median(polls) if polls else None,
        poll_max_s=max(polls) if polls else None,
        peak_rss_mib=usage.ru_maxrss / 1024,
    )


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def table(rows: list[Row], title: str) -> Table:
    t = Table(title=title)
    for col in (
        "concurrent",
        "completed",
        "wall s (case s)",
        "CPU s/migration",
        "API calls/migration",
        "API time median s",
        "poll period median/max s",
        "peak RSS MiB",
    ):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            str(r.n),
            f"{r.completed}/{r.n}" + ("" if r.rc == 0 else f" (rc {r.rc})"),
            f"{r.wall_s:.1f} ({r.case_s:.1f})",
            f"{r.cpu_s / r.n:.3f}",
            f"{r.api_calls / r.n:.1f}",
            f"{r.api_time_median_s:.3f}",
            f"{_f(r.poll_median_s)} / {_f(r.poll_max_s)}",
            f"{r.peak_rss_mib:.0f}",
        )
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50, 100])
    ap.add_argument("--computes", type=int, default=10)
    ap.add_argument("--migration-s", type=float, default=1.0, help="how long each fake migration takes")
    args = ap.parse_args()
    console = Console(width=200)
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    console.print(
        f"machine: {platform.node()} {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"SCALE MODE: Nova's fake driver on {args.computes} computes, {args.migration_s} s per migration "
        "(orchestration only, no downtime figures)"
    )
    hosts = compute_hosts(args.computes)
    unlimited = {h: {"max_concurrent_live_migrations": 0} for h in hosts}
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="novamig-bench-scale-") as tmp,
        EmbeddedCloud(
            driver="fake", hosts=hosts, host_policies=unlimited, fake_migration_s=args.migration_s
        ) as cloud,
    ):
        for n in args.concurrency:
            rows.append(run_one(cloud, n, Path(tmp)))
            console.print(table(rows[-1:], f"{n} concurrent"))
    console.print(table(rows, f"novamig run on the fake driver, {args.computes} computes"))


if __name__ == "__main__":
    main()
