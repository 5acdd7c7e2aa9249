"""A problem found in scenario data, before we know where in which file it is written.

Validation works on plain data and key paths; only the loader knows the YAML positions. Keeping the
two apart lets the same rules check a file, a `--set` override and every matrix cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from novamig.scenario.issues import KeyPath


@dataclass(frozen=True)
class Problem:
    """`message` about the value (or, with `at_key`, the key) at `path`.

    `alt_paths` are other keys the problem is about, in order of preference: when `path` itself is
    not written in the file (it took its default), the first of them that is written is pointed at.
    """

    path: KeyPath
    message: str
    at_key: bool = False
    alt_paths: tuple[KeyPath, ...] = field(default=())

    def under(self, prefix: KeyPath) -> Problem:
        """The same problem seen from `prefix` (a nested model's rule, reported from its parent)."""
        return Problem(
            (*prefix, *self.path),
            self.message,
            self.at_key,
            tuple((*prefix, *p) for p in self.alt_paths),
        )


class RuleViolations(ValueError):
    """Raised by a model validator: carries every cross-field problem with its own key path.

    It subclasses ValueError so pydantic wraps it into a ValidationError; the error conversion then
    finds it in the error's context and reports each problem at its own key instead of at the model.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(p.message for p in self.problems))
