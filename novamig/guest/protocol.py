"""Host side of the guest agent protocol (docs/guest-agent.md): parse agent lines into typed
messages and encode commands.

Pure functions, no I/O: the heartbeat collector, the hypervisor layer and the tests all read the
same byte stream from the virtio-serial socket and must agree on what it means. Keeping the
grammar here, apart from any socket handling, lets it be tested exhaustively and fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: The virtio-serial port name the agent looks for.
PORT_NAME = "org.novamig.agent"
#: Agent protocol version this module understands (READY's ``version``).
PROTOCOL_VERSION = "1"

_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class ProtocolError(ValueError):
    """A line that does not follow the agent protocol (carries the offending line)."""

    def __init__(self, message: str, line: str) -> None:
        super().__init__(f"{message}: {line!r}")
        self.line = line


@dataclass(frozen=True)
class Heartbeat:
    """``H <seq> <guest_mono_ns>``: one beat; ``seq`` counts from 1, a gap means dropped beats."""

    seq: int
    guest_ns: int


@dataclass(frozen=True)
class Ready:
    """``READY k=v ...``: the agent is up (sent again whenever the host side (re)opens the port)."""

    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.fields.get("version", "")

    @property
    def hb_hz(self) -> int:
        return int(self.fields.get("hb_hz", "0"))

    @property
    def ip(self) -> str | None:
        ip = self.fields.get("ip", "none")
        return None if ip == "none" else ip

    @property
    def mem_mib(self) -> int:
        return int(self.fields.get("mem_mib", "0"))


@dataclass(frozen=True)
class Reply:
    """``R <id> ok|err [k=v ...]``: the answer to command ``id``. On ``err``, ``msg`` explains."""

    id: str
    ok: bool
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def msg(self) -> str:
        return self.fields.get("msg", "")

    def int_field(self, key: str) -> int:
        """A field as an integer (ProtocolError if absent or malformed; hex with ``0x`` accepted)."""
        try:
            return int(self.fields[key], 0)
        except (KeyError, ValueError) as e:
            raise ProtocolError(f"reply has no integer field {key!r}", format_reply(self)) from e

    def float_field(self, key: str) -> float:
        try:
            return float(self.fields[key])
        except (KeyError, ValueError) as e:
            raise ProtocolError(f"reply has no numeric field {key!r}", format_reply(self)) from e


@dataclass(frozen=True)
class AgentEvent:
    """``E <text>``: an event or log line from the agent."""

    text: str


Message = Heartbeat | Ready | Reply | AgentEvent


def _parse_fields(tokens: list[str], line: str) -> dict[str, str]:
    """``k=v`` tokens; ``msg=`` is always last and runs to the end of the line (it may contain
    spaces)."""
    fields: dict[str, str] = {}
    for i, tok in enumerate(tokens):
        key, sep, value = tok.partition("=")
        if not sep or not _KEY_RE.match(key):
            raise ProtocolError(f"malformed field {tok!r}", line)
        if key == "msg":
            fields["msg"] = " ".join([value, *tokens[i + 1 :]])
            break
        fields[key] = value
    return fields


def parse_line(line: str | bytes) -> Message:
    """Parse one agent line (with or without its trailing newline). Raises ProtocolError."""
    if isinstance(line, bytes):
        raw = line
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError as e:
            raise ProtocolError("not ASCII", raw.decode("ascii", "replace")) from e
    line = line.rstrip("\r\n")
    if line.startswith("H "):
        parts = line.split(" ")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise ProtocolError("malformed heartbeat", line)
        seq = int(parts[1])
        if seq < 1:
            raise ProtocolError("heartbeat seq must be >= 1", line)
        return Heartbeat(seq, int(parts[2]))
    if line == "READY" or line.startswith("READY "):
        return Ready(_parse_fields(line.split()[1:], line))
    if line.startswith("R "):
        tokens = line.split()
        if len(tokens) < 3 or tokens[2] not in ("ok", "err"):
            raise ProtocolError("malformed reply", line)
        # msg may contain runs of spaces: take it verbatim from the line
        fields = _parse_fields(tokens[3:], line)
        if "msg" in fields:
            fields["msg"] = line[line.index(" msg=") + 5 :] if " msg=" in line else fields["msg"]
        return Reply(tokens[1], tokens[2] == "ok", fields)
    if line == "E" or line.startswith("E "):
        return AgentEvent(line[2:])
    raise ProtocolError("unknown message", line)


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split a stream buffer into complete lines (without ``\\n``) and the unfinished rest."""
    *lines, rest = buffer.split(b"\n")
    return lines, rest


def format_reply(reply: Reply) -> str:
    """The wire form of a reply (for error messages and test agents)."""
    parts = ["R", reply.id, "ok" if reply.ok else "err"]
    parts += [f"{k}={v}" for k, v in reply.fields.items() if k != "msg"]
    if "msg" in reply.fields:
        parts.append(f"msg={reply.fields['msg']}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------------
# commands (host → agent)


def encode_command(cmd_id: str | int, command: str, *args: str | int | float) -> bytes:
    """``<id> <command> [args]\\n`` as bytes. Raises ValueError on an id or argument that would
    break the line grammar."""
    sid = str(cmd_id)
    if not _ID_RE.match(sid):
        raise ValueError(f"command id must match {_ID_RE.pattern}: {sid!r}")
    if not re.fullmatch(r"[a-z][a-z0-9-]*", command):
        raise ValueError(f"bad command name: {command!r}")
    words = [sid, command]
    for a in args:
        if isinstance(a, bool):
            raise ValueError("boolean arguments are not part of the protocol")
        text = f"{a:g}" if isinstance(a, float) else str(a)
        if not text or any(c.isspace() for c in text):
            raise ValueError(f"argument must be a non-empty word: {text!r}")
        words.append(text)
    return (" ".join(words) + "\n").encode("ascii")


def cmd_ping(cmd_id: str | int) -> bytes:
    return encode_command(cmd_id, "ping")


def cmd_info(cmd_id: str | int) -> bytes:
    return encode_command(cmd_id, "info")


def cmd_hb(cmd_id: str | int, hz: int) -> bytes:
    if hz < 0:
        raise ValueError("heartbeat rate must be >= 0")
    return encode_command(cmd_id, "hb", hz)


def cmd_dirty(cmd_id: str | int, rate_mib_s: float, working_set_mib: int) -> bytes:
    if rate_mib_s < 0 or working_set_mib < 0:
        raise ValueError("dirty rate and working set must be >= 0")
    return encode_command(cmd_id, "dirty", float(rate_mib_s), working_set_mib)


def cmd_dirty_stats(cmd_id: str | int) -> bytes:
    return encode_command(cmd_id, "dirty-stats")


def cmd_integrity_start(cmd_id: str | int, mib: int, pass_ms: int | None = None) -> bytes:
    if mib <= 0:
        raise ValueError("integrity region must be > 0 MiB")
    args: list[int] = [mib] if pass_ms is None else [mib, pass_ms]
    return encode_command(cmd_id, "integrity-start", *args)


def cmd_integrity_check(cmd_id: str | int) -> bytes:
    return encode_command(cmd_id, "integrity-check")


def cmd_integrity_stop(cmd_id: str | int) -> bytes:
    return encode_command(cmd_id, "integrity-stop")


def cmd_integrity_corrupt(cmd_id: str | int, page: int) -> bytes:
    """Test-only: make the agent damage one word of ``page`` so a check must fail."""
    return encode_command(cmd_id, "integrity-corrupt", page)


# ------------------------------------------------------------------------------------------------
# typed views of replies


@dataclass(frozen=True)
class DirtyStats:
    """What ``dirty-stats`` reports: achieved rate since the dirtier started, and over the last
    full second (``recent_mib_s``)."""

    achieved_mib_s: float
    pages: int
    seconds: float
    target_mib_s: float
    recent_mib_s: float
    running: bool

    @classmethod
    def from_reply(cls, reply: Reply) -> DirtyStats:
        if not reply.ok:
            raise ProtocolError(f"dirty-stats failed: {reply.msg}", format_reply(reply))
        f = reply.fields
        return cls(
            achieved_mib_s=reply.float_field("achieved_mib_s"),
            pages=reply.int_field("pages"),
            seconds=reply.float_field("seconds"),
            target_mib_s=float(f.get("target_mib_s", "0")),
            recent_mib_s=float(f.get("recent_mib_s", f["achieved_mib_s"])),
            running=f.get("running", "0") == "1",
        )


@dataclass(frozen=True)
class IntegrityResult:
    """What ``integrity-check`` reports. ``first_bad_page`` is None when every page verified."""

    ok: bool
    pages: int | None
    generation: int | None
    first_bad_page: int | None = None
    expected: int | None = None
    found: int | None = None
    bad_pages: int | None = None
    msg: str = ""

    @classmethod
    def from_reply(cls, reply: Reply) -> IntegrityResult:
        f = reply.fields

        def opt(key: str) -> int | None:
            return int(f[key], 0) if key in f else None

        if reply.ok:
            return cls(True, reply.int_field("pages"), reply.int_field("generation"))
        return cls(
            False,
            opt("pages"),
            opt("generation"),
            first_bad_page=opt("first_bad_page"),
            expected=opt("expected"),
            found=opt("found"),
            bad_pages=opt("bad_pages"),
            msg=reply.msg,
        )
