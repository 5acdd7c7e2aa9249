"""Shared by the scenario tests: where the shipped scenarios are, and the `check` helper's type.

A module with a unique name rather than `conftest`, so importing it never picks up another
directory's conftest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "scenarios").glob("*.yaml"))

#: `check(text, overrides=())` → printed lines, the file shown as `F` (see conftest.py).
Check = Callable[..., list[str]]
