from __future__ import annotations

import io

from rich.console import Console

from novamig.runner.migration_watcher import Progress
from novamig.runner.progress_display import LOG_PROGRESS_EVERY_S, LiveView


def test_plain_stream_gets_one_line_per_status_change() -> None:
    out = io.StringIO()
    view = LiveView(out, interactive=False)
    view.start_case("a#r1", 1, 2)
    view.progress(Progress("s0", "running", 10.0, 1.0, "h1", "h2"))
    view.progress(Progress("s0", "running", 60.0, 1.5, "h1", "h2"))  # same status: no new line
    view.progress(Progress("s0", "completed", 100.0, 2.0, "h1", "h2"))
    lines = out.getvalue().splitlines()
    assert lines == [
        "case 1/2: a#r1",
        "  s0: running 10% (1.0 s) h1 → h2",
        "  s0: completed 100% (2.0 s) h1 → h2",
    ]


def test_table_shows_case_server_status_progress_elapsed() -> None:
    view = LiveView(io.StringIO(), interactive=False)
    view.start_case("a#r1", 1, 1)
    view.server("s0", "requesting", 2, 3)
    view.progress(Progress("s0", "running", 42.0, 3.25, "h1", "h2"))
    console = Console(file=io.StringIO(), width=120)
    console.print(view.render())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for expected in ("case 1/1: a#r1", "s0", "2/3", "running", "42.0 %", "3.2 s", "h1 → h2"):
        assert expected in text, text


def test_plain_stream_repeats_a_long_status_every_interval() -> None:
    clock = [100.0]
    out = io.StringIO()
    view = LiveView(out, interactive=False, clock=lambda: clock[0])
    view.progress(Progress("s0", "running", 6.0, 0.9, "h1", "h2"))
    clock[0] += LOG_PROGRESS_EVERY_S - 1
    view.progress(Progress("s0", "running", 40.0, 9.9, "h1", "h2"))  # too soon: nothing
    clock[0] += 1
    view.progress(Progress("s0", "running", 45.0, 10.9, "h1", "h2"))
    assert out.getvalue().splitlines() == [
        "  s0: running 6% (0.9 s) h1 → h2",
        "  s0: running 45% (10.9 s) h1 → h2",
    ]
