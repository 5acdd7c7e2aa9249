"""Runner-side Locust: one headless Locust process on the machine running novamig, loading every
guest's web application.

Why its own process: Locust is gevent, and gevent's monkey-patching in a process that imported
openstacksdk breaks ssl. Why ``ip netns exec``: on the embedded cloud the guests' addresses
exist only inside the guest network namespace. Why the hook file (``novamig/workload/locust_hook.py``)
beside the locustfile: it writes per-request records on this machine's CLOCK_MONOTONIC — the case
clock's source — so they need no clock mapping, and it spreads users over the guests. The process leads
its own session and is ended by its process group (SIGTERM: Locust writes its statistics and
exits; SIGKILL when it does not within the timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

HOOK = Path(str(resources.files("novamig.workload").joinpath("locust_hook.py")))


@dataclass(frozen=True)
class RunnerRecord:
    mono_s: float  # CLOCK_MONOTONIC at completion, seconds
    latency_ms: float
    ok: bool
    host: str
    name: str


@dataclass
class RunnerOutcome:
    exit_code: int | None
    stats: list[dict[str, Any]] | None
    records: list[RunnerRecord]
    cpu_s: float | None
    wall_s: float
    log_tail: str


class RunnerLocust:
    """One Locust process; ``start`` returns once requests complete, ``stop`` always ends it."""

    def __init__(
        self,
        locustfile: Path,
        hosts: list[str],
        *,
        users: int,
        spawn_rate: float,
        run_time_s: float | None,
        netns: str | None,
        workdir: Path,
    ) -> None:
        self.locustfile = locustfile
        self.hosts = hosts
        self.users = users
        self.spawn_rate = spawn_rate
        self.run_time_s = run_time_s
        self.netns = netns
        self.workdir = Path(workdir).resolve()  # Locust runs in its own directory
        self.records_path = self.workdir / "records.csv"
        self.stats_base = self.workdir / "stats"  # Locust appends .json
        self.log_path = self.workdir / "locust.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_mono = 0.0
        self._cpu_s: float | None = None
        self._exit: int | None = None

    def argv(self) -> list[str]:
        argv = [
            sys.executable, "-m", "locust", "-f", f"{self.locustfile},{HOOK}", "--headless",
            "-u", str(self.users), "-r", str(self.spawn_rate), "--host", self.hosts[0],
            "--only-summary", "--loglevel", "WARNING", "--json-file", str(self.stats_base),
            "--stop-timeout", "2", "--exit-code-on-error", "0",
        ]  # fmt: skip
        if self.run_time_s is not None:
            argv += ["-t", f"{max(1, round(self.run_time_s))}s"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    def start(self, first_request_timeout_s: float = 120.0) -> None:
        """Start Locust and wait for its first completed request; on any failure the process is
        ended before the error propagates."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for p in (self.records_path, self.stats_base.with_suffix(".json"), self.log_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        env = dict(os.environ)
        env["NOVAMIG_LOCUST_RECORDS"] = str(self.records_path)
        env["NOVAMIG_LOCUST_HOSTS"] = " ".join(self.hosts)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True, cwd=self.workdir,
            )  # fmt: skip
        self.started_mono = time.monotonic()
        try:
            deadline = self.started_mono + first_request_timeout_s
            while not (self.records_path.exists() and self.records_path.stat().st_size > 0):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"Locust exited with {self.proc.returncode}: {self.log_tail()}")
                if time.monotonic() > deadline:
                    waited = f"{first_request_timeout_s:.0f} s"
                    raise TimeoutError(f"Locust completed no request within {waited}: {self.log_tail()}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    def _reap(self, timeout_s: float) -> bool:
        """wait4 the process (its rusage is Locust's CPU); True once it has ended."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:  # already reaped (by Popen.poll)
                self._exit = self.proc.returncode
                return True
            if pid != 0:
                self._exit = os.waitstatus_to_exitcode(status)
                self.proc.returncode = self._exit
                self._cpu_s = usage.ru_utime + usage.ru_stime
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def stop(self, timeout_s: float = 30.0) -> RunnerOutcome:
        wall = time.monotonic() - self.started_mono if self.started_mono else 0.0
        if self.proc is not None and self.proc.returncode is None and self._exit is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            if not self._reap(timeout_s):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self._reap(10.0)
            # anything Locust itself started is in its group too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        stats: list[dict[str, Any]] | None = None
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(self.stats_base.with_suffix(".json").read_text())
            if isinstance(loaded, list):
                stats = [x for x in loaded if isinstance(x, dict)]
        return RunnerOutcome(self._exit, stats, self.records(), self._cpu_s, wall, self.log_tail())

    def records(self) -> list[RunnerRecord]:
        out: list[RunnerRecord] = []
        try:
            text = self.records_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            parts = line.split(",", 4)
            if len(parts) != 5:
                continue  # a line cut short by a kill
            try:
                out.append(
                    RunnerRecord(int(parts[0]) / 1e9, float(parts[1]), parts[2] == "1", parts[3], parts[4])
                )
            except ValueError:
                continue
        return out

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""
