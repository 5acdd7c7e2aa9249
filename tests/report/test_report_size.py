"""What keeps a page of thousands of migrations small and a browser responsive: long lines keep each
pixel column's extremes, a run of many cases shares out timelines and bars, events are listed for
the migrations worth reading, a crowded strip plot labels its tail only and draws the rest as one
path, a case of many migrations folds its table."""

from __future__ import annotations

import datetime as dt
import re

from novamig.report.render import PAGE_TIMELINES, render_index
from novamig.report.svg import Canvas, min_max_downsample
from novamig.results import (
    CaseResult,
    Environment,
    Event,
    LocustStats,
    MigrationRecord,
    PerProbe,
    ProgressSample,
    RequestRate,
    RequestStats,
    Results,
)


def test_min_max_downsample_keeps_a_one_sample_dip_and_the_order() -> None:
    points = [(float(k), 200.0 + (k % 7)) for k in range(3000)]
    points[1500] = (1500.0, 3.0)  # one second of blackout in 50 minutes of load
    kept = min_max_downsample(points, 300)
    assert len(kept) <= 600
    assert (1500.0, 3.0) in kept
    assert max(v for _, v in kept) == 206.0
    assert [x for x, _ in kept] == sorted(x for x, _ in kept)
    assert min_max_downsample(points[:500], 300) == points[:500], "few points come back as they are"


def test_path_dots_and_dot_groups_draw_what_they_say() -> None:
    c = Canvas(100, 100, "t")
    c.path([(0, 0, 10, 10), (1.25, 2, 3, 4)], "#222")
    c.dots([(5, 5), (6.04, 7)], "#111", 2)
    c.dot_group([(1, 2, "a <b>"), (3, 4, "")], "#333", 3, opacity=0.6)
    svg = str(c.markup())
    assert '<path d="M0 0L10 10M1.2 2L3 4" stroke="#222" fill="none"/>' in svg
    assert 'd="M5 5h0M6 7h0" stroke="#111" stroke-width="4" stroke-linecap="round"' in svg
    assert (
        '<g fill="#333" fill-opacity="0.6"><circle cx="1" cy="2" r="3"><title>a &lt;b&gt;</title></circle>'
        '<circle cx="3" cy="4" r="3"></circle></g>'
    ) in svg


def _migration(k: int, start: float, guest: float) -> MigrationRecord:
    return MigrationRecord(
        server=f"s{k}",
        source_host="h1",
        dest_host="h2",
        status="completed",
        requested_at=start,
        finished_at=start + 3,
        duration_s=3.0,
        downtime_ms=PerProbe(guest=guest),
        progress=[
            ProgressSample(t=start + 0.5, status="running"),
            ProgressSample(t=start + 3, status="completed"),
        ],
        events=[Event(t=start, what=f"requested s{k}"), Event(t=start + 3, what=f"completed s{k}")],
    )


def _run(cases: int, per_case: int) -> Results:
    env = Environment(cloud="c", novamig_version="0", started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    return Results(
        scenario={"name": "many"},
        environment=env,
        cases=[
            CaseResult(
                id=f"c{i}#r1",
                passed=True,
                migrations=[_migration(k, 10.0 * k, 100.0 + k) for k in range(per_case)],
            )
            for i in range(cases)
        ],
        passed=True,
    )


def test_many_cases_share_the_page_budget_of_timelines_and_bars() -> None:
    html = render_index(_run(cases=150, per_case=12))
    timelines = [s for s in re.findall(r"<svg .*?</svg>", html, re.S) if 'aria-label="timeline of' in s]
    assert len(timelines) == 150 * 2, "at least 2 per case, whatever the page budget"
    assert PAGE_TIMELINES // 150 < 2
    assert html.count("Timelines of 2 migration(s) of 12: the failed ones and the longest downtimes") == 150
    assert html.count("the first 10 of 12 completed migrations; the distributions cover all") == 150
    # the events of the two migrations with a timeline (the longest downtimes: #11, #12) are listed
    assert html.count("<summary>2 events</summary>") == 300
    assert html.count("2 events (in results.json)") == 150 * 10
    assert "<pre>  30.000  requested s3" not in html and "<pre> 110.000  requested s11" in html


def test_a_few_cases_draw_every_timeline_up_to_the_case_cap() -> None:
    html = render_index(_run(cases=2, per_case=5))
    assert html.count('aria-label="timeline of') == 10
    assert "(in results.json)" not in html
    assert html.count("<details open><summary>Migrations (5)</summary>") == 2


def test_a_case_of_many_migrations_folds_its_table() -> None:
    html = render_index(_run(cases=1, per_case=51))
    assert "<details><summary>Migrations (51)</summary>" in html


def test_a_crowded_strip_plot_labels_its_top_five_percent() -> None:
    html = render_index(_run(cases=1, per_case=2500))
    strip = next(
        s for s in re.findall(r"<svg .*?</svg>", html, re.S) if "downtime per vantage point" in s[:200]
    )
    labels = [float(v) for v in re.findall(r"<title>c0#r1 #\d+ s\d+: ([\d.]+) ms</title>", strip)]
    assert len(labels) == 126  # ranks 2 375 to 2 500: the nearest-rank p95 and above
    assert min(labels) == 100.0 + 2374
    assert strip.count("<circle") == 126, "a labelled dot is a circle with its hover text"
    unlabelled = re.search(
        r'<path d="([^"]*)" stroke="#1f77b4" stroke-width="6" stroke-linecap="round"', strip
    )
    assert unlabelled and unlabelled[1].count("h0") == 2500 - 126, "the others are one path of round dots"
    assert "hover labels: top 5 %" in strip


def test_a_long_locust_rate_keeps_each_pixel_columns_extremes() -> None:
    seconds = 3000
    requests = [200] * seconds
    requests[1234] = 0
    case = CaseResult(
        id="l#r1",
        passed=True,
        migrations=[_migration(0, 1230.0, 80.0)],
        locust=LocustStats(
            total=RequestStats(
                rps=RequestRate(t0_s=0.0, step_s=1.0, requests=requests, failures=[0] * seconds)
            )
        ),
    )
    html = render_index(_run(cases=0, per_case=0).model_copy(update={"cases": [case]}))
    chart = next(s for s in re.findall(r"<svg .*?</svg>", html, re.S) if "Locust requests per second" in s)
    lines = re.findall(r'<polyline points="([^"]*)"', chart)
    assert len(lines) == 2
    requests_line = [tuple(map(float, p.split(","))) for p in lines[0].split()]
    assert len(requests_line) <= 600
    bottom = max(y for _, y in requests_line)
    assert sum(1 for _, y in requests_line if y == bottom) == 1, "the one-second dip is drawn"
