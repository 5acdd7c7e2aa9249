"""Recognising secrets so that novamig never prints or stores them.

Scenarios should not hold credentials (those belong in clouds.yaml), but a script's environment or a
mistyped key can carry one. Any value under a key that looks like a secret is never echoed in an
error message and is replaced in `redacted_dict`, which is what results.json stores. A command line
is free text, so inside any string value the values of secret-looking options (`--password=…`,
`--api-key …`) and environment assignments (`MYSQL_PWD=…`) are replaced too, and so is a value
glued to a short `-p` (MySQL's `-pSECRET`; `ssh -p2222` or `tar -pxf` lose their value as well).
Over-redacting is the safe side: a report that shows `<redacted>` for a harmless value loses
nothing measured.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from novamig.scenario.models import Scenario

REDACTED = "<redacted>"

_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|pwd|secret|token|credential|api[_-]?key|private[_-]?key|auth|cookie|session[_-]?key",
    re.IGNORECASE,
)
#: `--name=value`, `--name value` or `NAME=value` inside free text; the name is then checked.
_ASSIGNMENT = re.compile(
    r"""(?P<name>--?[A-Za-z0-9][A-Za-z0-9_.-]*|\b[A-Za-z_][A-Za-z0-9_]*)(?P<sep>=|[ \t]+(?=[^-\s]))"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^\s;&|]+)"""
)

#: A value glued to a short `-p` option (`mysql -pSECRET`, `-p'a b'`): not preceded by a word
#: character or a dash, so `--password` and `x-p1` are not taken for it.
_GLUED_P = re.compile(r"""(?<![\w-])-p(?P<value>"[^"]*"|'[^']*'|[^\s;&|=-][^\s;&|]*)""")


def is_secret_key(key: object) -> bool:
    """True when a mapping key's name suggests its value is a secret (`OS_PASSWORD`, `api_token`…)."""
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def path_has_secret(path: Iterable[object]) -> bool:
    """True when any key along a key path looks like a secret: the value there must not be shown."""
    return any(is_secret_key(item) for item in path)


def _redact_assignment(match: re.Match[str]) -> str:
    name = match["name"]
    is_option = name.startswith("-")
    if not is_secret_key(name) or (match["sep"] != "=" and not is_option):
        return match[0]
    return f"{name}{match['sep']}{REDACTED}"


def redact_text(text: str) -> str:
    """Free text (a command line) with the values of secret-looking options and variables replaced."""
    return _GLUED_P.sub(f"-p{REDACTED}", _ASSIGNMENT.sub(_redact_assignment, text))


def redact(value: Any) -> Any:
    """A copy of plain data (dicts, lists, scalars) with every secret-looking key's value replaced,
    and secret-looking assignments inside strings (`--password=…`, `MYSQL_PWD=…`) too."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redacted_dict(scenario: Scenario) -> dict[str, Any]:
    """The scenario as JSON-ready data with secrets replaced: what results.json records as `scenario`."""
    data: dict[str, Any] = redact(scenario.model_dump(mode="json"))
    return data
