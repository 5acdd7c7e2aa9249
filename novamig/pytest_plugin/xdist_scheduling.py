"""One xdist worker at a time per named cloud: the scheduler that keeps a named cloud's cases together.

Two workers running cases on the same named cloud at once would drain the same hosts, and each
would measure the other's migrations. So under ``pytest -n N`` every case on a named cloud must
go to one worker, one case after another. pytest-xdist's own way to ask for that, the
``xdist_group`` mark with ``--dist loadgroup``, does not hold with pytest 9: xdist 3.8 tells the
controller an item's group by renaming the item ``<nodeid>@<group>`` on the worker
(``item._nodeid = ...`` in xdist/remote.py), pytest 9 reads a node's id from ``Node._id``, so the
rename changes nothing and a group's items are spread over the workers (pytest-xdist issue 1386;
its maintainers' answer there: groups should travel apart from the node id).

The controller needs no word from the workers: it has loaded the scenarios itself, so it knows
which scenario file runs on which named cloud. `CloudGroupScheduling` is xdist's scope scheduler
(`LoadScopeScheduling`: a scope's items go to one worker, in order) with the scope of a case taken
from that mapping, by the file part of its node id, and the scope of every other item the one the
chosen ``--dist`` mode gives it. It replaces ``load``, ``worksteal``, ``loadscope``, ``loadfile``
and ``loadgroup`` when a session has a named cloud; ``each`` is the user's explicit wish to run
every item on every worker, and an embedded cloud is each worker's own, so neither needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from xdist.remote import Producer  # type: ignore[import-untyped]  # pytest-xdist ships no types
from xdist.scheduler import (  # type: ignore[import-untyped]
    LoadFileScheduling,
    LoadGroupScheduling,
    LoadScopeScheduling,
)

GROUPED_MODES = ("load", "worksteal", "loadscope", "loadfile", "loadgroup")
"""The ``--dist`` modes the scheduler stands in for when a named cloud's cases must stay together."""

_SCOPED_MODES: dict[str, type[LoadScopeScheduling]] = {
    "loadscope": LoadScopeScheduling,
    "loadfile": LoadFileScheduling,
    "loadgroup": LoadGroupScheduling,
}


def group_name(cloud: str) -> str:
    """The scope (and ``xdist_group``) of every case run on the named cloud `cloud`."""
    return f"novamig-cloud-{cloud}"


def _own_scope(nodeid: str) -> str:
    """``load`` and ``worksteal``: every other item a scope of its own, handed out one by one."""
    return nodeid


class CloudGroupScheduling(LoadScopeScheduling):  # type: ignore[misc]  # pytest-xdist ships no types
    """xdist's scope scheduling with a named cloud's cases in one scope (see the module's text)."""

    def __init__(self, config: pytest.Config, log: Producer | None, groups: Mapping[Path, str]) -> None:
        super().__init__(config, log)
        self.groups = dict(groups)  # resolved scenario file → its cloud's group
        self.rootpath = config.rootpath  # node ids' file parts are relative to it
        scoped = _SCOPED_MODES.get(str(config.getvalue("dist")))
        self.fallback: Callable[[str], str] = (
            scoped(config, log)._split_scope if scoped is not None else _own_scope
        )

    def group_of(self, nodeid: str) -> str | None:
        """The cloud group of a scenario case's node id (``<file>::<case id>``); None for others."""
        file_part = nodeid.split("::", 1)[0]
        return self.groups.get((self.rootpath / file_part).resolve())

    def _split_scope(self, nodeid: str) -> str:
        group = self.group_of(nodeid)
        return group if group is not None else self.fallback(nodeid)


def make_scheduler(
    config: pytest.Config, log: Producer | None, groups: Mapping[Path, str]
) -> CloudGroupScheduling | None:
    """The scheduler for a session whose scenario files `groups` maps to their named cloud's group;
    None (xdist's own choice) when no case runs on a named cloud or ``--dist`` is ``each``."""
    if not groups or config.getvalue("dist") not in GROUPED_MODES:
        return None
    return CloudGroupScheduling(config, log, groups)
