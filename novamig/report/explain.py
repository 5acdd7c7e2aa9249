"""Why the vantage points of one migration differ: a known cause, or plainly "unexplained".

The four downtime figures of a migration measure different things (docs/measurement.md), so they
are expected to differ; a reader of the report should not have to guess why. Two figures are said
to differ only when the gap is larger than what the probes cannot resolve: both resolutions plus
both noise floors (a missing one counts as 0). Then the rules below, each from a measured effect
and each reading only what results.json holds, name the cause:

- **QEMU's figure below the others**: QEMU measures on the source only, from the stop to the end of
  the last transfer; the destination's device load and resume and the guest's own time to answer
  again are outside it (in the smoke runs QEMU said 4–111 ms where the guest's heartbeat gap was
  41–337 ms). When QEMU's STOP→RESUME (both sides, from QMP event times) is known, it is given,
  and when the others exceed it too, the rest comes after the resume: the guest's own time to run
  and answer again (33–55 ms after STOP under TCG, docs/measurement.md).
- **a guest-side figure above the network's after a post-copy switch**: the guest runs on the
  destination and stalls on every page still on the source (``postcopy_blocktime_ms``).
- **a guest-side figure above the network's under auto-converge**: the vCPUs were throttled before
  the stop (``throttle_max_percent``), so the guest beat or answered late before going dark.
- **the network's figure above the guest heartbeat's**: the echo is answered by another thread of
  the guest than the one that beats (the agent's echo loop for UDP, the kernel for ICMP); after the
  resume the guest's scheduler decides which runs first, and under load in the guest the echo's
  answer can come late — by as much as the slowest echo round trip of the window
  (``details.network.rtt_max_ms``). The one network-only step, the bridge learning the guest's
  MAC on its new port after QEMU's announce, takes 0.1–0.4 ms here (`MAC_MOVE_MS`): too little to
  explain more. A difference beyond that slowest round trip plus the MAC move plus both
  resolutions and noise floors is unexplained, with the numbers.
- **Locust above the others**, when the figure carries its breakdown (``details.locust``:
  ``longest_gap_ms``, ``waiting_ms``, ``failing_ms``, ``idle_ms``): which part of the gap had a
  request outstanding (the service answering late), only failing requests (time-outs, resets) or
  none (Locust's own scheduling), and — against the network's blackout — how long before and
  after it no request was answered. Measured on ``scenarios/locust-web.yaml``: a request was
  outstanding for over 99 % of every gap, which began up to 565 ms before the network's blackout
  and ended 155–704 ms after it: the web application inside the guest answering slowly around the
  switchover (docs/measurement.md, "locust"). Older results without the breakdown: Locust inside
  the guest shares its vCPU with the app it loads, so its figure includes the guest's scheduling
  around the switchover; Locust on the runner talks TCP, and a request sent into the blackout
  waits for a retransmission timeout (at least 200 ms) — a likely cause, not verified (runner
  Locust on locust-web saw no failed request in any window, and the breakdown now says which).

Anything else is reported as unexplained, with the numbers, rather than given a guessed cause.
"""

from __future__ import annotations

from dataclasses import dataclass

from novamig.results import CaseResult, MigrationRecord

GUEST_SIDE = ("guest", "locust")
"""Vantage points whose figure needs the guest's user space to run (the heartbeat agent; Locust or
the app it loads); the network probe's echo is answered by the guest's kernel."""


MAC_MOVE_MS = 0.4
"""The longest the embedded cloud's bridge took to move the guest's MAC to the destination's port
after QEMU's announce (0.1–0.4 ms measured): the only part of the network's path that changes."""


@dataclass(frozen=True)
class Figure:
    probe: str
    value: float
    slack: float
    """Resolution plus noise floor of this probe: what it cannot tell from nothing."""


def _figures(m: MigrationRecord, case: CaseResult) -> dict[str, Figure]:
    found = {}
    for probe in ("guest", "network", "locust", "hypervisor"):
        value = getattr(m.downtime_ms, probe)
        if value is None:
            continue
        resolution = getattr(m.resolution_ms, probe) or 0.0
        floor = getattr(case.noise_floor_ms, probe) or 0.0
        found[probe] = Figure(probe, float(value), resolution + floor)
    return found


def _differ(a: Figure, b: Figure) -> bool:
    return abs(a.value - b.value) > a.slack + b.slack


def _post_copy(m: MigrationRecord) -> bool:
    if m.hypervisor is not None and m.hypervisor.postcopy:
        return True
    return any("post-copy" in s.status for s in m.progress) or any("post-copy" in e.what for e in m.events)


def _qemu_line(m: MigrationRecord, qemu: Figure, above: list[Figure]) -> str:
    names = ", ".join(f"{f.probe} {f.value:.0f} ms" for f in above)
    line = (
        f"QEMU's {qemu.value:.0f} ms is below {names}: QEMU measures on the source only, from the stop "
        "to the end of the last transfer; the destination's device load and resume, and the guest's "
        "time to answer again, are outside it"
    )
    stop_resume = m.hypervisor.stop_resume_ms if m.hypervisor is not None else None
    if stop_resume is not None:
        line += f" (QEMU's STOP→RESUME across both hosts: {float(stop_resume):.0f} ms"
        if any(_differ(f, Figure("STOP→RESUME", float(stop_resume), qemu.slack)) for f in above):
            line += (
                "; the rest comes after the resume: the guest's time to run and answer again — "
                "tens of ms under TCG"
            )
        line += ")"
    return line + "."


def _network_above_guest(m: MigrationRecord, high: Figure, low: Figure) -> str | None:
    """The network figure above the heartbeat's: the echo's thread answered after the beating
    one (bounded by the window's slowest echo), or — beyond that bound — unexplained, with the
    numbers. None when the window's echo round trips are not known (the generic line then)."""
    echo = m.details.network
    rtt = echo.rtt_max_ms if echo is not None else None
    if rtt is None:
        return None
    excess = high.value - low.value
    bound = float(rtt) + MAC_MOVE_MS + high.slack + low.slack
    if excess <= bound:
        return (
            f"{high.probe} {high.value:.0f} ms is above {low.probe} {low.value:.0f} ms: the echo is "
            "answered by another guest thread than the heartbeat (the agent's echo loop, or the kernel "
            "for ICMP) and after the resume the guest ran the heartbeat's first; the echo answered as "
            f"late as {float(rtt):.0f} ms in this window, which covers the {excess:.0f} ms (the bridge's "
            "MAC move after QEMU's announce is 0.1–0.4 ms here, too little to matter)."
        )
    return (
        f"{high.probe} {high.value:.0f} ms is above {low.probe} {low.value:.0f} ms by {excess:.0f} ms, "
        f"more than the window's slowest echo ({float(rtt):.0f} ms), the bridge's MAC move "
        f"({MAC_MOVE_MS} ms at most) and the {high.slack + low.slack:.0f} ms of their resolutions and "
        "noise floors together: unexplained (no known cause fits)."
    )


def _ms(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _around_blackout(m: MigrationRecord, low: Figure) -> str:
    """Where Locust's gap lies against the network's blackout (both in case seconds), or ""."""
    locust, echo = m.details.locust, m.details.network
    span = locust.blackout_s if locust is not None else None
    if low.probe != "network" or echo is None or not span or len(span) != 2:
        return ""
    a, b, na, nb = float(span[0]), float(span[1]), _ms(echo.gap_from_s), _ms(echo.gap_to_s)
    if na is None or nb is None:
        return ""
    if na >= b or nb <= a:
        return (
            f"; the gap ({a:.2f}–{b:.2f} s) is not at the network's blackout ({na:.2f}–{nb:.2f} s): "
            "the application stalled elsewhere in the migration"
        )
    return (
        f"; it began {max(0.0, na - a) * 1000:.0f} ms before the network's blackout and ended "
        f"{max(0.0, b - nb) * 1000:.0f} ms after it"
    )


def _locust_breakdown(m: MigrationRecord, high: Figure, low: Figure) -> str | None:
    """The Locust figure's own breakdown (waiting / failing / idle), or None for older results."""
    locust = m.details.locust
    if locust is None:
        return None
    gap, waiting = _ms(locust.longest_gap_ms), _ms(locust.waiting_ms)
    failing, idle = _ms(locust.failing_ms) or 0.0, _ms(locust.idle_ms) or 0.0
    if gap is None or waiting is None or gap <= 0:
        return None
    parts = [f"for {waiting:.0f} ms of it a request was outstanding (the service answering late)"]
    if failing:
        parts.append(f"for {failing:.0f} ms only failing requests (time-outs, resets, reconnects)")
    if idle:
        parts.append(f"for {idle:.0f} ms none (Locust's own scheduling, not the service)")
    where = " inside the guest" if locust.where == "guest" else ""
    line = f"no request to the web application{where} was answered for {gap:.0f} ms: " + "; ".join(parts)
    around = _around_blackout(m, low)
    line += around
    if waiting >= 0.5 * gap:
        line += "; the application ran too slowly to answer"
        line += "" if "not at the network's blackout" in around else " around the switchover"
    return line


def _locust_line(m: MigrationRecord, locust: Figure, others: list[Figure]) -> str | None:
    """One sentence for Locust above every figure it exceeds, from its breakdown (placed against
    the network's blackout when the network is among them); None for results without it."""
    lows = [f for f in others if f.probe != "locust" and f.value < locust.value and _differ(f, locust)]
    if not lows:
        return None
    network = next((f for f in lows if f.probe == "network"), lows[0])
    cause = _locust_breakdown(m, locust, network)
    if cause is None:
        return None
    names = " and ".join(f"{f.probe} {f.value:.0f} ms" for f in lows)
    return f"{locust.probe} {locust.value:.0f} ms is above {names}: {cause}."


def _cause(m: MigrationRecord, high: Figure, low: Figure) -> str | None:
    """The known cause of `high` reading above `low` (neither of them QEMU's), or None."""
    hv = m.hypervisor
    if high.probe == "locust" and m.details.locust is not None and m.details.locust.where == "guest":
        lost = m.details.locust.guest_clock_lost_ms
        extra = f"; {float(lost):.0f} ms of it is the guest clock's step" if lost is not None else ""
        return (
            "Locust runs inside the guest and shares its vCPU with the app it loads: its figure "
            f"includes the guest's scheduling around the switchover{extra}"
        )
    if high.probe in GUEST_SIDE and low.probe == "network" and _post_copy(m):
        blocked = hv.postcopy_blocktime_ms if hv is not None else None
        extra = f" (vCPUs blocked {float(blocked):.0f} ms in all)" if blocked is not None else ""
        return (
            "post-copy: after the switch the guest runs on the destination and stalls on each page "
            f"still on the source{extra}, and the {high.probe} figure counts those stalls"
        )
    throttle = hv.throttle_max_percent if hv is not None else None
    if high.probe in GUEST_SIDE and low.probe == "network" and throttle:
        return (
            f"auto-converge throttled the vCPUs up to {float(throttle):.0f} % before the stop: the guest "
            "ran slowly and answered late before it went dark"
        )
    if high.probe == "locust":
        return (
            "Locust on the runner talks TCP: a request sent into the blackout waits for a retransmission "
            "timeout (at least 200 ms) — a likely cause, not verified"
        )
    return None


def explain(m: MigrationRecord, case: CaseResult) -> list[str]:
    """Sentences saying why this migration's figures differ; empty when they agree."""
    figures = _figures(m, case)
    lines = []
    qemu = figures.pop("hypervisor", None)
    if qemu is not None:
        above = [f for f in figures.values() if f.value > qemu.value and _differ(f, qemu)]
        if above:
            lines.append(_qemu_line(m, qemu, above))
        below = [f for f in figures.values() if f.value < qemu.value and _differ(f, qemu)]
        if below:
            names = ", ".join(f"{f.probe} {f.value:.0f} ms" for f in below)
            lines.append(
                f"QEMU's {qemu.value:.0f} ms is above {names}, beyond their resolutions and noise floors: "
                "unexplained (QEMU's figure leaves out the resume, so it is usually the smallest)."
            )
    others = list(figures.values())
    said_locust = False
    for i, a in enumerate(others):
        for b in others[i + 1 :]:
            if not _differ(a, b):
                continue
            high, low = (a, b) if a.value > b.value else (b, a)
            if (high.probe, low.probe) == ("network", "guest") and (
                line := _network_above_guest(m, high, low)
            ):
                lines.append(line)
                continue
            if high.probe == "locust" and (line := _locust_line(m, high, others)):
                if not said_locust:  # one sentence for every figure Locust is above
                    lines.append(line)
                said_locust = True
                continue
            gap = f"{high.probe} {high.value:.0f} ms is above {low.probe} {low.value:.0f} ms"
            bound = f"beyond the {high.slack + low.slack:.0f} ms of their resolutions and noise floors"
            cause = _cause(m, high, low)
            lines.append(
                f"{gap}: {cause}." if cause else f"{gap}, {bound}: unexplained (no known cause fits)."
            )
    return lines
