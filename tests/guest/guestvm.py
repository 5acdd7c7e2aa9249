"""A deliberately small QEMU runner for the guest-image tests and the guest-image benchmark.

Why not novamig.hypervisor: these tests pin down the image and the agent on their own, so a fault
shows up here and not as a hypervisor-layer failure; the runner only needs to boot, talk to the
agent channel and QMP, and always end its QEMU (own process group, killed by group id).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novamig.guest import protocol
from novamig.guest.image import GuestImage


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AgentChannel:
    """Reads the agent's socket in a thread; records beats with host arrival times."""

    path: Path
    sock: socket.socket = field(init=False)
    beats: list[tuple[int, int, int]] = field(default_factory=list)  # seq, guest_ns, host_ns
    readies: list[protocol.Ready] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _replies: dict[str, protocol.Reply] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _next_id: int = 0
    _closed: bool = False

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self.path))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        rest = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            now = time.monotonic_ns()
            if not data:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            lines, rest = protocol.split_lines(rest + data)
            with self._cond:
                for line in lines:
                    try:
                        msg = protocol.parse_line(line)
                    except protocol.ProtocolError as e:
                        self.errors.append(str(e))
                        continue
                    if isinstance(msg, protocol.Heartbeat):
                        self.beats.append((msg.seq, msg.guest_ns, now))
                    elif isinstance(msg, protocol.Ready):
                        self.readies.append(msg)
                    elif isinstance(msg, protocol.Reply):
                        self._replies[msg.id] = msg
                    else:
                        self.events.append(msg.text)
                self._cond.notify_all()

    def wait_ready(self, timeout: float = 60) -> protocol.Ready:
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self.readies) or self._closed, timeout):
                raise TimeoutError(f"no READY within {timeout} s")
            if not self.readies:
                raise ConnectionError("agent channel closed before READY")
            return self.readies[-1]

    def send(self, line: bytes) -> None:
        self.sock.sendall(line)

    def command(self, command: str, *args: str | int | float, timeout: float = 30) -> protocol.Reply:
        with self._cond:
            self._next_id += 1
            cid = f"c{self._next_id}"
        self.send(protocol.encode_command(cid, command, *args))
        with self._cond:
            if not self._cond.wait_for(lambda: cid in self._replies or self._closed, timeout):
                raise TimeoutError(f"no reply to {command} within {timeout} s")
            if cid not in self._replies:
                raise ConnectionError("agent channel closed")
            return self._replies.pop(cid)

    def beats_since(self, host_ns: int) -> list[tuple[int, int, int]]:
        with self._cond:
            return [b for b in self.beats if b[2] >= host_ns]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


class Qmp:
    """Synchronous QMP over a Unix socket: enough for a test to ask QEMU a question."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self._recv()  # greeting
        self.execute("qmp_capabilities")

    def _recv(self) -> dict[str, Any]:
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("QMP closed")
            msg: dict[str, Any] = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, cmd: str, **args: Any) -> Any:
        self.file.write(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
        self.file.flush()
        reply = self._recv()
        if "error" in reply:
            raise RuntimeError(f"QMP {cmd}: {reply['error']}")
        return reply["return"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@dataclass
class Guest:
    proc: subprocess.Popen[bytes]
    workdir: Path
    agent: AgentChannel
    qmp: Qmp
    udp_port: int
    http_port: int
    boot_started: float
    ready_after_s: float

    @property
    def console(self) -> str:
        return (self.workdir / "console.log").read_text(errors="replace")


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"QEMU exited with {proc.returncode} before creating {path.name}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"QEMU did not create {path} within {timeout} s")
        time.sleep(0.01)


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """End QEMU: SIGTERM to its process group, then SIGKILL; always reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.contextmanager
def boot_guest(
    image: GuestImage,
    workdir: Path,
    *,
    nic: str = "virtio-net-pci",
    mem_mib: int = 256,
    ready_timeout: float = 90,
    incoming: str | None = None,
    accel: str = "tcg",
    **params: str | int | float,
) -> Iterator[Guest]:
    """Boot the tiny image under TCG with user-mode networking (UDP 7 and TCP 80 forwarded to
    loopback ports), the agent channel and QMP connected; wait for READY.

    With ``incoming`` (e.g. ``tcp:127.0.0.1:PORT``) start a migration destination instead: same
    hardware, channels connected, no wait (the guest arrives with the migration)."""
    udp_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    params = {"ip": "10.0.2.15/24", "gw": "10.0.2.2", **params}
    cmd = [
        "qemu-system-x86_64",
        "-machine", "pc-q35-7.2", "-accel", accel, "-cpu", "qemu64", "-m", str(mem_mib),
        "-nodefaults", "-nographic", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", image.command_line(**params),
        "-serial", f"file:{workdir / 'console.log'}",
        "-qmp", f"unix:{workdir / 'qmp.sock'},server=on,wait=off",
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"socket,id=agent,path={workdir / 'agent.sock'},server=on,wait=off",
        "-device", f"virtserialport,bus=vser0.0,chardev=agent,name={protocol.PORT_NAME}",
        "-netdev",
        f"user,id=n0,net=10.0.2.0/24,hostfwd=udp:127.0.0.1:{udp_port}-10.0.2.15:7,"
        f"hostfwd=tcp:127.0.0.1:{http_port}-10.0.2.15:80",
        "-device", f"{nic},netdev=n0",
    ]  # fmt: skip
    if incoming:
        cmd += ["-incoming", incoming]
    t0 = time.monotonic()
    qemu_log = (workdir / "qemu.log").open("wb")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=qemu_log, start_new_session=True
    )
    agent: AgentChannel | None = None
    qmp: Qmp | None = None
    try:
        _wait_for(workdir / "agent.sock", proc, 30)
        _wait_for(workdir / "qmp.sock", proc, 30)
        agent = AgentChannel(workdir / "agent.sock")
        qmp = Qmp(workdir / "qmp.sock")
        try:
            if not incoming:
                agent.wait_ready(ready_timeout)
        except (TimeoutError, ConnectionError) as e:
            console = (workdir / "console.log").read_text(errors="replace")
            raise RuntimeError(f"guest did not send READY: {e}\nconsole:\n{console[-3000:]}") from e
        guest = Guest(proc, workdir, agent, qmp, udp_port, http_port, t0, time.monotonic() - t0)
        try:
            yield guest
        finally:
            agent = guest.agent  # a test may have replaced the connection
    finally:
        if qmp is not None:
            qmp.close()
        if agent is not None:
            agent.close()
        stop_process_group(proc)
        qemu_log.close()
