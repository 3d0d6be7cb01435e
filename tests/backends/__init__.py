"""The backends the contract suite runs on: one class per ORM, one instance per database.

A backend builds the seed's models for its ORM, a datastore over them, and tables in a
clean database; it can count the statements a block of code sends and read the session
table directly, without going through the library.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit, urlunsplit

from flask import Flask

from flask_sessionstore import PasswordHasher, UserDatastore

#: Environment variables naming the servers; the suite runs on SQLite without them.
SERVER_ENV = {
    "postgresql": "SESSIONSTORE_TEST_POSTGRESQL_URL",
    "mariadb": "SESSIONSTORE_TEST_MARIADB_URL",
    "mongodb": "MONGODB_URI",
    "redis": "SESSIONSTORE_TEST_REDIS_URL",
}
#: Set to 1 (CI does) to make a missing server a failure instead of a skip.
REQUIRE_SERVERS_ENV = "SESSIONSTORE_TEST_REQUIRE_SERVERS"


def server_url(database: str) -> str | None:
    """Return the URL configured for ``database``, or None."""
    return os.environ.get(SERVER_ENV[database]) or None


#: The server databases this process made, dropped when the test run ends: keyed by
#: server and name, since the same name is made on PostgreSQL and on MariaDB.
_MADE: dict[tuple[str, str], str] = {}


def own_database(url: str, name: str) -> str:
    """Return ``url`` pointing at database ``name`` on the same server, creating it.

    Each ORM gets its own database, and each test process its own copy (the name ends
    with the process id), so that runs on different ORMs (whose seed models share table
    names such as ``user``), and runs side by side, never meet. :func:`drop_own_databases`
    removes them at the end of the run.
    """
    # Fixed at the first call and inherited by child processes (the load tests' server
    # workers), so that they find the databases this run made.
    name = f"{name}_{os.environ.setdefault('SESSIONSTORE_TEST_DB_SUFFIX', str(os.getpid()))}"
    parts = urlsplit(url)
    if parts.scheme.startswith("postgresql"):
        import psycopg2

        connection = psycopg2.connect(url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
    elif parts.scheme.startswith(("mysql", "mariadb")):
        import pymysql

        connection = pymysql.connect(
            host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
            user=unquote(parts.username or "root"), password=unquote(parts.password or ""),
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS `{name}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        connection.close()
    else:
        raise ValueError(f"No server database can be made for {url!r}.")
    _MADE[(parts.netloc, name)] = url
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_own_databases() -> None:
    """Drop every database :func:`own_database` made in this process.

    A server that is gone (the load tests' private ones are stopped by then) took its
    databases with it: there is nothing to drop there.
    """
    for made, url in list(_MADE.items()):
        del _MADE[made]
        name = made[1]
        parts = urlsplit(url)
        try:
            if parts.scheme.startswith("postgresql"):
                import psycopg2

                connection = psycopg2.connect(url, connect_timeout=3)
                connection.autocommit = True
                with connection.cursor() as cursor:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                import pymysql

                connection = pymysql.connect(
                    host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                    user=unquote(parts.username or "root"),
                    password=unquote(parts.password or ""), connect_timeout=3,
                )
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        except Exception as exc:  # cleanup reports, it never fails the run
            print(f"could not drop test database {name}: {exc}".splitlines()[0])
            continue
        connection.close()


def fast_hasher() -> PasswordHasher:
    """argon2 with the smallest settings: the same code path, a fraction of the time."""
    return PasswordHasher(
        settings={"argon2__memory_cost": 8, "argon2__time_cost": 1, "argon2__parallelism": 1}
    )


@dataclass
class Counter:
    """What a block of code sent to the database."""

    statements: list[str] = field(default_factory=list)
    commits: int = 0

    @property
    def count(self) -> int:
        return len(self.statements)

    @property
    def writes(self) -> list[str]:
        verbs = ("INSERT", "UPDATE", "DELETE", "REPLACE")
        return [s for s in self.statements if s.lstrip().upper().startswith(verbs)]


class Backend(abc.ABC):
    """One ORM on one database, set up fresh for each test."""

    orm: str
    database: str
    User: Any
    Role: Any
    datastore: UserDatastore[Any, Any]
    #: What a request may cost on this backend, in statements (or round trips):
    #: ``role_check`` exactly, ``session_write`` at most.
    budgets: ClassVar[dict[str, int]] = {"role_check": 1, "session_write": 2}
    #: Whether the store has multi-document transactions that ``transaction()`` can
    #: roll back. Where it has not, the ORM's own tests pin what holds instead.
    transactional: ClassVar[bool] = True

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def id(self) -> str:
        return f"{self.orm}-{self.database}"

    def budget(self, name: str) -> int:
        return self.budgets[name]

    @abc.abstractmethod
    def setup(self, app: Flask) -> UserDatastore[Any, Any]:
        """Configure ``app`` for this ORM, make the models, clean tables and a datastore."""

    @abc.abstractmethod
    def teardown(self) -> None:
        """Drop what :meth:`setup` made and close connections."""

    @abc.abstractmethod
    @contextmanager
    def count(self) -> Iterator[Counter]:
        """Count the statements (or round trips) and commits sent inside the block."""

    @abc.abstractmethod
    def session_rows(self) -> list[dict[str, Any]]:
        """Read the session table directly: one dict per row, the store's own columns."""

    @contextmanager
    def running(self, app: Flask) -> Iterator[Backend]:
        """Set up on ``app`` for a test, and tear down after it, whatever happens."""
        self.app = app
        self.setup(app)
        try:
            yield self
        finally:
            self.teardown()

    @contextmanager
    def unit(self, app: Flask) -> Iterator[None]:
        """A block in which the datastore can be used outside a request."""
        with app.app_context():
            yield
