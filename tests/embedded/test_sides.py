"""The embedded cloud's two sides stay apart: the client side never imports the service side.

``novamig.embedded`` (``EmbeddedCloud``, ``novamig cloud up``, the pytest fixtures) runs in the
caller's process and starts the cloud as ``python -m novamig.embedded.service.main``; everything
under ``novamig.embedded.service`` runs in the cloud's own processes and imports Nova, Placement or
Keystone. A client module importing a service module would load Nova's process-global
configuration into the caller (a test run, the runner), so this is checked on the source text
(ast): every import counts, at the top, inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import novamig.embedded

EMBEDDED = Path(novamig.embedded.__file__).resolve().parent
SERVICE = "novamig.embedded.service"
#: Third-party packages only the service side may import (the client must stay light and must not
#: share a process with Nova's, Placement's or Keystone's global configuration).
SERVICE_ONLY_LIBRARIES = ("nova", "placement", "keystone", "oslo_config", "oslo_db", "futurist")


def client_modules() -> list[Path]:
    return sorted(p for p in EMBEDDED.glob("*.py"))


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in a module; ``from a import b`` gives ``a.b``."""
    names: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}:{node.lineno}: relative import"
            source = node.module or ""
            names += [(node.lineno, source)] + [(node.lineno, f"{source}.{a.name}") for a in node.names]
    return names


def _is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_client_side_is_found() -> None:
    names = {p.stem for p in client_modules()}
    assert {"controller", "commands", "clouds_yaml", "pytest_fixtures", "processes"} <= names
    assert (EMBEDDED / "service" / "main.py").exists()


def test_client_modules_never_import_the_service_side() -> None:
    offences = [
        f"{path.name}:{line} imports {name}"
        for path in client_modules()
        for line, name in imported_names(path)
        if _is_within(name, SERVICE)
    ]
    assert not offences, "client modules importing novamig.embedded.service:\n" + "\n".join(offences)


def test_client_modules_never_import_nova_placement_or_keystone() -> None:
    offences = [
        f"{path.name}:{line} imports {name}"
        for path in client_modules()
        for line, name in imported_names(path)
        if any(_is_within(name, lib) for lib in SERVICE_ONLY_LIBRARIES)
    ]
    assert not offences, "client modules importing a service-side library:\n" + "\n".join(offences)


def test_the_client_starts_the_service_by_module_path() -> None:
    """The one link from client to service is the command line of the cloud process."""
    source = (EMBEDDED / "controller.py").read_text()
    assert '"-m", "novamig.embedded.service.main"' in source
