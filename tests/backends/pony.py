"""The Pony backend: the seed's Pony entities, unchanged, on SQLite, PostgreSQL and
MariaDB.

Statements are counted where they leave for the database: each driver's cursor (the
connection and cursor classes are given to ``db.bind``, which hands them to the driver),
so that Pony's own queries, its raw SQL and its housekeeping are all seen. Commits are
counted where Pony commits, ``provider.commit``. Transaction control (``BEGIN``, which
Pony sends itself on SQLite while psycopg2 and PyMySQL send it implicitly, and the
``DISCARD ALL`` with which Pony's PostgreSQL pool resets a released connection) is kept
apart in :attr:`PonyCounter.control`, as the other backends' drivers keep it out of
sight: ``tests/test_orm_pony.py`` pins what it holds.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask
from pony import orm

from flask_sessionstore import PonyUserDatastore, RoleMixin, UserMixin

from . import Backend, Counter, fast_hasher, own_database

#: Transaction control and connection resets, counted apart from statements.
_CONTROL = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|DISCARD)\b", re.IGNORECASE)


@dataclass
class PonyCounter(Counter):
    """A :class:`Counter` that also keeps the transaction-control statements it saw."""

    control: list[str] = field(default_factory=list)


#: The counters of the blocks now counting (in any thread: a request may run in one).
_ACTIVE: list[PonyCounter] = []


def _sent(sql: Any) -> None:
    text = sql.decode() if isinstance(sql, bytes) else str(sql)
    for counter in list(_ACTIVE):
        if _CONTROL.match(text):
            counter.control.append(text)
        else:
            counter.statements.append(text)


class _SQLiteCursor(sqlite3.Cursor):
    def execute(self, sql: str, *args: Any) -> Any:
        _sent(sql)
        return super().execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        _sent(sql)
        return super().executemany(sql, *args)


class _SQLiteConnection(sqlite3.Connection):
    def cursor(self, factory: Any = _SQLiteCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, *args: Any) -> Any:  # type: ignore[override]
        _sent(sql)
        return super().execute(sql, *args)


def _pg_classes() -> tuple[type, type]:
    import psycopg2.extensions

    class Cursor(psycopg2.extensions.cursor):  # type: ignore[misc]
        def execute(self, sql: Any, *args: Any) -> Any:
            _sent(sql)
            return super().execute(sql, *args)

        def executemany(self, sql: Any, *args: Any) -> Any:
            _sent(sql)
            return super().executemany(sql, *args)

    class Connection(psycopg2.extensions.connection):  # type: ignore[misc]
        def cursor(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("cursor_factory", Cursor)
            return super().cursor(*args, **kwargs)

    return Connection, Cursor


def _mysql_cursor() -> type:
    import pymysql.cursors

    class Cursor(pymysql.cursors.Cursor):  # type: ignore[misc]
        # executemany() sends its batch through execute(): each call is one round trip.
        def execute(self, query: Any, args: Any = None) -> Any:
            _sent(query)
            return super().execute(query, args)

    return Cursor


def seed_models(db: Any) -> tuple[Any, Any]:
    """The seed's entities, exactly as its documentation shows them."""
    from pony.orm import Optional, Required, Set

    class Role(db.Entity, RoleMixin):
        name = Required(str, unique=True)
        description = Optional(str, nullable=True)
        users = Set(lambda: User)
        # Not in the seed: a column for the permission tests.
        permissions = Optional(str, nullable=True)

    class User(db.Entity, UserMixin):
        email = Required(str)
        password = Optional(str, nullable=True)
        active = Optional(bool)
        confirmed_at = Optional(datetime)
        roles = Set(lambda: Role)

    return User, Role


def bind_arguments(url: str, database: str, *, counting: bool = True) -> dict[str, Any]:
    """What ``db.bind`` takes for the suite's URL; with ``counting``, the drivers get the
    counting connection or cursor classes."""
    if database == "sqlite":
        arguments: dict[str, Any] = {
            "provider": "sqlite", "filename": url.removeprefix("sqlite:///"), "create_db": True,
        }
        if counting:
            arguments["factory"] = _SQLiteConnection
        return arguments
    parts = urlsplit(url)
    common = {
        "host": parts.hostname or "127.0.0.1",
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }
    name = parts.path.lstrip("/")
    if database == "postgresql":
        arguments = {"provider": "postgres", **common, "port": parts.port or 5432,
                     "database": name}
        if counting:
            arguments["connection_factory"] = _pg_classes()[0]
        return arguments
    arguments = {"provider": "mysql", **common, "port": parts.port or 3306, "database": name,
                 "charset": "utf8mb4"}
    if counting:
        arguments["cursorclass"] = _mysql_cursor()
    return arguments


class PonyBackend(Backend):
    orm = "pony"
    #: Statements: a role check reads the session row, its user and the user's roles
    #: in one SELECT; a session write is that SELECT and one UPDATE, autocommitted
    #: (SQLite, PostgreSQL) or committed (MariaDB, where Pony always has a transaction).
    budgets = {"role_check": 1, "session_write": 2}  # noqa: RUF012 (as in Backend)

    def __init__(self, url: str, database: str) -> None:
        super().__init__(url)
        self.database = database

    def setup(self, app: Flask) -> PonyUserDatastore:
        url = self.url
        if self.database != "sqlite":
            url = own_database(url, "sessionstore_pony")
        self.server_url = url
        self.app = app
        self.db = db = orm.Database()
        self.User, self.Role = seed_models(db)
        self.datastore = PonyUserDatastore(db, self.User, self.Role,
                                           password_hasher=fast_hasher())
        db.bind(**bind_arguments(url, self.database))
        db.generate_mapping(create_tables=False, check_tables=False)
        db.drop_all_tables(with_all_data=True)
        db.create_tables()
        return self.datastore

    def teardown(self) -> None:
        self.db.drop_all_tables(with_all_data=True)
        self.db.disconnect()

    @contextmanager
    def count(self) -> Iterator[PonyCounter]:
        counter = PonyCounter()
        provider = self.db.provider
        commit = provider.commit

        def counted_commit(connection: Any, cache: Any = None) -> Any:
            counter.commits += 1
            return commit(connection, cache)

        provider.commit = counted_commit
        _ACTIVE.append(counter)
        try:
            yield counter
        finally:
            _ACTIVE.remove(counter)
            del provider.commit

    def session_rows(self) -> list[dict[str, Any]]:
        connection = self.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT * FROM sessionstore_session")
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            connection.close()
        if self.database == "sqlite":
            # SQLite keeps Pony's datetimes as text; the other drivers return datetimes.
            for row in rows:
                for name in ("created_at", "last_seen_at", "expires_at"):
                    row[name] = datetime.fromisoformat(row[name])
        return rows

    def raw_connection(self) -> Any:
        """A connection of the driver's own, outside Pony and the counters."""
        arguments = bind_arguments(self.server_url, self.database, counting=False)
        arguments.pop("provider")
        if self.database == "sqlite":
            return sqlite3.connect(arguments["filename"])
        if self.database == "postgresql":
            import psycopg2

            return psycopg2.connect(**arguments)
        import pymysql

        return pymysql.connect(**arguments)

    @contextmanager
    def unit(self, app: Flask) -> Iterator[None]:
        """An app context and a ``db_session``, as a Pony script would hold."""
        with app.app_context(), orm.db_session:
            yield
