"""`novamig selfcheck`: can this machine run novamig, and does its measurement tell the truth?

It boots the tiny guest, measures the heartbeat noise floor, injects pauses of known length with QMP
`stop`/`cont` and compares the heartbeat gap with QEMU's STOP→RESUME timestamps, then runs one idle
migration and shows QEMU's downtime, STOP→RESUME and the heartbeat gap side by side: three figures
that differ for real reasons (see README, "What each downtime means").

Exit codes: 0 everything worked; 1 it ran but a measurement was outside its tolerance or the
migration failed; 3 this machine cannot run guests (reason printed).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from novamig.exitcodes import ExitCode
from novamig.guest.image import build_tiny_image
from novamig.hypervisor.binary import qemu_version
from novamig.hypervisor.errors import HypervisorError
from novamig.hypervisor.heartbeat import HeartbeatCollector, measure_noise_floor, measure_pause
from novamig.hypervisor.machine import GuestSpec, QemuMachine, accelerator_for
from novamig.hypervisor.migration import migrate
from novamig.hypervisor.policy import QemuMigrationSettings

PAUSES_MS = (50.0, 100.0, 500.0)


def pause_tolerance_ms(reference_ms: float) -> float:
    """The accuracy bound of the pause measurement: max(5 ms, 5 %)."""
    return max(5.0, 0.05 * reference_ms)


@dataclass
class SelfcheckReport:
    accelerator: str = "unknown"
    accelerator_reason: str = ""
    qemu_version: str = "unknown"
    kernel_version: str = ""
    boot_s: float | None = None
    noise_floor_ms: float | None = None
    noise_floor_p99_ms: float | None = None
    pauses: list[dict[str, Any]] = field(default_factory=list)
    migration: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unusable: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "accelerator": self.accelerator,
            "accelerator_reason": self.accelerator_reason,
            "qemu_version": self.qemu_version,
            "kernel_version": self.kernel_version,
            "boot_s": self.boot_s,
            "noise_floor_ms": self.noise_floor_ms,
            "noise_floor_p99_ms": self.noise_floor_p99_ms,
            "pauses": self.pauses,
            "migration": self.migration,
            "problems": self.problems,
            "ok": not self.problems and self.unusable is None,
            "unusable": self.unusable,
        }


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def _check_pauses(src: QemuMachine, rep: SelfcheckReport, say: Callable[[str], None]) -> None:
    """Inject each pause in `PAUSES_MS` and compare the heartbeat's figure with STOP→RESUME."""
    for ms in PAUSES_MS:
        say(f"injecting a {ms:.0f} ms pause")
        est = measure_pause(src, ms, repeats=5)
        p = est.median
        if p is None:
            rep.pauses.append(
                {
                    "injected_ms": ms,
                    "stop_resume_ms": None,
                    "measured_ms": None,
                    "error_ms": None,
                    "within_tolerance": False,
                    "attempts": len(est.attempts),
                    "clean": 0,
                }
            )
            worst = max((a.starved_ms or 0.0) for a in est.attempts)
            rep.problems.append(
                f"pause {ms:.0f} ms: the host starved the guest around every attempt (up to "
                f"{worst:.0f} ms by the guest's own clock): this machine is too loaded to measure"
            )
            continue
        err = p.error_ms
        ok = err is not None and abs(err) <= pause_tolerance_ms(p.stop_resume_ms)
        rep.pauses.append(
            {
                "injected_ms": ms,
                "stop_resume_ms": _r(p.stop_resume_ms, 2),
                "measured_ms": _r(p.measured_ms, 2),
                "error_ms": _r(err, 2),
                "within_tolerance": ok,
                "attempts": len(est.attempts),
                "clean": len(est.clean),
                "errors_ms": [_r(r.error_ms, 2) for r in est.clean],
            }
        )
        if not ok:
            tol = pause_tolerance_ms(p.stop_resume_ms)
            rep.problems.append(
                f"pause {ms:.0f} ms: heartbeat measured {p.measured_ms} ms vs STOP→RESUME "
                f"{p.stop_resume_ms:.1f} ms (tolerance ±{tol:.1f} ms)"
            )


def _check_migration(src: QemuMachine, work: Path, rep: SelfcheckReport, say: Callable[[str], None]) -> None:
    """Migrate the idle guest to a second QEMU and record QEMU's and the heartbeat's figures."""
    say("migrating the idle guest")
    dst = QemuMachine(src.spec.for_destination(), work)
    try:
        dst.launch()
        result = migrate(src, dst, QemuMigrationSettings(timeout_s=120))
        hb = HeartbeatCollector(src.agent, dst.agent).analyse(result)
        rep.migration = {
            "status": str(result.status),
            "total_ms": result.total_ms,
            "qemu_downtime_ms": result.qemu_downtime_ms,
            "stop_resume_ms": _r(result.stop_resume_ms, 2),
            "heartbeat_gap_ms": _r(hb.switchover_gap_ms, 2),
        }
        if result.status != "completed":
            rep.problems.append(f"migration {result.status}: {result.error}")
    finally:
        dst.shutdown()


def run_selfcheck(progress: Any = None) -> SelfcheckReport:
    """Run every check; never raises for machine problems (they land in the report)."""

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    rep = SelfcheckReport()
    try:
        rep.qemu_version = qemu_version()
        say("building the tiny guest image (cached after the first time)")
        image = build_tiny_image()
        rep.kernel_version = image.kernel_version
        say("choosing the accelerator (boot probe)")
        verdict = accelerator_for(image)
        rep.accelerator, rep.accelerator_reason = verdict.accelerator, verdict.reason
    except Exception as exc:
        rep.unusable = f"{type(exc).__name__}: {exc}"
        return rep

    with tempfile.TemporaryDirectory(prefix="novamig-selfcheck-") as tmp:
        work = Path(tmp)
        spec = GuestSpec(name="selfcheck", image=image, memory_mib=256, kernel_args=("novamig.hb_hz=1000",))
        src = QemuMachine(spec, work)
        try:
            say("booting the guest")
            t0 = time.monotonic()
            try:
                src.launch()
                src.wait_ready(90)
            except HypervisorError as exc:
                rep.unusable = str(exc)
                return rep
            rep.boot_s = round(time.monotonic() - t0, 2)
            src.agent.beats.wait_for(200, 5.0)
            say("measuring the heartbeat noise floor (2 s)")
            floor = measure_noise_floor(src.agent, 2.0)
            rep.noise_floor_ms = _r(floor.max_ms, 2)
            rep.noise_floor_p99_ms = _r(floor.p99_ms, 2)
            _check_pauses(src, rep, say)
            _check_migration(src, work, rep, say)
        except HypervisorError as exc:
            rep.problems.append(str(exc))
        finally:
            src.shutdown()
    return rep


def _render(rep: SelfcheckReport) -> None:
    console = Console()
    head = Table(title="novamig selfcheck", show_header=False)
    head.add_row("QEMU", rep.qemu_version)
    head.add_row("accelerator", f"{rep.accelerator} ({rep.accelerator_reason})")
    head.add_row("guest kernel", rep.kernel_version)
    head.add_row("boot to agent READY", f"{rep.boot_s} s")
    head.add_row(
        "heartbeat noise floor", f"max {rep.noise_floor_ms} ms, p99 {rep.noise_floor_p99_ms} ms (1 kHz)"
    )
    console.print(head)

    pauses = Table(title="injected pauses (QMP stop/cont)")
    for col in ("injected ms", "STOP→RESUME ms", "heartbeat ms", "error ms", "ok"):
        pauses.add_column(col, justify="right")
    for p in rep.pauses:
        pauses.add_row(
            f"{p['injected_ms']:.0f}",
            str(p["stop_resume_ms"]),
            str(p["measured_ms"]),
            str(p["error_ms"]),
            "yes" if p["within_tolerance"] else "NO",
        )
    console.print(pauses)

    if rep.migration:
        m = rep.migration
        mig = Table(title=f"idle migration: {m['status']}, total {m['total_ms']} ms")
        for col in ("QEMU downtime ms", "STOP→RESUME ms", "heartbeat gap ms"):
            mig.add_column(col, justify="right")
        mig.add_row(str(m["qemu_downtime_ms"]), str(m["stop_resume_ms"]), str(m["heartbeat_gap_ms"]))
        console.print(mig)
    for problem in rep.problems:
        console.print(f"[red]problem:[/red] {problem}")


def cmd_selfcheck(as_json: bool) -> int:
    """Entry point of `novamig selfcheck [--json]`."""
    progress = None if as_json else (lambda msg: print(f"… {msg}", file=sys.stderr, flush=True))
    rep = run_selfcheck(progress)
    if as_json:
        print(json.dumps(rep.to_json(), indent=2))
    elif rep.unusable is not None:
        print(f"novamig selfcheck: this machine cannot run novamig guests:\n{rep.unusable}", file=sys.stderr)
    else:
        _render(rep)
    if rep.unusable is not None:
        return int(ExitCode.INFRASTRUCTURE)
    return int(ExitCode.FAILED) if rep.problems else int(ExitCode.OK)
