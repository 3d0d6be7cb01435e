"""The example on Pony ORM: entities, the mapping, tables and listings.

Pony maps every entity at once, so the datastore (which declares the session entity)
is made after the example's entities and before ``generate_mapping``. Each request runs
in a ``db_session`` (the datastore's ``init_app``); :meth:`PonyBackend.unit` opens one
for work outside requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask
from pony import orm

from flask_sessionstore import PonyUserDatastore, RoleMixin, UserMixin
from flask_sessionstore.datastore import utcnow

from . import ExampleBackend, datastore_options


def _bind_arguments(url: str) -> dict[str, Any]:
    if url.startswith("sqlite:///"):
        return {"provider": "sqlite", "filename": url.removeprefix("sqlite:///"),
                "create_db": True}
    parts = urlsplit(url)
    server = {
        "host": parts.hostname or "127.0.0.1",
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }
    if parts.port:
        server["port"] = parts.port  # type: ignore[assignment]
    name = parts.path.strip("/")
    if parts.scheme.startswith("postgres"):
        return {"provider": "postgres", "database": name, **server}
    if parts.scheme.startswith(("mysql", "mariadb")):
        return {"provider": "mysql", "db": name, "charset": "utf8mb4", **server}
    raise RuntimeError(f"The Pony example cannot use {url!r}: give an SQLite, PostgreSQL "
                       "or MySQL/MariaDB URL.")


class PonyBackend(ExampleBackend):
    """The example's users and roles as Pony entities."""

    name = "pony"

    def __init__(self, app: Flask, url: str) -> None:
        self.db = db = orm.Database()

        class Role(db.Entity, RoleMixin):  # type: ignore[name-defined,misc]
            name = orm.Required(str, 80, unique=True)
            description = orm.Optional(str, 255, nullable=True)
            # Comma-separated permission names, read by RoleMixin.get_permissions.
            permissions = orm.Optional(str, nullable=True)
            users = orm.Set(lambda: User)

        class User(db.Entity, UserMixin):  # type: ignore[name-defined,misc]
            email = orm.Required(str, 255, unique=True)
            password = orm.Optional(str, 255, nullable=True)
            active = orm.Required(bool, default=True)
            created_at = orm.Required(datetime, default=utcnow, precision=6)
            roles = orm.Set(Role)

        self.User, self.Role = User, Role
        datastore = PonyUserDatastore(db, User, Role, **datastore_options(app))
        db.bind(**_bind_arguments(url))
        # The tables are made by create_tables(), at start-up.
        db.generate_mapping(create_tables=False, check_tables=False)
        super().__init__(datastore)

    @contextmanager
    def unit(self) -> Iterator[None]:
        with orm.db_session:
            yield

    def create_tables(self) -> None:
        self.db.create_tables()

    def users(self) -> list[Any]:
        return list(self.User.select().order_by(self.User.email))

    def roles(self) -> list[Any]:
        return list(self.Role.select().order_by(self.Role.name))


def make_backend(app: Flask, url: str) -> ExampleBackend:
    """Return the Pony backend on ``url``, set up on ``app``."""
    return PonyBackend(app, url)
