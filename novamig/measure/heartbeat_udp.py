"""The guest vantage point over the network: the agent's heartbeat sent by UDP to a runner-side collector.

On the embedded cloud the driver reads the agent's heartbeat from the virtio-serial channel. On
other clouds (DevStack) the host's channel is out of the runner's reach, so the agent also sends
every beat as one UDP datagram (``novamig.hb_udp=<ipv4>:<port>``, written by the server's user-data:
``GuestSetup.heartbeat_udp``) and `UdpHeartbeatProbe` receives them in a collector process of its
own (`novamig.measure.heartbeat_udp_collector`), stamping each arrival on CLOCK_MONOTONIC — the clock
of the runner's `time.monotonic()` and of `CaseClock`.

**Where the runner must bind** (`bind`, the address the guests send to): an address the guests can
reach, from which their datagrams arrive with the source address the runner knows the server by
(`ServerInfo.address`: its floating address when it has one, else its fixed one), because servers
are told apart by that source address. A floating IP's NAT (DevStack's router, the embedded cloud's
nftables) rewrites the source to the floating address, which is that address; a router's SNAT to
its own address (a server without a floating IP, the collector outside its network) is not, and
such a guest is not recognised: the figure then says which senders were seen.

* the scenario's ``measure.heartbeat_collector`` when set;
* else the source address of this machine's route to the guests' subnet — the floating-IP network's
  when the case uses floating IPs — inside the probes' namespace (`novamig.measure.collector_address`,
  chosen by the runner before the servers boot): on the embedded cloud ``192.168.1.1`` (or
  ``10.78.0.1`` with floating IPs) in `guest_netns` (pass ``netns=<guest_netns>``, the collector
  enters it before binding); on DevStack br-ex's ``172.24.4.1`` (``netns=None``).

Definitions (per server; the same as the network probe's, novamig.measure.network, with beats for
replies — docs/measurement.md, "guest", says the same for readers of results):

* **window**: ``[requested_at, finished_at + MARGIN_S]`` in case seconds; with no ``finished_at``,
  up to the end of the recording; cut at the end of the recording.
* **downtime** (``downtime_ms.guest``): the longest arrival gap between two consecutive beats of
  the server overlapping the window, whole. A paused guest sends nothing; a lost datagram also
  shows as a gap (``details.lost`` counts missing sequence numbers, ``details.guest_gap_ms`` says
  how far the guest's own clock advanced across the gap: about one period when the guest was
  stopped, the whole gap when it ran and its beats were lost on the way).
* **resolution**: one beat period (``1000 / hz`` ms).
* **noise floor**: the longest arrival gap of any server wholly inside a window with no migration.
* **brownout** (``brownout_ms.guest``): with ``T = max(3 periods, noise floor)``, every other gap
  ``(a, b)`` in the window longer than ``T`` contributes the part of ``[a + period, b]`` inside it.

A figure is None with a reason when it cannot be trusted (no beat from the server, none before the
window, beats not resumed before the collector stopped, the collector died before the window
ended). Nothing here raises into the runner.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novamig.measure import gaps
from novamig.measure.heartbeat_udp_collector import Beats, read_records
from novamig.measure.spawned_probe import SpawnedProbe
from novamig.stats import Gap

_WORDS = gaps.Wording("beat", "beats", "collector", "the guest had not beaten again")


@dataclass(frozen=True)
class BeatWindow:
    """What one server's beats say about one window (times monotonic ns)."""

    downtime: Gap | None
    reason: str | None
    brownout_ms: float | None
    beats: int  # beats that arrived inside the window
    lost: int  # sequence numbers missing among them (datagrams lost, or beats the guest dropped)
    guest_gap_ms: float | None  # the guest's clock across the downtime gap
    brownout_gaps: int


def beat_window(
    beats: Beats,
    start_ns: int,
    end_ns: int,
    *,
    period_ns: int,
    recording_end_ns: int,
    threshold_ms: float | None,
) -> BeatWindow:
    """Downtime and brownout of one server's beats within [start_ns, end_ns] (pure arithmetic).

    The gaps are `novamig.measure.gaps`' (shared with the network probe); what is the heartbeat's
    own is the missing sequence numbers and how far the guest's clock advanced across the downtime.
    """
    w = gaps.window_gaps(
        beats.recv_ns,
        start_ns,
        end_ns,
        period_ns=period_ns,
        recording_end_ns=recording_end_ns,
        threshold_ms=threshold_ms,
    )
    if isinstance(w, gaps.Untrusted):
        return BeatWindow(None, gaps.reason(w, _WORDS), None, 0, 0, None, 0)
    recv = beats.recv_ns
    seqs = sorted(set(beats.seq[w.first_in : w.last_in]))
    lost = max(0, seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    after = bisect.bisect_left(recv, w.downtime.after_ns)
    guest_gap = None
    if 0 < after < len(recv):
        step = beats.guest_ns[after] - beats.guest_ns[after - 1]
        guest_gap = round(step / 1e6, 3) if step >= 0 else None  # negative: the agent restarted
    return BeatWindow(
        w.downtime, None, w.brownout_ms, w.last_in - w.first_in, lost, guest_gap, w.brownout_gaps
    )


def quiet_longest_gap_ms(beats: Beats, start_ns: int, end_ns: int) -> float | None:
    """The longest arrival gap wholly inside [start_ns, end_ns]; None with fewer than two beats there."""
    return gaps.quiet_longest_gap_ms(beats.recv_ns, start_ns, end_ns)


class UdpHeartbeatProbe(SpawnedProbe[str, Beats, BeatWindow]):
    """The guest agents' heartbeats over UDP, received by a collector bound to `bind`.

    `hz`: the rate the agents beat at (``measure.heartbeat_hz``; the resolution). `bind`: (IPv4,
    port) the collector binds and the agents send to — see the module docstring for which address;
    `target` is the ``ip:port`` text for ``GuestSetup.heartbeat_udp``. `netns`: the namespace to bind
    in (the embedded cloud's ``guest_netns``) or None. `workdir`: one new ``guest-udp-*`` directory
    per `start` (``beats.bin`` records, ``beats.json`` status and summary, ``beats.log`` stderr).
    `sched`: the collector's scheduling ("fifo" when permitted, "nice", "none"). The process, the
    window and the noise floor are `SpawnedProbe`'s; servers are told apart by sender address.
    """

    name = "guest"
    _label = "guest UDP heartbeat probe"
    _process = "UDP heartbeat collector"
    _address_use = "to tell its UDP heartbeats apart by"
    _unreadable = "the collector's records could not be read"
    _silent_in_noise = "sent no beats"
    _no_summary = "the collector wrote no summary"
    _module = "novamig.measure.heartbeat_udp_collector"
    _dir_prefix = "guest-udp-"
    _stem = "beats"

    def __init__(
        self, hz: float, bind: tuple[str, int], netns: str | None, workdir: Path, *, sched: str = "fifo"
    ) -> None:
        if hz <= 0:
            raise ValueError(f"heartbeat rate must be positive, got {hz}")
        if not 0 < bind[1] <= 65535:
            raise ValueError(f"the collector needs a fixed port the agents are told, got {bind[1]}")
        self.bind = bind
        super().__init__(hz, netns, workdir, sched, beat_window)

    @property
    def target(self) -> str:
        """``ip:port``, what the agents are told (``novamig.hb_udp``, ``GuestSetup.heartbeat_udp``)."""
        return f"{self.bind[0]}:{self.bind[1]}"

    @property
    def records(self) -> dict[str, Beats] | None:
        """Every beat the collector recorded, per sender address; None before `stop` loaded them."""
        return self._records

    def _arguments(self) -> list[str]:
        return ["--bind", self.target]

    def _read_records(self, path: Path) -> dict[str, Beats]:
        return read_records(path)

    def _server_key(self, index: int, address: str) -> str:
        return address

    def _server_records(
        self, records: dict[str, Beats], key: str, address: str
    ) -> tuple[Beats | None, str | None]:
        beats = records.get(key)
        if beats is None:
            seen = sorted(records)
            others = f"beats came from {', '.join(seen[:5])} only" if seen else "no beat came at all"
            return None, (
                f"no UDP heartbeat from {address} reached {self.target} ({others}): is novamig.hb_udp "
                f"set in the server's user-data, and does the guest reach {self.target} without NAT?"
            )
        return beats, None

    def _details(
        self, w: BeatWindow, address: str, window: dict[str, Any], threshold: float | None
    ) -> dict[str, Any]:
        return {
            "via": f"udp {self.target}",
            "address": address,
            "gap_from_s": window["gap_from_s"],
            "gap_to_s": window["gap_to_s"],
            "guest_gap_ms": w.guest_gap_ms,
            "window_s": window["window_s"],
            "beats": w.beats,
            "lost": w.lost,
            "brownout_threshold_ms": threshold,
            "brownout_gaps": w.brownout_gaps,
        }

    def _cost_note(self, st: dict[str, Any]) -> tuple[str, float | None]:
        senders = st.get("senders") or {}
        known = {address for _, address in self._servers.values()}
        ours = sum(int(n) for a, n in senders.items() if a in known)
        note = (
            f"collector on {st.get('bind')}, {len(known)} server(s) beating at {self.hz:g} Hz, "
            f"sched {st.get('sched')}; beats {ours} from the servers"
        )
        foreign = {a: n for a, n in senders.items() if a not in known}
        if foreign:
            note += f", {sum(foreign.values())} from other senders ({', '.join(sorted(foreign)[:5])})"
        if st.get("stray") or st.get("recv_errors"):
            note += (
                f"; {st.get('stray')} stray datagram(s) (last from {st.get('last_stray')}), "
                f"{st.get('recv_errors')} receive error(s)"
            )
        if st.get("state") != "stopped":
            note += "; the collector did not finish cleanly: figures up to its last status"
        rate = self._beat_rate_hz()
        if rate is not None:
            note += "; rate_hz: beats per second per server, first to last beat (mean of servers)"
        return note, rate

    def _beat_rate_hz(self) -> float | None:
        """Mean over the servers of (beats − 1) / (last arrival − first arrival): the rate the
        collector received, not diluted by the time before the guests booted."""
        if self._records is None:
            return None
        rates = []
        for _, address in self._servers.values():
            b = self._records.get(address)
            if b is not None and len(b.recv_ns) > 1 and b.recv_ns[-1] > b.recv_ns[0]:
                rates.append((len(b.recv_ns) - 1) / ((b.recv_ns[-1] - b.recv_ns[0]) / 1e9))
        return round(sum(rates) / len(rates), 3) if rates else None
