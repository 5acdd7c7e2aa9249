"""The agent protocol parser and command encoder (pure, fast)."""

from __future__ import annotations

import pytest

from novamig.guest import protocol
from novamig.guest.protocol import (
    AgentEvent,
    DirtyStats,
    Heartbeat,
    IntegrityResult,
    ProtocolError,
    Ready,
    Reply,
    encode_command,
    parse_line,
    split_lines,
)


def test_heartbeat() -> None:
    assert parse_line("H 1 123456789") == Heartbeat(1, 123456789)
    assert parse_line(b"H 42 7\n") == Heartbeat(42, 7)


@pytest.mark.parametrize("line", ["H", "H 1", "H 1 2 3", "H x 2", "H 1 -2", "H 0 5", "H  1 2", "H 1 2.5"])
def test_malformed_heartbeat(line: str) -> None:
    with pytest.raises(ProtocolError):
        parse_line(line)


def test_ready_fields() -> None:
    msg = parse_line("READY version=1 hb_hz=1000 ip=10.0.2.15 mem_mib=205 kernel=6.1.0-56-amd64\n")
    assert isinstance(msg, Ready)
    assert msg.version == "1"
    assert msg.hb_hz == 1000
    assert msg.ip == "10.0.2.15"
    assert msg.mem_mib == 205
    assert msg.fields["kernel"] == "6.1.0-56-amd64"
    assert parse_line("READY ip=none") == Ready({"ip": "none"})
    assert Ready({"ip": "none"}).ip is None


def test_reply_ok_and_err() -> None:
    assert parse_line("R 7 ok") == Reply("7", True, {})
    r = parse_line("R c2 ok achieved_mib_s=19.8 pages=1000 seconds=2.0")
    assert isinstance(r, Reply) and r.ok
    assert r.float_field("achieved_mib_s") == pytest.approx(19.8)
    assert r.int_field("pages") == 1000
    e = parse_line("R c3 err msg=unknown command:  frob")
    assert isinstance(e, Reply) and not e.ok
    assert e.msg == "unknown command:  frob"  # msg is verbatim to the end of the line


def test_reply_hex_field() -> None:
    r = parse_line("R 1 err first_bad_page=12 expected=0x00000000000000ff found=0x0000000000000000 msg=x")
    assert isinstance(r, Reply)
    assert r.int_field("expected") == 255
    with pytest.raises(ProtocolError):
        r.int_field("nope")


@pytest.mark.parametrize("line", ["R", "R 1", "R 1 maybe", "R 1 ok novalue", "R 1 ok =x"])
def test_malformed_reply(line: str) -> None:
    with pytest.raises(ProtocolError):
        parse_line(line)


def test_event_and_unknown() -> None:
    assert parse_line("E dirtier started rate=5") == AgentEvent("dirtier started rate=5")
    assert parse_line("E") == AgentEvent("")
    for bad in ["", "X 1", "HELLO", "Hx 1 2", "READYX"]:
        with pytest.raises(ProtocolError):
            parse_line(bad)
    with pytest.raises(ProtocolError):
        parse_line(b"H 1 \xff")


def test_split_lines() -> None:
    assert split_lines(b"") == ([], b"")
    assert split_lines(b"H 1 2\nH 2") == ([b"H 1 2"], b"H 2")
    assert split_lines(b"a\nb\n") == ([b"a", b"b"], b"")


def test_encode_command() -> None:
    assert encode_command(1, "ping") == b"1 ping\n"
    assert encode_command("c9", "dirty", 20.0, 64) == b"c9 dirty 20 64\n"
    assert encode_command("x", "dirty", 12.5, 8) == b"x dirty 12.5 8\n"
    assert protocol.cmd_hb(3, 100) == b"3 hb 100\n"
    assert protocol.cmd_integrity_start(4, 16) == b"4 integrity-start 16\n"
    assert protocol.cmd_integrity_start(4, 16, 500) == b"4 integrity-start 16 500\n"
    assert protocol.cmd_integrity_corrupt(5, 9) == b"5 integrity-corrupt 9\n"
    assert protocol.cmd_dirty(6, 0, 0) == b"6 dirty 0 0\n"


@pytest.mark.parametrize(
    ("cid", "cmd", "args"),
    [("a b", "ping", ()), ("", "ping", ()), ("1", "Ping", ()), ("1", "hb", ("1 2",)), ("1", "hb", (True,))],
)
def test_encode_rejects_line_breaking_input(cid: str, cmd: str, args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        encode_command(cid, cmd, *args)  # type: ignore[arg-type]


def test_command_helpers_validate() -> None:
    with pytest.raises(ValueError):
        protocol.cmd_hb(1, -1)
    with pytest.raises(ValueError):
        protocol.cmd_dirty(1, -5, 10)
    with pytest.raises(ValueError):
        protocol.cmd_integrity_start(1, 0)


def test_typed_replies() -> None:
    r = parse_line(
        "R 1 ok achieved_mib_s=19.900 pages=20000 seconds=3.9 target_mib_s=20.000 wset_mib=32 "
        "recent_mib_s=20.010 running=1"
    )
    assert isinstance(r, Reply)
    s = DirtyStats.from_reply(r)
    assert s.achieved_mib_s == pytest.approx(19.9) and s.running and s.pages == 20000
    ok = parse_line("R 2 ok pages=4096 generation=7 check_ms=40")
    assert isinstance(ok, Reply)
    assert IntegrityResult.from_reply(ok) == IntegrityResult(True, 4096, 7)
    bad = parse_line(
        "R 3 err first_bad_page=1234 expected=0x0000000000000010 found=0x0000000000000011 word=2 "
        "bad_pages=1 pages=4096 generation=9 check_ms=41 msg=integrity check failed"
    )
    assert isinstance(bad, Reply)
    res = IntegrityResult.from_reply(bad)
    assert not res.ok and res.first_bad_page == 1234 and res.expected == 16 and res.found == 17
    assert res.bad_pages == 1 and res.msg == "integrity check failed"
    with pytest.raises(ProtocolError):
        DirtyStats.from_reply(Reply("4", False, {"msg": "boom"}))
