"""The runner's side of a probe that records in a process of its own (`novamig.measure.probe_process`).

`NetworkProbe` (the echo prober) and `UdpHeartbeatProbe` (the UDP heartbeat collector) drive their
processes the same way and turn the records into figures by the same definitions
(`novamig.measure.gaps`): start the process and wait for its ``running`` status, stop it (SIGTERM,
then SIGKILL), tell a process that died from one that was stopped, find how long it really listened,
map case seconds to monotonic ns, refuse a figure whose window outlived the process, the brownout
threshold, the noise floor over every server, and the cost when the process wrote no summary.
`SpawnedProbe` holds all of that once, so the two vantage points cannot drift apart; a subclass says
only what differs: the command line, what a record is and how a server's records are found, the
wording of its messages, and what a figure's details and the cost note say.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Generic, Protocol, TypeVar

from novamig.hypervisor import runtime
from novamig.measure import gaps
from novamig.measure.contract import CaseClock, ProbeFigure, ServerInfo
from novamig.results import MigrationRecord, ProbeCost
from novamig.stats import Gap

log = logging.getLogger(__name__)


class Arrivals(Protocol):
    """One server's records: whatever else they hold, their arrival times, sorted (monotonic ns)."""

    recv_ns: list[int]


class Window(Protocol):
    """What a probe's window function returns (`WindowFigure`, `BeatWindow`): the figure's core."""

    @property
    def downtime(self) -> Gap | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def brownout_ms(self) -> float | None: ...


K = TypeVar("K")  # how the record file names a server (the echo target index, the sender address)
R = TypeVar("R", bound=Arrivals)
W = TypeVar("W", bound=Window)  # one server's figure in one window
R_contra = TypeVar("R_contra", bound=Arrivals, contravariant=True)
W_co = TypeVar("W_co", bound=Window, covariant=True)


class WindowFunction(Protocol[R_contra, W_co]):
    """A probe's pure window arithmetic (`window_figure`, `beat_window`)."""

    def __call__(
        self,
        records: R_contra,
        start_ns: int,
        end_ns: int,
        /,
        *,
        period_ns: int,
        recording_end_ns: int,
        threshold_ms: float | None,
    ) -> W_co: ...


class SpawnedProbe(Generic[K, R, W]):
    """A `novamig.measure.contract.Probe` whose records come from a process of its own.

    Subclasses set the wording (`_label`: the probe in logs and reasons; `_process`: its process;
    `_address_use`: what a server's address is needed for; `_unreadable`, `_silent_in_noise`,
    `_no_summary`), the process (`_module`, run as ``python -m``) and its files (`_dir_prefix`,
    `_stem` + ``.bin/.json/.log``), and implement `_arguments`, `_read_records`, `_server_key`,
    `_server_records`, `_details` and `_cost_note`; `window` is the probe's pure window arithmetic.
    """

    MARGIN_S = 1.0
    BROWNOUT_MIN_PERIODS = 3
    START_TIMEOUT_S = 10.0
    STOP_GRACE_S = 5.0

    _label = ""
    _process = ""
    _address_use = ""
    _unreadable = ""
    _silent_in_noise = ""
    _no_summary = ""
    _module = ""
    _dir_prefix = ""
    _stem = ""

    def __init__(
        self, hz: float, netns: str | None, workdir: Path, sched: str, window: WindowFunction[R, W]
    ) -> None:
        self._window_of = window
        self.hz = hz
        self.netns = netns
        self.workdir = Path(workdir).resolve()  # the process runs elsewhere: absolute paths
        self.sched = sched
        self.period_ns = round(1e9 / hz)
        self._reset()

    def _reset(self) -> None:
        self._clock: CaseClock | None = None
        self._servers: dict[str, tuple[K, str]] = {}  # server id → (record key, address)
        self._names: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._logf: IO[bytes] | None = None
        self.dir: Path | None = None
        self._reason: str | None = None  # why the probe as a whole measured nothing
        self._died: str | None = None  # the process ended before stop() asked it to
        self._stopped = False
        self._started_mono = 0.0
        self._stopped_mono: float | None = None
        self._status: dict[str, Any] | None = None
        self._cpu_fallback: tuple[float, float] | None = None  # (cpu_s, wall_s) read from /proc
        self._records: dict[K, R] | None = None
        self._recording_end_ns: int | None = None
        self._noise_ms: float | None = None
        self._noise_known = False

    # ------------------------------------------------------------------------------ subclass hooks

    def _arguments(self) -> list[str]:
        """The process's own arguments (besides --out, --status, --sched and --netns)."""
        raise NotImplementedError

    def _read_records(self, path: Path) -> dict[K, R]:
        raise NotImplementedError

    def _server_key(self, index: int, address: str) -> K:
        """The record key of the `index`-th server with an address."""
        raise NotImplementedError

    def _server_records(self, records: dict[K, R], key: K, address: str) -> tuple[R | None, str | None]:
        """A server's records (or None and why) once the probe has records at all."""
        raise NotImplementedError

    def _details(self, w: W, address: str, window: dict[str, Any], threshold: float | None) -> dict[str, Any]:
        """A figure's details: the probe's own, in its order, with `window` (`gap_from_s`,
        `gap_to_s`, `window_s`: where the downtime and the window were, in case seconds)."""
        raise NotImplementedError

    def _cost_note(self, st: dict[str, Any]) -> tuple[str, float | None]:
        """The cost's note and rate from a ``running``/``stopped`` status."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ lifecycle

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None:
        if self._proc is not None:
            self.stop()  # a second start: the previous run ends first
        self._reset()
        self._clock = clock
        for s in servers:
            self._names[s.id] = s.name
            if s.address:
                self._servers[s.id] = (self._server_key(len(self._servers), s.address), s.address)
        if not self._servers:
            self._reason = f"no server has an address {self._address_use}"
            return
        try:
            self._launch()
        except Exception as exc:
            log.exception("%s: start failed", self._label)
            self._reason = f"the {self._process} did not start: {exc}"
            self._kill()

    def _file(self, suffix: str) -> Path:
        assert self.dir is not None
        return self.dir / f"{self._stem}{suffix}"

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=self._dir_prefix, dir=self.workdir))
        argv = [
            sys.executable,
            "-m",
            self._module,
            *self._arguments(),
            "--out",
            str(self._file(".bin")),
            "--status",
            str(self._file(".json")),
            "--sched",
            self.sched,
        ]
        if self.netns is not None:
            argv += ["--netns", self.netns]
        self._logf = open(self._file(".log"), "wb")  # noqa: SIM115 - closed in stop()
        self._started_mono = time.monotonic()
        self._proc = runtime.spawn(argv, stdout=self._logf, cwd=self.dir, timeout=30.0)
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while True:
            status = self._read_status()
            if status is not None and status.get("state") == "running":
                return
            if status is not None and status.get("state") == "failed":
                raise RuntimeError(str(status.get("error")))
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(f"exited with code {code}: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not running after {self.START_TIMEOUT_S:g} s: {self._log_tail()}")
            time.sleep(0.02)

    def _read_status(self) -> dict[str, Any] | None:
        if self.dir is None:
            return None
        try:
            data = json.loads(self._file(".json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _log_tail(self) -> str:
        if self.dir is None:
            return ""
        try:
            text = self._file(".log").read_text(errors="replace").strip()
        except OSError:
            return ""
        return text.splitlines()[-1] if text else "(no output)"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """End the process (SIGTERM, then SIGKILL after STOP_GRACE_S) and load its records.

        Safe to call twice and before `start`; never raises.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._proc is None:
            return
        try:
            code = self._proc.poll()
            if code is not None:
                self._died = f"the {self._process} exited by itself (code {code}): {self._log_tail()}"
            else:
                self._cpu_fallback = proc_cpu(self._proc.pid)
            self._kill()
            self._stopped_mono = time.monotonic()
            self._load()
        except Exception as exc:
            log.exception("%s: stop failed", self._label)
            self._reason = self._reason or f"{self._unreadable}: {exc}"
        finally:
            if self._logf is not None:
                self._logf.close()
                self._logf = None

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    log.warning("%s: pid %d ignored SIGTERM; killing it", self._label, proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10.0)
        finally:
            runtime.unregister_process_group(proc.pid)

    def _load(self) -> None:
        self._status = self._read_status()
        self._records = self._read_records(self._file(".bin"))
        ends = [r.recv_ns[-1] for r in self._records.values() if r.recv_ns]
        st = self._status or {}
        last_status = int(st["now_ns"]) if isinstance(st.get("now_ns"), int) else None
        if self._died is not None or st.get("state") != "stopped":
            # Died, or killed before its summary: it listened at least until its last sign of life
            # (a record or a status update); when it was killed by stop(), until the kill.
            alive = [x for x in (*ends, last_status) if x is not None]
            if self._died is None and self._stopped_mono is not None:
                alive.append(int(self._stopped_mono * 1e9))
            self._recording_end_ns = max(alive) if alive else int(self._started_mono * 1e9)
        else:
            assert last_status is not None
            self._recording_end_ns = last_status

    # ------------------------------------------------------------------------------ figures

    def _to_ns(self, case_s: float) -> int:
        assert self._clock is not None
        return round((case_s + self._clock.origin) * 1e9)

    def _to_case(self, ns: int) -> float:
        assert self._clock is not None
        return self._clock.at(ns / 1e9)

    def _records_of(self, server_id: str) -> tuple[R | None, str | None]:
        if self._reason is not None:
            return None, self._reason
        if server_id not in self._servers:
            name = self._names.get(server_id)
            if name is None:
                return None, f"server {server_id} was not known to the {self._label}"
            return None, f"server {name} has no address {self._address_use}"
        if not self._stopped:
            return None, f"the {self._label} was asked for a figure before it was stopped"
        if self._records is None or self._recording_end_ns is None:
            return None, self._reason or f"the {self._process} left no records"
        key, address = self._servers[server_id]
        return self._server_records(self._records, key, address)

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
        try:
            return self._figure(migration, server_id)
        except Exception as exc:  # a figure is never worth a case
            log.exception("%s: figure failed", self._label)
            return ProbeFigure(None, None, f"{self._label} error: {type(exc).__name__}: {exc}")

    def _figure(self, migration: MigrationRecord, server_id: str) -> ProbeFigure:
        records, why = self._records_of(server_id)
        if records is None or self._recording_end_ns is None:
            return ProbeFigure(None, None, why)
        resolution = round(self.period_ns / 1e6, 3)
        start_ns = self._to_ns(migration.requested_at)
        if migration.finished_at is not None:
            end_ns = self._to_ns(migration.finished_at + self.MARGIN_S)
        else:
            end_ns = self._recording_end_ns
        if self._died is not None and end_ns >= self._recording_end_ns:
            return ProbeFigure(
                None,
                resolution,
                f"{self._died}; it stopped {self._to_case(self._recording_end_ns):.3f} s into the case, "
                f"before this migration's window ended",
            )
        threshold = self.brownout_threshold_ms()
        w = self._window_of(
            records,
            start_ns,
            end_ns,
            period_ns=self.period_ns,
            recording_end_ns=self._recording_end_ns,
            threshold_ms=threshold,
        )
        address = self._servers[server_id][1]
        if w.downtime is None:
            return ProbeFigure(None, resolution, f"{address}: {w.reason}")
        window = {
            "gap_from_s": self._to_case(w.downtime.before_ns),
            "gap_to_s": self._to_case(w.downtime.after_ns),
            "window_s": [self._to_case(start_ns), self._to_case(min(end_ns, self._recording_end_ns))],
        }
        details = self._details(w, address, window, threshold)
        return ProbeFigure(
            round(w.downtime.ms, 3), resolution, None, details=details, brownout_ms=w.brownout_ms
        )

    def brownout_threshold_ms(self) -> float | None:
        """max(BROWNOUT_MIN_PERIODS periods, the case's noise floor); None before the noise floor."""
        if not self._noise_known:
            return None
        return gaps.brownout_threshold_ms(self.period_ns, self.BROWNOUT_MIN_PERIODS, self._noise_ms)

    def noise_floor(self, start_s: float, end_s: float) -> float | None:
        try:
            floor = self._noise_floor(start_s, end_s)
        except Exception:
            log.exception("%s: noise floor failed", self._label)
            floor = None
        self._noise_ms = floor
        self._noise_known = True
        return floor

    def _noise_floor(self, start_s: float, end_s: float) -> float | None:
        if self._reason is not None or not self._stopped or self._records is None:
            return None
        lo, hi = self._to_ns(start_s), self._to_ns(end_s)
        if self._recording_end_ns is not None and hi > self._recording_end_ns:
            return None
        worst: float | None = None
        for server_id, (key, address) in self._servers.items():
            r = self._records.get(key)
            g = gaps.quiet_longest_gap_ms(r.recv_ns if r is not None else [], lo, hi)
            if g is None:
                log.warning(
                    "%s: %s (%s) %s in the noise window",
                    self._label,
                    server_id,
                    address,
                    self._silent_in_noise,
                )
                return None
            worst = g if worst is None else max(worst, g)
        return None if worst is None else round(worst, 3)

    def cost(self) -> ProbeCost | None:
        st = self._status
        if st is not None and st.get("state") in ("stopped", "running"):
            cpu = float(st["cpu_user_s"]) + float(st["cpu_sys_s"])
            wall = float(st["wall_s"])
            note, rate = self._cost_note(st)
            return ProbeCost(
                cpu_s=round(cpu, 3),
                wall_s=round(wall, 3),
                cpu_percent=round(100 * cpu / wall, 2) if wall > 0 else 0.0,
                rate_hz=rate,
                note=note,
            )
        if self._cpu_fallback is not None:
            cpu, wall = self._cpu_fallback
            return ProbeCost(
                cpu_s=round(cpu, 3),
                wall_s=round(wall, 3),
                cpu_percent=round(100 * cpu / wall, 2) if wall > 0 else 0.0,
                note=f"from /proc before the kill: {self._no_summary}",
            )
        return None

    def case_stats(self) -> dict[str, Any] | None:
        return None


def proc_cpu(pid: int) -> tuple[float, float] | None:
    """(cpu seconds, seconds alive) of a live process from /proc: the cost if it dies unsummarised."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    alive = uptime - int(fields[19]) / tick
    return cpu, alive
