"""The web application inside the full guest: the target Locust loads, and the switch that starts
Locust inside the guest.

Why it looks like this:

* Standard library only, one asyncio process: it must start in seconds under TCG (no third-party
  imports) and keep answering while a migration pauses and resumes the guest.
* ``TCP_NODELAY`` on every connection: with Nagle's algorithm a small response waits for the
  peer's delayed ACK and every request costs about 40 ms.
* HTTP/1.1 keep-alive, because Locust's FastHttpUser keeps its connections open; a migration
  then shows up as a stall on a live connection, not as connection errors.
* ``/memory`` writes into a persistent buffer, one store per 4 KiB page, so load on the app also
  dirties guest memory the way a real service would (the migration has to send those pages again).
* ``/_novamig/locust/*`` starts and reports a headless Locust run inside the guest (the guest has
  no other remote control for it): the runner starts it when the case's workload starts and
  collects Locust's statistics and per-request records after the case. The start request names a
  builtin locustfile or carries the text of the user's own (``locustfile_text``); either way
  Locust also loads ``locust_hook.py`` from this file's folder, which writes the records.
* ``/_novamig/clock`` answers the guest's CLOCK_MONOTONIC (the clock of the per-request records
  and of the agent's heartbeats) at once: the runner maps guest times to its own clock from the
  midpoints of such round trips, and sees from them whether the guest's clock stood still while
  a migration had the VM stopped.

Run: ``python3 -m guest_web_app [--port 8080] [--memory-mib 32]`` (port 8080; the agent owns 80).
This file also runs on the host in tests (Python ≥ 3.11).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

VERSION = "2"  # 2: records from locust_hook.py (mono_ns,response_time_ms,ok,host,name); locustfile_text
DEFAULT_PORT = 8080
PAGE = 4096
MAX_BODY = 1 << 20
MAX_HEADER = 16384

#: Where the guest's Locust lives (the full image installs them there).
LOCUST_BIN = os.environ.get("NOVAMIG_LOCUST_BIN", "/opt/novamig/venv/bin/locust")
LOCUSTFILE_DIR = os.environ.get("NOVAMIG_LOCUSTFILE_DIR", "/opt/novamig/locustfiles")
LOCUST_RUN_DIR = os.environ.get("NOVAMIG_LOCUST_RUN_DIR", "/run/novamig/locust")
#: Loaded beside every locustfile: the per-request records (the image puts it beside this file).
LOCUST_HOOK = os.environ.get("NOVAMIG_LOCUST_HOOK", str(Path(__file__).with_name("locust_hook.py")))
#: The file a user's locustfile text is written to (Locust imports it by this module name).
USER_LOCUSTFILE = "user_locustfile.py"

REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error"}  # fmt: skip


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class MemoryToucher:
    """A buffer allocated once; each call writes one byte into each of the next ``kib / 4`` pages,
    wrapping around, so repeated requests keep a working set dirty."""

    def __init__(self, mib: int) -> None:
        self.size = max(1, mib) << 20
        self.buf: bytearray | None = None
        self.pos = 0
        self.generation = 0

    def touch(self, kib: int) -> dict[str, int]:
        if self.buf is None:
            self.buf = bytearray(self.size)
        pages = max(0, min(kib * 1024, self.size) // PAGE)
        buf, pos, gen = self.buf, self.pos, (self.generation + 1) & 0xFF
        for _ in range(pages):
            buf[pos] = gen
            pos += PAGE
            if pos >= self.size:
                pos = 0
                self.generation = gen
                gen = (gen + 1) & 0xFF
        self.pos = pos
        return {"pages": pages, "position": pos // PAGE, "buffer_mib": self.size >> 20}


class LocustRun:
    """One headless Locust run inside the guest (at most one at a time)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None
        self.params: dict[str, Any] = {}
        self.state = "idle"
        self.started_mono = 0.0
        self.started_wall = 0.0
        self.finished_mono = 0.0
        self.exit_code: int | None = None
        self.error = ""
        self.run_dir = Path(LOCUST_RUN_DIR)

    @property
    def records_path(self) -> Path:
        return self.run_dir / "records.csv"

    @property
    def stats_path(self) -> Path:
        return self.run_dir / "stats.json"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "locust.log"

    def _locustfile(self, name: str, text: Any) -> str:
        """The locustfile to run: a builtin, or the user's text written to the run folder."""
        if not Path(LOCUST_HOOK).is_file():
            raise HttpError(500, f"no {LOCUST_HOOK}: this image cannot record Locust's requests")
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise HttpError(400, "locustfile_text must be the locustfile's Python source")
            try:
                compile(text, name or USER_LOCUSTFILE, "exec")
            except SyntaxError as e:
                raise HttpError(400, f"locustfile {name!r} does not compile: {e}") from e
            path = self.run_dir / USER_LOCUSTFILE
            path.write_text(text, encoding="utf-8")
            return str(path)
        if name.startswith("builtin:"):
            name = name.removeprefix("builtin:")
            if not name.replace("_", "").isalnum():
                raise HttpError(400, f"bad builtin locustfile name {name!r}")
            path = Path(LOCUSTFILE_DIR) / f"{name}.py"
        else:
            path = Path(name)
        if not path.is_file():
            raise HttpError(400, f"no locustfile {path}")
        return str(path)

    async def start(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.proc is not None and self.proc.returncode is None:
            raise HttpError(409, "a Locust run is already in progress")
        try:
            users = int(params.get("users", 5))
            spawn_rate = float(params.get("spawn_rate", users))
            run_time_s = int(params.get("run_time_s", 10))
            host = str(params.get("host", f"http://127.0.0.1:{self.port}"))
        except (TypeError, ValueError) as e:
            raise HttpError(400, f"bad parameter: {e}") from e
        if users < 1 or spawn_rate <= 0 or run_time_s < 1:
            raise HttpError(400, "users ≥ 1, spawn_rate > 0 and run_time_s ≥ 1 are required")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        name = str(params.get("locustfile", "builtin:web"))
        locustfile = self._locustfile(name, params.get("locustfile_text"))
        for p in (self.records_path, self.stats_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        argv = [
            LOCUST_BIN, "-f", f"{locustfile},{LOCUST_HOOK}", "--headless",
            "-u", str(users), "-r", str(spawn_rate),
            "-t", f"{run_time_s}s", "--host", host, "--only-summary", "--loglevel", "WARNING",
            "--json-file", str(self.stats_path.with_suffix("")), "--stop-timeout", "2",
            "--exit-code-on-error", "0", "--skip-log-setup",
        ]  # fmt: skip
        env = dict(os.environ)
        env["NOVAMIG_LOCUST_RECORDS"] = str(self.records_path)
        env.pop("NOVAMIG_LOCUST_HOSTS", None)  # every user loads --host
        env.pop("PYTHONPATH", None)
        log = self.log_path.open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            raise HttpError(500, f"cannot start Locust: {e}") from e
        finally:
            log.close()
        self.params = {"users": users, "spawn_rate": spawn_rate, "run_time_s": run_time_s,
                       "host": host, "locustfile": name}  # fmt: skip
        self.state, self.exit_code, self.error = "running", None, ""
        self.started_mono, self.started_wall = time.monotonic(), time.time()
        asyncio.get_running_loop().create_task(self._reap(self.proc))
        return self.status()

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if proc is self.proc:
            self.exit_code = code
            self.finished_mono = time.monotonic()
            self.state = "finished" if code == 0 else "failed"
            if code != 0:
                self.error = _tail(self.log_path)

    def stop(self) -> dict[str, Any]:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            self.state = "stopping"
        return self.status()

    def status(self) -> dict[str, Any]:
        first = _first_record(self.records_path)
        now = time.monotonic()
        return {
            "state": self.state,
            "params": self.params,
            "pid": self.proc.pid if self.proc is not None else None,
            "exit_code": self.exit_code,
            "started_wall": self.started_wall or None,
            "elapsed_s": round((self.finished_mono or now) - self.started_mono, 3)
            if self.started_mono
            else None,
            # when the first request completed, relative to the start request: Locust's import
            # time under TCG dominates the start of a run
            "first_request_s": round(first - self.started_mono, 3) if first and self.started_mono else None,
            "error": self.error,
        }

    def result(self) -> dict[str, Any]:
        out = self.status()
        try:
            out["stats"] = json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            out["stats"] = None
        return out


def _first_record(path: Path) -> float | None:
    """CLOCK_MONOTONIC (s) when the first request completed, from the first record."""
    try:
        with path.open() as f:
            line = f.readline()
    except OSError:
        return None
    try:
        return int(line.split(",")[0]) / 1e9
    except (IndexError, ValueError):
        return None


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return ""


class App:
    def __init__(self, port: int, memory_mib: int) -> None:
        self.port = port
        self.started = time.monotonic()
        self.requests = 0
        self.memory = MemoryToucher(memory_mib)
        self.locust = LocustRun(port)

    # A URL table read top to bottom: one return per route (PLR0911 would split the table apart).
    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, str, bytes]:  # noqa: PLR0911
        """Route one request; returns (status, content type, body)."""
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path == "/":
            return 200, "text/html", b"<html><body><h1>novamig guest</h1><p>ok</p></body></html>\n"
        if path == "/health":
            return _json({"status": "ok", "version": VERSION, "pid": os.getpid(), "requests": self.requests,
                          "uptime_s": round(time.monotonic() - self.started, 3)})  # fmt: skip
        if path == "/api/items":
            n = _int(query, "n", 10, 0, 1000)
            items = [{"id": i, "name": f"item-{i}", "sha": hashlib.sha1(str(i).encode()).hexdigest()[:12]}
                     for i in range(n)]  # fmt: skip
            return _json({"count": n, "items": items})
        if path == "/api/compute":
            n = _int(query, "n", 1000, 0, 200_000)
            h = hashlib.sha256()
            for i in range(n // 100 + 1):
                h.update(i.to_bytes(8, "little") * 12)
            return _json({"n": n, "digest": h.hexdigest()})
        if path == "/memory":
            return _json(self.memory.touch(_int(query, "kib", 256, 0, 1 << 20)))
        if path == "/bytes":
            return 200, "application/octet-stream", b"x" * _int(query, "n", 1024, 0, MAX_BODY)
        if path == "/echo":
            if method != "POST":
                raise HttpError(405, "POST only")
            return 200, "application/octet-stream", body
        if path == "/_novamig/clock":
            return _json({"mono_ns": time.monotonic_ns(), "wall": time.time()})
        if path.startswith("/_novamig/locust/"):
            return await self._locust(method, path.removeprefix("/_novamig/locust/"), body)
        raise HttpError(404, f"no such path {path}")

    async def _locust(self, method: str, action: str, body: bytes) -> tuple[int, str, bytes]:  # noqa: PLR0911 - a route table
        if action == "start":
            if method != "POST":
                raise HttpError(405, "POST only")
            try:
                params = json.loads(body or b"{}")
            except ValueError as e:
                raise HttpError(400, f"body is not JSON: {e}") from e
            if not isinstance(params, dict):
                raise HttpError(400, "body must be a JSON object")
            return _json(await self.locust.start(params), 202)
        if action == "stop":
            return _json(self.locust.stop())
        if action == "status":
            return _json(self.locust.status())
        if action == "result":
            return _json(self.locust.result())
        if action == "records":
            # mono_ns,response_time_ms,ok,host,name per completed request (locust_hook.py)
            try:
                return 200, "text/csv", self.locust.records_path.read_bytes()
            except OSError:
                return 200, "text/csv", b""
        if action == "log":
            return 200, "text/plain", _tail(self.locust.log_path, 20000).encode()
        raise HttpError(404, f"no such action {action}")

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    await self._respond(writer, 413, "text/plain", b"header too large\n", False)
                    return
                keep_alive = await self._one(reader, writer, head)
                if not keep_alive:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            await self._respond(writer, 400, "text/plain", b"bad request line\n", False)
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            await self._respond(writer, 413, "text/plain", b"body too large\n", False)
            return False
        body = await reader.readexactly(length) if length else b""
        conn = headers.get("connection", "").lower()
        keep_alive = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
        self.requests += 1
        try:
            status, ctype, payload = await self.handle(method, target, body)
        except HttpError as e:
            status, ctype, payload = e.status, "text/plain", (e.message + "\n").encode()
        except Exception as e:  # a bug in a handler must not kill the connection loop
            status, ctype, payload = 500, "text/plain", f"{type(e).__name__}: {e}\n".encode()
        await self._respond(writer, status, ctype, b"" if method == "HEAD" else payload, keep_alive)
        return keep_alive

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter, status: int, ctype: str, payload: bytes, keep_alive: bool
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()


def _int(query: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    try:
        value = int(query.get(key, default))
    except ValueError as e:
        raise HttpError(400, f"{key} must be an integer") from e
    return max(low, min(high, value))


def _json(obj: Any, status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(obj).encode()


async def serve(port: int, memory_mib: int, host: str = "0.0.0.0") -> None:
    app = App(port, memory_mib)
    server = await asyncio.start_server(
        app.serve_connection, host, port, limit=MAX_HEADER, reuse_address=True
    )
    print(
        f"novamig-web: listening on {host}:{port} ({_process_age_s():.1f} s after the process started)",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    app.locust.stop()


def _process_age_s() -> float:
    """Seconds since this process started (interpreter start-up and imports included): under
    TCG that is most of the time between the guest's init and a ready web application."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guest_web_app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("NOVAMIG_WEB_PORT", DEFAULT_PORT)))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--memory-mib", type=int, default=32, help="size of the /memory buffer")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.memory_mib, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
