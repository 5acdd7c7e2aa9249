"""The harness's cost at scale: `novamig run` watching 1, 10, 50 and 100 concurrent migrations on
the embedded cloud's scale mode (Nova's fake driver, 10 computes, no guests), or 2, 4 and 8 tiny
QEMU guests on its QEMU driver (``--driver qemu``). Prints tables; not a test.

For each concurrency N the run boots N servers spread over the computes, live-migrates each once
(all requested at once, every compute allowed any number of migrations at a time) and deletes them.
The runner is a child process of this script, attached to the cloud by name, so its own CPU time
and peak RSS are read from wait4(2) and include nothing of the cloud's. Figures:

- wall: the whole run (boot, migrate, delete) and the migration case's own duration;
- CPU/migration: the runner's user+system CPU seconds divided by N (start-up, boot and delete
  included), and apart its CPU while the migrations ran (requested and watched: the case's
  ``migration_cpu_s``, from getrusage in the runner) divided by N; the rest, outside the migrations
  (start-up, boot, delete), is given whole: it is paid once per run or grows with the servers
  booted, not with the migrations watched at once;
- API calls/migration: compute API requests during the run (Nova's request log), divided by N,
  with the median server-side time of one request; "polling" counts the case poller's reads
  (its list calls and the per-server in-progress reads) apart;
- poll period: the migration records' ``poll_period_s`` (how far apart the poller's samples of a
  migration were), median and max over the N migrations;
- peak RSS of the runner;
- with QEMU: each probe's CPU (% of one core over the case) against its budget;
- the load average (1 min) when the row started, the highest seen while it ran (read every 5 s)
  and when it ended: others' work on the machine, which the cloud and the runner share the cores
  with.

Last, the time to write a results.json of 1 000 migrations (the report bench's synthetic run, with
progress samples and events as a real run has them), best of 3.

The fake driver measures orchestration only: these are no downtime figures.

    .venv/bin/python bench/scale.py [--driver fake|qemu] [--concurrency ...] [--computes N]
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from report_render import synthetic  # bench/: the report bench's synthetic run
from rich.console import Console
from rich.table import Table

from novamig.embedded.controller import EmbeddedCloud, compute_hosts
from novamig.results import Results, load_results, write_results

SCENARIO = """\
name: scale-{n}
fleet: {{count: {n}, flavor: {{vcpus: 1, ram_mb: {ram}, disk_gb: 1}}, image: novamig-tiny}}
workload: {{kind: idle}}
migration: {{count: 1, concurrency: {n}, target: auto, interval_s: 0, policy: {{timeout_s: 900}}}}
measure: {{probes: {probes}, noise_floor_s: 0}}
sla: {{migrations_completed_ratio: 1.0}}
"""
REQUEST = re.compile(r'nova\.api\.openstack\.requestlog .*"[A-Z]+ (\S+)" .* time: ([0-9.]+)$')
POLLING = re.compile(r"changes-since=|/servers/[0-9a-f-]{36}/migrations$")
"""The case poller's reads: its two list calls a tick, the in-progress list of a running migration."""
PROBES = {"fake": "[guest, hypervisor]", "qemu": "[guest, network, hypervisor]"}


@dataclass(frozen=True)
class Row:
    n: int
    rc: int
    completed: int
    wall_s: float
    case_s: float
    cpu_s: float
    watch_cpu_s: float | None  # the runner's CPU while the migrations ran, all cases
    api_calls: int
    polling_calls: int
    api_time_median_s: float
    poll_median_s: float | None
    poll_max_s: float | None
    peak_rss_mib: float
    probe_cpu: str  # "guest 1.2 % / 5 %, …" (QEMU), "-" where no probe ran
    load_start: float
    load_max: float
    load_end: float


def _requests(nova_log: Path, offset: int) -> list[tuple[str, float]]:
    """Path and server-side time of each compute API request logged after `offset`."""
    with nova_log.open() as fh:
        fh.seek(offset)
        return [(m.group(1), float(m.group(2))) for line in fh if (m := REQUEST.search(line.rstrip()))]


def _sample_load(loads: list[float], done: threading.Event) -> None:
    while not done.wait(5.0):
        loads.append(os.getloadavg()[0])


def _probe_cpu(results: Results) -> str:
    costs = [(name, cost) for c in results.cases for name, cost in c.probe_cost.items()]
    return (
        ", ".join(
            f"{name} {cost.cpu_percent:.1f} %"
            + (f" / {cost.budget_percent:g} %" if cost.budget_percent is not None else "")
            + (" OVER" if cost.over_budget else "")
            for name, cost in costs
        )
        or "-"
    )


def run_one(cloud: EmbeddedCloud, n: int, work: Path, driver: str) -> Row:
    assert cloud.layout is not None
    scenario = work / f"scale-{n}.yaml"
    ram = 256 if driver == "fake" else 128
    scenario.write_text(SCENARIO.format(n=n, ram=ram, probes=PROBES[driver]))
    out = work / f"out-{n}"
    nova_log = cloud.layout.logs / "nova.log"
    offset = nova_log.stat().st_size
    env = dict(os.environ, PYTHONWARNINGS="ignore", **cloud.env())
    argv = [str(Path(sys.executable).with_name("novamig")), "run", str(scenario), "--cloud", cloud.cloud_name]
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    proc = subprocess.Popen(
        [*argv, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    loads = [load_start]
    done = threading.Event()
    sampler = threading.Thread(target=_sample_load, args=(loads, done), daemon=True)
    sampler.start()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(stderr.decode(errors="replace")[-3000:])
    results = load_results(out / "results.json")
    migs = [m for c in results.cases for m in c.migrations]
    for m in migs:
        if m.status != "completed":  # why, in short: the bench's table counts them apart
            sys.stderr.write(f"{m.server} {m.status}: " + " | ".join(e.what for e in m.events[-5:]) + "\n")
    polls = [m.poll_period_s for m in migs if m.poll_period_s is not None]
    api = _requests(nova_log, offset)
    times = [t for _, t in api]
    watched = [c.migration_cpu_s for c in results.cases if c.migration_cpu_s is not None]
    return Row(
        n=n,
        rc=proc.returncode,
        completed=sum(m.status == "completed" for m in migs),
        wall_s=wall,
        case_s=sum(c.duration_s or 0 for c in results.cases),
        cpu_s=usage.ru_utime + usage.ru_stime,
        watch_cpu_s=sum(watched) if watched else None,
        api_calls=len(api),
        polling_calls=sum(1 for path, _ in api if POLLING.search(path)),
        api_time_median_s=statistics.median(times) if times else 0.0,
        poll_median_s=statistics.median(polls) if polls else None,
        poll_max_s=max(polls) if polls else None,
        peak_rss_mib=usage.ru_maxrss / 1024,
        probe_cpu=_probe_cpu(results),
        load_start=load_start,
        load_max=max(loads),
        load_end=os.getloadavg()[0],
    )


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def table(rows: list[Row], title: str) -> Table:
    t = Table(title=title)
    for col in (
        "concurrent",
        "completed",
        "wall s (case s)",
        "CPU s/migration: total (watching)",
        "CPU s outside the migrations",
        "API calls/migration (polling)",
        "API time median s",
        "poll period median/max s",
        "peak RSS MiB",
        "probe CPU / budget",
        "load average start/max/end",
    ):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            str(r.n),
            f"{r.completed}/{r.n}" + ("" if r.rc == 0 else f" (rc {r.rc})"),
            f"{r.wall_s:.1f} ({r.case_s:.1f})",
            f"{r.cpu_s / r.n:.3f} ({_f(None if r.watch_cpu_s is None else r.watch_cpu_s / r.n, 3)})",
            _f(None if r.watch_cpu_s is None else r.cpu_s - r.watch_cpu_s),
            f"{r.api_calls / r.n:.1f} ({r.polling_calls / r.n:.1f})",
            f"{r.api_time_median_s:.3f}",
            f"{_f(r.poll_median_s)} / {_f(r.poll_max_s)}",
            f"{r.peak_rss_mib:.0f}",
            r.probe_cpu,
            f"{r.load_start:.1f} / {r.load_max:.1f} / {r.load_end:.1f}",
        )
    return t


def results_write_s(migrations: int, work: Path) -> tuple[float, int]:
    """Best of 3 seconds to write results.json for `migrations` migrations, and its size."""
    results = synthetic(migrations)
    path = work / "results-write.json"
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        write_results(results, path)
        best = min(best, time.perf_counter() - started)
    return best, path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driver", choices=("fake", "qemu"), default="fake")
    ap.add_argument("--concurrency", type=int, nargs="+", help="default: 1 10 50 100 (fake), 2 4 8 (qemu)")
    ap.add_argument("--computes", type=int, help="default: 10 (fake), 2 (qemu)")
    ap.add_argument("--migration-s", type=float, default=1.0, help="how long each fake migration takes")
    args = ap.parse_args()
    fake = args.driver == "fake"
    concurrency = args.concurrency or ([1, 10, 50, 100] if fake else [2, 4, 8])
    computes = args.computes or (10 if fake else 2)
    console = Console(width=220)
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    mode = (
        f"SCALE MODE: Nova's fake driver on {computes} computes, {args.migration_s} s per migration "
        "(orchestration only, no downtime figures)"
        if fake
        else f"QEMU driver, {computes} computes, tiny guests (128 MiB)"
    )
    console.print(
        f"machine: {platform.node()} {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}; {mode}"
    )
    hosts = compute_hosts(computes)
    unlimited = {h: {"max_concurrent_live_migrations": 0} for h in hosts}
    rows: list[Row] = []
    options = {"driver": "fake", "fake_migration_s": args.migration_s} if fake else {"driver": "novamig"}
    with (
        tempfile.TemporaryDirectory(prefix="novamig-bench-scale-") as tmp,
        EmbeddedCloud(hosts=hosts, host_policies=unlimited, **options) as cloud,  # type: ignore[arg-type]
    ):
        for n in concurrency:
            rows.append(run_one(cloud, n, Path(tmp), args.driver))
            console.print(table(rows[-1:], f"{n} concurrent (load average {os.getloadavg()[0]:.1f})"))
        console.print(table(rows, f"novamig run on the {args.driver} driver, {computes} computes"))
        write_s, size = results_write_s(1000, Path(tmp))
        console.print(f"results.json of 1 000 migrations: written in {write_s:.2f} s ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
