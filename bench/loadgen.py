"""A gunicorn server on 127.0.0.1 and a bounded load client for it.

The client sends a fixed number of requests from a few threads and stops early at a
time cap; it only ever connects to 127.0.0.1.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_server(factory: str, url: str, *, workers: int = 2, wait: float = 30.0) -> Server:
    """Start gunicorn serving ``bench.contenders:wsgi(factory, url)``; wait until it
    answers (at most ``wait`` seconds)."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind",
        f"{HOST}:{port}", "--log-level", "warning", "--worker-class", "sync",
        f"bench.contenders:wsgi({factory!r}, {url!r})",
    ]
    env = {**os.environ, "PYTHONPATH": _ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(command, cwd=_ROOT, env=env)  # noqa: S603
    server = Server(process, port)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn for {factory} exited with {process.returncode}")
        try:
            status, _, _ = fetch(port, "GET", "/public", timeout=2.0)
            if status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"gunicorn for {factory} did not answer within {wait:.0f} s")


def stop_server(server: Server) -> None:
    """Stop the one gunicorn this module started (its arbiter ends its workers)."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


def fetch(port: int, method: str, path: str, cookie: str | None = None,
          timeout: float = 10.0) -> tuple[int, list[tuple[str, str]], bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Connection": "close", "User-Agent": "bench-loadgen"}
        if cookie:
            headers["Cookie"] = cookie
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, response.getheaders(), body
    finally:
        connection.close()


def http_login(port: int, path: str) -> str:
    """Log in over HTTP; return the ``name=value`` of the session cookie it set."""
    status, headers, _ = fetch(port, "POST", path)
    if status != 200:
        raise RuntimeError(f"login over HTTP answered {status}")
    for name, value in headers:
        if name.lower() == "set-cookie":
            return value.split(";", 1)[0]
    raise RuntimeError("login over HTTP set no cookie")


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    errors: int = 0

    def merge(self, other: LoadResult) -> None:
        self.latencies.extend(other.latencies)
        self.rates.extend(other.rates)
        self.errors += other.errors

    def percentile(self, pct: float) -> float:
        """The ``pct`` percentile of the latencies, in milliseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
        return ordered[index] * 1000


def run_load(port: int, path: str, cookie: str, *, requests: int, concurrency: int,
             time_cap: float) -> LoadResult:
    """Send ``requests`` GETs from ``concurrency`` threads, stopping at ``time_cap``."""
    lock = threading.Lock()
    sent = 0
    result = LoadResult()
    deadline = time.monotonic() + time_cap

    def worker() -> None:
        nonlocal sent
        latencies: list[float] = []
        errors = 0
        while time.monotonic() < deadline:
            with lock:
                if sent >= requests:
                    break
                sent += 1
            started = time.perf_counter()
            try:
                status, _, body = fetch(port, "GET", path, cookie)
                ok = status == 200 and b"@example.com" in body
            except OSError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok
        with lock:
            result.latencies.extend(latencies)
            result.errors += errors

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=time_cap + 30)
    elapsed = time.perf_counter() - started
    result.rates.append(len(result.latencies) / elapsed if elapsed else 0.0)
    return result
