"""Figures of each pause/unpause of a server: a known pause, injected through the whole stack.

Why: a probe's error is known only against a pause whose length is known. A Nova pause goes
API → conductor → compute → this driver → QMP ``stop``; unpause → ``cont``. The driver stamps both
commands on the host's CLOCK_MONOTONIC (the clock the runner's probes stamp their records with, so
a test compares them directly) and, once the guest beats again, measures the heartbeat gap over
the pause from its virtio-serial channel. One JSON line per unpause in
``<workdir>/pauses/<server uuid>.jsonl`` (documented in novamig/embedded/README.md):

``stop_sent_ns``/``stop_done_ns`` and ``cont_sent_ns``/``cont_done_ns`` bound the vCPUs' stop and
restart: the pause lasted between ``pause_min_ms`` (cont sent − stop done) and ``pause_max_ms``
(cont done − stop sent). ``heartbeat_gap_ms`` is the longest gap between host arrivals of beats
around the pause (null when the guest sent none after it within 5 s), ``heartbeat_noise_floor_ms``
the longest gap in the 2 s before the stop (its noise floor, what the figure's error is judged by).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from novamig.stats import gaps, longest_gap

LOG = logging.getLogger(__name__)

BEAT_WAIT_S = 5.0  # for the first beat after cont
MARGIN_NS = 50_000_000  # the gap is looked for from 50 ms before the stop
NOISE_WINDOW_NS = 2_000_000_000  # the heartbeat's noise floor: its longest gap in the 2 s before


def figures(machine: Any, stopped: tuple[int, int], resumed: tuple[int, int]) -> dict[str, Any]:
    stop_sent, stop_done = stopped
    cont_sent, cont_done = resumed
    beat_gap = noise = None
    channel = getattr(machine, "agent", None)
    if channel is not None and channel.beats.wait_after(cont_done, BEAT_WAIT_S):
        times = channel.beats.host_times()
        gap = longest_gap(times, stop_sent - MARGIN_NS, cont_done + MARGIN_NS)
        beat_gap = round(gap.ms, 3) if gap is not None else None
        quiet = [
            g.ms
            for g in gaps(times, stop_sent - NOISE_WINDOW_NS, stop_sent - MARGIN_NS)
            if g.after_ns <= stop_sent - MARGIN_NS
        ]
        noise = round(max(quiet), 3) if quiet else None
    return {
        "stop_sent_ns": stop_sent,
        "stop_done_ns": stop_done,
        "cont_sent_ns": cont_sent,
        "cont_done_ns": cont_done,
        "pause_min_ms": round((cont_sent - stop_done) / 1e6, 3),
        "pause_max_ms": round((cont_done - stop_sent) / 1e6, 3),
        "heartbeat_gap_ms": beat_gap,
        "heartbeat_noise_floor_ms": noise,
    }


def record_async(
    directory: Path, server_uuid: str, machine: Any, stopped: tuple[int, int], resumed: tuple[int, int]
) -> threading.Thread:
    """Write the figures from a thread: waiting for the guest's next beat must not hold up Nova's
    unpause (which returns as soon as QEMU runs again)."""

    def write() -> None:
        try:
            line = json.dumps(figures(machine, stopped, resumed))
            directory.mkdir(parents=True, exist_ok=True)
            with (directory / f"{server_uuid}.jsonl").open("a") as f:
                f.write(line + "\n")
        except Exception:  # a figure lost, never the unpause
            LOG.warning("pause figures of %s not written", server_uuid, exc_info=True)

    thread = threading.Thread(target=write, name=f"novamig-pause-{server_uuid[:8]}", daemon=True)
    thread.start()
    return thread
