"""The network probe's cost and resolution on this machine: the UDP echo prober at 500 Hz and 1 kHz
against one and two idle tiny guests (on a guest network namespace of its own), with SCHED_FIFO and
without. Per run: CPU of the prober as % of one core (steady state, from its own getrusage between
two status snapshots; and over the whole run including its start), achieved send rate, skipped
slots, replies/sent, send lateness p99, RTT p50/p99, and the resolution actually achieved with no
migration — p50/p99/max of the reply gaps, per guest. Then, per rate, the figure's accuracy on
guest 0: `--pauses` QMP stop/cont of 300 ms (network gap vs QEMU's STOP→RESUME timestamps) and
`--migrations` live migrations to a new QEMU on the same bridge (network gap vs QEMU's downtime and
the heartbeat's switchover gap, with the brownout against the measured noise floor). Prints
tables; not a test. Needs root (network namespace, SCHED_FIFO).

    .venv/bin/python bench/network_probe.py [--seconds 20] [--rates 500,1000] [--sched fifo,none]
                                            [--pauses 5] [--migrations 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from novamig.guest.image import build_tiny_image
from novamig.hypervisor import (
    GuestAddress,
    GuestNetwork,
    GuestSpec,
    HeartbeatCollector,
    QemuMachine,
    QemuMigrationSettings,
    accelerator_for,
    inject_pause,
    migrate,
    qemu_version,
)
from novamig.measure.contract import CaseClock, ServerInfo
from novamig.measure.echo import LATE_BUCKETS_US, read_records
from novamig.measure.network import NetworkProbe
from novamig.results import MigrationRecord
from novamig.stats import gaps, percentile

WARMUP_S = 2.0  # the steady-state window starts after this (interpreter start-up, ARP)


def _late_p99_us(hist: list[int]) -> str:
    total = sum(hist)
    if not total:
        return "-"
    acc = 0
    for bound, n in zip([*LATE_BUCKETS_US, None], hist, strict=True):
        acc += n
        if acc >= 0.99 * total:
            return f"≤{bound}" if bound is not None else f">{LATE_BUCKETS_US[-1]}"
    return "-"


def _run(
    servers: list[ServerInfo], netns: str, hz: int, *, sched: str, seconds: float, work: Path, protocol: str
) -> dict[str, Any]:
    probe = NetworkProbe(hz, netns, work, sched=sched, protocol=protocol)
    clock = CaseClock()
    probe.start(servers, clock)
    try:
        assert probe.dir is not None, "the prober did not start"
        time.sleep(WARMUP_S)
        first = json.loads((probe.dir / "echo.json").read_text())
        time.sleep(seconds)
    finally:
        probe.stop()
    final = json.loads((probe.dir / "echo.json").read_text())
    cpu0 = first["cpu_user_s"] + first["cpu_sys_s"]
    cpu1 = final["cpu_user_s"] + final["cpu_sys_s"]
    steady_cpu = 100 * (cpu1 - cpu0) / ((final["now_ns"] - first["now_ns"]) / 1e9)
    cost = probe.cost()
    records = read_records(probe.dir / "echo.bin")
    lo = int(first["now_ns"])
    hi = int(final["now_ns"])
    per_guest = []
    for i in range(len(servers)):
        r = records.get(i)
        if r is None:
            per_guest.append("no replies")
            continue
        g = [x.ms for x in gaps(r.recv_ns, lo, hi) if lo <= x.before_ns and x.after_ns <= hi]
        rtt = [(b - a) / 1e6 for a, b in zip(r.send_ns, r.recv_ns, strict=True) if lo <= b <= hi]
        per_guest.append(
            f"gap {percentile(g, 50):.2f}/{percentile(g, 99):.2f}/{max(g):.1f} "
            f"rtt {percentile(rtt, 50):.2f}/{percentile(rtt, 99):.2f}"
        )
    return {
        "steady_cpu": steady_cpu,
        "cost": cost,
        "final": final,
        "per_guest": per_guest,
    }


def _record(clock: CaseClock, start_ns: int, end_ns: int) -> MigrationRecord:
    return MigrationRecord(
        server="acc",
        source_host="local",
        status="completed",
        requested_at=clock.at(start_ns / 1e9),
        finished_at=clock.at(end_ns / 1e9),
    )


def _fmt(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _accuracy(
    stack: ExitStack,
    vm: QemuMachine,
    net: GuestNetwork,
    addr: GuestAddress,
    hz: int,
    *,
    pauses: int,
    migrations: int,
    work: Path,
    table: Table,
    protocol: str,
) -> QemuMachine:
    """Known pauses and live migrations of `vm` under the probe; returns the guest's current QEMU."""
    probe = NetworkProbe(hz, net.name, work, protocol=protocol)
    clock = CaseClock()
    server = ServerInfo("id-acc", vm.name, "local", addr.ip)
    probe.start([server], clock)
    rows: list[tuple[str, float | None, float | None, int, int]] = []  # what, ref, hb, start, end
    try:
        time.sleep(0.5)
        quiet = (clock.now(), clock.now() + 3.0)
        time.sleep(3.1)
        for _ in range(pauses):
            p = inject_pause(vm, 300)
            rows.append(("pause 300 ms", p.stop_resume_ms, p.gap_ms, p.stop_ns - 300_000_000, p.resume_ns))
            time.sleep(1.5)
        for _ in range(migrations):
            dst = stack.enter_context(QemuMachine(vm.spec.for_destination(network=net.attach(addr)), work))
            result = migrate(vm, dst, QemuMigrationSettings(timeout_s=60))
            hb = HeartbeatCollector(vm.agent, dst.agent).analyse(result)
            what = f"migration ({result.status})"
            rows.append(
                (what, result.qemu_downtime_ms, hb.switchover_gap_ms, result.started_ns, result.finished_ns)
            )
            vm.shutdown()
            vm = dst
            time.sleep(1.5)
    finally:
        probe.stop()
    floor = probe.noise_floor(*quiet)
    for what, ref, hb_gap, start, end in rows:
        fig = probe.figure(_record(clock, start, end), server.id, None)
        d = fig.details or {}
        error = None if fig.downtime_ms is None or ref is None else fig.downtime_ms - ref
        table.add_row(
            str(hz),
            what,
            _fmt(ref),
            _fmt(hb_gap),
            _fmt(fig.downtime_ms) if fig.downtime_ms is not None else f"- ({fig.reason})",
            _fmt(error) if what.startswith("pause") else "-",
            _fmt(floor),
            _fmt(fig.brownout_ms),
            str(d.get("lost", "-")),
            _fmt(d.get("rtt_p99_ms")),
        )
    return vm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0, help="steady-state seconds per run")
    ap.add_argument("--rates", default="500,1000")
    ap.add_argument("--sched", default="fifo,none", help="comma-separated: fifo, nice, none")
    ap.add_argument("--guests", default="1,2")
    ap.add_argument("--pauses", type=int, default=5, help="300 ms QMP pauses per rate (accuracy)")
    ap.add_argument("--migrations", type=int, default=3, help="live migrations per rate (accuracy)")
    ap.add_argument("--protocol", choices=["udp", "icmp"], default="udp", help="what the prober sends")
    args = ap.parse_args()
    rates = [int(x) for x in args.rates.split(",")]
    scheds = args.sched.split(",")
    counts = [int(x) for x in args.guests.split(",")]
    console = Console(width=200)
    image = build_tiny_image()
    verdict = accelerator_for(image)
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    console.print(
        f"machine: {platform.node()} {cpu}, {os.cpu_count()} cores, QEMU {qemu_version()}, "
        f"{verdict.accelerator}; guests: tiny, 128 MiB, idle, 1 kHz heartbeat"
    )
    what = "UDP echo" if args.protocol == "udp" else "ICMP echo"
    table = Table(title=f"{what} prober, {args.seconds:g} s steady state per run (after {WARMUP_S:g} s)")
    for col in (
        "guests",
        "Hz",
        "sched",
        "cpu % steady",
        "cpu % whole run",
        "achieved Hz",
        "skipped",
        "replies/sent",
        "send late p99 µs",
        "per guest: reply gap p50/p99/max ms, rtt p50/p99 ms",
    ):
        table.add_column(col)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="novamig-bench-np-")))
        net = stack.enter_context(GuestNetwork())
        servers: list[ServerInfo] = []
        vms: list[QemuMachine] = []
        addrs: list[GuestAddress] = []
        for n in range(max(counts)):
            addr = net.new_address()
            spec = GuestSpec(
                name=f"np{n}",
                image=image,
                memory_mib=128,
                kernel_args=addr.kernel_args(),
                network=net.attach(addr),
            )
            vm = stack.enter_context(QemuMachine(spec, work))
            vm.wait_ready(60)
            vms.append(vm)
            addrs.append(addr)
            servers.append(ServerInfo(f"id-{n}", spec.name, "local", addr.ip))
        time.sleep(2.0)
        for count in counts:
            for hz in rates:
                for sched in scheds:
                    r = _run(
                        servers[:count], net.name, hz, sched=sched, seconds=args.seconds, work=work,
                        protocol=args.protocol,
                    )  # fmt: skip
                    st, cost = r["final"], r["cost"]
                    table.add_row(
                        str(count),
                        str(hz),
                        st["sched"],
                        f"{r['steady_cpu']:.1f}",
                        f"{cost.cpu_percent:.1f}" if cost else "-",
                        f"{st['achieved_hz']:.1f}",
                        str(st["skipped"]),
                        f"{sum(st['received'])}/{sum(st['sent'])}",
                        _late_p99_us(st["late_hist"]),
                        "; ".join(r["per_guest"]),
                    )
                    console.print(f"done: {count} guest(s), {hz} Hz, {sched}: {r['steady_cpu']:.1f} % cpu")
        console.print(table)
        if args.pauses or args.migrations:
            acc = Table(title="accuracy on guest 0 (sched fifo): network gap vs QEMU's own figures")
            for col in (
                "Hz",
                "event",
                "QEMU ms (STOP→RESUME | downtime)",
                "heartbeat gap ms",
                "network downtime ms",
                "error ms",
                "noise floor ms",
                "brownout ms",
                "lost",
                "rtt p99 ms",
            ):
                acc.add_column(col)
            vm = vms[0]
            for hz in rates:
                vm = _accuracy(
                    stack,
                    vm,
                    net,
                    addrs[0],
                    hz,
                    pauses=args.pauses,
                    migrations=args.migrations,
                    work=work,
                    table=acc,
                    protocol=args.protocol,
                )
                console.print(f"done: accuracy at {hz} Hz")
            console.print(acc)


if __name__ == "__main__":
    main()
