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


#: The server databases this process made, dropped when the test run ends.
_MADE: dict[str, str] = {}


def own_database(url: str, name: str) -> str:
    """Return ``url`` pointing at database ``name`` on the same server, creating it.

    Each ORM gets its own database, and each test process its own copy (the name ends
    with the process id), so that runs on different ORMs (whose seed models share table
    names such as ``user``), and runs side by side, never meet. :func:`drop_own_databases`
    removes them at the end of the run.
    """
    name = f"{name}_{os.getpid()}"
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
    _MADE[name] = url
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_own_databases() -> None:
    """Drop every database :func:`own_database` made in this process.

    A server that is gone (the load tests' private ones are stopped by then) took its
    databases with it: there is nothing to drop there.
    """
    for name, url in list(_MADE.items()):
        del _MADE[name]
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
        except Exception as exc:  # noqa: BLE001 (cleanup: report, never fail the run)
            print(f"could not drop test database {name}: {exc}".splitlines()[0])
            continue
        connection.close()
