"""The example on Peewee: models bound to a plain database, tables and listings."""

from __future__ import annotations

from typing import Any

import peewee
from flask import Flask
from playhouse.db_url import connect

from flask_sessionstore import PeeweeUserDatastore, RoleMixin, UserMixin
from flask_sessionstore.datastore import utcnow

from . import ExampleBackend, datastore_options


class PeeweeBackend(ExampleBackend):
    """The example's users and roles as Peewee models, with a link model between them.

    The database is a plain Peewee ``Database``: the datastore's ``init_app`` closes the
    thread's connection when each request or app context ends.
    """

    name = "peewee"

    def __init__(self, app: Flask, url: str) -> None:
        # SQLite enforces foreign keys (so deleting a user drops its links) only when
        # asked, once per connection.
        options: dict[str, Any] = {"pragmas": {"foreign_keys": 1}} if url.startswith(
            "sqlite") else {}
        self.database = bound = connect(url, **options)

        class Base(peewee.Model):
            class Meta:
                database = bound

        class Role(RoleMixin, Base):
            name = peewee.CharField(max_length=80, unique=True)
            description = peewee.CharField(max_length=255, null=True)
            # Comma-separated permission names, read by RoleMixin.get_permissions.
            permissions = peewee.TextField(null=True)

        class User(UserMixin, Base):
            email = peewee.CharField(max_length=255, unique=True)
            password = peewee.CharField(max_length=255, null=True)
            active = peewee.BooleanField(default=True)
            created_at = peewee.DateTimeField(default=utcnow)

        class UserRoles(Base):
            # The user's ``roles`` are these link rows; UserMixin reads their ``role``.
            user = peewee.ForeignKeyField(User, backref="roles", on_delete="CASCADE")
            role = peewee.ForeignKeyField(Role, backref="users", on_delete="CASCADE")

            class Meta:
                indexes = ((("user", "role"), True),)

        self.User, self.Role, self.UserRoles = User, Role, UserRoles
        super().__init__(
            PeeweeUserDatastore(bound, User, Role, UserRoles, **datastore_options(app))
        )

    def create_tables(self) -> None:
        session_model = self.datastore.session_model  # type: ignore[attr-defined]
        self.database.create_tables([self.User, self.Role, self.UserRoles, session_model])

    def users(self) -> list[Any]:
        return list(self.User.select().order_by(self.User.email))

    def roles(self) -> list[Any]:
        return list(self.Role.select().order_by(self.Role.name))


def make_backend(app: Flask, url: str) -> ExampleBackend:
    """Return the Peewee backend on ``url``, set up on ``app``."""
    return PeeweeBackend(app, url)
