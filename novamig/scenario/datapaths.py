"""Reading dotted key paths and writing a value at one inside plain scenario data.

Shared by `--set` overrides and matrix cells, so both spell paths alike: dots separate keys, and
everything after `matrix.` is one matrix key (matrix keys are dotted paths themselves).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PathConflict(ValueError):
    """The path goes through a value that is not a mapping (e.g. a flavor given by name)."""

    def __init__(self, depth: int, message: str, key: str = "") -> None:
        self.depth = depth
        self.key = key
        super().__init__(message)


def split_key_path(text: str) -> tuple[str, ...]:
    """`migration.policy.timeout_s` → its keys; `matrix.a.b` → (`matrix`, `a.b`)."""
    head, sep, rest = text.partition(".")
    if head == "matrix" and sep:
        return (head, rest)
    return tuple(text.split("."))


def written_at(data: Any, keys: Sequence[str | int]) -> list[Any]:
    """The value plain mapping data holds at `keys`, as a one-item list; empty when some key is
    missing or the path goes through a value that is not a mapping (so a written null is found)."""
    node = data
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return []
        node = node[key]
    return [node]


def set_path(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    """Set `value` at `keys` in `data`, creating missing (or null) mappings on the way."""
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise PathConflict(
                depth + 1,
                f"`{where}` is a single value, not a mapping; set `{where}` as a whole instead",
            )
        node = child
    node[keys[-1]] = value
