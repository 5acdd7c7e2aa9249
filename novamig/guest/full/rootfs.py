"""One build of the full guest, step by step: root filesystem (mmdebstrap), Locust venv, novamig's
files, then the embedded form's ext4 disk and initramfs or the Glance form's partitioned disk.

`FullBuild.run()` works in a temporary directory and returns the image; `variants` decides when
to build (cache, lock) and with which inputs.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from novamig.guest.build import (
    ImageBuildError,
    Progress,
    build_cpio,
    fetch_deb,
    iter_deb_files,
    read_newc,
    remove_tree,
    resolve_debs,
    run_step,
)
from novamig.guest.full.images import CloudImage, FullImage
from novamig.guest.full.layout import (
    AGENT_PATH,
    BOOT_PART_MIB,
    BUSYBOX_PATH,
    CHROOT_ENV,
    CLOUD_APPEND,
    CLOUD_INIT_CONFIG,
    CLOUD_MODULES,
    DISK_MODULES,
    DPKG_EXCLUDES,
    GLANCE_PROPERTIES,
    GUEST_LIB,
    GUEST_LOCUSTFILES,
    GUEST_PYTHON,
    HOSTNAME,
    MERGED_USR_HOOK,
    ROOT_APPEND,
    SUITE,
    SYSLINUX_MBR,
    VENV,
    WEB_PORT,
)
from novamig.guest.full.mirror import debian_mirror
from novamig.guest.image import BASE_APPEND, MODULE_ORDER


@dataclass
class FullBuild:
    """One build of one variant in `tmp`, moved to `final` when every step has passed."""

    tmp: Path
    final: Path
    root: Path
    digest: str
    inputs: dict[str, str]
    tiny_kernel: Path
    tiny_initrd: Path
    kernel_version: str
    locust_version: str
    sources: dict[str, bytes]
    initrd_init: bytes
    say: Progress
    t_start: float
    cloud: bool
    packages: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    vmlinuz: bytes = b""

    @property
    def rootfs(self) -> Path:
        return self.tmp / "rootfs"

    @property
    def module_names(self) -> tuple[str, ...]:
        return (*MODULE_ORDER, *DISK_MODULES, *(CLOUD_MODULES if self.cloud else ()))

    def _timed(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.monotonic() - t0, 2)

    def run(self) -> FullImage | CloudImage:
        agent, busybox = self.tiny_binaries()
        modules = self.kernel_modules()
        wheels = self.locust_wheels()
        self.debootstrap()
        self.install_locust(wheels)
        self.install_novamig(agent, busybox, modules)
        packages = self.finish_rootfs()
        rootfs_bytes = tree_bytes(self.rootfs)
        # the stage-1 initramfs needs only what mounts the root disk
        stage1 = [m for m in (*MODULE_ORDER, *DISK_MODULES) if m in modules]
        initrd = self.make_initrd(busybox, modules, stage1)
        sizes = {"initrd": len(initrd), "rootfs": rootfs_bytes}
        if self.cloud:
            sizes["disk_virtual"] = self.make_cloud_disk(rootfs_bytes)
            sizes["vmlinuz"] = len(self.vmlinuz)
            append = CLOUD_APPEND
        else:
            sizes["disk_virtual"] = self.make_disk(rootfs_bytes)
            self.link_kernel()
            sizes["vmlinux"] = (self.tmp / "vmlinux").stat().st_size
            append = f"{BASE_APPEND} {ROOT_APPEND}"
        remove_tree(self.rootfs)
        sizes["disk"] = (self.tmp / "disk.qcow2").stat().st_size

        build_seconds = round(time.monotonic() - self.t_start, 2)
        manifest = {
            "digest": self.digest,
            "variant": "cloud" if self.cloud else "embedded",
            "kernel_version": self.kernel_version,
            "append": append,
            "locust_version": self.locust_version,
            "web_port": WEB_PORT,
            "modules": [m for m in self.module_names if m in modules],
            "properties": GLANCE_PROPERTIES if self.cloud else {},
            "inputs": self.inputs,
            "sizes": sizes,
            "timings_s": self.timings,
            "packages": packages,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": build_seconds,
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        f = self.final  # where cached_build() renames tmp to
        if self.cloud:
            return CloudImage(
                disk=f / "disk.qcow2", kernel_version=self.kernel_version, digest=self.digest,
                locust_version=self.locust_version, properties=dict(GLANCE_PROPERTIES), sizes=sizes,
                build_seconds=build_seconds,
            )  # fmt: skip
        return FullImage(
            kernel=f / "vmlinux", initrd=f / "initrd.img", disk=f / "disk.qcow2", append=append,
            kernel_version=self.kernel_version, digest=self.digest, locust_version=self.locust_version,
            sizes=sizes, build_seconds=build_seconds,
        )  # fmt: skip

    # -------------------------------------------------------------------------- steps

    def tiny_binaries(self) -> tuple[bytes, bytes]:
        """The agent and busybox exactly as the tiny image carries them (one agent binary)."""
        step = f"read the agent and busybox from the tiny image {self.tiny_initrd}"
        try:
            members = read_newc(self.tiny_initrd.read_bytes())
        except (OSError, ValueError) as e:
            raise ImageBuildError(step, str(e)) from e
        try:
            return members["bin/novamig-agent"][1], members["bin/busybox"][1]
        except KeyError as e:
            raise ImageBuildError(step, f"{e.args[0]} is not in the tiny initramfs") from e

    def kernel_modules(self) -> dict[str, bytes]:
        """The tiny image's module set plus the root disk's, from the same kernel package."""
        t0 = time.monotonic()
        package = f"linux-image-{self.kernel_version}"
        (deb,) = resolve_debs([package])
        path = fetch_deb(deb, self.root / "downloads", self.say)
        step = f"extract modules from {package}"
        self.say(f"extracting modules from {path.name}")
        wanted = set(self.module_names)
        modules: dict[str, bytes] = {}
        for member, tar in iter_deb_files(path, step):
            if self.cloud and member.isfile() and re.fullmatch(r"\.?/?boot/vmlinuz-.+", member.name):
                f = tar.extractfile(member)
                assert f is not None
                self.vmlinuz = f.read()
                continue
            m = re.fullmatch(r"\.?/?(?:usr/)?lib/modules/[^/]+/kernel/.*/([^/]+)\.ko(\.xz)?", member.name)
            if m and member.isfile() and m.group(1) in wanted:
                f = tar.extractfile(member)
                assert f is not None
                data = f.read()
                modules[m.group(1)] = lzma.decompress(data) if m.group(2) else data
        missing = [
            mod for mod in (*DISK_MODULES, *(CLOUD_MODULES if self.cloud else ())) if mod not in modules
        ]
        if self.cloud and not self.vmlinuz:
            missing.append("boot/vmlinuz-*")
        if missing:
            raise ImageBuildError(step, f"modules not found in {path.name}: {', '.join(missing)}")
        self._timed("modules", t0)
        return modules

    def locust_wheels(self) -> Path:
        """Locust and its dependencies as wheels, built or fetched by the host's pip (its index
        and certificate configuration apply), kept in the download cache for the next build."""
        t0 = time.monotonic()
        tag = f"cp{GUEST_PYTHON[0]}{GUEST_PYTHON[1]}"
        target = self.root / "downloads" / f"wheels-locust-{self.locust_version}-{tag}"
        if (target / ".complete").is_file():
            self.say(f"Locust wheels: cached {target}")
            return target
        self.say(f"fetching Locust {self.locust_version} and its dependencies as wheels (host pip)")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".wheels-", dir=target.parent))
        try:
            run_step(
                f"fetch Python package locust=={self.locust_version} and its dependencies (pip wheel)",
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(staging),
                 f"locust=={self.locust_version}"],
                timeout=1200,
            )  # fmt: skip
            names = sorted(p.name for p in staging.glob("*.whl"))
            (staging / ".complete").write_text("".join(f"{n}\n" for n in names))
            if target.exists():
                remove_tree(target)
            os.rename(staging, target)
        finally:
            remove_tree(staging)
        self._timed("wheels", t0)
        return target

    def debootstrap(self) -> None:
        t0 = time.monotonic()
        mirror = debian_mirror()
        self.say(f"mmdebstrap {SUITE} (minbase + {', '.join(self.packages)}) from {mirror}")
        cmd = [
            "mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
            f"--include={','.join(self.packages)}", f"--hook-dir={MERGED_USR_HOOK}",
            *(f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES),
            "--aptopt=Acquire::Retries \"3\"",
            SUITE, str(self.rootfs), f"deb {mirror} {SUITE} main",
        ]  # fmt: skip
        step = f"create the Debian {SUITE} root filesystem (mmdebstrap; packages {', '.join(self.packages)})"
        run_step(step, cmd, timeout=1800)
        self._timed("mmdebstrap", t0)

    def chroot(self, step: str, *argv: str, timeout: float = 600) -> str:
        return run_step(step, ["env", "-i", *CHROOT_ENV, "chroot", str(self.rootfs), *argv], timeout=timeout)

    def install_locust(self, wheels: Path) -> None:
        t0 = time.monotonic()
        self.say(f"installing Locust {self.locust_version} into {VENV} (offline, from the wheels)")
        inside = "/tmp/novamig-wheels"
        shutil.copytree(wheels, self.rootfs / inside.lstrip("/"))
        self.chroot(f"create the guest venv {VENV} (python3 -m venv)", "python3", "-m", "venv", VENV)
        pip = f"{VENV}/bin/pip"
        self.chroot(
            f"install Python package locust=={self.locust_version} into the guest venv (pip)",
            pip, "install", "--quiet", "--no-index", "--find-links", inside, f"locust=={self.locust_version}",
        )  # fmt: skip
        # pip and setuptools are not needed at run time (and no index is reachable from a guest)
        self.chroot("remove pip and setuptools from the guest venv", pip, "uninstall", "--quiet", "--yes",
                    "setuptools", "pip")  # fmt: skip
        site = next((self.rootfs / VENV.lstrip("/") / "lib").glob("python3*/site-packages"))
        for tests in sorted(site.glob("*/tests")) + sorted(site.glob("*/*/tests")):
            remove_tree(tests)
        remove_tree(self.rootfs / inside.lstrip("/"))
        step = "check Locust in the guest venv (locust --version)"
        out = self.chroot(step, f"{VENV}/bin/locust", "--version")
        if self.locust_version not in out:
            raise ImageBuildError(step, f"unexpected version output: {out.strip()}")
        self._timed("locust", t0)

    def install_novamig(self, agent: bytes, busybox: bytes, modules: dict[str, bytes]) -> None:
        rootfs = self.rootfs
        self.say("installing the agent, busybox, modules, init and the web application")

        def put(path: str, data: bytes, mode: int = 0o644) -> None:
            target = rootfs / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode)

        put(AGENT_PATH, agent, 0o755)
        put(BUSYBOX_PATH, busybox, 0o755)
        for name, data in self.sources.items():
            put(name, data, 0o755 if name.endswith(".sh") or name.startswith("sbin/") else 0o644)
        order = [m for m in self.module_names if m in modules]
        for name in order:
            put(f"/lib/modules/novamig/{name}.ko", modules[name])
        put("/lib/modules/novamig/order", "".join(f"{m}\n" for m in order).encode())
        if self.cloud:
            put("/etc/cloud/cloud.cfg.d/90_novamig.cfg", CLOUD_INIT_CONFIG.encode())
        put("/etc/hostname", f"{HOSTNAME}\n".encode())
        put("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n".encode())
        # The whole root filesystem as an initramfs starts /init.
        with contextlib.suppress(FileNotFoundError):
            (rootfs / "init").unlink()
        (rootfs / "init").symlink_to("sbin/novamig-init")
        # Precompiled bytecode: Python imports under TCG are slow enough that compiling at first
        # start costs tens of seconds (the stdlib and the venv are compiled by dpkg and pip).
        self.chroot("precompile the web application and locustfiles (compileall)", "python3", "-m",
                    "compileall", "-q", GUEST_LIB, GUEST_LOCUSTFILES)  # fmt: skip

    def finish_rootfs(self) -> list[str]:
        """Record the package versions, then remove what a guest never reads."""
        out = self.chroot("list the guest's packages (dpkg-query)", "dpkg-query", "-W",
                          "-f=${Package} ${Version}\\n")  # fmt: skip
        packages = sorted(line for line in out.splitlines() if line.strip())
        rootfs = self.rootfs
        for pattern in ("var/cache/apt/*", "var/lib/apt/lists/*", "var/log/*", "tmp/*", "var/tmp/*",
                        "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "root/.cache"):  # fmt: skip
            for p in rootfs.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    remove_tree(p)
                else:
                    p.unlink(missing_ok=True)
        return packages

    def make_ext4(self, rootfs_bytes: int, raw: Path) -> int:
        """ext4 from the directory (``mke2fs -d``: no loop device, no mount), checked; returns
        its size."""
        t0 = time.monotonic()
        size_mib = ((rootfs_bytes * 5 // 4) >> 20) + 96
        self.say(f"making the ext4 root filesystem ({size_mib} MiB, mke2fs -d)")
        mke2fs = ["mke2fs", "-F", "-q", "-t", "ext4", "-L", "novamig-root", "-m", "0", "-i", "8192",
                  "-E", "root_owner=0:0", "-d", str(self.rootfs), str(raw), f"{size_mib}M"]  # fmt: skip
        run_step("make the ext4 root filesystem (mke2fs -d)", mke2fs, timeout=900)
        run_step("check the ext4 root filesystem (e2fsck -fn)", ["e2fsck", "-fn", str(raw)])
        self._timed("ext4", t0)
        return size_mib << 20

    def to_qcow2(self, raw: Path) -> None:
        t0 = time.monotonic()
        self.say("converting the disk to qcow2 (compressed)")
        qcow2 = self.tmp / "disk.qcow2"
        convert = ["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)]
        run_step("convert the disk to qcow2 (qemu-img convert -c)", convert, timeout=900)
        raw.unlink()
        self._timed("qcow2", t0)

    def make_disk(self, rootfs_bytes: int) -> int:
        """The embedded cloud's root disk: the bare ext4 filesystem (no partition table: the
        kernel and initramfs come from outside), as a compressed qcow2."""
        raw = self.tmp / "disk.raw"
        size = self.make_ext4(rootfs_bytes, raw)
        self.to_qcow2(raw)
        return size

    def make_cloud_disk(self, rootfs_bytes: int) -> int:
        """MBR (syslinux) + FAT boot partition (syslinux, vmlinuz, initramfs) + ext4 root."""
        t0 = time.monotonic()
        root_raw = self.tmp / "root.raw"
        root_size = self.make_ext4(rootfs_bytes, root_raw)
        boot = self.tmp / "boot.img"
        self.say("making the boot partition (FAT, syslinux)")
        boot.unlink(missing_ok=True)
        mkfs = ["mkfs.vfat", "-F", "32", "-n", "NOVAMIGBOOT", "-C", str(boot), str(BOOT_PART_MIB * 1024)]
        run_step("make the boot partition (mkfs.vfat)", mkfs)
        run_step("install the boot loader (syslinux --install)", ["syslinux", "--install", str(boot)])
        staged = self.tmp / "boot"
        staged.mkdir()
        (staged / "vmlinuz").write_bytes(self.vmlinuz)
        (staged / "initrd.img").write_bytes((self.tmp / "initrd.img").read_bytes())
        (staged / "syslinux.cfg").write_text(syslinux_cfg())
        run_step("copy the kernel and initramfs to the boot partition (mcopy)",
             ["mcopy", "-i", str(boot), *(str(staged / n) for n in ("vmlinuz", "initrd.img", "syslinux.cfg")),
              "::/"])  # fmt: skip
        remove_tree(staged)
        (self.tmp / "initrd.img").unlink()

        raw = self.tmp / "disk.raw"
        boot_start, root_start = 1 << 20, (1 + BOOT_PART_MIB) << 20
        total = root_start + root_size
        with raw.open("wb") as f:
            f.truncate(total)
        table = (
            "label: dos\n"
            f"start={boot_start // 512}, size={(BOOT_PART_MIB << 20) // 512}, type=c, bootable\n"
            f"start={root_start // 512}, type=83\n"
        )
        sfdisk = ["sfdisk", "--quiet", str(raw)]
        run_step("write the partition table (sfdisk)", sfdisk, timeout=120, stdin=table)
        mbr = Path(SYSLINUX_MBR).read_bytes()[:440]
        with raw.open("r+b") as f:
            f.write(mbr)  # boot code only: the partition table after byte 440 stays
            for offset, part in ((boot_start, boot), (root_start, root_raw)):
                f.seek(offset)
                with part.open("rb") as src:
                    shutil.copyfileobj(src, f, 4 << 20)
        boot.unlink()
        root_raw.unlink()
        self._timed("cloud_disk", t0)
        self.to_qcow2(raw)
        return total

    def make_initrd(self, busybox: bytes, modules: dict[str, bytes], order: list[str]) -> bytes:
        """The stage-1 initramfs: busybox, the modules and a script that mounts the root disk."""
        cpio = build_cpio(
            dirs=["bin", "dev", "etc", "etc/novamig", "lib", "lib/modules", "newroot", "proc", "sys", "run"],
            files={
                "init": (self.initrd_init, 0o755),
                "bin/busybox": (busybox, 0o755),
                "etc/novamig/modules": ("".join(f"{m}\n" for m in order).encode(), 0o644),
                **{f"lib/modules/{m}.ko": (modules[m], 0o644) for m in order},
            },
            symlinks={"bin/sh": "busybox"},
            nodes={"dev/console": (stat.S_IFCHR, 5, 1), "dev/null": (stat.S_IFCHR, 1, 3)},
        )
        (self.tmp / "initrd.img").write_bytes(cpio)
        return cpio

    def link_kernel(self) -> None:
        """The tiny image's vmlinux (hard link: same kernel, no second copy on disk)."""
        target = self.tmp / "vmlinux"
        try:
            os.link(self.tiny_kernel, target)
        except OSError:
            shutil.copy2(self.tiny_kernel, target)


def syslinux_cfg() -> str:
    return (
        "# novamig full guest (Glance form)\nDEFAULT novamig\nPROMPT 0\nTIMEOUT 0\n"
        f"LABEL novamig\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {CLOUD_APPEND}\n"
    )


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total
