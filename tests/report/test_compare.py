"""`novamig compare`: a planted regression is flagged, noise is not, bad input exits 2."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import random
import re
import sys
from pathlib import Path

import pytest

from novamig.cli import main
from novamig.report.compare import DEFAULT_FACTOR, METRICS, Verdict, decide
from novamig.results import (
    CaseResult,
    Environment,
    MigrationRecord,
    PerProbe,
    Results,
    write_results,
)


def _migration(rng: random.Random, guest_scale: float, index: int) -> MigrationRecord:
    """Figures shaped like the smoke scenario's under TCG: a floor plus a skewed tail of noise."""
    duration = 3.0 + rng.expovariate(1 / 0.4)
    return MigrationRecord(
        server=f"novamig-s{index}",
        source_host="compute1",
        dest_host="compute2",
        status="completed",
        requested_at=10.0,
        finished_at=10.0 + duration,
        duration_s=duration,
        downtime_ms=PerProbe(
            guest=(65 + rng.expovariate(1 / 15)) * guest_scale,
            network=60 + rng.expovariate(1 / 15),
            hypervisor=14 + rng.expovariate(1 / 2),
        ),
        resolution_ms=PerProbe(guest=1.0, network=2.0, hypervisor=1.0),
        brownout_ms=PerProbe(guest=0.0, network=50 + rng.expovariate(1 / 20), hypervisor=0.0),
    )


def _results(
    seed: int,
    *,
    repeats: int = 10,
    per_case: int = 1,
    guest_scale: float = 1.0,
    name: str = "smoke",
    cells: tuple[dict[str, object], ...] = ({},),
) -> Results:
    rng = random.Random(seed)
    cases = [
        CaseResult(
            id=f"c{i}#r{r}",
            params=params,
            repetition=r,
            passed=True,
            migrations=[_migration(rng, guest_scale, k) for k in range(per_case)],
        )
        for i, params in enumerate(cells)
        for r in range(1, repeats + 1)
    ]
    return Results(
        scenario={"name": name},
        environment=Environment(
            cloud="embedded", novamig_version="0.test", started_at=dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
        ),
        cases=cases,
        passed=True,
    )


def _write(tmp_path: Path, filename: str, results: Results) -> str:
    path = tmp_path / filename
    write_results(results, path)
    return str(path)


def _verdicts(stdout: str) -> dict[str, str]:
    """metric → verdict, from the printed table of one case (columns are two or more spaces apart)."""
    found = {}
    for line in stdout.splitlines():
        columns = re.split(r"\s{2,}", line.strip())
        if len(columns) == 7 and columns[0] != "case":
            found[columns[1]] = columns[6]
    return found


def test_planted_regression_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _write(tmp_path, "base.json", _results(seed=1))
    new = _write(tmp_path, "new.json", _results(seed=2, guest_scale=1.5))
    html = tmp_path / "compare.html"
    assert main(["compare", base, new, "--html", str(html)]) == 1
    out = capsys.readouterr().out
    verdicts = _verdicts(out)
    assert verdicts["downtime guest"] == "regressed"
    others = {m: v for m, v in verdicts.items() if m != "downtime guest"}
    assert set(others.values()) == {"no significant change"}, out
    guest_line = next(line for line in out.splitlines() if "  downtime guest  " in line)
    assert "(n=10)" in guest_line
    ratio = float(guest_line.split("×")[1].split()[0])
    assert 1.3 < ratio < 1.7
    assert "\033[" not in out  # not a terminal: no colour codes
    page = html.read_text()
    assert "regressed" in page and "<script" not in page and "http" not in page


@pytest.mark.parametrize("seeds", [(1, 2), (3, 4), (7, 8)])
def test_noise_alone_is_not_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seeds: tuple[int, int]
) -> None:
    """Two runs of one setup: nothing flagged, exit 0.

    One given pair can still be a false alarm (~1.3 % per metric: seeds 5 and 6 make the network
    brownout "improved" at p = 0.009); the rate itself is bounded by the test below.
    """
    base = _write(tmp_path, "base.json", _results(seed=seeds[0]))
    new = _write(tmp_path, "new.json", _results(seed=seeds[1]))
    assert main(["compare", base, new]) == 0
    out = capsys.readouterr().out
    assert set(_verdicts(out).values()) == {"no significant change"}, out


def _downtimes(rng: random.Random, n: int, scale: float = 1.0) -> list[float]:
    return [(65 + rng.expovariate(1 / 15)) * scale for _ in range(n)]


def test_false_alarm_and_detection_rates_over_many_runs() -> None:
    """The method's two error rates, over 300 pairs of 10-repeat samples shaped like downtimes.

    Same distribution: flagged (either way) ~1.3 % of the time at p < 0.01; ×1.5: caught ~97 %.
    The bounds leave room for the sampling error of 300 trials, not for a worse method.
    """
    rng = random.Random(2026)
    metric = METRICS[1]
    trials = 300
    false_alarms = sum(
        decide("c", metric, _downtimes(rng, 10), _downtimes(rng, 10), DEFAULT_FACTOR).verdict
        is not Verdict.SAME
        for _ in range(trials)
    )
    caught = sum(
        decide("c", metric, _downtimes(rng, 10), _downtimes(rng, 10, 1.5), DEFAULT_FACTOR).verdict
        is Verdict.REGRESSED
        for _ in range(trials)
    )
    assert false_alarms / trials < 0.04
    assert caught / trials > 0.9


def test_improvement_is_labelled_and_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _write(tmp_path, "base.json", _results(seed=1))
    new = _write(tmp_path, "new.json", _results(seed=2, guest_scale=0.6))
    assert main(["compare", base, new]) == 0
    assert _verdicts(capsys.readouterr().out)["downtime guest"] == "improved"


def test_too_few_repeats_fall_back_to_the_factor_and_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four samples a side can never reach p < 0.01 (2 / C(8, 4) = 0.029): the factor alone decides."""
    base = _write(tmp_path, "base.json", _results(seed=1, repeats=4))
    new = _write(tmp_path, "new.json", _results(seed=2, repeats=4, guest_scale=2.0))
    assert main(["compare", base, new]) == 1
    out = capsys.readouterr().out
    verdicts = _verdicts(out)
    assert verdicts["downtime guest"] == "regressed (factor only: not enough repeats to test)"
    assert verdicts["downtime hypervisor"].endswith("(factor only: not enough repeats to test)")


def test_cells_are_matched_by_params_and_repeats_pooled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cells: tuple[dict[str, object], ...] = ({"dirty_rate_mib_s": 0}, {"dirty_rate_mib_s": 64})
    base = _write(tmp_path, "base.json", _results(seed=1, repeats=5, per_case=2, cells=cells))
    new_cells: tuple[dict[str, object], ...] = ({"dirty_rate_mib_s": 64}, {"dirty_rate_mib_s": 128})
    new = _write(tmp_path, "new.json", _results(seed=2, repeats=5, per_case=2, cells=new_cells))
    assert main(["compare", base, new]) == 0
    out = capsys.readouterr().out
    assert "(n=10)" in out  # 5 repeats × 2 migrations of one cell
    assert "only in BASE: dirty_rate_mib_s=0" in out
    assert "only in NEW: dirty_rate_mib_s=128" in out


def test_every_new_run_is_compared_with_the_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _write(tmp_path, "base.json", _results(seed=1))
    same = _write(tmp_path, "same.json", _results(seed=2))
    worse = _write(tmp_path, "worse.json", _results(seed=3, guest_scale=1.5))
    assert main(["compare", base, same, worse, "--factor", "1.2"]) == 1
    out = capsys.readouterr().out
    assert f"NEW {same}" in out and f"NEW {worse}" in out
    assert "×1.2" in out


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = _write(tmp_path, "good.json", _results(seed=1, repeats=2))
    other = _write(tmp_path, "other.json", _results(seed=2, repeats=2, name="locust-web"))
    (tmp_path / "text.json").write_text("not json at all")
    (tmp_path / "list.json").write_text("[1, 2]")
    newer = json.loads(Path(good).read_text()) | {"schema": "novamig.results/2"}
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    broken = json.loads(Path(good).read_text())
    del broken["cases"][0]["passed"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    t = str(tmp_path)
    return {
        "missing": ([good, f"{t}/nope.json"], "no such file"),
        "directory": ([good, t], "cannot read"),
        "not json": ([good, f"{t}/text.json"], "not JSON"),
        "not results": ([f"{t}/list.json", good], "not a results object"),
        "schema": ([good, f"{t}/newer.json"], "unsupported schema 'novamig.results/2'"),
        "invalid": ([good, f"{t}/broken.json"], "invalid results"),
        "scenarios": ([good, other], "different scenarios"),
        "one file": ([good], "needs a BASE results file and at least one NEW one"),
        "factor": ([good, good, "--factor", "0.9"], "--factor must be above 1"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "directory",
        "not json",
        "not results",
        "schema",
        "invalid",
        "scenarios",
        "one file",
        "factor",
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    argv, message = _bad_inputs(tmp_path)[case]
    assert main(["compare", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("novamig compare: ")
    assert message in lines[0]


def test_colour_only_on_a_terminal(tmp_path: Path) -> None:
    """Through a pseudo-terminal the regressed row is red; piped (the tests above), plain text."""
    base = _write(tmp_path, "base.json", _results(seed=1))
    new = _write(tmp_path, "new.json", _results(seed=2, guest_scale=1.5))
    pid, fd = pty.fork()
    if pid == 0:  # the child: fd 1 is the terminal (pytest's capture had replaced sys.stdout)
        sys.stdout = os.fdopen(1, "w", closefd=False)
        code = main(["compare", base, new])
        sys.stdout.flush()
        os._exit(code)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    red_rows = [line for line in out.decode().splitlines() if line.startswith("\033[1;31m")]
    assert len(red_rows) == 1 and "downtime guest" in red_rows[0] and red_rows[0].endswith("\033[0m")
