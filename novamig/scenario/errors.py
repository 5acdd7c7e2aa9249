"""Turning pydantic's validation errors into problems a user can act on.

Pydantic reports a location tuple and a terse message. We strip the parts of the location that are
pydantic's own (union branch tags), say "unknown key `x`; did you mean `y`?" instead of "Extra
inputs are not permitted", replace regular expressions by words, show the offending value (never
under a secret-looking key) and unpack cross-field rule violations to the keys they are about.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from novamig.scenario.fieldpaths import closest, did_you_mean, model_fields_at
from novamig.scenario.issues import KeyPath, PathItem
from novamig.scenario.problems import Problem, RuleViolations
from novamig.scenario.redaction import is_secret_key, path_has_secret

_NAME_WORDS = "a name of letters, digits and `._:@-` (no spaces)"
#: What a pattern-constrained field expects, in words, by the field's key.
PATTERN_WORDS: dict[str, str] = {
    "name": "a slug: lowercase letters, digits, `-` and `_`, starting with a letter or digit, at most 63",
    "cloud": _NAME_WORDS,
    "image": _NAME_WORDS,
    "network": _NAME_WORDS,
    "floating_ip_network": "`auto`, `none` or an external network's name or id (letters, digits, `._:@-`)",
    "flavor": _NAME_WORDS,
    "target": "`auto`, `round-robin`, `drain:HOST` or a host name",
    "locustfile": "`builtin:NAME` or the path of a `.py` file",
    "env": "an environment variable name (letters, digits, `_`)",
    "matrix": "a dotted key path such as `migration.count`",
}


def describe_value(value: Any) -> str:
    """A short rendering of an offending value for a message (YAML spelling for scalars)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    return f"a {type(value).__name__}"


def _child(node: Any, item: PathItem) -> tuple[bool, Any]:
    """Whether `node` has `item` (a key or an index), and the value there."""
    if isinstance(node, dict) and item in node:
        return True, node[item]
    if isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
        return True, node[item]
    return False, None


def _clean_loc(loc: tuple[int | str, ...], data: Any, missing: bool) -> tuple[KeyPath, bool]:
    """The key path of a pydantic location in `data`, and whether it is about a mapping key.

    Items that are not in the data (pydantic's union tags) are dropped, except the last one of a
    `missing` error: that is the missing key's name.
    """
    path: list[PathItem] = []
    node = data
    about_key = False
    for i, item in enumerate(loc):
        last = i == len(loc) - 1
        if item == "[key]":
            about_key = True
            continue
        found, child = _child(node, item)
        if found:
            node = child
            path.append(item)
        elif last and missing:
            path.append(item)
    return tuple(path), about_key


def _last_key(path: KeyPath) -> str:
    keys = [p for p in path if isinstance(p, str)]
    return keys[-1] if keys else ""


def _with_value(message: str, path: KeyPath, value: Any) -> str:
    if path_has_secret(path):
        return f"{message} (value not shown: the key looks like a secret)"
    return f"{message}, got {describe_value(value)}"


def _problem(err: ErrorDetails, data: Any, root: type[BaseModel]) -> list[Problem]:
    kind = err["type"]
    path, about_key = _clean_loc(err["loc"], data, missing=kind == "missing")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, RuleViolations):
        prefix = path
        return [p.under(prefix) for p in cause.problems]
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else ""
        hint = did_you_mean(key, model_fields_at(root, path[:-1]))
        if is_secret_key(key):
            hint = "; credentials belong in clouds.yaml, never in a scenario"
        return [Problem(path, f"unknown key `{key}`{hint}", at_key=True)]
    if kind == "missing":
        return [Problem(path, f"missing required key `{path[-1] if path else ''}`")]
    message = err["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(_last_key(path[:-1]) if about_key else _last_key(path))
        message = f"should be {words}" if words else message
    if about_key:
        return [Problem(path, f"invalid key: {message}", at_key=True)]
    value = err.get("input")
    message = _with_value(message, path, value)
    if kind == "literal_error" and isinstance(value, str) and not path_has_secret(path):
        best = closest(value, re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        if best is not None:
            message += f"; did you mean `{best}`?"
    return [Problem(path, message)]


def problems_from(exc: ValidationError, data: Any, root: type[BaseModel]) -> list[Problem]:
    """Every problem in a validation error of `data` as a `root` model, each at its own key path."""
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        for problem in _problem(err, data, root):
            if problem not in problems:
                problems.append(problem)
    return problems
