"""One live-migration thread pool per compute host, sized by that host's policy.

In native-threading mode Nova keeps a single process-wide live-migration executor sized by
``[DEFAULT] max_concurrent_live_migrations``. With all computes in one process that would make the
limit cloud-wide: two migrations from different sources would queue behind each other, which never
happens on a real deployment where each compute is its own process. So live-migration tasks are
routed to a pool of the submitting compute manager's host, sized by that host's current policy
(``host_policy``); a changed limit takes effect for the next submission (a new pool; the old one
finishes what it runs). Queued migrations are real queued futures, so Nova's abort of a queued
migration (``future.cancel()``) works as on a real compute.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oslo_context import context as common_context

from novamig.embedded import host_policy

UNLIMITED = 1000  # Nova: 0 means unlimited


class HostPools:
    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._lock = threading.Lock()
        self._pools: dict[str, tuple[int, Any]] = {}

    def executor(self, host: str) -> Any:
        import futurist  # noqa: PLC0415 - imports eventlet: only after nova_threading.prepare()

        limit = host_policy.read(self._workdir, host).max_concurrent_live_migrations
        size = limit if limit > 0 else UNLIMITED
        with self._lock:
            current = self._pools.get(host)
            if current is not None and current[0] == size:
                return current[1]
            pool = futurist.ThreadPoolExecutor(max_workers=size)
            self._pools[host] = (size, pool)
        if current is not None:
            current[1].shutdown(wait=False)
        return pool

    def shutdown(self) -> None:
        with self._lock:
            pools = [p for _, p in self._pools.values()]
            self._pools.clear()
        for pool in pools:
            pool.shutdown(wait=False)


def install(workdir: Path) -> HostPools:
    """Route Nova's LIVE_MIGRATION tasks to per-host pools (call before computes start)."""
    from nova import thread_pool_factory  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    pools = HostPools(workdir)
    original: Callable[..., Any] = thread_pool_factory.spawn_on

    def spawn_on(executor_type: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        host = getattr(getattr(func, "__self__", None), "host", None)
        if executor_type is not thread_pool_factory.ExecutorType.LIVE_MIGRATION or not host:
            return original(executor_type, func, *args, **kwargs)
        request_context = common_context.get_current()

        @functools.wraps(func)
        def with_context(*a: Any, **kw: Any) -> Any:
            if request_context is not None:
                request_context.update_store()  # so logs carry the request id, as Nova's wrapper does
            return func(*a, **kw)

        return pools.executor(host).submit(with_context, *args, **kwargs)

    thread_pool_factory.spawn_on = spawn_on
    return pools
