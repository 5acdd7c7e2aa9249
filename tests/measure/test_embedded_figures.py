"""The embedded cloud's per-migration file as results keep it: QEMU's throttle and dirty-rate
series thinned to their changes and placed on the case clock, peaks exact."""

from __future__ import annotations

import json
from pathlib import Path

from novamig.measure.contract import CaseClock
from novamig.measure.embedded_figures import (
    MAX_SERIES_POINTS,
    EmbeddedMigrationFigures,
    hypervisor_figure,
    thin_series,
)
from novamig.results import HypervisorFigures, MigrationRecord


def test_thinning_keeps_first_changes_and_last() -> None:
    raw = [[0.0, 0], [0.1, 0], [0.2, 0], [0.3, 20], [0.4, 20], [0.5, 45], [0.6, 45], [0.7, 45]]
    assert thin_series(raw) == [[0.0, 0], [0.3, 20], [0.5, 45], [0.7, 45]]
    assert thin_series([[0.0, 7]]) == [[0.0, 7]]
    assert thin_series([]) == []
    assert thin_series([[0.0, 1], ["x", 2], [0.2], None, [0.3, True], [0.4, 3]]) == [[0.0, 1], [0.4, 3]]


def test_thinning_a_long_series_keeps_its_peak() -> None:
    """Beyond `most` changes each run keeps its highest value: a one-sample peak survives."""
    raw = [[i / 10, i % 7] for i in range(5000)]
    raw[2345][1] = 99
    thin = thin_series(raw)
    assert len(thin) == MAX_SERIES_POINTS
    assert max(v for _, v in thin) == 99
    assert [t for t, _ in thin] == sorted(t for t, _ in thin)


def test_the_hypervisor_figure_keeps_series_on_the_case_clock() -> None:
    clock = CaseClock(source=lambda: 1000.0)  # the case started at host monotonic 1000 s
    data = {
        "migration_id": 3,
        "status": "completed",
        "qemu_downtime_ms": 40,
        "throttle_series": [[0.05, 0], [0.15, 0], [1.0, 20], [1.1, 20], [2.0, 30], [2.1, 30]],
        "dirty_rate_series": [[0.05, 0], [0.15, 51200], [1.0, 51200], [2.1, 12800]],
        "progress": [{"t": 0.05}],
        "migrate_monotonic_s": 1012.25,
    }
    fig = hypervisor_figure(data, clock)
    hv = HypervisorFigures.model_validate(fig.details)
    assert hv.throttle_series == [[0.05, 0], [1.0, 20], [2.0, 30], [2.1, 30]]
    assert hv.dirty_rate_series == [[0.05, 0], [0.15, 51200], [2.1, 12800]]
    assert hv.migrate_at_s == 12.25
    assert (hv.throttle_max_percent, hv.dirty_pages_rate_max) == (30, 51200)
    assert "migrate_monotonic_s" not in hv and "progress" not in hv
    # ∑ throttle × interval over the raw samples: 20 % of 1.0 s + 30 % of 0.1 s
    assert fig.brownout_ms == 230.0
    no_clock = HypervisorFigures.model_validate(hypervisor_figure(data).details)
    assert no_clock.migrate_at_s is None and no_clock.throttle_series == hv.throttle_series


def test_the_probe_places_series_with_the_clock_it_was_started_with(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    data = {"migration_id": 9, "qemu_downtime_ms": 5, "throttle_series": [[0.1, 0]]}
    data["migrate_monotonic_s"] = 50.5
    (tmp_path / "migrations" / "u.json").write_text(json.dumps(data))
    probe = EmbeddedMigrationFigures(tmp_path)
    probe.start([], CaseClock(source=lambda: 50.0))
    m = MigrationRecord(server="s", source_host="a", status="completed", requested_at=0.1)
    details = probe.figure(m, "s", 9).details
    assert details["migrate_at_s"] == 0.5 and details["throttle_series"] == [[0.1, 0]]
