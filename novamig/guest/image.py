"""The tiny guest image: Debian's kernel (uncompressed, for PVH boot) plus a busybox initramfs
carrying the virtio/e1000 modules and the novamig agent.

Why it looks like this: under TCG (no usable KVM on the machines novamig targets) every second of
guest boot is multiplied by every test, so the guest must boot in a few seconds; booting the
uncompressed ``vmlinux`` through PVH skips the kernel's self-decompression, which alone costs about
5 s under TCG. Everything comes from Debian packages fetched with ``apt-get download`` (never
installed), and the result is cached by a hash of every input, so a second build returns at once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import time
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from novamig.guest.build import (
    Deb,
    ImageBuildError,
    Progress,
    build_cpio,
    cached_build,
    fetch_deb,
    init_script,
    iter_deb_files,
    resolve_debs,
    run_step,
)

__all__ = [
    "AGENT_CFLAGS",
    "BASE_APPEND",
    "BUILD_SCRIPT_VERSION",
    "BUSYBOX_PACKAGE",
    "KERNEL_META_PACKAGE",
    "MODULE_ORDER",
    "GuestImage",
    "ImageBuildError",
    "Progress",
    "build_tiny_image",
    "cache_dir",
]

#: Bump when the build procedure changes in a way the other inputs do not capture.
BUILD_SCRIPT_VERSION = "3"

#: Module load order that works for virtio-net, virtio-serial and e1000 (dependencies first), and
#: qemu_fw_cfg: QEMU's fw_cfg in sysfs, where the embedded cloud hands a server its user-data
#: (``opt/org.novamig/user-data``; see init.sh). Every image built from the tiny one carries it.
MODULE_ORDER: tuple[str, ...] = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_console",
    "e1000",
    "qemu_fw_cfg",
)

#: Base kernel command line. ``quiet`` keeps the serial console (slow under TCG) short;
#: ``panic=-1`` turns a guest panic into a reset (with QEMU's ``-no-reboot``, an exit).
BASE_APPEND = "console=ttyS0 quiet panic=-1 mitigations=off no_timer_check tsc=reliable"

KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
AGENT_CFLAGS: tuple[str, ...] = ("-static", "-O2", "-pthread", "-Wall", "-Wextra", "-s")


@dataclass(frozen=True)
class GuestImage:
    """A bootable tiny guest: pass ``kernel``, ``initrd`` and ``append`` to QEMU's ``-kernel``,
    ``-initrd`` and ``-append`` (PVH boot; works with ``-machine q35``/``pc``)."""

    kernel: Path
    initrd: Path
    append: str
    kernel_version: str
    digest: str
    #: True when this call found the image in the cache and built nothing.
    cached: bool = field(default=False, compare=False)

    def command_line(self, **params: str | int | float) -> str:
        """``append`` plus ``novamig.<key>=<value>`` for each keyword, e.g.
        ``image.command_line(hb_hz=1000, ip="10.77.0.2/24", gw="10.77.0.1")``."""
        extra = [f"novamig.{key}={value}" for key, value in params.items()]
        for item in extra:
            if any(c.isspace() for c in item):
                raise ValueError(f"kernel argument must not contain whitespace: {item!r}")
        return " ".join([self.append, *extra])


def cache_dir() -> Path:
    """novamig's cache: ``$NOVAMIG_CACHE_DIR``, else ``$XDG_CACHE_HOME/novamig``, else
    ``~/.cache/novamig``."""
    explicit = os.environ.get("NOVAMIG_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "novamig"


# ------------------------------------------------------------------------------------------------
# helpers


def _agent_source(name: str) -> bytes:
    return resources.files("novamig.guest").joinpath("agent", name).read_bytes()


def _resolve_kernel_package() -> str:
    """The concrete kernel package behind ``linux-image-amd64`` on this Debian release."""
    step = f"resolve kernel package ({KERNEL_META_PACKAGE})"
    out = run_step(step, ["apt-cache", "depends", KERNEL_META_PACKAGE])
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+-amd64)\s*$", line)
        if m:
            return m.group(1)
    raise ImageBuildError(
        step,
        f"no linux-image-*-amd64 dependency of {KERNEL_META_PACKAGE} (are the apt lists present? "
        "run `apt-get update`)",
        ["apt-cache", "depends", KERNEL_META_PACKAGE],
        out,
    )


def _apt_state_fingerprint(*names: str) -> str | None:
    """A fingerprint of what apt and gcc would answer: the apt lists and sources (names, sizes,
    mtimes) and the gcc executable. None when it cannot be taken (then resolve afresh)."""
    h = hashlib.sha256(json.dumps(names).encode())
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    paths = [Path(gcc).resolve(), Path("/etc/apt/sources.list")]
    for folder in (
        Path("/var/lib/apt/lists"),
        Path("/etc/apt/sources.list.d"),
        Path("/etc/apt/preferences.d"),
    ):
        with contextlib.suppress(OSError):
            paths += sorted(p for p in folder.iterdir() if p.is_file() and p.name != "lock")
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            h.update(f"{path} missing".encode())
            continue
        h.update(f"{path} {st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _resolve_inputs(
    root: Path, kernel_package: str | None, busybox_package: str, say: Progress
) -> tuple[Deb, Deb, str]:
    """Which .debs and which gcc the build would use. Asking apt takes about a second, so the
    answer is remembered for as long as the apt lists and gcc are unchanged: a cached build then
    returns in milliseconds."""
    fp = _apt_state_fingerprint(kernel_package or KERNEL_META_PACKAGE, busybox_package, BUILD_SCRIPT_VERSION)
    memo = root / "resolved" / f"{fp}.json" if fp else None
    if memo is not None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(memo.read_text())
            return Deb(**data["kernel"]), Deb(**data["busybox"]), str(data["gcc"])
    say("resolving packages")
    kpkg = kernel_package or _resolve_kernel_package()
    kdeb, bdeb = resolve_debs([kpkg, busybox_package])
    cc_version = run_step("check the C compiler (gcc)", ["gcc", "-dumpfullversion"]).strip()
    if memo is not None:
        with contextlib.suppress(OSError):
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"kernel": kdeb.__dict__, "busybox": bdeb.__dict__, "gcc": cc_version}))
            os.replace(tmp, memo)
    return kdeb, bdeb, cc_version


def _extract_vmlinux(vmlinuz: bytes, step: str) -> bytes:
    """The uncompressed ELF kernel inside a bzImage: find the compressed payload and inflate it
    (what the kernel's scripts/extract-vmlinux does)."""
    attempts: list[str] = []
    for magic, kind in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip")):
        start = vmlinuz.find(magic)
        while start != -1:
            try:
                if kind == "xz":
                    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
                else:
                    out = zlib.decompressobj(wbits=31).decompress(vmlinuz[start:])
            except (lzma.LZMAError, zlib.error) as e:
                attempts.append(f"{kind} at {start}: {e}")
            else:
                if out[:4] == b"\x7fELF":
                    return out
                attempts.append(f"{kind} at {start}: not an ELF file")
            start = vmlinuz.find(magic, start + 1)
    raise ImageBuildError(
        step, "no xz or gzip compressed ELF kernel found in vmlinuz", output="\n".join(attempts)
    )


def _load_cached(final: Path, digest: str) -> GuestImage | None:
    manifest = final / "manifest.json"
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    kernel, initrd = final / "vmlinux", final / "initrd.img"
    if meta.get("digest") != digest or not kernel.is_file() or not initrd.is_file():
        return None
    return GuestImage(kernel, initrd, str(meta["append"]), str(meta["kernel_version"]), digest, cached=True)


# ------------------------------------------------------------------------------------------------
# the build


def build_tiny_image(
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
    *,
    kernel_package: str | None = None,
    busybox_package: str = BUSYBOX_PACKAGE,
    compress: bool = False,
) -> GuestImage:
    """Build (or find in the cache) the tiny guest image.

    ``kernel_package`` defaults to the package ``linux-image-amd64`` depends on. ``compress``
    gzips the initramfs (about 3 MB → 1.5 MB); it is off by default because an uncompressed
    initramfs boots faster under TCG and leaves no decompression window at boot.
    Raises ImageBuildError naming the failing step and package.
    """
    say: Progress = progress or (lambda _msg: None)
    root = cache_dir if cache_dir is not None else _default_cache_dir()
    t_start = time.monotonic()

    kdeb, bdeb, cc_version = _resolve_inputs(root, kernel_package, busybox_package, say)
    agent_c, init_sh = _agent_source("agent.c"), init_script(_agent_source("init.sh"))

    inputs = {
        "build_script_version": BUILD_SCRIPT_VERSION,
        "kernel_deb": f"{kdeb.filename} {kdeb.sha256}",
        "busybox_deb": f"{bdeb.filename} {bdeb.sha256}",
        "agent_c": hashlib.sha256(agent_c).hexdigest(),
        "init_sh": hashlib.sha256(init_sh).hexdigest(),
        "gcc": cc_version,
        "cflags": " ".join(AGENT_CFLAGS),
        "modules": " ".join(MODULE_ORDER),
        "append": BASE_APPEND,
        "compress": str(compress),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]
    final = root / "images" / f"tiny-{digest}"

    def build(tmp: Path) -> GuestImage:
        return _build_into(
            tmp=tmp, final=final, digest=digest, inputs=inputs, kdeb=kdeb, bdeb=bdeb, agent_c=agent_c,
            init_sh=init_sh, root=root, say=say, compress=compress, t_start=t_start,
        )  # fmt: skip

    return cached_build(
        "tiny", final, lambda: _load_cached(final, digest), build, force=force, say=say, t_start=t_start
    )


_default_cache_dir = cache_dir


def _kernel_and_modules(kpath: Path, kdeb: Deb, say: Progress) -> tuple[bytes, str, dict[str, bytes]]:
    """The uncompressed kernel (PVH boots vmlinux), its version, and the modules in MODULE_ORDER."""
    step = f"extract kernel and modules from {kdeb.package}"
    say(f"extracting kernel and modules from {kpath.name}")
    vmlinuz: bytes | None = None
    kernel_version = ""
    modules: dict[str, bytes] = {}
    for member, tar in iter_deb_files(kpath, step):
        name = member.name.removeprefix("./")
        if not member.isfile():
            continue
        m = re.fullmatch(r"boot/vmlinuz-(.+)", name)
        if m:
            f = tar.extractfile(member)
            assert f is not None
            vmlinuz, kernel_version = f.read(), m.group(1)
            continue
        m = re.fullmatch(r"(?:usr/)?lib/modules/[^/]+/kernel/.*/([^/]+)\.ko(\.xz)?", name)
        if m and m.group(1) in MODULE_ORDER:
            f = tar.extractfile(member)
            assert f is not None
            data = f.read()
            modules[m.group(1)] = lzma.decompress(data) if m.group(2) else data
    if vmlinuz is None:
        raise ImageBuildError(step, f"no boot/vmlinuz-* in {kpath.name}")
    missing = [mod for mod in ("virtio_console", "virtio_net", "virtio_pci") if mod not in modules]
    if missing:
        # a module the kernel has built in is fine, but then none of the virtio family is a module
        say(f"note: modules not found as files (built in?): {', '.join(missing)}")
    say("extracting the uncompressed kernel (vmlinux) for PVH boot")
    vmlinux = _extract_vmlinux(vmlinuz, f"extract vmlinux from vmlinuz-{kernel_version}")

    return vmlinux, kernel_version, modules


def _busybox(bpath: Path, bdeb: Deb, say: Progress) -> bytes:
    """The busybox binary from its Debian package."""
    step = f"extract busybox from {bdeb.package}"
    say(f"extracting busybox from {bpath.name}")
    busybox: bytes | None = None
    for member, tar in iter_deb_files(bpath, step):
        if member.isfile() and member.name.removeprefix("./") in ("bin/busybox", "usr/bin/busybox"):
            f = tar.extractfile(member)
            assert f is not None
            busybox = f.read()
    if busybox is None:
        raise ImageBuildError(step, f"no bin/busybox in {bpath.name}")

    return busybox


def _build_into(
    *,
    tmp: Path,
    final: Path,
    digest: str,
    inputs: dict[str, str],
    kdeb: Deb,
    bdeb: Deb,
    agent_c: bytes,
    init_sh: bytes,
    root: Path,
    say: Progress,
    compress: bool,
    t_start: float,
) -> GuestImage:
    """Fill ``tmp`` with the tiny image (kernel, initramfs, manifest); return it as it will be
    found at ``final`` once cached_build() has renamed ``tmp`` into place."""
    downloads = root / "downloads"
    kpath = fetch_deb(kdeb, downloads, say)
    bpath = fetch_deb(bdeb, downloads, say)

    vmlinux, kernel_version, modules = _kernel_and_modules(kpath, kdeb, say)
    busybox = _busybox(bpath, bdeb, say)

    # agent
    say("compiling the agent (gcc -static)")
    src = tmp / "agent.c"
    src.write_bytes(agent_c)
    run_step("compile the agent (gcc -static)", ["gcc", *AGENT_CFLAGS, "-o", str(tmp / "agent"), str(src)])
    agent = (tmp / "agent").read_bytes()
    src.unlink()
    (tmp / "agent").unlink()

    # initramfs
    say("packing the initramfs")
    order = [mod for mod in MODULE_ORDER if mod in modules]
    cpio = build_cpio(
        dirs=["bin", "dev", "etc", "etc/novamig", "lib", "lib/modules", "proc", "sys", "tmp", "run"],
        files={
            "init": (init_sh, 0o755),
            "bin/busybox": (busybox, 0o755),
            "bin/novamig-agent": (agent, 0o755),
            "etc/novamig/modules": ("".join(f"{mod}\n" for mod in order).encode(), 0o644),
            **{f"lib/modules/{mod}.ko": (data, 0o644) for mod, data in modules.items()},
        },
        symlinks={"bin/sh": "busybox"},
        nodes={"dev/console": (stat.S_IFCHR, 5, 1), "dev/null": (stat.S_IFCHR, 1, 3)},
    )
    initrd_data = gzip.compress(cpio, compresslevel=6, mtime=0) if compress else cpio

    (tmp / "vmlinux").write_bytes(vmlinux)
    (tmp / "initrd.img").write_bytes(initrd_data)
    manifest = {
        "digest": digest,
        "kernel_version": kernel_version,
        "append": BASE_APPEND,
        "modules": order,
        "inputs": inputs,
        "sizes": {"vmlinux": len(vmlinux), "initrd": len(initrd_data), "cpio": len(cpio)},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.monotonic() - t_start, 2),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    return GuestImage(final / "vmlinux", final / "initrd.img", BASE_APPEND, kernel_version, digest)
