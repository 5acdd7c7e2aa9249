"""Recognising secrets so that novamig never prints or stores them.

Scenarios should not hold credentials (those belong in clouds.yaml), but a script's environment or a
mistyped key can carry one. Any value under a key that looks like a secret is never echoed in an
error message and is replaced in `redacted_dict`, which is what results.json stores.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from novamig.scenario.models import Scenario

REDACTED = "<redacted>"

_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|credential|api[_-]?key|private[_-]?key|auth|cookie|session[_-]?key",
    re.IGNORECASE,
)


def is_secret_key(key: object) -> bool:
    """True when a mapping key's name suggests its value is a secret (`OS_PASSWORD`, `api_token`…)."""
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def path_has_secret(path: Iterable[object]) -> bool:
    """True when any key along a key path looks like a secret: the value there must not be shown."""
    return any(is_secret_key(item) for item in path)


def redact(value: Any) -> Any:
    """A copy of plain data (dicts, lists, scalars) with every secret-looking key's value replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redacted_dict(scenario: Scenario) -> dict[str, Any]:
    """The scenario as JSON-ready data with secrets replaced: what results.json records as `scenario`."""
    data: dict[str, Any] = redact(scenario.model_dump(mode="json"))
    return data
