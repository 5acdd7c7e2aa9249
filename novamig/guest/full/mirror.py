"""Which Debian mirror the build uses: the one this machine's apt sources already name."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path

from novamig.guest.build import (
    ImageBuildError,
)
from novamig.guest.full.layout import (
    SUITE,
)


def debian_mirror(suite: str = SUITE, sources: Sequence[Path] | None = None) -> str:
    """The Debian mirror URL from this machine's apt sources (deb822 ``*.sources`` files and
    one-line ``sources.list`` files), preferring an entry for ``suite`` with component ``main``.

    Why from the machine: the project must work behind whatever mirror or proxy the machine
    already uses, and must never hard-code a mirror host.
    """
    if sources is None:
        d = Path("/etc/apt/sources.list.d")
        sources = [Path("/etc/apt/sources.list")]
        with contextlib.suppress(OSError):
            sources += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    entries: list[tuple[str, list[str], list[str]]] = []  # uri, suites, components
    for path in sources:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            entries += _parse_deb822(text)
        else:
            entries += _parse_one_line(text)
    candidates: list[tuple[int, str]] = []
    for uri, suites, components in entries:
        if "main" not in components or not uri.startswith(("http://", "https://", "file:/")):
            continue
        if suite in suites:
            candidates.append((0, uri))
        elif any(s.split("-")[0] == suite and not s.endswith("-security") for s in suites):
            candidates.append((1, uri))
    if not candidates:
        raise ImageBuildError(
            "find the Debian mirror",
            f"no apt source for suite {suite!r} with component 'main' in "
            f"{', '.join(str(p) for p in sources)}; add one (e.g. a deb822 file in /etc/apt/sources.list.d)",
        )
    return sorted(candidates)[0][1].rstrip("/")


def _parse_deb822(text: str) -> list[tuple[str, list[str], list[str]]]:
    out: list[tuple[str, list[str], list[str]]] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    return out


def _parse_one_line(text: str) -> list[tuple[str, list[str], list[str]]]:
    out: list[tuple[str, list[str], list[str]]] = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 4 and words[0] == "deb":
            out.append((words[1], [words[2]], words[3:]))
    return out
