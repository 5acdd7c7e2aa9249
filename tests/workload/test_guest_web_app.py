"""novamig's guest web application (novamig/workload/guest_web_app.py) run on the host, no guest:
the same code the full image runs — its endpoints, and Locust started through its control
endpoints with builtin:web and with a user's locustfile sent as text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from web_app_client import check_locust, free_port, http, loopback, run_locust

#: The `wait_until(predicate, timeout, what)` fixture (tests/conftest.py).
WaitUntil = Callable[[Callable[[], bool], float, str], None]
WORKLOAD_DIR = Path(__file__).resolve().parents[2] / "novamig" / "workload"


@pytest.fixture
def host_web_app(tmp_path: Path, wait_until: WaitUntil) -> Iterator[int]:
    """The web application as a host process on a free loopback port, answering; ended afterwards."""
    port = free_port()
    locust_bin = Path(sys.executable).with_name("locust")
    if not locust_bin.exists():
        pytest.skip("locust is not installed next to this Python")
    env = {
        **os.environ,
        "NOVAMIG_LOCUST_BIN": str(locust_bin),
        "NOVAMIG_LOCUSTFILE_DIR": str(WORKLOAD_DIR / "locustfiles"),
        "NOVAMIG_LOCUST_RUN_DIR": str(tmp_path / "run"),
    }
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD_DIR / "guest_web_app.py"), "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:

        def answers() -> bool:
            assert proc.poll() is None, f"the web application exited with {proc.returncode}"
            try:
                return http(loopback(port), "GET", "/health")[0] == 200
            except OSError:
                return False

        wait_until(answers, 20.0, "the web application to answer /health")
        yield port
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


def test_web_app_endpoints(host_web_app: int) -> None:
    port = host_web_app
    status, body = http(loopback(port), "GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = http(loopback(port), "GET", "/memory?kib=64")
    assert status == 200 and json.loads(body)["pages"] == 16
    status, body = http(loopback(port), "POST", "/echo", b"abc")
    assert (status, body) == (200, b"abc")
    status, body = http(loopback(port), "GET", "/api/items?n=3")
    assert status == 200 and len(json.loads(body)["items"]) == 3
    assert http(loopback(port), "GET", "/nope")[0] == 404
    assert http(loopback(port), "GET", "/echo")[0] == 405
    assert http(loopback(port), "POST", "/_novamig/locust/start", b"[1]")[0] == 400
    bad = {"locustfile": "mine.py", "locustfile_text": "def broken(:\n"}
    status, body = http(loopback(port), "POST", "/_novamig/locust/start", json.dumps(bad).encode())
    assert status == 400 and b"does not compile" in body, body
    # keep-alive: two requests on one connection, and the Nagle switch is off on the server side
    with loopback(port) as s:
        s.settimeout(10)
        req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(req + req)
        data = b""
        while data.count(b"HTTP/1.1 200") < 2:
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk


USER_LOCUSTFILE = """
from locust import HttpUser, constant, task


class Mine(HttpUser):
    wait_time = constant(0.01)

    @task
    def health(self):
        self.client.get("/health", name="mine-health")
"""


@pytest.mark.slow
def test_user_locustfile_text_on_the_host(host_web_app: int) -> None:
    """A locustfile the image does not carry, sent as text: it runs, and the hook beside it
    records its requests like builtin:web's."""
    outcome = run_locust(
        lambda: loopback(host_web_app), users=1, run_time_s=3, timeout=60, locustfile_text=USER_LOCUSTFILE
    )
    check_locust(outcome, 3, names=frozenset({"mine-health"}))
    assert outcome.result["params"]["locustfile"] == "mine.py"


@pytest.mark.slow
def test_builtin_web_locust_on_the_host(host_web_app: int) -> None:
    outcome = run_locust(lambda: loopback(host_web_app), users=2, run_time_s=3, timeout=60)
    check_locust(outcome, 3)
