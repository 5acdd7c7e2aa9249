"""Which dotted key paths exist in the scenario model, and the closest one to a mistyped path.

`--set` overrides and `matrix` keys name fields by dotted path. Checking them against the model
(rather than trying the value and seeing what breaks) gives the user an exact message: which
segment is unknown and which existing key they probably meant.

Every function takes the root model class (`Scenario`) as an argument instead of importing it:
the model's own validators call into this module, so importing the model here would make a cycle.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

#: Matrix keys may not vary these: they define the experiment rather than a parameter of it.
NOT_IN_MATRIX = ("name", "description", "matrix", "sla_by_cell", "repeat")


@dataclass(frozen=True)
class PathError:
    """Why a dotted path names no field: `depth` is the index of the first bad segment."""

    depth: int
    message: str


class _DictOf:
    """Marks a `dict[str, X]` field: any key is allowed below it."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _alternatives(annotation: Any) -> list[Any]:
    """The concrete types a field annotation may hold (unions, Optional and Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [t for arg in typing.get_args(annotation) for t in _alternatives(arg)]
    if origin is dict:
        return [_DictOf(typing.get_args(annotation)[1])]
    return [annotation]


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice most like `word`, if any is close enough to be worth suggesting."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`; did you mean `x`?` or, with nothing close, the list of valid keys when it is short."""
    best = closest(word, choices)
    if best is not None:
        return f"; did you mean `{best}`?"
    if 0 < len(choices) <= 12:
        return "; valid keys: " + ", ".join(f"`{c}`" for c in choices)
    return ""


@cache
def all_paths(root: type[BaseModel]) -> tuple[str, ...]:
    """Every dotted path to a field of the `root` model, parents before children."""

    def walk(model: type[BaseModel], prefix: str) -> Iterator[str]:
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            yield path
            for t in _alternatives(info.annotation):
                if _is_model(t):
                    yield from walk(t, f"{path}.")

    return tuple(walk(root, ""))


def model_fields_at(root: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """Field names of the model(s) found at a key path below `root` (for "did you mean" on unknown keys)."""
    kinds: list[Any] = [root]
    for segment in path:
        nxt: list[Any] = []
        for t in kinds:
            if _is_model(t) and isinstance(segment, str) and segment in t.model_fields:
                nxt.extend(_alternatives(t.model_fields[segment].annotation))
            elif isinstance(segment, int) and typing.get_origin(t) is list:  # a list of models
                nxt.extend(_alternatives(typing.get_args(t)[0]))
        kinds = nxt
    return [name for t in kinds if _is_model(t) for name in t.model_fields]


def check_path(root: type[BaseModel], segments: Sequence[str]) -> PathError | None:
    """None when `segments` names a field of `root` (or a key of a mapping field), else why not."""
    kinds: list[Any] = [root]
    for depth, segment in enumerate(segments):
        models = [t for t in kinds if _is_model(t)]
        dicts = [t for t in kinds if isinstance(t, _DictOf)]
        if dicts:
            kinds = [a for d in dicts for a in _alternatives(d.value)]
            continue
        if not models:
            parent = ".".join(segments[:depth])
            return PathError(depth, f"`{parent}` is a single value; it has no key `{segment}`")
        fields = [name for m in models for name in m.model_fields]
        if segment not in fields:
            suffix = "." + segment
            prefix = ".".join(segments[:depth])
            elsewhere = sorted(
                (p for p in all_paths(root) if p.endswith(suffix) or p == segment),
                key=lambda p: not p.startswith(prefix),
            )
            hint = f"; did you mean `{elsewhere[0]}`?" if elsewhere else did_you_mean(segment, fields)
            return PathError(depth, f"unknown key `{segment}`{hint}")
        kinds = [
            a
            for m in models
            if segment in m.model_fields
            for a in _alternatives(m.model_fields[segment].annotation)
        ]
    return None


def check_matrix_key(root: type[BaseModel], key: str) -> str | None:
    """None when a matrix key names a field of `root` a case may vary, else the message for the user."""
    segments = key.split(".")
    if segments[0] in NOT_IN_MATRIX:
        return f"`{segments[0]}` cannot vary in a matrix"
    error = check_path(root, segments)
    return None if error is None else f"`{key}` names no scenario field: {error.message}"
