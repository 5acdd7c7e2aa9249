"""The tiny guest boots and its agent does what docs/guest-agent.md promises (real QEMU, TCG).

Bounds on rates are loose on purpose: two shared cores under TCG. They check that a feature works
(a rate changed, a target was approached), not how fast this machine is.
"""

from __future__ import annotations

import http.client
import itertools
import json
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
from guestvm import AgentChannel, Guest, boot_guest, free_port

from novamig.guest.image import GuestImage
from novamig.guest.protocol import DirtyStats, IntegrityResult

pytestmark = pytest.mark.qemu


def _rate(guest: Guest, seconds: float) -> tuple[float, list[tuple[int, int, int]]]:
    t0 = time.monotonic_ns()
    time.sleep(seconds)
    beats = guest.agent.beats_since(t0)
    return len(beats) / seconds, beats


def _best_rate(guest: Guest, seconds: float, tries: int = 3) -> tuple[float, list[tuple[int, int, int]]]:
    """The best of a few windows: a host busy with other guests can starve the vCPU for a whole
    window; whether the agent keeps its rate is what is tested, not how loaded the host is."""
    return max((_rate(guest, seconds) for _ in range(tries)), key=lambda r: r[0])


def test_ready_carries_configured_fields(guest: Guest) -> None:
    ready = guest.agent.readies[0]
    assert ready.version == "1"
    assert ready.hb_hz == 1000
    assert ready.ip == "10.0.2.15"
    assert 150 < ready.mem_mib <= 256
    assert ready.fields["kernel"]
    assert "novamig-init: up" in guest.console
    assert guest.agent.errors == []


def test_heartbeats_increase_at_about_the_configured_rate(guest: Guest) -> None:
    guest.agent.command("hb", 1000)
    time.sleep(0.3)
    rate, beats = _best_rate(guest, 2.0)
    assert rate > 500, f"heartbeat rate {rate:.0f}/s, configured 1000/s"
    seqs = [b[0] for b in guest.agent.beats]
    assert all(a < b for a, b in itertools.pairwise(seqs)), "seq not strictly increasing"
    guest_ns = [b[1] for b in beats]
    assert all(a < b for a, b in itertools.pairwise(guest_ns))


def test_hb_command_changes_the_rate(guest: Guest) -> None:
    try:
        r = guest.agent.command("hb", 50)
        assert r.ok and r.fields["hb_hz"] == "50"
        time.sleep(0.3)
        rate, _ = _best_rate(guest, 2.0)
        assert 25 < rate < 75, f"rate {rate:.1f}/s after hb 50"
        assert guest.agent.command("hb", 0).ok
        time.sleep(0.3)
        rate, _ = _rate(guest, 1.0)
        assert rate == 0, f"heartbeats still arriving ({rate}/s) after hb 0"
        assert not guest.agent.command("hb", "fast").ok
    finally:
        guest.agent.command("hb", 1000)


def test_ping_and_unknown_command(guest: Guest) -> None:
    r = guest.agent.command("ping")
    assert r.ok and int(r.fields["guest_ns"]) > 0
    bad = guest.agent.command("frobnicate")
    assert not bad.ok and "unknown command" in bad.msg


def test_ready_is_resent_when_the_host_reconnects(guest: Guest) -> None:
    guest.agent.close()
    time.sleep(0.5)  # let the guest see the port close (a close and reopen in one tick is invisible)
    second = AgentChannel(guest.workdir / "agent.sock")
    guest.agent = second
    ready = second.wait_ready(30)
    assert ready.hb_hz == 1000
    info = second.command("info")
    assert info.ok and info.fields["hb_hz"] == "1000" and int(info.fields["seq"]) > 0


def test_dirtier_reaches_a_modest_target(guest: Guest) -> None:
    target = 20.0
    r = guest.agent.command("dirty", target, 32)
    assert r.ok, r.msg
    try:
        time.sleep(3.0)
        stats = DirtyStats.from_reply(guest.agent.command("dirty-stats"))
        assert stats.running
        assert stats.seconds > 2.5
        assert 0.7 * target < stats.achieved_mib_s < 1.15 * target, stats
        # QEMU's own dirty-page sampling sees the load too (independent of the agent's count).
        # (mode dirty-bitmap crashes QEMU 7.2 under TCG with SIGSEGV: sampling only.)
        guest.qmp.execute("calc-dirty-rate", **{"calc-time": 1, "sample-pages": 4096})
        deadline = time.monotonic() + 20
        info = guest.qmp.execute("query-dirty-rate")
        while info["status"] != "measured" and time.monotonic() < deadline:
            time.sleep(0.2)
            info = guest.qmp.execute("query-dirty-rate")
        assert info["status"] == "measured"
        assert 0.4 * target <= info["dirty-rate"] <= 1.6 * target, info
    finally:
        assert guest.agent.command("dirty", 0, 0).ok
    stopped = DirtyStats.from_reply(guest.agent.command("dirty-stats"))
    assert not stopped.running


def test_dirtier_rejects_a_working_set_larger_than_memory(guest: Guest) -> None:
    r = guest.agent.command("dirty", 10, 4096)
    assert not r.ok and "memory" in r.msg


def test_integrity_check_passes_then_finds_the_corrupted_page(guest: Guest) -> None:
    assert not IntegrityResult.from_reply(guest.agent.command("integrity-check")).ok  # not started
    r = guest.agent.command("integrity-start", 16, 200)
    assert r.ok, r.msg
    try:
        first = IntegrityResult.from_reply(guest.agent.command("integrity-check"))
        assert first.ok and first.pages == 16 * 256, first
        time.sleep(1.0)
        second = IntegrityResult.from_reply(guest.agent.command("integrity-check"))
        assert second.ok, second
        assert second.generation is not None and first.generation is not None
        assert second.generation >= first.generation + 2, "the updater is not advancing generations"
        assert guest.agent.command("integrity-corrupt", 1234).ok
        assert guest.agent.command("integrity-corrupt", 3000).ok
        bad = IntegrityResult.from_reply(guest.agent.command("integrity-check"))
        assert not bad.ok
        assert bad.first_bad_page == 1234
        assert bad.bad_pages == 2
        assert bad.expected is not None and bad.found == bad.expected ^ 1
        assert not guest.agent.command("integrity-corrupt", 999999).ok
    finally:
        assert guest.agent.command("integrity-stop").ok


def test_integrity_survives_a_pause(guest: Guest) -> None:
    """Stopping the vCPU mid-update (what a migration's switchover does) leaves a verifiable state."""
    assert guest.agent.command("integrity-start", 8, 0).ok  # updater flat out
    try:
        guest.qmp.execute("stop")
        time.sleep(0.2)
        guest.qmp.execute("cont")
        res = IntegrityResult.from_reply(guest.agent.command("integrity-check"))
        assert res.ok, res
    finally:
        assert guest.agent.command("integrity-stop").ok


def test_udp_echo(guest: Guest) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        echoed = 0
        for i in range(20):
            payload = f"novamig-probe-{i}".encode()
            s.sendto(payload, ("127.0.0.1", guest.udp_port))
            try:
                data, _ = s.recvfrom(2048)
            except TimeoutError:
                continue
            assert data == payload
            echoed += 1
        assert echoed >= 18, f"only {echoed}/20 datagrams echoed"


def test_http_endpoints(guest: Guest) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", guest.http_port, timeout=15)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 200 and body["status"] == "ok"
        # same connection (keep-alive) for the next requests
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and b"novamig" in resp.read()
        conn.request("GET", "/nope")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 404
    finally:
        conn.close()


def test_e1000_nic_and_boot_time_config(tiny_image: GuestImage) -> None:
    """The e1000 driver works too, and the dirtier and integrity region can start from the
    kernel command line (how a guest is configured before any host connects)."""
    workdir = Path(tempfile.mkdtemp(prefix="novamig-guest-test-"))
    try:
        with boot_guest(
            tiny_image, workdir, nic="e1000", hb_hz=200, dirty_mib_s=5, wset_mib=8, integrity_mib=4
        ) as g:
            assert g.agent.readies[0].hb_hz == 200
            assert g.agent.readies[0].ip == "10.0.2.15"
            conn = http.client.HTTPConnection("127.0.0.1", g.http_port, timeout=15)
            conn.request("GET", "/health")
            assert conn.getresponse().status == 200
            conn.close()
            stats = DirtyStats.from_reply(g.agent.command("dirty-stats"))
            assert stats.running and stats.target_mib_s == 5
            assert IntegrityResult.from_reply(g.agent.command("integrity-check")).ok
        assert g.proc.poll() is not None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _migrate_and_verify(image: GuestImage, src_dir: Path, dst_dir: Path) -> str | None:
    """One migration of a guest updating its integrity region; asserts what the agent promises.
    Returns the destination's console when its kernel panicked (a QEMU problem, not the agent's)."""
    port = free_port()
    with boot_guest(image, src_dir, hb_hz=1000) as src:
        assert src.agent.command("integrity-start", 16, 200).ok
        with boot_guest(image, dst_dir, incoming=f"tcp:127.0.0.1:{port}", hb_hz=1000) as dst:
            src.qmp.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 30})
            src.qmp.execute("migrate", uri=f"tcp:127.0.0.1:{port}")
            deadline = time.monotonic() + 120
            status = src.qmp.execute("query-migrate")
            while status.get("status") not in ("completed", "failed", "cancelled"):
                assert time.monotonic() < deadline, f"migration did not finish: {status}"
                time.sleep(0.1)
                status = src.qmp.execute("query-migrate")
            assert status["status"] == "completed", status
            t0 = time.monotonic_ns()
            deadline = time.monotonic() + 30
            while not dst.agent.beats_since(t0) and time.monotonic() < deadline:
                if "Kernel panic" in dst.console:
                    return dst.console
                time.sleep(0.05)
            if "Kernel panic" in dst.console:
                return dst.console
            assert dst.agent.beats_since(t0), f"no heartbeat from the destination:\n{dst.console[-2000:]}"
            last_src = src.agent.beats[-1][0]
            assert dst.agent.beats_since(t0)[0][0] > last_src, "destination seq must continue"
            res = IntegrityResult.from_reply(dst.agent.command("integrity-check"))
            assert res.ok, res
            assert res.generation is not None and res.generation > 2
    return None


@pytest.mark.slow
def test_integrity_holds_across_a_live_migration(tiny_image: GuestImage) -> None:
    """The agent's own end-to-end proof: a guest updating its integrity region (and beating at
    1 kHz) migrates over loopback; on the destination the heartbeat continues with the next seq
    and every page verifies.

    QEMU 7.2 under TCG sometimes corrupts a busy guest's kernel memory in migration (the
    destination kernel panics; docs/guest-agent.md, "Known problem"). Such an attempt is repeated,
    at most twice; any other failure fails at once, and three panics fail the test."""
    panics: list[str] = []
    for attempt in range(3):
        src_dir = Path(tempfile.mkdtemp(prefix="novamig-guest-test-"))
        dst_dir = Path(tempfile.mkdtemp(prefix="novamig-guest-test-"))
        try:
            console = _migrate_and_verify(tiny_image, src_dir, dst_dir)
        finally:
            shutil.rmtree(src_dir, ignore_errors=True)
            shutil.rmtree(dst_dir, ignore_errors=True)
        if console is None:
            return
        panics.append(console[console.find("BUG") :][:1500] if "BUG" in console else console[-1500:])
        print(f"attempt {attempt + 1}: destination kernel panicked (QEMU TCG migration problem)")
    pytest.fail("destination kernel panicked in all 3 migrations:\n" + "\n---\n".join(panics))
