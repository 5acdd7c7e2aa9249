"""Injected faults in front of the embedded cloud's compute API, for reliability tests only.

A run against a real cloud meets HTTP 5xx answers, requests that never get one, and connections
dropped mid-request; novamig must retry what is safe to retry and fail clearly otherwise. These
faults cannot be had on demand from Nova itself, so this WSGI middleware produces them, in front of
the real Nova API of the embedded cloud (the client still talks real HTTP to a real Nova).

It is installed only when the cloud process's environment names a rules file in `ENV`
(``NOVAMIG_API_FAULTS``), which only tests set; the embedded cloud is the only cloud novamig
starts, so a remote cloud never sees it. The file is read again whenever it changes, so a test can
arm a fault at the moment it wants (after boot, during a migration). Its content::

    {"rules": [{"method": "GET", "path": "^/v2.1/servers/[^/]+$", "fault": "status",
                "status": 503, "count": 2},
               {"method": "POST", "path": "/action$", "body": "os-migrateLive",
                "fault": "reset", "count": 1},
               {"method": "DELETE", "path": "/servers/", "fault": "delay", "delay_s": 5, "count": 1}]}

`method` (exact), `path` (a regular expression searched in the request path), `body` (a substring
of the request body) select requests; `fault` is ``status`` (answer `status`, default 503, with a
Nova-style fault body), ``delay`` (sleep `delay_s`, then pass the request on: the client has given
up by then) or ``reset`` (drop the connection without an answer); `count` is how many matching
requests get the fault (absent: all of them); the first rule that matches and still has a count
left applies. Every request a rule matches is appended to ``<rules file>.hits`` (one JSON line:
method, path, the fault given or ``"pass"``), so a test counts the attempts the client made.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "NOVAMIG_API_FAULTS"
"""The cloud process's environment variable naming the rules file; unset: no middleware at all."""

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class Rule:
    method: str | None
    path: re.Pattern[str]
    body: str | None
    fault: str
    status: int
    delay_s: float
    left: int | None  # None: every matching request

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rule:
        fault = str(data.get("fault", "status"))
        if fault not in ("status", "delay", "reset"):
            raise ValueError(f"unknown fault {fault!r}: status, delay or reset")
        count = data.get("count")
        return cls(
            method=data.get("method"),
            path=re.compile(str(data.get("path", ""))),
            body=data.get("body"),
            fault=fault,
            status=int(data.get("status", 503)),
            delay_s=float(data.get("delay_s", 0.0)),
            left=None if count is None else int(count),
        )

    def matches(self, method: str, path: str, body: bytes) -> bool:
        return (
            (self.method is None or self.method == method)
            and self.path.search(path) is not None
            and (self.body is None or self.body.encode() in body)
        )


class FaultInjector:
    """The middleware: `rules_file` is read again when it changes (its counts start afresh)."""

    def __init__(self, app: WsgiApp, rules_file: Path) -> None:
        self.app = app
        self.rules_file = rules_file
        self.hits_file = rules_file.with_name(rules_file.name + ".hits")
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._rules: list[Rule] = []

    def _current_rules(self) -> list[Rule]:
        try:
            st = self.rules_file.stat()
        except FileNotFoundError:
            self._stamp, self._rules = None, []
            return self._rules
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                data = json.loads(self.rules_file.read_text(encoding="utf-8"))
                self._rules = [Rule.from_json(r) for r in data.get("rules", [])]
            except (OSError, ValueError, TypeError) as exc:
                log.error("fault rules %s not used: %s", self.rules_file, exc)
                self._rules = []
            self._stamp = stamp
        return self._rules

    def _pick(self, method: str, path: str, body: bytes) -> tuple[Rule | None, bool]:
        """(the first matching rule, whether it still had a fault to give): one count taken."""
        with self._lock:
            matched: Rule | None = None
            for rule in self._current_rules():
                if not rule.matches(method, path, body):
                    continue
                matched = matched or rule
                if rule.left is None or rule.left > 0:
                    if rule.left is not None:
                        rule.left -= 1
                    return rule, True
            return matched, False

    def _record(self, method: str, path: str, given: str) -> None:
        line = json.dumps({"method": method, "path": path, "fault": given, "at": time.time()})
        with self._lock, self.hits_file.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = str(environ.get("REQUEST_METHOD", "")), str(environ.get("PATH_INFO", ""))
        body = b""
        if method in ("POST", "PUT"):  # read here (to match on it) and handed on unchanged
            raw_input = environ["wsgi.input"]
            body = raw_input.read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            environ["novamig.raw_input"] = raw_input
        rule, armed = self._pick(method, path, body)
        if rule is None:
            return self.app(environ, start_response)
        if not armed:
            self._record(method, path, "pass")
            return self.app(environ, start_response)
        given = f"status {rule.status}" if rule.fault == "status" else rule.fault
        self._record(method, path, given)
        log.warning("injected fault on %s %s: %s", method, path, given)
        if rule.fault == "delay":
            time.sleep(rule.delay_s)
            return self.app(environ, start_response)
        if rule.fault == "reset":
            _drop_connection(environ.get("novamig.raw_input", environ["wsgi.input"]))
            start_response("500 Internal Server Error", [("Content-Length", "0")])
            return [b""]
        payload = json.dumps(
            {"computeFault": {"code": rule.status, "message": f"injected fault: HTTP {rule.status}"}}
        ).encode()
        start_response(
            f"{rule.status} Injected Fault",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]


def _drop_connection(wsgi_input: Any) -> None:
    """Drop the request's TCP connection with no answer (cheroot's socket, under its reader): the
    client sees the connection closed before any response, as when a proxy or server dies."""
    sock = getattr(getattr(getattr(wsgi_input, "rfile", None), "_raw", None), "_sock", None)
    if not isinstance(sock, socket.socket):
        raise RuntimeError("cannot reach the request's socket to drop it")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.shutdown(socket.SHUT_RDWR)


def wrap_if_asked(app: WsgiApp) -> WsgiApp:
    """`app` behind a `FaultInjector` when `ENV` names a rules file; `app` itself otherwise."""
    rules = os.environ.get(ENV)
    if not rules:
        return app
    log.warning("compute API faults injected from %s (%s is set)", rules, ENV)
    return FaultInjector(app, Path(rules))
