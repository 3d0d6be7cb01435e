"""The example on MongoEngine: documents, their collections, and listings.

``DATABASE_URL`` is a ``mongodb://`` URI, or ``mongomock://localhost/NAME`` (the
default) for an in-memory database that lives as long as the process: handy for a
look around, but the accounts, and the admin's password, are new at each start.
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import urlsplit

import mongoengine
from flask import Flask

from flask_sessionstore import MongoEngineUserDatastore, RoleMixin, UserMixin
from flask_sessionstore.datastore import utcnow

from . import ExampleBackend, datastore_options

#: Each app gets its own connection alias, so two apps in one process (the tests) never
#: share a connection, whatever databases they name.
_aliases = itertools.count(1)


def _connect(url: str, alias: str) -> Any:
    parts = urlsplit(url)
    if parts.scheme == "mongomock":
        import mongomock

        return mongoengine.connect(
            parts.path.strip("/") or "example_app", alias=alias,
            host=f"mongodb://{parts.netloc or 'localhost'}",
            mongo_client_class=mongomock.MongoClient, uuidRepresentation="standard",
        )
    return mongoengine.connect(host=url, alias=alias, uuidRepresentation="standard",
                               serverSelectionTimeoutMS=5000)


class MongoEngineBackend(ExampleBackend):
    """The example's users and roles as MongoEngine documents."""

    name = "mongoengine"

    def __init__(self, app: Flask, url: str) -> None:
        alias = f"example_app_{next(_aliases)}"
        client = _connect(url, alias)

        class Role(mongoengine.Document, RoleMixin):  # type: ignore[misc]
            name = mongoengine.StringField(max_length=80, unique=True, required=True)
            description = mongoengine.StringField(max_length=255)
            permissions = mongoengine.ListField(mongoengine.StringField())
            meta = {"db_alias": alias, "collection": "role"}  # noqa: RUF012

        class User(mongoengine.Document, UserMixin):  # type: ignore[misc]
            email = mongoengine.StringField(max_length=255, unique=True, required=True)
            password = mongoengine.StringField(max_length=255)
            active = mongoengine.BooleanField(default=True)
            created_at = mongoengine.DateTimeField(default=utcnow)
            roles = mongoengine.ListField(mongoengine.ReferenceField(Role), default=list)
            meta = {"db_alias": alias, "collection": "user"}  # noqa: RUF012

        self.User, self.Role = User, Role
        super().__init__(MongoEngineUserDatastore(client, User, Role, **datastore_options(app)))

    def create_tables(self) -> None:
        # Collections appear on first write; the unique indexes are made now so that
        # two registrations racing for one email cannot both win.
        self.User.ensure_indexes()
        self.Role.ensure_indexes()

    def users(self) -> list[Any]:
        return list(self.User.objects.order_by("email"))

    def roles(self) -> list[Any]:
        return list(self.Role.objects.order_by("name"))


def make_backend(app: Flask, url: str) -> ExampleBackend:
    """Return the MongoEngine backend on ``url``, set up on ``app``."""
    return MongoEngineBackend(app, url)
