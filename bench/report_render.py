"""How long index.html takes to render and how big it gets, for 10, 1 000 and 10 000 migrations.

The results are synthetic but shaped like real runs, built with the results model: a 3 × 3 matrix
(dirty rate × post-copy switch) with up to 100 migrations per case (10 → 1 case, 1 000 → 10 cases,
10 000 → 100 cases), each migration 8–40 s long with a `progress[]` sample every 0.25–0.5 s while
it ran (20–160 samples, ~65 on average: the embedded cloud saves memory progress every 0.4 s and the
runner records each change; a DevStack's Nova saves it every 5 s, `live_migration_monitor_interval`,
so its runs carry ~10× fewer — this is the heavier case), the 13 events a real run notes, the four
vantage points' downtime and resolution, brownouts, the network probe's blackout, and QEMU's
figures; about 2 % of migrations fail; every case has a Locust load with one request-rate sample
per second. Per size: the time to load results.json (pydantic validation), to render the
page (`render_index`), and to write junit.xml, the page's size, its SVG count, and optionally
(`--browser`) how long headless Chromium takes to load and lay out the page (less its time for an
empty page) — the page stays responsive when that stays short.

Targets: 10 000 migrations render in ≤ 5 s; 1 000 migrations make a page of ≤ 3 MB.

    .venv/bin/python bench/report_render.py [--sizes 10,1000,10000] [--repeat 3] [--browser]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from novamig.report.render import render_index
from novamig.results import (
    CaseResult,
    EchoDetails,
    Environment,
    Event,
    HypervisorFigures,
    LocustStats,
    MigrationRecord,
    PerProbe,
    ProbeDetails,
    ProgressSample,
    RequestRate,
    RequestStats,
    Results,
    load_results,
    write_results,
)
from novamig.runner.junit import junit_xml

MIB = 1024 * 1024
EVENTS = (  # what the runner notes of a migration, as in a real run's results.json
    "live-migrate requested: compute1 → scheduler's choice",
    "request accepted by the API after 0.114 s",
    "server MIGRATING on compute1, task migrating",
    "migration: accepted",
    "migration: accepted → preparing",
    "migration: preparing → running",
    "server: MIGRATING → ACTIVE",
    "task: migrating → -",
    "host: compute1 → compute2",
    "migration: running → completed",
    "ACTIVE on destination compute2",
    "polls: 16, period median 0.216 s, max 0.602 s (the duration's resolution)",
    "phases: request 0.225 s, accepted 0.462 s, preparing 0.241 s, running 2.601 s, settle 0.000 s",
)
PER_CASE = 100
DIRTY = (0, 64, 256)
POST_COPY = (None, 5, 15)


def _progress(rng: random.Random, start: float, duration: float, post_copy: bool) -> list[ProgressSample]:
    total = 2048 * MIB
    samples = [
        ProgressSample(t=start + 0.3, status="accepted"),
        ProgressSample(t=start + 0.8, status="preparing"),
    ]
    t, processed = start + 1.2, 0
    period = rng.uniform(0.25, 0.5)
    while t < start + duration - 0.5:
        processed += int(rng.uniform(40, 120) * MIB * period * 4)
        remaining = max(0, total - processed % total)
        status = "running (post-copy)" if post_copy and t > start + duration * 0.7 else "running"
        samples.append(
            ProgressSample(
                t=round(t, 3),
                memory_total_bytes=total,
                memory_processed_bytes=processed,
                memory_remaining_bytes=remaining,
                status=status,
            )
        )
        t += period
    samples.append(ProgressSample(t=round(start + duration, 3), status="completed"))
    return samples


def _migration(
    rng: random.Random, k: int, start: float, dirty: int, post_copy: int | None
) -> MigrationRecord:
    duration = rng.uniform(8, 40)
    failed = rng.random() < 0.02
    guest = 60 + dirty * 0.4 + rng.expovariate(1 / 20)
    events = [
        Event(t=round(start + i * duration / len(EVENTS), 3), what=what) for i, what in enumerate(EVENTS)
    ]
    if post_copy is not None:
        events.append(Event(t=round(start + post_copy, 3), what="post-copy switch requested"))
    gap_from = start + duration * 0.8
    return MigrationRecord(
        server=f"novamig-s{k}",
        source_host=f"compute{k % 4}",
        dest_host=None if failed else f"compute{(k + 1) % 4}",
        status="error" if failed else "completed",
        requested_at=round(start, 3),
        finished_at=round(start + duration, 3),
        duration_s=None if failed else round(duration, 3),
        downtime_ms=PerProbe()
        if failed
        else PerProbe(
            guest=guest, network=guest + rng.uniform(0, 30), locust=guest * 1.4, hypervisor=guest * 0.3
        ),
        resolution_ms=PerProbe(guest=1.0, network=2.0, locust=10.0, hypervisor=1.0),
        brownout_ms=PerProbe(
            guest=0.0, network=rng.uniform(20, 200), locust=rng.uniform(0, 400), hypervisor=0.0
        ),
        progress=_progress(rng, start, duration, post_copy is not None),
        events=events,
        poll_period_s=0.3,
        phases_s={"request": 0.2, "accepted": 0.5, "preparing": 0.4, "running": duration - 1.1},
        details=ProbeDetails(
            network=EchoDetails(gap_from_s=gap_from, gap_to_s=gap_from + guest / 1000, replies=2000, lost=9)
        ),
        hypervisor=HypervisorFigures(status="completed", qemu_downtime_ms=guest * 0.3, dirty_sync_count=7),
    )


def _case(rng: random.Random, index: int, count: int) -> CaseResult:
    dirty, post_copy = DIRTY[index % 3], POST_COPY[(index // 3) % 3]
    migrations, t = [], 30.0
    for k in range(count):
        m = _migration(rng, k, t, dirty, post_copy)
        migrations.append(m)
        t = (m.finished_at or t) + 5
    seconds = int(t) + 1
    rate = RequestRate(
        t0_s=0.0,
        step_s=1.0,
        requests=[rng.randint(180, 220) for _ in range(seconds)],
        failures=[rng.randint(0, 2) for _ in range(seconds)],
    )
    return CaseResult(
        id=f"dirty_rate_mib_s={dirty},post_copy_after_s={post_copy}#r{index // 9 + 1}",
        params={"dirty_rate_mib_s": dirty, "post_copy_after_s": post_copy},
        repetition=index // 9 + 1,
        passed=all(m.status == "completed" for m in migrations),
        migrations=migrations,
        noise_floor_ms=PerProbe(guest=12.0, network=14.0, locust=40.0),
        duration_s=t,
        locust=LocustStats(where="guest", users=20, total=RequestStats(requests=200 * seconds, rps=rate)),
    )


def synthetic(migrations: int, seed: int = 1) -> Results:
    rng = random.Random(seed)
    sizes = [PER_CASE] * (migrations // PER_CASE) + ([migrations % PER_CASE] if migrations % PER_CASE else [])
    env = Environment(
        cloud="bench",
        nova_version="34.0.0",
        compute_hosts=["compute0", "compute1", "compute2", "compute3"],
        novamig_version="bench",
        started_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    )
    cases = [_case(rng, i, n) for i, n in enumerate(sizes)]
    scenario = {
        "name": "bench",
        "matrix": {"dirty_rate_mib_s": list(DIRTY), "post_copy_after_s": list(POST_COPY)},
    }
    return Results(scenario=scenario, environment=env, cases=cases, passed=all(c.passed for c in cases))


def _best(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def _browser_s(page: Path, profile: Path) -> float:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed (tools/setup.sh installs it)"
    start = time.perf_counter()
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        check=True,
        timeout=300,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000", help="migration counts (default: 10,1000,10000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats, best kept (default: 3)")
    parser.add_argument("--browser", action="store_true", help="also time headless Chromium (default: off)")
    args = parser.parse_args()
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    )
    header = " ".join(
        f"{h:>{w}}" for h, w in (("migrations", 10), ("progress", 9), ("json MB", 8), ("load s", 7))
    )
    header += " " + " ".join(
        f"{h:>{w}}" for h, w in (("render s", 9), ("page MB", 8), ("SVGs", 5), ("junit s", 8))
    )
    print(header + ("  browser s" if args.browser else ""))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        blank = work / "blank.html"
        blank.write_text("<!DOCTYPE html><title>blank</title>")
        baseline = min(_browser_s(blank, work / "profile") for _ in range(2)) if args.browser else 0.0
        for size in (int(s) for s in args.sizes.split(",")):
            results = synthetic(size)
            samples = sum(len(m.progress) for c in results.cases for m in c.migrations)
            path = work / f"results-{size}.json"
            write_results(results, path)
            load_s = _best(args.repeat, lambda path=path: load_results(path))
            render_s = _best(args.repeat, lambda results=results: render_index(results))
            junit_s = _best(args.repeat, lambda results=results: junit_xml(results))
            html = render_index(results)
            page = work / f"index-{size}.html"
            page.write_text(html)
            line = (
                f"{size:>10} {samples / size:>9.0f} {path.stat().st_size / 1e6:>8.1f} {load_s:>7.3f} "
                f"{render_s:>9.3f} {len(html.encode()) / 1e6:>8.2f} {html.count('<svg'):>5} {junit_s:>8.3f}"
            )
            if args.browser:
                browser_s = min(_browser_s(page, work / "profile") for _ in range(2))
                line += f"  {max(0.0, browser_s - baseline):>9.2f}"
            print(line, flush=True)
    print("targets: 10 000 migrations render in ≤ 5 s; 1 000 migrations ≤ 3 MB")


if __name__ == "__main__":
    main()
