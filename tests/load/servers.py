"""Database servers that a test run owns: made in a temporary directory, started,
restarted and finally stopped and deleted by the tests themselves.

The shared servers (PostgreSQL on 5432, MariaDB on 3306) are used by other test runs
and by CI at the same time, so no fault scenario may ever stop them. Each class here
runs its own server process, on its own port and data directory, and only ever
signals that process, by its id.

Every wait is bounded: a server that does not answer within ``START_TIMEOUT`` or stop
within ``STOP_TIMEOUT`` raises :class:`ServerError` with the end of its log.

Adding a server kind (the Redis of the session cache, for its fault scenarios) means
one more :class:`PrivateServer` subclass: a command line, a readiness probe, and the
signal that stops it cleanly.
"""

from __future__ import annotations

import abc
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..helpers import free_port

__all__ = [
    "Outage",
    "PrivateMariaDB",
    "PrivatePostgres",
    "PrivateServer",
    "ServerError",
    "free_port",
    "pick_port",
]

#: How long a server may take to answer its first connection.
START_TIMEOUT = 30.0
#: How long it may take to exit once asked; then it is killed.
STOP_TIMEOUT = 30.0
#: How long the one-off set-up commands (initdb, mariadb-install-db) may take.
SETUP_TIMEOUT = 120.0


class ServerError(RuntimeError):
    """A private server could not be made, started or stopped."""


@dataclass(frozen=True)
class Outage:
    """One restart of a private server, in :func:`time.monotonic` seconds.

    ``began`` is when the stop was asked for, ``stopped`` when the server had exited,
    ``ready`` when it answered again.
    """

    target: str
    began: float
    stopped: float
    ready: float

    @property
    def seconds(self) -> float:
        return self.ready - self.began


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_port(preferred: int) -> int:
    """Return ``preferred`` if nothing listens on it, else some free port."""
    return preferred if _port_is_free(preferred) else free_port()


def _as_owner(owner: str) -> dict[str, Any]:
    # Database servers refuse to run as root; as root we run them as their usual
    # system user, as anyone else we run them as ourselves.
    if os.geteuid() != 0:
        return {}
    return {"user": owner, "group": owner, "extra_groups": []}


class PrivateServer(abc.ABC):
    """A server process of this run's own, in the directory ``root``.

    Make one with :meth:`create`, then :meth:`start`, :meth:`stop`, :meth:`restart`;
    :meth:`remove` stops it and deletes its directory.
    """

    #: A short name for figures and messages ("postgresql", "mariadb", later "redis").
    kind: ClassVar[str]
    #: The system user that owns the data when the tests run as root.
    owner: ClassVar[str]
    #: The port tried first.
    preferred_port: ClassVar[int]
    #: The signal that makes the server end its connections and exit at once, cleanly.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "server.log"

    @classmethod
    def create(cls) -> PrivateServer:
        """Make the data directory and initialise it; the server is not started.

        :raises ServerError: when the server's programs are missing or fail.
        """
        root = Path(tempfile.mkdtemp(prefix=f"sessionstore-load-{cls.kind}-"))
        try:
            if os.geteuid() == 0:
                shutil.chown(root, cls.owner, cls.owner)
            server = cls(root, pick_port(cls.preferred_port))
            server._initialise()
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return server

    # -- what each kind says -------------------------------------------------------

    @abc.abstractmethod
    def _initialise(self) -> None:
        """Create the server's data files in :attr:`root`."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    @abc.abstractmethod
    def _answers(self) -> bool:
        """Whether a client can connect now (one short attempt)."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The server's URL, in the form the contract suite's variables use."""

    # -- life cycle ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until it accepts connections.

        :raises ServerError: when it exits or does not answer within ``timeout``.
        """
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our own fixed command line)
                self._command(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.root, **_as_owner(self.owner),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.kind} exited with code {self.process.returncode} on start:\n"
                    + self.log_tail()
                )
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"{self.kind} did not answer within {timeout:.0f} s:\n"
                          + self.log_tail())

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the server to end its connections and exit; kill it if it has not
        exited within ``timeout``. Only this object's own process is signalled."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        self.process = None

    def restart(self, down_for: float) -> Outage:
        """Stop the server, leave it down for ``down_for`` seconds, start it again."""
        began = time.monotonic()
        self.stop()
        stopped = time.monotonic()
        time.sleep(down_for)
        self.start()
        return Outage(self.kind, began, stopped, time.monotonic())

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server (and its set-up) printed."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _setup_command(self, command: list[str]) -> None:
        with self.log_path.open("ab") as log:
            try:
                result = subprocess.run(  # noqa: S603 (our own fixed command line)
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.root, timeout=SETUP_TIMEOUT, check=False,
                    **_as_owner(self.owner),
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ServerError(f"{command[0]} failed: {exc}") from exc
        if result.returncode != 0:
            raise ServerError(
                f"{command[0]} exited with code {result.returncode}:\n" + self.log_tail()
            )


def _find_program(name: str, patterns: tuple[str, ...]) -> str:
    found = shutil.which(name)
    if found:
        return found
    for pattern in patterns:
        # Newest version first: /usr/lib/postgresql/15/bin before .../13/bin.
        candidates = sorted(glob.glob(pattern), key=_version_key, reverse=True)
        if candidates:
            return candidates[0]
    raise ServerError(f"{name} is not installed (looked on PATH and in {', '.join(patterns)})")


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in path.split("/") if part.isdigit())


class PrivatePostgres(PrivateServer):
    """A PostgreSQL cluster made by ``initdb``: trust authentication, loopback only."""

    kind = "postgresql"
    owner = "postgres"
    preferred_port = 5433
    # SIGINT is PostgreSQL's "fast" shutdown: open transactions are rolled back and
    # connections closed at once (SIGTERM would wait for every client to leave).
    stop_signal = signal.SIGINT

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _initialise(self) -> None:
        initdb = _find_program("initdb", ("/usr/lib/postgresql/*/bin/initdb",))
        self._postgres = str(Path(initdb).with_name("postgres"))
        self._setup_command([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres",
                             "-E", "UTF8", "--no-sync"])

    def _command(self) -> list[str]:
        return [
            self._postgres, "-D", str(self.data), "-p", str(self.port),
            # Its socket in our directory, so it never meets the shared server's.
            "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
            "-c", "max_connections=300",
            # Restarts here are clean shutdowns, which write everything out; syncing
            # each commit to disk would only slow the shared machine.
            "-c", "fsync=off",
        ]

    def _answers(self) -> bool:
        import psycopg2

        try:
            connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                          dbname="postgres", connect_timeout=1)
        except psycopg2.Error:
            return False
        connection.close()
        return True

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


class PrivateMariaDB(PrivateServer):
    """A MariaDB made by ``mariadb-install-db``, run without grant tables on loopback."""

    kind = "mariadb"
    owner = "mysql"
    preferred_port = 3307

    def _initialise(self) -> None:
        install = _find_program("mariadb-install-db", ("/usr/bin/mysql_install_db",))
        self._mariadbd = _find_program("mariadbd", ("/usr/sbin/mariadbd", "/usr/sbin/mysqld"))
        # --no-defaults: the machine's my.cnf belongs to the shared server (its port,
        # socket and data directory) and must not be read.
        self._setup_command([install, "--no-defaults", f"--datadir={self.root / 'data'}",
                             "--auth-root-authentication-method=normal", "--skip-test-db"])

    def _command(self) -> list[str]:
        return [
            self._mariadbd, "--no-defaults", f"--datadir={self.root / 'data'}",
            f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--socket={self.root / 'mariadb.sock'}", f"--pid-file={self.root / 'mariadb.pid'}",
            f"--tmpdir={self.root}", "--skip-grant-tables", "--skip-name-resolve",
            "--skip-log-bin", "--max-connections=300", "--innodb-buffer-pool-size=128M",
            # As fsync=off for PostgreSQL: restarts are clean, so this loses nothing here.
            "--innodb-flush-log-at-trx-commit=2",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
        ]

    def _answers(self) -> bool:
        import pymysql

        try:
            connection = pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                                         connect_timeout=1)
        except pymysql.Error:
            return False
        connection.close()
        return True

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/mysql"


#: The private servers by kind. A Redis for the cache's fault scenarios goes here.
SERVERS: dict[str, type[PrivateServer]] = {
    PrivatePostgres.kind: PrivatePostgres,
    PrivateMariaDB.kind: PrivateMariaDB,
}
