"""The guest's own memory-integrity verdict, read over the network after every migration.

The guest agent keeps an integrity region (docs/guest-agent.md, "The integrity pattern") when the
SLA asks for ``memory_integrity``. The embedded cloud's driver checks it over virtio-serial; on any
other cloud nobody can, so ``memory_integrity`` stayed null and the check could never pass. The
agent's HTTP server answers ``GET /integrity?check=1`` by verifying every page of the region there
and then and returning the verdict as JSON, so this probe asks each server, through the address
the other probes use, right after each of its migrations (`capture`): the region is checked on the
destination before anything else happens to the guest, and the answer is kept until `figure`.

It fills no downtime figure, only ``memory_integrity`` (ANDed by the runner with the embedded
driver's verdict when both exist, a second opinion) and ``details.integrity`` (the agent's JSON:
pages, generation, check_ms, and where the first bad word was when the check failed). A guest that
cannot be asked leaves the verdict null with the reason in ``details.integrity.error``: memory
that could not be read back is neither shown intact nor shown corrupted.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Sequence
from typing import Any

from novamig.hypervisor.netns import socket_in
from novamig.measure.contract import CaseClock, PassiveProbe, ProbeFigure, ServerInfo
from novamig.results import MigrationRecord

AGENT_HTTP_PORT = 80
"""The agent's HTTP server (docs/guest-agent.md)."""


class GuestAnswerError(Exception):
    """The guest's agent could not be asked, or gave an answer that is not its JSON."""


def ask_guest(
    address: str,
    *,
    netns: str | None = None,
    query: str = "check=1",
    port: int = AGENT_HTTP_PORT,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """``GET /integrity?<query>`` of the agent at `address` (from inside `netns` when given: the
    embedded cloud's guests exist only there), its JSON answer. ``check=1`` verifies the region
    now (under TCG about 25 ms for the 16 MiB a scenario's guest keeps), an empty query returns the
    last verdict, ``corrupt=<page>`` is the agent's test-only fault."""
    try:
        if netns is None:
            sock = socket.create_connection((address, port), timeout=timeout_s)
        else:
            sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout_s)
                sock.connect((address, port))
            except OSError:
                sock.close()
                raise
        conn = http.client.HTTPConnection(address, port, timeout=timeout_s)
        conn.sock = sock
        try:
            conn.request("GET", f"/integrity?{query}" if query else "/integrity")
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        raise GuestAnswerError(f"{address}:{port}: {type(exc).__name__}: {exc}") from exc
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise GuestAnswerError(f"{address}:{port}: HTTP {resp.status}, not JSON: {body[:200]!r}") from exc
    if not isinstance(data, dict):
        raise GuestAnswerError(f"{address}:{port}: HTTP {resp.status}, not a JSON object: {data!r}")
    if resp.status != 200:
        raise GuestAnswerError(f"{address}:{port}: HTTP {resp.status}: {data.get('error', data)}")
    return data


class GuestIntegrityProbe(PassiveProbe):
    """``memory_integrity`` from the destination guest itself (see the module docstring)."""

    name = "integrity"
    ASK_FOR_S = 30.0
    """How long to keep asking after a migration: right after the switchover the guest's address
    may not answer yet (the network learns the new port from the guest's announcements)."""
    RETRY_S = 0.5

    def __init__(self, netns: str | None = None, port: int = AGENT_HTTP_PORT) -> None:
        self.netns = netns
        self.port = port
        self._addresses: dict[str, str | None] = {}
        self._verdicts: dict[tuple[str, float], dict[str, Any]] = {}

    def start(self, servers: Sequence[ServerInfo], clock: CaseClock) -> None:
        self._addresses = {s.id: s.address for s in servers}

    def capture(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> None:
        """Ask the guest right after its migration ended (the runner calls this; it never raises)."""
        key = (server_id, migration.requested_at)
        if migration.status != "completed":
            self._verdicts[key] = {"error": f"not checked: the migration ended {migration.status}"}
            return
        address = self._addresses.get(server_id)
        if address is None:
            self._verdicts[key] = {"error": "not checked: the server has no IPv4 address to ask"}
            return
        self._verdicts[key] = self._ask_until_answered(address)

    def _ask_until_answered(self, address: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.ASK_FOR_S
        while True:
            try:
                return ask_guest(address, netns=self.netns, port=self.port)
            except GuestAnswerError as exc:
                if time.monotonic() + self.RETRY_S >= deadline:
                    return {
                        "error": f"not checked: the guest did not answer for {self.ASK_FOR_S:.0f} s: {exc}"
                    }
            time.sleep(self.RETRY_S)

    def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
        verdict = self._verdicts.get((server_id, migration.requested_at))
        if verdict is None:
            return ProbeFigure(None, None, "the guest was not asked after this migration")
        ok = verdict.get("ok")
        if not isinstance(ok, bool):
            reason = verdict.get("error") or (
                "the guest's agent keeps no integrity region (its settings asked for none"
                " — integrity_mib=0 — or it could not start one: see the guest's console log)"
            )
            return ProbeFigure(None, None, str(reason), details=verdict)
        return ProbeFigure(None, None, None, details=verdict, memory_integrity=ok)
