"""Build primitives shared by the guest images (tiny: ``novamig.guest.image``; full and Glance
forms: ``novamig.guest.full``): running a build step, fetching and reading Debian packages, packing
and reading an initramfs, and the one cache routine every image goes through.

Why one module: each image is a different recipe over the same few operations, and the cache
routine (check, lock, check again, build in a temporary directory, rename into place) is where a
subtle mistake (a half-built image in the cache, two parallel builders racing) would show up only
under pytest-xdist or after a crash. Written once here, every image gets the same guarantees.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

__all__ = [
    "Deb",
    "ImageBuildError",
    "Progress",
    "build_cpio",
    "cached_build",
    "fetch_deb",
    "iter_deb_files",
    "lock_busy",
    "locked",
    "read_newc",
    "remove_tree",
    "resolve_debs",
    "run_step",
]

Progress = Callable[[str], None]

_Image = TypeVar("_Image")


class ImageBuildError(Exception):
    """An image build failed. ``step`` names the step (and the package, where one is involved);
    ``command`` and ``output`` carry the failing command and what it printed."""

    def __init__(
        self, step: str, message: str, command: Sequence[str] | None = None, output: str = ""
    ) -> None:
        self.step = step
        self.message = message
        self.command = list(command) if command is not None else None
        self.output = output
        text = f"image build failed at step '{step}': {message}"
        if self.command:
            text += f"\n  command: {' '.join(self.command)}"
        if output.strip():
            tail = "\n".join(output.strip().splitlines()[-15:])
            text += "\n  output:\n    " + tail.replace("\n", "\n    ")
        super().__init__(text)


# ------------------------------------------------------------------------------------------------
# the cache routine


def cached_build(
    kind: str,
    final: Path,
    lookup: Callable[[], _Image | None],
    build: Callable[[Path], _Image],
    *,
    force: bool,
    say: Progress,
    t_start: float,
    check: Callable[[], None] | None = None,
) -> _Image:
    """The image in directory ``final`` (named by the digest of its inputs): from the cache when
    ``lookup()`` finds it (unless ``force``), else made by ``build(tmp)`` and renamed into place.

    ``build`` fills the fresh directory ``tmp`` (next to ``final``, so the rename is atomic) and
    returns the image as it will be found at ``final``; on any failure ``tmp`` is removed, so the
    cache never holds a half-built image. Builders of one ``kind`` take one lock
    (``.<kind>.lock``), and look in the cache again once they hold it: parallel builders
    (pytest-xdist workers) build once and share. ``check`` runs on a cache miss before the wait
    for the lock, to fail at once on a host that cannot build.
    """
    if not force:
        hit = lookup()
        if hit is not None:
            say(f"cache hit: {final}")
            return hit
    if check is not None:
        check()
    images = final.parent
    lock = images / f".{kind}.lock"
    if lock_busy(lock):
        say(f"waiting for another {kind}-image build to finish")
    with locked(lock):
        if not force:  # another builder may have finished while we waited for the lock
            hit = lookup()
            if hit is not None:
                say(f"cache hit: {final}")
                return hit
        images.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-build-", dir=images))
        tmp.chmod(0o755)
        try:
            image = build(tmp)
            if final.exists():  # forced rebuild: move the old one aside, then swap
                old = final.with_name(f".old-{final.name}-{os.getpid()}")
                os.rename(final, old)
                remove_tree(old)
            os.rename(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        say(f"built {final} in {time.monotonic() - t_start:.1f} s")
    return image


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so parallel builders (pytest-xdist workers) build once and share."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_busy(path: Path) -> bool:
    """True if another builder holds the lock (so the wait can be announced)."""
    try:
        with path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def remove_tree(path: Path) -> None:
    """Delete a build tree, unmounting first whatever is still mounted below it (an interrupted
    mmdebstrap can leave /proc or /sys mounted in the root filesystem): rmtree would otherwise
    descend into them."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    below = sorted((m for m in _mountpoints() if m.startswith(prefix)), key=len, reverse=True)
    for mountpoint in below:
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False)
    if below and any(m.startswith(prefix) for m in _mountpoints()):
        raise ImageBuildError("clean up", f"cannot unmount everything below {path}; remove it by hand")
    shutil.rmtree(path, ignore_errors=True)


def _mountpoints() -> list[str]:
    try:
        return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        return []


# ------------------------------------------------------------------------------------------------
# commands and Debian packages


def run_step(
    step: str, cmd: Sequence[str], cwd: Path | None = None, timeout: float = 600, stdin: str | None = None
) -> str:
    """Run a command (fed ``stdin`` if given) and return its output; any failure becomes an
    ImageBuildError naming the step, so the user learns what the build was doing, not just
    which program failed."""
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as e:
        raise ImageBuildError(step, f"program not found: {cmd[0]}", cmd) from e
    except subprocess.TimeoutExpired as e:
        raise ImageBuildError(step, f"timed out after {timeout:.0f} s", cmd) from e
    if proc.returncode != 0:
        raise ImageBuildError(
            step, f"exit status {proc.returncode}", cmd, (proc.stdout or "") + (proc.stderr or "")
        )
    return proc.stdout


@dataclass(frozen=True)
class Deb:
    """A Debian package as apt would download it (resolved without downloading)."""

    package: str
    url: str
    filename: str
    sha256: str


def resolve_debs(packages: Sequence[str]) -> list[Deb]:
    """Ask apt which .deb it would fetch for each package (URL, file name, SHA256): these name
    the exact inputs for the cache key without downloading anything."""
    debs: list[Deb] = []
    with tempfile.TemporaryDirectory(prefix="novamig-resolve-") as tmp:
        for package in packages:
            # one call per package, in an empty directory (apt skips files already present)
            cmd = ["apt-get", "download", "--print-uris", package]
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
            output = proc.stdout + proc.stderr
            m = re.search(r"^'(\S+)' (\S+\.deb) \d+ SHA256:([0-9a-f]{64})", proc.stdout, re.MULTILINE)
            if proc.returncode != 0 or not m:
                hint = ""
                if "Unable to locate package" in output or "has no installation candidate" in output:
                    hint = " (no such package in the apt lists; is the name right? is `apt-get update` done?)"
                raise ImageBuildError(
                    f"resolve package {package}", f"apt cannot resolve {package}{hint}", cmd, output
                )
            debs.append(Deb(package, m.group(1), m.group(2), m.group(3)))
    return debs


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_deb(deb: Deb, downloads: Path, progress: Progress) -> Path:
    """The .deb from the download cache, or fetched with ``apt-get download`` (verified)."""
    target = downloads / deb.filename
    if target.exists() and _sha256_file(target) == deb.sha256:
        progress(f"package {deb.package}: cached {target}")
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    step = f"download package {deb.package}"
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=downloads) as tmp:
        run_step(step, ["apt-get", "download", deb.package], cwd=Path(tmp))
        got = list(Path(tmp).glob("*.deb"))
        if len(got) != 1:
            raise ImageBuildError(step, f"expected one .deb, found {[p.name for p in got]}")
        if _sha256_file(got[0]) != deb.sha256:
            raise ImageBuildError(step, f"SHA256 of {got[0].name} does not match the apt lists")
        os.replace(got[0], target)
    progress(f"package {deb.package}: downloaded {target.name} in {time.monotonic() - t0:.1f} s")
    return target


def iter_deb_files(deb: Path, step: str) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Stream the members of a .deb's data archive (``dpkg-deb --fsys-tarfile``)."""
    cmd = ["dpkg-deb", "--fsys-tarfile", str(deb)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as e:
        raise ImageBuildError(step, "program not found: dpkg-deb", cmd) from e
    assert proc.stdout is not None and proc.stderr is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                yield member, tar
    except tarfile.TarError as e:
        raise ImageBuildError(step, f"cannot read the package archive: {e}", cmd) from e
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        rc = proc.wait()
    if rc != 0:
        raise ImageBuildError(step, f"exit status {rc}", cmd, err)


# ------------------------------------------------------------------------------------------------
# initramfs ('newc' cpio)


def _newc_entry(
    name: str, mode: int, data: bytes = b"", ino: int = 0, rdev: tuple[int, int] = (0, 0)
) -> bytes:
    """One entry of a 'newc' cpio archive (the initramfs format), owned by root."""
    nameb = name.encode() + b"\0"
    fields = [
        ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0,
    ]  # fmt: skip
    header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    out = header + nameb
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


#: The line of an init script that the shared fw_cfg user-data snippet replaces.
INCLUDE_USER_DATA = b"#@include user-data.sh\n"


def init_script(script: bytes) -> bytes:
    """An image's init with ``novamig/guest/agent/user-data.sh`` put in place of its include line:
    both images run user-data the same way from one source, and the init inside a guest stays one
    self-contained script. The result is what the image's cache key hashes."""
    if script.count(INCLUDE_USER_DATA) != 1:
        raise ValueError("an init script must include user-data.sh exactly once")
    snippet = resources.files("novamig.guest").joinpath("agent", "user-data.sh").read_bytes()
    return script.replace(INCLUDE_USER_DATA, snippet)


def build_cpio(dirs: Sequence[str], files: dict[str, tuple[bytes, int]], symlinks: dict[str, str],
               nodes: dict[str, tuple[int, int, int]]) -> bytes:  # fmt: skip
    """Pack an initramfs: directories, regular files (data, permission bits), symlinks and
    character device nodes (type bits, major, minor), then the trailer. Written by hand rather
    than with cpio(1) so the archive is byte-for-byte reproducible (no mtimes, no host uids)."""
    buf = io.BytesIO()
    ino = 1
    for d in dirs:
        buf.write(_newc_entry(d, stat.S_IFDIR | 0o755, ino=ino))
        ino += 1
    for name, (data, perm) in sorted(files.items()):
        buf.write(_newc_entry(name, stat.S_IFREG | perm, data, ino=ino))
        ino += 1
    for name, target in sorted(symlinks.items()):
        buf.write(_newc_entry(name, stat.S_IFLNK | 0o777, target.encode(), ino=ino))
        ino += 1
    for name, (kind, major, minor) in sorted(nodes.items()):
        buf.write(_newc_entry(name, kind | 0o600, ino=ino, rdev=(major, minor)))
        ino += 1
    buf.write(_newc_entry("TRAILER!!!", 0))
    return buf.getvalue()


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """Members of a 'newc' cpio archive (gzip-compressed or not): name → (mode, data). The full
    image takes the tiny image's agent and busybox from its initramfs this way, so both images
    carry the very same binaries."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    out: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while pos + 110 <= len(data):
        header = data[pos : pos + 110]
        if header[:6] not in (b"070701", b"070702"):
            raise ValueError(f"not a newc cpio header at offset {pos}")
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        content = data[pos : pos + size]
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            break
        out[name] = (mode, content)
    return out
