"""Interruption trials: `novamig run` on its own embedded cloud, killed at a random instant.

Each trial runs a tiny scenario (one 256 MiB guest, three migrations, the hypervisor probe) as a
real `novamig run` process, sends SIGINT, SIGTERM or SIGKILL after a random delay, and counts what
was lost:

* SIGINT / SIGTERM: the exit status (130 for both: the run treats SIGTERM like Ctrl-C and cleans
  up), `results.json` loads with `novamig.results` and holds every migration the run had printed
  as completed before the signal, and nothing of the run is left: processes (the cloud, its QEMU
  guests, probes), namespaces, temp folders, the run's embedded cloud.
* SIGKILL: nothing can be promised by the run itself; `novamig cleanup --yes` must remove what it
  left, and a later run must start cleanly (that is checked once, after the last trial).

Leftovers are judged per run, never by name across the machine (other runs and tests may be using
QEMU and namespaces at the same time): every process seen in the run's process tree while it ran,
the namespaces those processes created (`novamig-<pid>-…`), and the temp folders that name the run's
embedded cloud or run id. Prints a table; not a test (tests/reliability runs a sample).

    .venv/bin/python bench/interrupt.py [--trials 12] [--max-delay 45] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from novamig.results import load_results

NOVAMIG = str(Path(sys.executable).parent / "novamig")
SCENARIO = (
    "name: interrupt\n"
    "fleet: {count: 1, flavor: {vcpus: 1, ram_mb: 256, disk_gb: 1}, image: novamig-tiny}\n"
    "measure: {probes: [hypervisor], noise_floor_s: 1}\n"
    "migration: {count: 3, interval_s: 0.5}\n"
)
KINDS = ("SIGINT", "SIGTERM", "SIGKILL")
EXPECTED_RC = {"SIGINT": 130, "SIGTERM": 130}
COMPLETED = re.compile(r"^\s+(\S+): completed ")
RUN_ID = re.compile(r"^novamig: run (\w+)", re.MULTILINE)
WORKDIR = re.compile(r"embedded cloud started in (\S+)")


def _starttime(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): tells a pid apart from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _tree(root: int) -> Iterator[int]:
    todo = [root]
    while todo:
        pid = todo.pop()
        yield pid
        todo += _children(pid)


@dataclass
class Watch:
    """What a running `novamig run` showed: its processes and stderr, with the signal's moment."""

    proc: subprocess.Popen[str]
    seen: dict[int, str] = field(default_factory=dict)  # pid → start time
    lines: list[tuple[float, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._poll, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
        self.done.set()

    def _poll(self) -> None:
        while self.proc.poll() is None:
            for pid in _tree(self.proc.pid):
                start = _starttime(pid)
                if start is not None:
                    self.seen.setdefault(pid, start)
            time.sleep(0.1)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def completed_before(self, moment: float) -> int:
        return sum(1 for t, line in self.lines if t < moment and COMPLETED.match(line))

    def stage_at(self, moment: float) -> str:
        before = [line.strip() for t, line in self.lines if t < moment]
        return _stage(before[-1]) if before else "start"


def _stage(line: str) -> str:
    for needle, stage in (
        ("starting the embedded cloud", "cloud start"),
        ("case(s); output", "cloud up"),
        ("case 1/1", "cloud up"),
        ("booting", "boot"),
        ("noise floor", "noise window"),
        ("ACTIVE; migrating", "workload start"),
        ("deleting servers", "collection"),
        ("PASS", "report"),
        ("run passed", "report"),
        ("HTML report", "report"),
        ("FAIL", "report"),
        ("results in", "report"),
    ):
        if needle in line:
            return stage
    return "migration" if ": " in line and line.startswith("novamig-") else "other"


@dataclass
class Trial:
    kind: str
    delay_s: float
    stage: str = ""
    rc: int | None = None
    results_ok: bool | None = None
    completed_before: int = 0
    completed_in_results: int = 0
    leftovers: list[str] = field(default_factory=list)
    cleanup_rc: int | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        if self.leftovers:
            return False
        if self.kind == "SIGKILL":
            return self.cleanup_rc == 0
        if self.stage == "start" and self.rc == -int(getattr(signal, self.kind)):
            return True  # before novamig set its handlers (interpreter start): nothing created yet
        finished = self.rc == 0 and self.stage in ("report", "finished")  # the signal came too late
        exited = self.rc == EXPECTED_RC[self.kind] or finished
        return exited and bool(self.results_ok) and self.completed_in_results >= self.completed_before


def _temp_leftovers(run_id: str | None, workdir: str | None) -> list[str]:
    tmp = Path(tempfile.gettempdir())
    names = [p for p in tmp.glob("novamig-*") if (run_id and p.name.startswith(f"novamig-{run_id}-"))]
    if workdir and Path(workdir).exists():
        names.append(Path(workdir))
    return [f"temp {p}" for p in names]


def leftovers(watch: Watch) -> list[str]:
    """What of the run still exists: its processes, their namespaces, its temp folders."""
    alive = [
        f"process {pid} {Path(f'/proc/{pid}/comm').read_text().strip()}"
        for pid, start in watch.seen.items()
        if pid != watch.proc.pid and _starttime(pid) == start
    ]
    creators = {str(pid) for pid in watch.seen}
    run_netns = Path("/run/netns")
    netns = [
        f"netns {p.name}"
        for p in (run_netns.iterdir() if run_netns.exists() else [])
        if p.name.startswith("novamig-") and p.name.split("-")[1] in creators
    ]
    text = watch.text()
    run_id = m.group(1) if (m := RUN_ID.search(text)) else None
    workdir = _workdir(watch)
    return alive + netns + _temp_leftovers(run_id, workdir)


def _workdir(watch: Watch) -> str | None:
    for pid in watch.seen:  # the cloud process's argument is its work directory
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"novamig.embedded.service.main" in argv and len(argv) > 3:
            return argv[3].decode()
    return None


def _wait_gone(watch: Watch, timeout_s: float) -> list[str]:
    """Leftovers, polled until none remain or the deadline (processes take a moment to exit)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = leftovers(watch)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OS_CLOUD", "OS_CLIENT_CONFIG_FILE")}


def _wait_for_line(watch: Watch, pattern: re.Pattern[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while watch.proc.poll() is None and time.monotonic() < deadline:
        if any(pattern.search(line) for _, line in watch.lines):
            return
        time.sleep(0.05)


def run_trial(kind: str, delay_s: float, workdir: Path, after: re.Pattern[str] | None = None) -> Trial:
    """One `novamig run`, signalled `delay_s` after it started (or after its first stderr line
    matching `after`: the CI sample aims at the middle of the migrations); every check made."""
    trial = Trial(kind, delay_s)
    scenario, out = workdir / "scenario.yaml", workdir / "out"
    scenario.write_text(SCENARIO, encoding="utf-8")
    argv = [NOVAMIG, "run", str(scenario), "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    watch = Watch(proc)
    watch.start()
    if after is not None:
        _wait_for_line(watch, after, 240)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=delay_s)
    moment = time.monotonic()
    trial.stage = watch.stage_at(moment) if proc.poll() is None else "finished"
    trial.completed_before = watch.completed_before(moment)
    if proc.poll() is None:
        proc.send_signal(getattr(signal, kind))
    trial.rc = proc.wait(timeout=300)
    watch.done.wait(30)
    if kind == "SIGKILL":
        _after_kill(trial, watch)
    elif trial.stage == "start" and trial.rc == -int(getattr(signal, kind)):
        # Before novamig set its handlers (interpreter start-up, imports): the default action ended
        # it with nothing created and no output folder; there is no results file to judge.
        trial.note = "signalled before novamig set its handlers: default action, no results.json"
        trial.leftovers = _wait_gone(watch, 30)
    else:
        _check_results(trial, out)
        trial.leftovers = _wait_gone(watch, 30)
    return trial


def _check_results(trial: Trial, out: Path) -> None:
    try:
        results = load_results(out / "results.json")
    except Exception as exc:  # any failure to load is what this counts
        trial.results_ok = False
        trial.note = f"results.json: {type(exc).__name__}: {str(exc)[:80]}"
        return
    trial.results_ok = True
    trial.completed_in_results = sum(
        1 for case in results.cases for m in case.migrations if m.status == "completed"
    )


def _after_kill(trial: Trial, watch: Watch) -> None:
    """After SIGKILL: what the run left, then `novamig cleanup --yes`, then what is still there."""
    time.sleep(1)  # the lifeline's kernel signal reaches the cloud and its guests
    left_by_kill = leftovers(watch)
    # The run used its own cloud, so the user's clouds.yaml has nothing of it: cleanup reads none
    # (a `novamig-embedded` entry there, of a cloud up elsewhere, is not this trial's business).
    with tempfile.TemporaryDirectory(prefix="interrupt-home-") as home:
        env = dict(_env(), HOME=home, XDG_CONFIG_HOME=home)
        cleanup = subprocess.run(
            [NOVAMIG, "cleanup", "--yes"], capture_output=True, text=True, env=env, timeout=300, check=False
        )
    trial.cleanup_rc = cleanup.returncode
    trial.leftovers = _wait_gone(watch, 30)
    trial.note = f"left by the kill: {len(left_by_kill)}" + (
        f"; cleanup: {cleanup.stderr.strip()[:120]}" if cleanup.returncode else ""
    )


def clean_start(workdir: Path) -> bool:
    """A full run after the trials: it must start (and pass) with nothing in its way."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "out"
    (workdir / "scenario.yaml").write_text(SCENARIO, encoding="utf-8")
    argv = [NOVAMIG, "run", str(workdir / "scenario.yaml"), "--out", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=600, check=False)
    return proc.returncode == 0 and (out / "results.json").exists()


def _print_table(trials: list[Trial]) -> None:
    print(f"machine: {platform.node()} · {os.cpu_count()} cores · {platform.platform()}")
    print(
        f"{'#':>3} {'signal':<8} {'at s':>5} {'stage':<15} {'rc':>4} {'results':<8} "
        f"{'done→kept':<10} {'leaks':>5} {'ok':<3} note"
    )
    for i, t in enumerate(trials, 1):
        results = "-" if t.results_ok is None else ("valid" if t.results_ok else "INVALID")
        kept = "-" if t.kind == "SIGKILL" else f"{t.completed_before}→{t.completed_in_results}"
        print(
            f"{i:>3} {t.kind:<8} {t.delay_s:>5.1f} {t.stage:<15} {t.rc!s:>4} {results:<8} "
            f"{kept:<10} {len(t.leftovers):>5} {'yes' if t.ok else 'NO':<3} {t.note}"
        )
        for item in t.leftovers:
            print(f"      leftover: {item}")
    print(_totals(trials))


def _totals(trials: list[Trial]) -> str:
    invalid = sum(1 for t in trials if t.results_ok is False)
    leaks = sum(len(t.leftovers) for t in trials)
    early = sum(1 for t in trials if t.kind != "SIGKILL" and t.results_ok is None)
    return (
        f"trials {len(trials)} · failed {sum(1 for t in trials if not t.ok)} · leaks {leaks} · "
        f"invalid results files {invalid} · ended before the handlers (no results.json) {early}"
    )


def _print_markdown(trials: list[Trial]) -> None:
    """The same table as docs/reliability.md quotes it."""
    print("| # | signal | at s | stage | exit | results.json | completed before → in results | leftovers |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, t in enumerate(trials, 1):
        if t.kind == "SIGKILL":
            results, kept = "—", "—"
            left = f"{t.note.removeprefix('left by the kill: ').split(';')[0]} left by the kill → "
            left += f"{len(t.leftovers)} after cleanup" + (
                "" if t.cleanup_rc == 0 else f" (exit {t.cleanup_rc})"
            )
        else:
            results = "—" if t.results_ok is None else ("valid" if t.results_ok else "INVALID")
            kept = "—" if t.results_ok is None else f"{t.completed_before} → {t.completed_in_results}"
            left = str(len(t.leftovers))
        print(f"| {i} | {t.kind} | {t.delay_s:.1f} | {t.stage} | {t.rc} | {results} | {kept} | {left} |")
    print(f"\n{_totals(trials)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--max-delay", type=float, default=45.0, help="latest signal, s after start")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-clean-start", action="store_true", help="skip the run after the trials")
    parser.add_argument("--markdown", action="store_true", help="also print the table in Markdown")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="interrupt-trials-") as tmp:
        for i in range(args.trials):
            kind = KINDS[i % len(KINDS)]
            workdir = Path(tmp) / f"t{i}"
            workdir.mkdir()
            trial = run_trial(kind, rng.uniform(1.0, args.max_delay), workdir)
            trials.append(trial)
            print(
                f"trial {i + 1}/{args.trials}: {kind} at {trial.delay_s:.1f} s ({trial.stage}) → "
                f"{'ok' if trial.ok else 'FAILED'}",
                file=sys.stderr,
                flush=True,
            )
        _print_table(trials)  # before the last run: a figure printed is a figure kept
        if args.markdown:
            _print_markdown(trials)
        clean = None if args.no_clean_start else clean_start(Path(tmp) / "after")
    if clean is not None:
        print(f"clean start after the trials: {'yes' if clean else 'NO'}")
    return 0 if all(t.ok for t in trials) and clean is not False else 1


if __name__ == "__main__":
    sys.exit(main())
