"""The example on Flask-SQLAlchemy: models, tables and listings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column, relationship

from flask_sessionstore import RoleMixin, SQLAlchemyUserDatastore, UserMixin
from flask_sessionstore.datastore import utcnow

from . import ExampleBackend, datastore_options


def _driver_url(url: str) -> str:
    # DATABASE_URL is usually written without a driver; pick the ones the project's
    # extras install (psycopg2, PyMySQL) instead of SQLAlchemy's defaults.
    if url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    if url.startswith(("mysql://", "mariadb://")):
        rest = url.split("://", 1)[1]
        return "mysql+pymysql://" + rest + ("&" if "?" in rest else "?") + "charset=utf8mb4"
    return url


class SQLAlchemyBackend(ExampleBackend):
    """The example's users and roles as Flask-SQLAlchemy models."""

    name = "sqlalchemy"

    def __init__(self, app: Flask, url: str) -> None:
        app.config["SQLALCHEMY_DATABASE_URI"] = _driver_url(url)
        self.db = db = SQLAlchemy(app)

        roles_users = db.Table(
            "roles_users",
            sa.Column("user_id", sa.ForeignKey("user.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("role_id", sa.ForeignKey("role.id", ondelete="CASCADE"), primary_key=True),
        )

        class Role(db.Model, RoleMixin):  # type: ignore[name-defined,misc]
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str] = mapped_column(sa.String(80), unique=True)
            description: Mapped[str | None] = mapped_column(sa.String(255))
            # Comma-separated permission names, read by RoleMixin.get_permissions.
            permissions: Mapped[str | None] = mapped_column(sa.UnicodeText())

        class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
            id: Mapped[int] = mapped_column(primary_key=True)
            email: Mapped[str] = mapped_column(sa.String(255), unique=True)
            password: Mapped[str | None] = mapped_column(sa.String(255))
            active: Mapped[bool] = mapped_column(default=True)
            created_at: Mapped[datetime] = mapped_column(default=utcnow)
            roles: Mapped[list[Role]] = relationship(secondary=roles_users, lazy="selectin")

        self.User, self.Role = User, Role
        super().__init__(SQLAlchemyUserDatastore(db, User, Role, **datastore_options(app)))

    def create_tables(self) -> None:
        self.db.create_all()

    def users(self) -> list[Any]:
        return list(self.db.session.scalars(sa.select(self.User).order_by(self.User.email)))

    def roles(self) -> list[Any]:
        return list(self.db.session.scalars(sa.select(self.Role).order_by(self.Role.name)))


def make_backend(app: Flask, url: str) -> ExampleBackend:
    """Return the SQLAlchemy backend on ``url``, set up on ``app``."""
    return SQLAlchemyBackend(app, url)
