"""What a scenario error looks like to the user, and how key paths are spelled.

An `Issue` is the unit `novamig validate` prints: `FILE:LINE:COL: key.path: message`. Lines and
columns are 1-based like a compiler's, so editors and CI log viewers can jump to them. Problems that
have no place inside a file (the file is missing, a `--set` override is malformed) use line and
column 0 and a file name in angle brackets (`<--set>`) or the path itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

PathItem = str | int
KeyPath = tuple[PathItem, ...]

#: The pseudo-file of problems caused by a `--set key.path=value` override.
OVERRIDE_FILE = "<--set>"
#: The key path shown for a problem about the whole document (empty file, not a mapping).
ROOT_PATH = "(root)"
#: The key path shown for a problem with the file itself (missing, unreadable, YAML syntax).
FILE_PATH = "(file)"
YAML_PATH = "(yaml)"
#: The key path shown for an override that is not `KEY.PATH=VALUE` at all.
OVERRIDE_PATH = "(--set)"


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_DOTTED_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


def _bracketed(key: str) -> str:
    if _DOTTED_KEY.match(key):
        return f"[{key}]"
    # Anything else is quoted, with blanks escaped, so a key path never contains a space and the
    # `FILE:LINE:COL: key.path: message` line stays parseable.
    return "[" + json.dumps(key).replace(" ", "\\u0020") + "]"


def format_key_path(path: Sequence[PathItem]) -> str:
    """Spell a key path the way users write it: `migration.policy.timeout_s`, `measure.probes[1]`.

    Keys that are not plain identifiers (a matrix key is itself a dotted path) are bracketed, so the
    spelling stays unambiguous: `matrix[migration.policy.post_copy_after_s][1]`; keys with other
    characters are quoted JSON strings: `fleet["my key"]` (blanks escaped as \\u0020).
    """
    if not path:
        return ROOT_PATH
    out: list[str] = []
    for item in path:
        if isinstance(item, int):
            out.append(f"[{item}]")
        elif _PLAIN_KEY.match(item):
            out.append(f".{item}" if out else item)
        else:
            out.append(_bracketed(item))
    return "".join(out)


def printable(text: str) -> str:
    """`text` with every non-printable character escaped (`\\x1e`, `\\u2028`).

    Messages echo keys and values from the user's file; a control character or a Unicode line
    separator in them must not break the one-issue-per-line output or play tricks on a terminal.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@dataclass(frozen=True, order=True)
class Issue:
    """One problem at one place. `str()` gives the line `novamig validate` prints."""

    file: str
    line: int
    col: int
    key_path: str
    message: str

    def __str__(self) -> str:
        return printable(f"{self.file}:{self.line}:{self.col}: {self.key_path}: {self.message}")


class ScenarioInvalid(Exception):
    """A scenario (file, overrides or both) is not valid; `.issues` says every reason and where."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues: list[Issue] = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues) or "invalid scenario")
