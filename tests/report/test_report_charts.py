"""index.html's charts and per-case figures, from a real run's results.json and from hand-made ones
(empty run, all failed, interrupted, only some vantage points, figures below their probe's limits)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from novamig.measure.contract import not_measured_event
from novamig.report.charts import timeline
from novamig.report.render import render_index
from novamig.report.svg import nice_ticks
from novamig.results import (
    CaseResult,
    Environment,
    Event,
    HypervisorFigures,
    LocustDetails,
    LocustStats,
    MigrationRecord,
    PerProbe,
    ProgressSample,
    RequestRate,
    RequestStats,
    Results,
    SlaCheck,
    load_results,
)

SMOKE = Path(__file__).parent / "data" / "smoke-results.json"
"""A real `novamig run scenarios/smoke.yaml` on the embedded cloud: 2 tiny guests, 4 migrations."""

MIB = 1024 * 1024


def _svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html, re.S)


def _self_contained(html: str) -> None:
    for external in ("<script", "<link", "src=", "http:", "https:", "url("):
        assert external not in html


def _results(
    cases: list[CaseResult], *, interrupted: bool = False, probes: list[str] | None = None
) -> Results:
    scenario: dict[str, object] = {"name": "hand-made"}
    if probes is not None:
        scenario["measure"] = {"probes": probes}
    return Results(
        scenario=scenario,
        environment=Environment(
            cloud="c", novamig_version="0", started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        ),
        cases=cases,
        passed=all(c.passed for c in cases) and not interrupted,
        interrupted=interrupted,
    )


def _post_copy_migration() -> MigrationRecord:
    """A migration switched to post-copy by force-complete, with the network probe's blackout."""
    progress = [
        ProgressSample(t=10.2, status="accepted"),
        ProgressSample(t=10.5, status="preparing"),
        *(
            ProgressSample(
                t=11.0 + k,
                status="running",
                memory_total_bytes=1024 * MIB,
                memory_processed_bytes=(200 + 300 * k) * MIB,
                memory_remaining_bytes=(900 - 100 * k) * MIB,
            )
            for k in range(4)
        ),
        ProgressSample(t=15.0, status="running (post-copy)", memory_remaining_bytes=300 * MIB),
        ProgressSample(t=16.0, status="completed"),
    ]
    return MigrationRecord(
        server="web-<b>0</b>",
        source_host="compute1",
        dest_host="compute2",
        status="completed",
        requested_at=10.0,
        finished_at=16.0,
        duration_s=6.0,
        downtime_ms=PerProbe(guest=0.6, network=12.0, locust=420.0, hypervisor=30.0),
        resolution_ms=PerProbe(guest=1.0, network=2.0, locust=5.0, hypervisor=1.0),
        progress=progress,
        events=[
            Event(t=10.0, what="live-migrate requested: compute1 → compute2"),
            Event(t=14.6, what="force-complete sent (post_copy_after_s=4.5)"),
            Event(t=15.0, what="migration: running → running (post-copy)"),
        ],
        details={"network": {"gap_from_s": 15.01, "gap_to_s": 15.03}},
    )


def test_a_real_run_renders_every_chart() -> None:
    results = load_results(SMOKE)
    html = render_index(results)
    _self_contained(html)
    svgs = _svgs(html)
    # 2 distributions, 1 downtime chart for the case, 1 timeline per migration
    assert len(svgs) == 2 + 1 + len(results.cases[0].migrations)
    assert all("<rect" in s or "<circle" in s for s in svgs)
    assert "locust: not among the scenario&#39;s probes (measure.probes) (#1, #2, #3, #4)" in html
    m = results.cases[0].migrations[0]
    assert m.downtime_ms.guest is not None
    assert f"{m.server} guest: {m.downtime_ms.guest:.1f} ms ± 1 ms (resolution)" in html


def test_timeline_shows_phases_memory_blackout_and_events() -> None:
    case = CaseResult(id="pc#r1", passed=True, migrations=[_post_copy_migration()])
    html = render_index(_results([case]))
    _self_contained(html)
    chart = next(s for s in _svgs(html) if "timeline of" in s)
    for phase in ("accepted", "preparing", "running", "running (post-copy)"):
        assert f"<title>{phase}: " in chart
    assert "<title>network blackout 15.010–15.030 s</title>" in chart
    assert chart.count("<polyline") == 2  # remaining and processed
    assert "force-complete sent" in chart and 'stroke="#b00020"' in chart  # a key event, in red
    assert "web-&lt;b&gt;0&lt;/b&gt;" in chart and "<b>0" not in html


def _rate_lines(chart: str) -> dict[str, list[tuple[float, ...]]]:
    """The timeline's polylines by their hover title, as (x, y) pixel pairs."""
    return {
        title: [tuple(map(float, p.split(","))) for p in points.split()]
        for points, title in re.findall(r'<polyline points="([^"]+)"[^>]*><title>([^<]+)</title>', chart)
    }


def test_timeline_draws_throttle_dirty_rate_and_locust_blackout() -> None:
    """QEMU's series placed from the first running sample (11.0 s) when results do not say where
    they start, on a 0–100 % right axis, as steps (each value holds until the next sample);
    Locust's unserved span beside the network's blackout."""
    m = _post_copy_migration()
    m.hypervisor = HypervisorFigures(
        throttle_max_percent=99,
        dirty_pages_rate_max=5000,
        throttle_series=[[0.0, 0], [1.0, 20], [2.0, 99]],
        dirty_rate_series=[[0.0, 5000], [1.0, 2500], [2.0, 0]],
    )
    m.details.locust = LocustDetails(blackout_s=[14.9, 15.4])
    chart = timeline(m)
    assert chart is not None
    assert "throttle peak 99 % · dirty rate peak 5000 pages/s (right axis)" in chart
    lines = _rate_lines(chart)
    throttle = lines["auto-converge throttle %"]
    dirty = lines["dirty rate, % of its peak 5000 pages/s"]
    assert len(throttle) == 5 and len(dirty) == 5  # 3 samples as steps: 2 risers added
    assert throttle[1] == (throttle[2][0], throttle[0][1])  # 0 % held until the next sample
    assert throttle[0][0] == dirty[0][0] and throttle[0][1] == dirty[4][1]  # same start, 0 at 0
    assert throttle[4][1] < throttle[2][1] < throttle[0][1]  # rising (SVG y grows downwards)
    assert dirty[0][1] < throttle[2][1]  # 100 % of the dirty peak above a 20 % throttle
    # where the driver stamped QEMU's migrate command (migrate_at_s), the series start there
    anchored = m.model_copy(deep=True)
    assert anchored.hypervisor is not None
    anchored.hypervisor.migrate_at_s = 12.0
    shifted = _rate_lines(str(timeline(anchored)))["auto-converge throttle %"]
    px_per_s = (throttle[2][0] - throttle[0][0]) / 1.0
    assert shifted[0][0] == pytest.approx(throttle[0][0] + px_per_s, abs=0.2)  # 1 s later than 11.0
    assert "<title>Locust: no request answered 14.900–15.400 s</title>" in chart
    assert "<title>network blackout 15.010–15.030 s</title>" in chart
    # peaks only (results written before the series were kept): said in text, nothing drawn
    m.hypervisor = HypervisorFigures(throttle_max_percent=0, dirty_pages_rate_max=3032)
    chart = timeline(m)
    assert chart is not None and "throttle peak 0 % · dirty rate peak 3032 pages/s<" in chart
    assert "50%" not in chart and "auto-converge throttle %" not in chart
    # nothing known: no rate text at all
    m.hypervisor = None
    chart = timeline(m)
    assert chart is not None and "peak" not in chart
    # a gap that began before the request is cut to the plot (its x axis starts at 56 px)
    m.details.locust = LocustDetails(blackout_s=[9.5, 10.2])
    chart = timeline(m)
    assert chart is not None
    (x0,) = re.findall(r'<rect x="([\d.]+)"[^>]*><title>Locust: no request answered 9.500–10.200 s', chart)
    assert float(x0) == 56
    m.details.locust = LocustDetails(blackout_s=[3.0, 4.0])  # wholly before: not drawn
    assert "Locust: no request" not in str(timeline(m))


def test_figures_below_resolution_or_noise_floor_are_bounds() -> None:
    case = CaseResult(
        id="b#r1",
        passed=True,
        migrations=[_post_copy_migration()],
        noise_floor_ms=PerProbe(guest=18.5, network=13.4),
    )
    html = render_index(_results([case]))
    assert "&lt; 1.0 (resolution)" in html  # guest 0.6 ms at a 1 ms resolution
    assert "≤ 13.4 (noise floor)" in html  # network 12 ms under its 13.4 ms floor
    assert "420.0" in html and "30.0" in html  # locust and hypervisor: exact
    bars = next(s for s in _svgs(html) if "downtime per migration" in s)
    assert "guest noise floor 18.5" in bars and "stroke-dasharray" in bars


def test_empty_interrupted_run() -> None:
    html = render_index(_results([], interrupted=True))
    _self_contained(html)
    assert "No case ran: the run was interrupted before its first case ended." in html
    assert "no completed migration, nothing to plot" in html
    assert _svgs(html) == []


def test_every_migration_failed() -> None:
    failed = MigrationRecord(
        server="s0",
        source_host="h1",
        status="error",
        requested_at=1.0,
        finished_at=4.0,
        progress=[ProgressSample(t=1.5, status="accepted"), ProgressSample(t=4.0, status="error")],
        events=[Event(t=4.0, what="server went to ERROR after the migration: boom")],
    )
    case = CaseResult(
        id="f#r1",
        passed=False,
        migrations=[failed],
        sla=[SlaCheck(name="migrations.failed", limit=0, value=1, passed=False)],
    )
    html = render_index(_results([case]))
    _self_contained(html)
    assert "1 of 1 case(s) failed; 1 SLA check(s) missed." in html
    assert "no downtime figure to draw: no migration completed" in html
    assert "all figures: the migration ended error (#1)" in html
    assert html.count("no migration completed") >= 5  # duration and the four downtimes
    timelines = [s for s in _svgs(html) if "timeline of" in s]
    assert len(timelines) == 1 and "<title>error: " in timelines[0]


def test_only_some_vantage_points_say_why_the_others_are_missing() -> None:
    """A DevStack-style run: guest and network measured, no Locust, and the hypervisor's figure
    missing for a reason the runner recorded."""
    m = MigrationRecord(
        server="s0",
        source_host="h1",
        dest_host="h2",
        status="completed",
        requested_at=1.0,
        finished_at=3.0,
        duration_s=2.0,
        downtime_ms=PerProbe(guest=120.0, network=140.0),
        resolution_ms=PerProbe(guest=1.0, network=2.0),
        events=[Event(t=3.0, what=not_measured_event("hypervisor", "libvirt over SSH refused the key"))],
    )
    case = CaseResult(
        id="d#r1",
        passed=True,
        migrations=[m],
        sla=[SlaCheck(name="downtime_ms.network.max", limit=500, value=140.0, passed=True)],
    )
    html = render_index(_results([case], probes=["guest", "network", "hypervisor"]))
    assert "hypervisor: libvirt over SSH refused the key (#1)" in html
    assert "locust: not among the scenario&#39;s probes (measure.probes) (#1)" in html
    bars = next(s for s in _svgs(html) if "downtime per migration" in s)
    assert ">guest<" in bars and ">network<" in bars and ">hypervisor<" not in bars
    # the SLA table names the probe an SLA is judged on
    assert re.search(r"<td>downtime_ms\.network\.max</td><td>network</td>", html)


@pytest.mark.parametrize(
    ("lo", "hi", "count", "expected"),
    [
        (0, 100, 5, [0, 20, 40, 60, 80, 100]),
        (0, 94.9, 5, [0, 20, 40, 60, 80]),
        (10.0157, 13.5, 8, [10.5, 11, 11.5, 12, 12.5, 13, 13.5]),
        (0, 0.9, 4, [0, 0.25, 0.5, 0.75]),
        (5, 5, 5, [5]),
    ],
)
def test_ticks_are_round_and_inside_the_range(
    lo: float, hi: float, count: int, expected: list[float]
) -> None:
    assert nice_ticks(lo, hi, count) == expected


def _cell_case(dirty: int, post_copy: int | None, repetition: int, guest_ms: float) -> CaseResult:
    m = MigrationRecord(
        server="s0",
        source_host="h1",
        dest_host="h2",
        status="completed",
        requested_at=1.0,
        finished_at=3.0,
        duration_s=2.0 + dirty / 100,
        downtime_ms=PerProbe(guest=guest_ms),
    )
    params: dict[str, object] = {
        "workload.memory.dirty_rate_mib_s": dirty,
        "migration.policy.post_copy_after_s": post_copy,
    }
    return CaseResult(
        id=f"dirty_rate_mib_s={dirty},post_copy_after_s={post_copy}#r{repetition}",
        params=params,
        repetition=repetition,
        passed=True,
        migrations=[m],
    )


def test_a_3x3_matrix_is_a_grid_coloured_by_the_medians() -> None:
    """Rows dirty rate, columns post-copy switch; one cell not run; two repeats per cell pooled."""
    cases = [
        _cell_case(dirty, post_copy, r, guest_ms=50 + dirty + (10 if post_copy is None else 0) + r)
        for dirty in (0, 64, 256)
        for post_copy in (None, 5, 10)
        for r in (1, 2)
        if (dirty, post_copy) != (256, 10)
    ]
    html = render_index(_results(cases))
    grids = re.findall(r'<table class="grid">.*?</table>', html, re.S)
    assert len(grids) == 2
    downtime, duration = grids
    assert "median guest downtime (ms): rows dirty_rate_mib_s, columns post_copy_after_s" in downtime
    assert re.findall(r"<th>([^<]*)</th>", downtime) == [
        "dirty_rate_mib_s",
        "null",
        "5",
        "10",
        "0",
        "64",
        "256",
    ]
    cells = re.findall(
        r'<td class="num" style="background: (#[0-9a-f]{6}); color: #[0-9a-f]{6}">([\d.]+)<br>', downtime
    )
    values = [float(v) for _, v in cells]
    # nearest-rank median of the two repeats (r1 → +1, r2 → +2): the lower one
    assert values == [61.0, 51.0, 51.0, 125.0, 115.0, 115.0, 317.0, 307.0]
    shades = dict(zip(values, (bg for bg, _ in cells), strict=False))
    assert shades[51.0] == "#f0f5fb" and shades[317.0] == "#084594"  # lowest palest, highest deepest
    assert "not run" in downtime
    first = cases[0]
    anchor = 1 + cases.index(first)
    assert f'href="#case-{anchor}">r1</a>' in downtime and f'href="#case-{anchor + 1}">r2</a>' in downtime
    assert "median duration (s)" in duration and "4.56" in duration


def test_no_grid_without_a_matrix() -> None:
    html = render_index(load_results(SMOKE))
    assert '<table class="grid">' not in html


def test_locust_load_over_the_case_and_per_request_name() -> None:
    """Requests/s and failures/s on the case clock with each migration's window, and Locust's own
    per-name counts per server."""
    m = _post_copy_migration()
    per_name = {
        "by_name": {"GET /api/items": {"requests": 498, "failures": 3, "max_ms": 23.6, "mean_ms": 0.8}}
    }
    rps = RequestRate(t0_s=0.0, step_s=2.0, requests=[600, 640, 100, 620], failures=[0, 0, 8, 0])
    case = CaseResult(
        id="l#r1",
        passed=True,
        migrations=[m],
        locust=LocustStats(
            where="guest",
            total=RequestStats(requests=1960, failures=8, failure_ratio=0.0041, rps=rps),
            servers={"srv-1": RequestStats(name="web-1", requests=1960, locust_reported=per_name)},
        ),
    )
    html = render_index(_results([case]))
    _self_contained(html)
    chart = next(s for s in _svgs(html) if "Locust requests per second" in s)
    assert "<title>migration #1 web-&lt;b&gt;0&lt;/b&gt;: 10.000–16.000 s (completed)</title>" in chart
    assert chart.count("<polyline") == 2
    assert "<title>requests/s</title>" in chart and "<title>failures/s</title>" in chart
    rows = re.findall(r"<tr><td>web-1</td><td>GET /api/items</td>(.*?)</tr>", html, re.S)
    assert len(rows) == 1
    # Locust's own per-name figures have no percentiles: a dash each, then max and mean
    assert re.findall(r">([^<>]+)</td>", rows[0]) == ["498", "3", "— / — / — / 23.6", "0.8"]
    assert "(as Locust reported them: no percentiles)" in html
    assert '<tr><td>web-1</td><td class="num">1960</td>' in html  # the server's own row
    # novamig's own per-name figures (from the per-request records) carry the percentiles
    own = {
        "GET /": {
            "requests": 701,
            "failures": 0,
            "p50_ms": 15.2,
            "p95_ms": 25.0,
            "p99_ms": 194.3,
            "max_ms": 356.6,
        },
        "POST /echo": {
            "requests": 114,
            "failures": 2,
            "p50_ms": 16.0,
            "p95_ms": 30.0,
            "p99_ms": 351.3,
            "max_ms": 351.3,
        },
    }
    server = RequestStats(name="web-2", requests=815, locust_reported=per_name)
    server["by_name"] = own
    assert case.locust is not None and case.locust.servers is not None
    case.locust.servers = {"srv-2": server}
    html = render_index(_results([case]))
    assert "(as Locust reported them" not in html
    rows = re.findall(r"<tr><td>web-2</td><td>([^<]+)</td>(.*?)</tr>", html, re.S)
    cells = {name: re.findall(r">([^<>]+)</td>", rest) for name, rest in rows}
    assert cells == {
        "GET /": ["701", "0", "15.2 / 25.0 / 194.3 / 356.6", "—"],
        "POST /echo": ["114", "2", "16.0 / 30.0 / 351.3 / 351.3", "—"],
    }


def test_no_locust_chart_without_a_rate() -> None:
    html = render_index(load_results(SMOKE))
    assert "Locust requests per second" not in html and "Locust per request name" not in html


def test_a_long_case_draws_the_timelines_worth_reading() -> None:
    """20 migrations, 2 failed: 12 timelines — the failed ones and the 10 longest guest downtimes."""
    migrations = []
    for k in range(20):
        m = _post_copy_migration().model_copy(update={"server": f"s{k}"})
        m.downtime_ms = PerProbe(guest=100.0 + k)
        if k in (3, 7):
            m.status = "error"
        migrations.append(m)
    html = render_index(_results([CaseResult(id="long#r1", passed=False, migrations=migrations)]))
    assert "Timelines of 12 migration(s) of 20: the failed ones and the longest downtimes" in html
    drawn = re.findall(r"<h4>#(\d+) s\d+ \((\w+)\)</h4>", html)
    assert [int(i) for i, _ in drawn] == [4, 8, *range(11, 21)]
    assert [status for _, status in drawn[:2]] == ["error", "error"]


def test_the_scenario_as_run_is_shown_without_secrets() -> None:
    results = _results([])
    results.scenario = {
        "name": "s",
        "workload": {"script": {"command": "run.sh", "env": {"API_TOKEN": "hunter2", "MODE": "<fast>"}}},
    }
    html = render_index(results)
    assert "API_TOKEN: &lt;redacted&gt;" in html and "hunter2" not in html
    assert "MODE: &lt;fast&gt;" in html


LOCUST_WEB = Path(__file__).parent / "data" / "locust-web-results.json"
"""A real `novamig run scenarios/locust-web.yaml` on the embedded cloud: 2 full guests with Locust
inside, 6 migrations, on a machine shared with other test runs (load average 50–180: the network
figures are inflated by it; every Locust gap had a request outstanding throughout)."""


def test_a_real_locust_run_shows_per_name_percentiles_breakdown_and_spans() -> None:
    results = load_results(LOCUST_WEB)
    html = render_index(results)
    _self_contained(html)
    case = results.cases[0]
    assert case.locust is not None and case.locust.servers is not None
    # per name and server, with novamig's own percentiles: 6 names × 2 servers
    rows = re.findall(r"<tr><td>(novamig-[^<]+)</td><td>((?:GET|POST) [^<]+)</td>(.*?)</tr>", html, re.S)
    assert len(rows) == 12
    for server, name, rest in rows:
        cells = re.findall(r">([^<>]+)</td>", rest)
        stats = next(s for s in case.locust.servers.values() if s.name == server).get("by_name")[name]
        assert cells[:2] == [str(stats["requests"]), str(stats["failures"])]
        assert cells[2] == " / ".join(f"{stats[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
    # why Locust reads above the others: from its breakdown, once per migration
    lines = re.findall(r"<li>#(\d) [^:]+: (.*?)</li>", html, re.S)
    locust_lines = [
        (n, line) for n, line in lines if "no request to the web application inside the guest" in line
    ]
    # (Locust's 632 ms noise floor here leaves only #4's 1282 ms beyond what the probes resolve)
    assert [n for n, _ in locust_lines] == ["4"]
    for _, line in locust_lines:
        assert line.count("was answered for") == 1
        assert "a request was outstanding (the service answering late)" in line
    # every timeline has Locust's unanswered span and the dirty-rate peak QEMU gave
    timelines = [s for s in _svgs(html) if "timeline of" in s]
    assert len(timelines) == 6
    assert all("<title>Locust: no request answered" in t and "dirty rate peak" in t for t in timelines)
