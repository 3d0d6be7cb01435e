"""flask-sessionstore on its other ORMs, for :mod:`bench.compare`.

Each is measured on SQLite when its module (``flask_sessionstore.orm.<name>``) imports,
and reported as not measured otherwise. Statements are counted with SQLite's own trace
hook, installed on every connection the ORM opens (a connection factory), so that each
ORM is counted the same way whatever it does above the driver: transaction verbs are
left out, and a write made outside a transaction counts as a commit (it is one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib import import_module
from typing import Any

from flask import Flask

from . import contenders as cs
from .contenders import Contender, SQLCounter

#: The counters now counting; the trace hook feeds them all.
_ACTIVE: list[SQLCounter] = []
_CONTROL = ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "END")
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class TracingConnection(sqlite3.Connection):
    """A SQLite connection that reports each statement it runs to the active counters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_trace_callback(self._trace)

    def _trace(self, statement: str) -> None:
        if not _ACTIVE:
            return  # not counting: the hook costs one list test per statement
        verb = statement.lstrip()[:9].upper()
        if verb.startswith(_CONTROL):
            return
        committed = verb.startswith("COMMIT") or (
            verb.startswith(_WRITES) and not self.in_transaction)
        for counter in _ACTIVE:
            if verb.startswith("COMMIT"):
                counter.commits += 1
                continue
            counter.statements += 1
            counter.commits += committed


@contextmanager
def traced() -> Iterator[SQLCounter]:
    counter = SQLCounter()
    _ACTIVE.append(counter)
    try:
        yield counter
    finally:
        _ACTIVE.remove(counter)


def _path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _stamp(value: datetime) -> str:
    # The text form both ORMs write for a datetime on SQLite.
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _session_tuples(count: int, users: int, expired: bool = False
                    ) -> Iterator[tuple[Any, ...]]:
    for row in cs.sessionstore_rows(count, users, expired=expired):
        yield (row["key"], row["user_id"], row["data"], _stamp(row["created_at"]),
               _stamp(row["last_seen_at"]), _stamp(row["expires_at"]), row["user_agent"],
               row["ip_address"])


def _bulk(path: str, statements: list[tuple[str, Iterator[tuple[Any, ...]]]]) -> None:
    """Run each (INSERT, rows) with executemany in batches, in one transaction."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            for sql, rows in statements:
                batch: list[tuple[Any, ...]] = []
                for row in rows:
                    batch.append(row)
                    if len(batch) == cs.BATCH:
                        connection.executemany(sql, batch)
                        batch = []
                if batch:
                    connection.executemany(sql, batch)
    finally:
        connection.close()


def _users(users: int) -> Iterator[tuple[Any, ...]]:
    for row in cs._user_rows(users):
        yield (row["id"], row["email"], row["password"], 1)


def _links(users: int) -> Iterator[tuple[int, int]]:
    for row in cs._link_rows(users):
        yield (row["user_id"], row["role_id"])


def _session_insert(table: str) -> str:
    return (f'INSERT INTO "{table}" (key, user_id, data, created_at, last_seen_at, '  # noqa: S608
            "expires_at, user_agent, ip_address) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


class ORMContender(Contender):
    """A flask-sessionstore contender on an ORM other than SQLAlchemy (SQLite only)."""

    def count_sql(self) -> Any:
        return traced()

    def close(self) -> None:
        closer = self.app.extensions.get("bench_close")
        if closer is not None:
            closer()


# -- Peewee ------------------------------------------------------------------------


def make_peewee(url: str) -> tuple[Flask, Any]:
    """flask-sessionstore on Peewee with ``FlaskDB``, the seed's models."""
    import peewee
    from playhouse.flask_utils import FlaskDB

    from flask_sessionstore import PeeweeUserDatastore, RoleMixin, SessionStore, UserMixin
    from flask_sessionstore import roles_required as ss_roles_required
    from flask_sessionstore.login import login_user

    app = cs._base_app(None)
    app.config["SESSIONSTORE_COOKIE_SECURE"] = False
    database = peewee.SqliteDatabase(_path(url), factory=TracingConnection)
    flask_db = FlaskDB(app, database)

    class Role(RoleMixin, flask_db.Model):  # type: ignore[misc, name-defined]
        name = peewee.CharField(unique=True)
        description = peewee.TextField(null=True)

    class User(UserMixin, flask_db.Model):  # type: ignore[misc, name-defined]
        email = peewee.TextField()
        password = peewee.TextField()
        active = peewee.BooleanField(default=True)
        confirmed_at = peewee.DateTimeField(null=True)

    class UserRoles(flask_db.Model):  # type: ignore[misc, name-defined]
        user = peewee.ForeignKeyField(User, backref="roles")
        role = peewee.ForeignKeyField(Role, backref="users")

    datastore = PeeweeUserDatastore(flask_db, User, Role, UserRoles)
    SessionStore(app, datastore=datastore)
    models = [User, Role, UserRoles, datastore.session_model]
    app.extensions["bench_peewee"] = (database, models)
    app.extensions["bench_close"] = lambda: database.is_closed() or database.close()

    def login(user_id: int) -> bool:
        user = datastore.get_user(user_id)
        return user is not None and login_user(user)

    cs.add_routes(app, ss_roles_required(cs.ROLE), cs._current_email, login)
    return app, None


def seed_peewee(contender: Contender, users: int, sessions: int) -> None:
    database, models = contender.app.extensions["bench_peewee"]
    user, role, link, session_model = models
    with database.connection_context():
        database.create_tables(models)
    meta = {model: model._meta.table_name for model in models}
    _bulk(_path(contender.url), [
        (f'INSERT INTO "{meta[role]}" (id, name, description) VALUES (?, ?, ?)',  # noqa: S608
         iter([(1, cs.ROLE, "every user"), (2, "admin", "one in ten")])),
        (f'INSERT INTO "{meta[user]}" (id, email, password, active) '  # noqa: S608
         "VALUES (?, ?, ?, ?)", _users(users)),
        (f'INSERT INTO "{meta[link]}" (user_id, role_id) VALUES (?, ?)',  # noqa: S608
         _links(users)),
        (_session_insert(meta[session_model]), _session_tuples(sessions, users)),
    ])


# -- Pony --------------------------------------------------------------------------


def make_pony(url: str) -> tuple[Flask, Any]:
    """flask-sessionstore on Pony, the seed's entities."""
    from pony import orm
    from pony.orm import Optional, Required, Set

    from flask_sessionstore import PonyUserDatastore, RoleMixin, SessionStore, UserMixin
    from flask_sessionstore import roles_required as ss_roles_required
    from flask_sessionstore.login import login_user

    app = cs._base_app(None)
    app.config["SESSIONSTORE_COOKIE_SECURE"] = False
    db = orm.Database()

    class Role(db.Entity, RoleMixin):  # type: ignore[misc, name-defined]
        name = Required(str, unique=True)
        description = Optional(str, nullable=True)
        users = Set(lambda: User)

    class User(db.Entity, UserMixin):  # type: ignore[misc, name-defined]
        email = Required(str)
        password = Optional(str, nullable=True)
        active = Optional(bool)
        confirmed_at = Optional(datetime)
        roles = Set(lambda: Role)

    datastore = PonyUserDatastore(db, User, Role)
    db.bind(provider="sqlite", filename=_path(url), create_db=True, factory=TracingConnection)
    db.generate_mapping(create_tables=True)
    SessionStore(app, datastore=datastore)
    app.extensions["bench_pony"] = (db, User, Role, datastore)
    app.extensions["bench_close"] = db.disconnect

    def login(user_id: int) -> bool:
        user = datastore.get_user(user_id)
        return user is not None and login_user(user)

    cs.add_routes(app, ss_roles_required(cs.ROLE), cs._current_email, login)
    return app, None


def seed_pony(contender: Contender, users: int, sessions: int) -> None:
    _, user, role, datastore = contender.app.extensions["bench_pony"]
    links = user.roles
    # The link table's column naming the role comes first in Pony's pair of columns.
    role_column, user_column = links.columns[0], links.reverse.columns[0]
    _bulk(_path(contender.url), [
        (f'INSERT INTO "{role._table_}" (id, name, description) VALUES (?, ?, ?)',  # noqa: S608
         iter([(1, cs.ROLE, "every user"), (2, "admin", "one in ten")])),
        (f'INSERT INTO "{user._table_}" (id, email, password, active) '  # noqa: S608
         "VALUES (?, ?, ?, ?)", _users(users)),
        (f'INSERT INTO "{links.table}" ("{user_column}", "{role_column}") '  # noqa: S608
         "VALUES (?, ?)", _links(users)),
        (_session_insert(datastore.session_entity._table_), _session_tuples(sessions, users)),
    ])


# -- the roster --------------------------------------------------------------------

_ORMS: dict[str, tuple[str, Callable[[str], tuple[Flask, Any]] | None,
                       Callable[[Contender, int, int], None] | None]] = {
    "peewee": ("flask-sessionstore, Peewee (FlaskDB) on SQLite", make_peewee, seed_peewee),
    "pony": ("flask-sessionstore, Pony on SQLite", make_pony, seed_pony),
    # No MongoDB server can run on these machines, and mongomock finds a document by
    # scanning them all: its numbers would measure mongomock, not the library.
    "mongoengine": ("flask-sessionstore, MongoEngine", None, None),
}


def roster(sqlite: Callable[[str], str]) -> list[Contender]:
    """A contender per ORM whose module imports; a skipped entry for the others."""
    found: list[Contender] = []
    for name, (label, factory, seeder) in _ORMS.items():
        key = f"sessionstore-{name}"
        try:
            import_module(f"flask_sessionstore.orm.{name}")
        except ImportError as exc:
            found.append(Contender(key, label, "", "", note=f"not importable: {exc}"))
            continue
        if factory is None or seeder is None:
            found.append(Contender(key, label, "", "", note=(
                "no MongoDB server on this machine; mongomock scans every document, so "
                "its numbers would not describe the library")))
            continue
        cs.FACTORIES[f"orm_{name}"] = factory
        cs.SEEDERS[f"orm_{name}"] = seeder
        found.append(ORMContender(key, label, f"orm_{name}", sqlite(f"sessionstore_{name}")))
    return found

