"""Which locustfile a Locust probe runs, and whether it can run it: checked before a case.

``workload.locust.locustfile`` is ``builtin:<name>`` (one of novamig/workload/locustfiles) or a
path, relative to the scenario's folder. Guest-side Locust receives a user's file as text in one
JSON request to the guest's web application, which takes at most 1 MiB; the limit here leaves
room for the request's other fields and the JSON escaping.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from novamig.scenario.models import LocustLoad

#: A guest-side user locustfile goes to the guest in one JSON request (the app takes ≤ 1 MiB).
USER_LOCUSTFILE_MAX_BYTES = 512 * 1024


class LocustUnsupported(ValueError):
    """The scenario asks for a Locust set-up this probe cannot run (the reason says why)."""


def unsupported_reason(settings: LocustLoad, scenario_dir: Path | None) -> str | None:
    """Why this probe cannot run these settings, or None. For the runner's preflight."""
    name = settings.locustfile
    if name.startswith("builtin:"):
        builtin = name.removeprefix("builtin:")
        if not resources.files("novamig.workload").joinpath("locustfiles", f"{builtin}.py").is_file():
            return f"no builtin locustfile {builtin!r} in novamig/workload/locustfiles"
        return None
    path = Path(name) if scenario_dir is None else (scenario_dir / name)
    if not path.is_file():
        return f"locustfile {path} does not exist"
    if settings.where == "guest":
        try:
            size = len(path.read_text(encoding="utf-8").encode())
        except (OSError, UnicodeDecodeError) as e:
            return f"locustfile {path} cannot be read as UTF-8 text: {e}"
        if size > USER_LOCUSTFILE_MAX_BYTES:
            return (
                f"locustfile {path} is {size} bytes; a guest-side locustfile travels in one "
                f"request to the guest and may be at most {USER_LOCUSTFILE_MAX_BYTES} bytes"
            )
    return None


def locustfile_path(settings: LocustLoad, scenario_dir: Path | None) -> Path:
    """The file to run: a builtin's place in the installed package, or the user's file."""
    name = settings.locustfile
    if name.startswith("builtin:"):
        ref = resources.files("novamig.workload").joinpath(
            "locustfiles", f"{name.removeprefix('builtin:')}.py"
        )
        return Path(str(ref))
    return Path(name) if scenario_dir is None else (scenario_dir / name).resolve()
