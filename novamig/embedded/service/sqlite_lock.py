"""One writer at a time per SQLite database, across the threads of the cloud process.

SQLite allows a single writer per file; Nova's services in one process write concurrently from many
threads and would otherwise fail with "database is locked". This is the same remedy Nova's own
functional tests use (``DatabaseWriteLock``): a re-entrant lock per database URL around every writer
transaction of oslo.db's enginefacade. Readers are not serialised (WAL mode lets them run).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from oslo_db.sqlalchemy import enginefacade  # type: ignore[import-untyped]

_state = {"installed": False}


def install() -> None:
    if _state["installed"]:
        return
    guard = threading.Lock()
    locks: collections.defaultdict[str, threading.RLock] = collections.defaultdict(threading.RLock)
    original = enginefacade._TransactionContextManager._transaction_scope

    def lock_for(url: str) -> threading.RLock:
        with guard:
            return locks[url]

    @contextmanager
    def locked_scope(tcm: Any, context: Any) -> Iterator[Any]:
        if tcm._mode is enginefacade._WRITER:
            with lock_for(str(tcm.reader.get_engine().url)), original(tcm, context) as resource:
                yield resource
        else:
            with original(tcm, context) as resource:
                yield resource

    enginefacade._TransactionContextManager._transaction_scope = locked_scope
    _state["installed"] = True
