"""Start ``flask --app example_app run`` on a free port for a test, and always stop it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..helpers import free_port

__all__ = ["ADMIN_EMAIL", "ADMIN_PASSWORD", "ExampleServer", "free_port", "running_example"]

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin password for tests"
#: How long the server may take to answer its first request.
STARTUP_TIMEOUT = 30.0
#: How long it may take to stop once asked.
STOP_TIMEOUT = 10.0


@dataclass
class ExampleServer:
    """A running example app: its base URL, process, and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Return what the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own http URL)
            return bool(response.status < 500)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


@contextmanager
def running_example(
    instance_path: Path, *, timeout: float = STARTUP_TIMEOUT
) -> Iterator[ExampleServer]:
    """Run the example app on SQLite in ``instance_path`` until the block ends.

    The server is a real ``flask --app example_app run`` process on 127.0.0.1 with a
    free port. It is stopped when the block ends, whatever happened.

    :raises RuntimeError: when it does not answer within ``timeout`` seconds (its log
        is in the message).
    """
    instance_path.mkdir(parents=True, exist_ok=True)
    env = {
        name: value for name, value in os.environ.items()
        # The caller's own Flask or example settings must not leak into the test.
        if not name.startswith(("FLASK_", "EXAMPLE_")) and name != "DATABASE_URL"
    }
    env.update(
        EXAMPLE_INSTANCE_PATH=str(instance_path),
        EXAMPLE_ORM="sqlalchemy",
        EXAMPLE_ADMIN_EMAIL=ADMIN_EMAIL,
        EXAMPLE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    log_path = instance_path / "server.log"
    command = [
        sys.executable, "-m", "flask", "--app", "example_app", "run",
        "--host", "127.0.0.1", "--port", str(port), "--no-reload", "--no-debugger",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 (a fixed command)
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT,
        )
    server = ExampleServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(server.url + "/"):
            if process.poll() is not None:
                raise RuntimeError(
                    f"The example server exited with {process.returncode}:\n{server.log()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"The example server did not answer within {timeout:.0f} s:\n{server.log()}"
                )
            time.sleep(0.2)
        yield server
    finally:
        _stop(process)
