"""``builtin:web``: Locust users against novamig's in-guest web application
(``novamig/workload/guest_web_app.py``, port 8080 of every full guest).

Why FastHttpUser: under TCG it sustains about three times the request rate of HttpUser, and it
keeps connections alive, so a migration shows up as a stall on a live connection.

Environment (all optional):

* ``NOVAMIG_WEB_WAIT_S`` — wait between tasks per user, seconds (default 0: as fast as possible).
* ``NOVAMIG_WEB_MEMORY_KIB`` — memory the ``/memory`` task touches per request (default 256).

Per-request records (the "locust" downtime figure) come from ``novamig/workload/locust_hook.py``,
which novamig loads beside every locustfile, builtin or the user's own.
"""

from __future__ import annotations

import os

from locust import FastHttpUser, constant, task

WAIT_S = float(os.environ.get("NOVAMIG_WEB_WAIT_S", "0") or 0)
MEMORY_KIB = int(os.environ.get("NOVAMIG_WEB_MEMORY_KIB", "256") or 256)


class WebUser(FastHttpUser):
    """A mix of cheap pages, JSON, a little CPU and a little memory, like a small web service."""

    wait_time = constant(WAIT_S)

    @task(5)
    def index(self) -> None:
        self.client.get("/")

    @task(3)
    def items(self) -> None:
        self.client.get("/api/items?n=20", name="/api/items")

    @task(1)
    def compute(self) -> None:
        self.client.get("/api/compute?n=2000", name="/api/compute")

    @task(1)
    def memory(self) -> None:
        self.client.get(f"/memory?kib={MEMORY_KIB}", name="/memory")

    @task(1)
    def echo(self) -> None:
        self.client.post("/echo", data="novamig" * 16)

    @task(1)
    def health(self) -> None:
        self.client.get("/health")
