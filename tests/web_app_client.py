"""A small HTTP client of novamig's guest web application (novamig/workload/guest_web_app.py) and of
its Locust control endpoints, for the tests that reach it on the host (tests/workload) and in a
booted full-image guest (tests/guest): one plain socket per request, so a test sees exactly what
the application sent."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    sock: socket.socket, method: str, path: str, body: bytes = b"", timeout: float = 30
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on an already connected socket (closed afterwards)."""
    with sock as s:
        s.settimeout(timeout)
        head = f"{method} {path} HTTP/1.1\r\nHost: guest\r\nConnection: close\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    header, _, payload = data.partition(b"\r\n\r\n")
    return int(header.split(b" ", 2)[1]), payload


def loopback(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


@dataclass
class LocustOutcome:
    status: dict[str, Any]
    result: dict[str, Any]
    records: list[list[str]]


def run_locust(
    connect: Callable[[], socket.socket],
    users: int,
    run_time_s: int,
    timeout: float,
    locustfile_text: str | None = None,
) -> LocustOutcome:
    """Start a Locust run through the web application's control endpoints and wait for it."""
    params: dict[str, Any] = {"users": users, "spawn_rate": users, "run_time_s": run_time_s,
                              "locustfile": "builtin:web"}  # fmt: skip
    if locustfile_text is not None:
        params.update(locustfile="mine.py", locustfile_text=locustfile_text)
    status, body = http(connect(), "POST", "/_novamig/locust/start", json.dumps(params).encode())
    assert status == 202, body
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(http(connect(), "GET", "/_novamig/locust/status")[1])
        if state["state"] not in ("running", "stopping"):
            break
        assert time.monotonic() < deadline, f"Locust still {state['state']} after {timeout} s: {state}"
        time.sleep(1)
    result = json.loads(http(connect(), "GET", "/_novamig/locust/result")[1])
    records_csv = http(connect(), "GET", "/_novamig/locust/records")[1].decode()
    records = [line.split(",", 4) for line in records_csv.splitlines() if line]
    return LocustOutcome(state, result, records)


def check_locust(
    outcome: LocustOutcome, run_time_s: int, names: frozenset[str] = frozenset({"/", "/api/items"})
) -> dict[str, int]:
    result = outcome.result
    assert result["state"] == "finished" and result["exit_code"] == 0, result
    stats = result["stats"]
    assert stats, f"no statistics: {result}"
    by_name = {s["name"]: s for s in stats}
    requests = sum(s["num_requests"] for s in stats)
    failures = sum(s["num_failures"] for s in stats)
    assert requests > 0 and failures == 0, by_name
    assert names <= set(by_name), sorted(by_name)
    # one record per request (mono_ns,response_time_ms,ok,host,name), in order of completion,
    # all successful
    assert len(outcome.records) == requests
    assert all(len(r) == 5 and r[2] == "1" for r in outcome.records), outcome.records[:3]
    assert {r[4].split(" ", 1)[1] for r in outcome.records} == set(by_name) - {"Aggregated"}
    mono = [int(r[0]) for r in outcome.records]
    assert mono == sorted(mono)
    assert result["first_request_s"] is not None and result["first_request_s"] > 0
    # the run lasted about the requested time (not cut short by a stale --run-time timer)
    span_s = (mono[-1] - mono[0]) / 1e9
    assert span_s >= 0.4 * run_time_s, f"requests spanned only {span_s:.2f} s of a {run_time_s} s run"
    return {"requests": requests, "failures": failures}
