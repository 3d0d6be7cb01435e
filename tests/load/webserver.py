"""Serve the load app with gunicorn on a free port of 127.0.0.1, and always stop it."""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .app import URL_ENV
from .servers import ServerError, free_port

__all__ = ["Gunicorn", "gunicorn_missing", "running_gunicorn"]

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
THREADS = 4
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
#: What gunicorn prints each time it starts a worker process.
_BOOT = re.compile(r"Booting worker with pid")


@dataclass
class Gunicorn:
    """A running gunicorn: its port, its master process and its log."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def errors(self, limit: int = 5) -> list[str]:
        """The first ``limit`` errors the app logged with a traceback (a 500's cause)."""
        found: list[str] = []
        block: list[str] = []
        for line in self.log().splitlines():
            if block and (line.startswith((" ", "\t", "Traceback", "During handling",
                                           "The above exception"))
                          or not line.strip() or not line.startswith("[")):
                block.append(line)
                continue
            if block:
                found.append("\n".join(block))
                block = []
                if len(found) >= limit:
                    return found
            if "Exception on" in line or "Error handling request" in line:
                block = [line]
        if block and len(found) < limit:
            found.append("\n".join(block))
        return found

    def worker_boots(self) -> int:
        """How many worker processes were started so far (a restarted worker counts)."""
        return len(_BOOT.findall(self.log()))


def gunicorn_missing() -> str | None:
    """Why gunicorn cannot run here, or None."""
    if importlib.util.find_spec("gunicorn") is None:
        return f"gunicorn is not installed: {sys.executable} -m pip install gunicorn"
    return None


def _health(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@contextmanager
def running_gunicorn(server_url: str, *, workers: int = WORKERS,
                     threads: int = THREADS) -> Iterator[Gunicorn]:
    """Serve ``tests.load.app`` on ``server_url``'s database until the block ends.

    ``workers`` processes of ``threads`` threads each (gunicorn's gthread worker). The
    master is stopped (and its log deleted) when the block ends, whatever happened.

    :raises ServerError: when the workers do not all answer within the start timeout.
    """
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="sessionstore-load-gunicorn-"))
    log_path = log_dir / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"127.0.0.1:{port}", "--chdir", str(REPO_ROOT),
        "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
        # A request that hangs past this is a failure the figures must show (the worker
        # is restarted and the client sees its connection closed).
        "--timeout", "30", "--graceful-timeout", "5",
        "--backlog", "2048", "--log-level", "info",
        "tests.load.app:create_app()",
    ]
    env = {**os.environ, URL_ENV: server_url, "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 (our own fixed command line)
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT, env=env,
        )
    server = Gunicorn(port, process, log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (_health(port) and server.worker_boots() >= workers):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerError("gunicorn did not start:\n" + server.log()[-4000:])
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(log_dir, ignore_errors=True)
