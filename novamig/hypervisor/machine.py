"""One QEMU process running one guest: `QemuMachine`.

Modelled on QEMU's own python/qemu/machine (QEMUMachine): an explicit state machine, QMP over a unix
socket, soft-then-hard shutdown, and errors that carry the command line and the logs. Differences
that matter for novamig:

* QEMU is forked by the process-wide launcher thread (see `runtime`) into its own process group with
  PR_SET_PDEATHSIG(SIGKILL), so killing the harness, even with -9, takes its guests down.
* QMP lives on the shared asyncio loop; `execute()` is the async form, `command()` the blocking one.
* the guest agent channel (virtio-serial) is connected at launch, also on a migration destination,
  so that the first heartbeat after switchover is seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Protocol

from qemu.qmp import ExecuteError, QMPClient, QMPError

from novamig.guest.protocol import Ready
from novamig.hypervisor.accel import AccelVerdict, decide_accelerator
from novamig.hypervisor.agent import AgentChannel
from novamig.hypervisor.binary import default_machine_type, qemu_binary, tcg_loses_dirty_pages
from novamig.hypervisor.errors import (
    AgentError,
    GuestBootError,
    HypervisorError,
    QemuLaunchError,
    QmpCommandError,
)
from novamig.hypervisor.rundir import RunFiles, tail
from novamig.hypervisor.runtime import run_sync, spawn, track_temp_dir, unregister_process_group


class BootImage(Protocol):
    """What QemuMachine needs from a guest image (novamig.guest.image.GuestImage fits)."""

    @property
    def kernel(self) -> Path: ...

    @property
    def initrd(self) -> Path: ...

    @property
    def append(self) -> str: ...


@dataclass(frozen=True)
class NetworkAttachment:
    """How the guest's one NIC is connected.

    `tap` set: a tap device (already created, usually inside `netns`) is handed to QEMU.
    `tap` None: QEMU user-mode networking (no root needed) with `hostfwd` rules.
    `netns`: network namespace QEMU itself runs in (taps and probes live there).
    """

    mac: str
    tap: str | None = None
    netns: str | None = None
    model: str = "virtio-net-pci"
    hostfwd: tuple[str, ...] = ()


#: fw_cfg file names are at most 55 bytes (QEMU's FW_CFG_MAX_FILE_PATH is 56 with the NUL).
FW_CFG_NAME_MAX = 55


@dataclass(frozen=True)
class FwCfgFile:
    """A host file QEMU shows the guest through fw_cfg: ``-fw_cfg name=NAME,file=PATH``.

    Why fw_cfg: it reaches the guest at boot with no network, no disk and no metadata service,
    and the guest reads it from sysfs (``/sys/firmware/qemu_fw_cfg/by_name/NAME/raw``, module
    ``qemu_fw_cfg``). The embedded cloud hands a server its user-data this way. QEMU reads the
    file when it starts, so a migration destination must be given the same entries (it is:
    `GuestSpec.for_destination` keeps them) and the file must still exist when it starts.
    Names outside ``opt/`` are reserved for QEMU and firmware; ``opt/<reverse-domain>/…`` is
    what QEMU's documentation asks of users.
    """

    name: str
    path: Path

    def __post_init__(self) -> None:
        if not self.name.startswith("opt/") or len(self.name.encode()) > FW_CFG_NAME_MAX:
            raise ValueError(f"fw_cfg name {self.name!r}: must start with 'opt/' and be at most 55 bytes")
        if "," in self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"fw_cfg name {self.name!r}: no commas or spaces")

    def qemu_arg(self) -> str:
        """The ``-fw_cfg`` option value (a comma in the path is doubled, QEMU's option escape)."""
        return f"name={self.name},file={str(self.path).replace(',', ',,')}"


@dataclass(frozen=True)
class GuestSpec:
    """Everything that defines a guest; a migration destination is the same spec with `incoming`.

    `machine_type`, `accelerator` and `cpu_model` left as None are resolved at launch: the pinned
    versioned machine type of this QEMU, the accelerator verdict of the boot probe, and `qemu64`
    under TCG (boots fastest) or `host` under KVM.
    """

    name: str
    image: BootImage
    memory_mib: int = 256
    vcpus: int = 1
    kernel_args: tuple[str, ...] = ()
    machine_type: str | None = None
    accelerator: str | None = None
    cpu_model: str | None = None
    network: NetworkAttachment | None = None
    incoming: str | None = None
    tb_size_mib: int = 64
    extra_args: tuple[str, ...] = ()
    fw_cfg: tuple[FwCfgFile, ...] = ()  # files shown to the guest through fw_cfg

    def resolved(self) -> GuestSpec:
        """A copy with machine type, accelerator and CPU model filled in (probing if needed)."""
        spec = self
        if spec.machine_type is None:
            spec = replace(spec, machine_type=default_machine_type())
        if spec.accelerator is None:
            spec = replace(spec, accelerator=accelerator_for(spec.image).accelerator)
        if spec.cpu_model is None:
            spec = replace(spec, cpu_model="host" if spec.accelerator == "kvm" else "qemu64")
        return spec

    def for_destination(
        self, *, network: NetworkAttachment | None = None, name: str | None = None
    ) -> GuestSpec:
        """The destination of a live migration of this guest: same hardware, `-incoming defer`.

        Everything else is kept, the fw_cfg entries included: QEMU refuses (or worse, silently
        mismatches) a migration between two machines whose devices differ.
        """
        return replace(
            self.resolved(),
            name=name or f"{self.name}-dst",
            incoming="defer",
            network=network if network is not None else self.network,
        )


def tcg_kernel_args(spec: GuestSpec) -> tuple[str, ...]:
    """Kernel arguments a guest needs to migrate correctly under TCG on QEMU < 9.0: `pti=on`.

    QEMU 7.2's TCG tracks guest writes for migration through its software TLB: a page whose TLB
    entry was already marked dirty takes the fast path and is *not* re-marked after a dirty-bitmap
    sync until that entry is flushed. Kernel mappings are global and stay in the TLB, so hot kernel
    pages written after a sync are never re-sent, and the destination kernel crashes (seen here:
    every 50 MiB/s migration at 1 Gbit/s, 7-8 sync rounds, panicked on the destination). With page
    table isolation every kernel entry and exit switches CR3, which flushes the TCG TLB, so writes
    are tracked again within one timer tick. KVM tracks dirty pages in hardware and needs nothing.
    It narrows the window rather than closing it (measured at 64 MiB/s bandwidth: 2 of 24
    destinations still broken with it, 29 of 32 without), and it costs guest speed, so it is applied
    only where the binary has the bug; QEMU ≥ 9.0 fixes it (10.0 measured clean: 0 of 63).
    """
    if spec.accelerator != "tcg" or not tcg_loses_dirty_pages():
        return ()
    if any(a.startswith(("pti=", "nopti")) for a in (*spec.image.append.split(), *spec.kernel_args)):
        return ()
    return ("pti=on",)


class MachineState(enum.Enum):
    NEW = "new"
    LAUNCHING = "launching"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class QemuMachine:
    """A QEMU guest with QMP, console log and agent channel. Use as a context manager.

    >>> with QemuMachine(spec, workdir) as vm:      # doctest: +SKIP
    ...     vm.wait_ready(30)
    ...     vm.command("query-status")
    """

    def __init__(self, spec: GuestSpec, workdir: Path, *, keep_files: bool = False) -> None:
        self.spec = spec
        self.workdir = Path(workdir)
        self.keep_files = keep_files
        self.state = MachineState.NEW
        self.argv: list[str] = []
        self.exit_code: int | None = None
        self.launched_ns: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: QMPClient | None = None
        self._agent: AgentChannel | None = None
        self._files: RunFiles | None = None
        self._log_handle: IO[bytes] | None = None
        self._final_console = ""
        self._final_qemu_log = ""

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def qmp(self) -> QMPClient:
        """The QMP client (lives on the shared loop: use it only from coroutines running there)."""
        if self._qmp is None:
            raise HypervisorError(f"{self.name}: QMP not connected (state {self.state.value})")
        return self._qmp

    @property
    def agent(self) -> AgentChannel:
        if self._agent is None:
            raise AgentError(f"{self.name}: agent channel not connected (state {self.state.value})")
        return self._agent

    @property
    def files(self) -> RunFiles:
        if self._files is None:
            raise HypervisorError(f"{self.name}: not launched")
        return self._files

    @property
    def rundir(self) -> Path:
        return self.files.rundir

    def console_log(self, max_bytes: int = 1 << 20) -> str:
        if self._files is None or not self._files.console.exists():
            return self._final_console
        return tail(self._files.console, max_bytes)

    def qemu_log(self, max_bytes: int = 1 << 20) -> str:
        if self._files is None or not self._files.qemu_log.exists():
            return self._final_qemu_log
        return tail(self._files.qemu_log, max_bytes)

    def poll(self) -> int | None:
        """Exit code if the QEMU process has ended, else None."""
        if self._proc is None:
            return self.exit_code
        code = self._proc.poll()
        if code is not None:
            self.exit_code = code
        return code

    def is_running(self) -> bool:
        return self.state is MachineState.RUNNING and self.poll() is None

    # ------------------------------------------------------------------ launch

    def _make_files(self) -> RunFiles:
        self.workdir.mkdir(parents=True, exist_ok=True)
        rundir = Path(tempfile.mkdtemp(prefix=f"novamig-{self.name}-", dir=self.workdir.resolve()))
        track_temp_dir(rundir)
        return RunFiles(rundir=rundir, console=rundir / "console.log", qemu_log=rundir / "qemu.log")

    def build_argv(self, spec: GuestSpec, files: RunFiles) -> list[str]:
        assert spec.machine_type and spec.accelerator and spec.cpu_model
        accel = spec.accelerator
        if accel == "tcg" and spec.tb_size_mib:
            accel = f"tcg,tb-size={spec.tb_size_mib}"
        append = " ".join(p for p in (spec.image.append, *spec.kernel_args, *tcg_kernel_args(spec)) if p)
        argv = [
            qemu_binary(),
            "-name", f"guest={spec.name},debug-threads=on",
            "-machine", spec.machine_type,
            "-accel", accel,
            "-cpu", spec.cpu_model,
            "-m", str(spec.memory_mib),
            "-smp", str(spec.vcpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-msg", "timestamp=on",
            "-chardev", f"socket,id=qmp,path={files.qemu_path('qmp.sock')},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control",
            "-chardev", f"file,id=console,path={files.console}",
            "-serial", "chardev:console",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=agent,path={files.qemu_path('agent.sock')},server=on,wait=off",
            "-device", "virtserialport,bus=vser0.0,chardev=agent,name=org.novamig.agent",
            "-kernel", str(spec.image.kernel),
            "-initrd", str(spec.image.initrd),
            "-append", append,
        ]  # fmt: skip
        net = spec.network
        if net is not None:
            if net.tap is not None:
                netdev = f"tap,id=net0,ifname={net.tap},script=no,downscript=no"
            else:
                netdev = "user,id=net0" + "".join(f",hostfwd={h}" for h in net.hostfwd)
            argv += ["-netdev", netdev, "-device", f"{net.model},netdev=net0,mac={net.mac}"]
        for entry in spec.fw_cfg:
            argv += ["-fw_cfg", entry.qemu_arg()]
        if spec.incoming is not None:
            argv += ["-incoming", spec.incoming]
        argv += list(spec.extra_args)
        return argv

    def launch(self, timeout: float = 30.0) -> None:
        """Start QEMU and connect QMP and the agent channel. Does not wait for the guest to boot."""
        if self.state is not MachineState.NEW:
            raise HypervisorError(f"{self.name}: launch() in state {self.state.value}")
        self.state = MachineState.LAUNCHING
        try:
            self.spec = self.spec.resolved()
            self._files = files = self._make_files()
            self.argv = self.build_argv(self.spec, files)
            self._log_handle = files.qemu_log.open("wb")
            netns = self.spec.network.netns if self.spec.network is not None else None
            self._proc = spawn(self.argv, stdout=self._log_handle, cwd=files.rundir, netns=netns)
            self.launched_ns = time.monotonic_ns()
            self._wait_for_socket(files.qmp_sock, timeout)
            self._qmp = self._connect_qmp(files.qmp_sock, timeout)
            self._agent = AgentChannel(files.agent_sock, self.name)
            self._agent.connect(timeout=max(1.0, timeout / 3))
        except BaseException as exc:
            error = self._launch_error(exc)
            self.state = MachineState.FAILED
            self._teardown(soft=False)
            if error is exc:
                raise
            raise error from exc
        self.state = MachineState.RUNNING

    def _wait_for_socket(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.poll() is not None:
                raise QemuLaunchError(
                    f"{self.name}: QEMU exited during startup",
                    argv=self.argv,
                    qemu_log=self.qemu_log(4000),
                    exit_code=self.exit_code,
                )
            if time.monotonic() > deadline:
                raise QemuLaunchError(
                    f"{self.name}: QMP socket {path} did not appear within {timeout}s",
                    argv=self.argv,
                    qemu_log=self.qemu_log(4000),
                )
            time.sleep(0.01)

    def _connect_qmp(self, path: Path, timeout: float) -> QMPClient:
        """Connect to QEMU's QMP socket, retrying while it is bound but not yet listening."""
        deadline = time.monotonic() + timeout
        # qemu.qmp logs every failed attempt at ERROR; a failure here is raised with more context.
        qmp_log = logging.getLogger(f"qemu.qmp.protocol.{self.name}")
        level = qmp_log.level
        qmp_log.setLevel(logging.CRITICAL)
        try:
            while True:
                qmp = QMPClient(self.name)
                try:
                    run_sync(qmp.connect(str(path)), max(0.5, deadline - time.monotonic()))
                    return qmp
                except (QMPError, OSError, TimeoutError):
                    with contextlib.suppress(Exception):
                        run_sync(qmp.disconnect(), 2.0)
                    if self.poll() is not None or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.02)
        finally:
            qmp_log.setLevel(level)

    def _launch_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, QemuLaunchError) or not isinstance(exc, Exception):
            return exc
        time.sleep(0.05)  # let QEMU finish writing its complaint
        return QemuLaunchError(
            f"{self.name}: launch failed: {type(exc).__name__}: {exc}",
            argv=self.argv,
            qemu_log=self.qemu_log(4000),
            console_log=self.console_log(2000),
            exit_code=self.poll(),
        )

    def wait_ready(self, timeout: float = 60.0) -> Ready:
        """Wait until the guest agent reports READY; a dead QEMU or a timeout raises GuestBootError."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.agent.wait_ready(min(0.2, max(0.0, deadline - time.monotonic())))
            except AgentError:
                pass
            if self.poll() is not None or time.monotonic() >= deadline:
                why = "QEMU exited" if self.exit_code is not None else f"no READY within {timeout}s"
                raise GuestBootError(
                    f"{self.name}: guest did not boot: {why}",
                    argv=self.argv,
                    qemu_log=self.qemu_log(4000),
                    console_log=self.console_log(4000),
                    exit_code=self.exit_code,
                )

    def reconnect_agent(self, timeout: float = 10.0) -> AgentChannel:
        """Close the agent channel (if still open) and connect a new one to the same socket.

        The guest agent sends READY again on every new host connection (docs/guest-agent.md), so
        `wait_ready()` works on the new channel; its beat log starts empty.
        """
        if not self.is_running():
            raise AgentError(f"{self.name}: cannot reconnect the agent channel (state {self.state.value})")
        if self._agent is not None:
            self._agent.close()
        channel = AgentChannel(self.files.agent_sock, self.name)
        channel.connect(timeout=timeout)
        self._agent = channel
        return channel

    def boot(self, timeout: float = 60.0) -> Ready:
        """launch() and wait_ready() in one call."""
        self.launch()
        return self.wait_ready(timeout)

    # ------------------------------------------------------------------ QMP

    async def execute(self, cmd: str, args: dict[str, Any] | None = None, limit_s: float = 10.0) -> Any:
        """Run one QMP command (coroutine on the shared loop); errors become QmpCommandError."""
        try:
            return await asyncio.wait_for(self.qmp.execute(cmd, args), limit_s)
        except ExecuteError as exc:
            raise QmpCommandError(self.name, cmd, args, exc.error.error.desc, exc.error_class) from exc
        except TimeoutError as exc:
            raise QmpCommandError(self.name, cmd, args, None, f"no reply within {limit_s}s") from exc
        except QMPError as exc:
            raise QmpCommandError(self.name, cmd, args, None, f"{type(exc).__name__}: {exc}") from exc

    def command(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """Blocking form of `execute()` for plain threads."""
        return run_sync(self.execute(cmd, args, timeout), None)

    def hmp(self, command_line: str, timeout: float = 10.0) -> str:
        """A human monitor command (hostfwd_add and friends have no QMP equivalent)."""
        return str(self.command("human-monitor-command", {"command-line": command_line}, timeout))

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, timeout: float = 5.0, *, soft: bool = True) -> int | None:
        """Stop QEMU: QMP `quit` (if `soft`), then SIGTERM, then SIGKILL to its process group.

        Always releases sockets, files and the run directory; returns the exit code.
        """
        if self.state in (MachineState.NEW, MachineState.STOPPED):
            self.state = MachineState.STOPPED
            return self.exit_code
        self.state = MachineState.STOPPING
        try:
            self._teardown(soft=soft, timeout=timeout)
        finally:
            self.state = MachineState.STOPPED
        return self.exit_code

    def _teardown(self, *, soft: bool, timeout: float = 5.0) -> None:
        proc = self._proc
        if soft and proc is not None and proc.poll() is None and self._qmp is not None:
            with contextlib.suppress(Exception):
                run_sync(self._qmp.execute("quit"), min(timeout, 3.0))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        if self._agent is not None:
            self._agent.close()
        if self._qmp is not None:
            qmp, self._qmp = self._qmp, None
            with contextlib.suppress(Exception):
                run_sync(qmp.disconnect(), 5.0)
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
            self.exit_code = proc.poll()
            # Stray members of the group (none expected): make sure they go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            unregister_process_group(proc.pid)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._files is not None:
            self._final_console = self.console_log(64000)
            self._final_qemu_log = self.qemu_log(16000)
            self._files.close()
            if not self.keep_files:
                shutil.rmtree(self._files.rundir, ignore_errors=True)

    def __enter__(self) -> QemuMachine:
        if self.state is MachineState.NEW:
            self.launch()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<QemuMachine {self.name} pid={self.pid} {self.state.value}>"


def _boot_under_kvm(image: BootImage, timeout: float) -> None:
    """Boot `image` under KVM and ping its agent; any `HypervisorError` says KVM cannot run it."""
    spec = GuestSpec(name="accel-probe", image=image, memory_mib=128, accelerator="kvm", cpu_model="host")
    with tempfile.TemporaryDirectory(prefix="novamig-accel-") as tmp:
        vm = QemuMachine(spec, Path(tmp))
        try:
            vm.launch(timeout=timeout)
            vm.wait_ready(timeout)
            vm.agent.command("ping", timeout=5.0)
        finally:
            vm.shutdown(timeout=2.0, soft=False)


def accelerator_for(image: BootImage) -> AccelVerdict:
    """The accelerator this process runs guests with, probing by booting `image` the first time.

    It lives here rather than in `accel` because the probe boots a `QemuMachine`, and a machine
    whose spec leaves the accelerator open asks for this verdict at launch.
    """
    return decide_accelerator(image, _boot_under_kvm)
