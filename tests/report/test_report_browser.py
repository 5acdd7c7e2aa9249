"""index.html (and the trend page) in a real browser: Debian's headless Chromium loads it from disk
with no console error and draws every chart (each SVG has a non-empty bounding box and shapes in it).

The page itself has no script. To read what the browser drew, the test loads a copy with one
script appended that counts the drawn SVGs into attributes of <body>; `--dump-dom` prints the DOM
after that script ran. Console messages reach Chromium's log on stderr; the script also logs one
control message, so a test that saw no error is known to have been able to see one. Every host
name resolves to nothing, and the browser's resource timing (which lists failed fetches too) must
be empty.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from novamig.report.render import render_index
from novamig.report.trend import find_results, group_runs, render_trend
from novamig.results import (
    CaseResult,
    Environment,
    Event,
    MigrationRecord,
    ProgressSample,
    Results,
    load_results,
    write_results,
)

CHROMIUM = shutil.which("chromium")
SMOKE = Path(__file__).parent / "data" / "smoke-results.json"
LOCUST_WEB = Path(__file__).parent / "data" / "locust-web-results.json"  # a real run with Locust inside
CONTROL = "novamig-test-control-message"
PROBE = f"""<script>
addEventListener("load", () => {{
  const svgs = [...document.querySelectorAll("svg")];
  const drawn = svgs.filter(s => {{
    const box = s.getBBox();
    const shapes = s.querySelectorAll("rect, circle, polyline, line, path").length;
    return box.width > 0 && box.height > 0 && shapes > 0;
  }});
  document.body.setAttribute("data-svgs", svgs.length);
  document.body.setAttribute("data-drawn", drawn.length);
  document.body.setAttribute("data-fetched", performance.getEntriesByType("resource").length);
  console.log("{CONTROL}");
}});
</script>"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tools/setup.sh installs it)"),
]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # root in a container: the sandbox needs user namespaces it may not get
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _failed_run() -> Results:
    failed = MigrationRecord(
        server="s0",
        source_host="h1",
        status="error",
        requested_at=1.0,
        finished_at=4.0,
        progress=[ProgressSample(t=1.5, status="accepted"), ProgressSample(t=4.0, status="error")],
        events=[Event(t=4.0, what="server went to ERROR after the migration: boom")],
    )
    return Results(
        scenario={"name": "failed"},
        environment=Environment(
            cloud="c", novamig_version="0", started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        ),
        cases=[CaseResult(id="f#r1", passed=False, migrations=[failed])],
        passed=False,
    )


def _trend_page(tmp_path: Path) -> str:
    """`novamig trend` of three runs: the smoke run as recorded, then twice with its clock moved on."""
    smoke = load_results(SMOKE)
    for day in range(3):
        env = smoke.environment.model_copy(
            update={"started_at": smoke.environment.started_at + dt.timedelta(day)}
        )
        write_results(
            smoke.model_copy(update={"environment": env}), tmp_path / "runs" / f"{day}" / "results.json"
        )
    return render_trend(group_runs(find_results([str(tmp_path / "runs")]), 1.1), 1.1)


@pytest.mark.parametrize("page", ["smoke", "locust-web", "failed", "empty", "trend"])
def test_the_page_loads_without_console_errors_and_draws_every_chart(tmp_path: Path, page: str) -> None:
    if page == "smoke":
        html = render_index(load_results(SMOKE))
    elif page == "locust-web":
        html = render_index(load_results(LOCUST_WEB))
    elif page == "failed":
        html = render_index(_failed_run())
    elif page == "empty":
        html = render_index(_failed_run().model_copy(update={"cases": [], "interrupted": True}))
    else:
        html = _trend_page(tmp_path)
    expected = html.count("<svg")
    index = tmp_path / "index.html"
    index.write_text(html)
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))

    run = _chromium(tmp_path, "--dump-dom", probed.as_uri())
    body = re.search(r'<body data-svgs="(\d+)" data-drawn="(\d+)" data-fetched="(\d+)"', run.stdout)
    assert body, run.stdout[-2000:]
    assert int(body[1]) == expected
    assert int(body[2]) == expected  # every chart drawn
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert any(CONTROL in line for line in console), run.stderr[-2000:]
    assert [line for line in console if CONTROL not in line] == []
    assert body[3] == "0"  # nothing fetched

    screenshot = tmp_path / f"{page}.png"
    _chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1200,2400", index.as_uri())
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000
    if page == "smoke":
        assert expected == 7  # 2 distributions, the case's downtime bars, 4 timelines
    if page == "trend":
        assert expected == 7  # duration, and downtime and brownout of 3 vantage points
