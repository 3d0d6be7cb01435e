"""The SQLAlchemy backend: the seed's Flask-SQLAlchemy models, unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_sessionstore import RoleMixin, SQLAlchemyUserDatastore, UserMixin

from . import Backend, Counter, fast_hasher, own_database


def seed_models(db: Any) -> tuple[Any, Any]:
    """The seed's models, exactly as its documentation shows them."""
    roles_users = db.Table('roles_users',
            db.Column('user_id', db.Integer(), db.ForeignKey('user.id')),
            db.Column('role_id', db.Integer(), db.ForeignKey('role.id')))

    class Role(db.Model, RoleMixin):
        id = db.Column(db.Integer(), primary_key=True)
        name = db.Column(db.String(80), unique=True)
        description = db.Column(db.String(255))
        # Not in the seed: a column for the permission tests.
        permissions = db.Column(db.UnicodeText())

    class User(db.Model, UserMixin):
        id = db.Column(db.Integer, primary_key=True)
        email = db.Column(db.String(255), unique=True)
        password = db.Column(db.String(255))
        active = db.Column(db.Boolean())
        confirmed_at = db.Column(db.DateTime())
        roles = db.relationship('Role', secondary=roles_users,
                                backref=db.backref('users', lazy='dynamic'))

    return User, Role


def sqlalchemy_url(url: str) -> str:
    """The suite's plain server URL, with the driver SQLAlchemy should use."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    if url.startswith(("mysql://", "mariadb://")):
        return "mysql+pymysql://" + url.split("://", 1)[1] + "?charset=utf8mb4"
    return url


class SQLAlchemyBackend(Backend):
    orm = "sqlalchemy"

    def __init__(self, url: str, database: str) -> None:
        super().__init__(url)
        self.database = database

    def setup(self, app: Flask) -> SQLAlchemyUserDatastore:
        url = self.url
        if self.database != "sqlite":
            url = own_database(url, "sessionstore_sqlalchemy")
        app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(url)
        if self.database == "mariadb":
            # The documented setting for MariaDB (docs/orms/sqlalchemy.rst).
            app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"isolation_level": "READ COMMITTED"}
        self.app = app
        self.db = db = SQLAlchemy(app)
        self.User, self.Role = seed_models(db)
        self.datastore = SQLAlchemyUserDatastore(
            db, self.User, self.Role, password_hasher=fast_hasher()
        )
        with app.app_context():
            db.drop_all()
            db.create_all()
            # Connect once, so that counts do not include the dialect's first-connect
            # queries.
            with db.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        return self.datastore

    def teardown(self) -> None:
        with self.app.app_context():
            self.db.session.remove()
            self.db.drop_all()
            self.db.engine.dispose()

    @contextmanager
    def count(self) -> Iterator[Counter]:
        counter = Counter()

        def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            counter.statements.append(statement)

        def on_commit(conn: Any) -> None:
            counter.commits += 1

        with self.app.app_context():
            engine = self.db.engine
        sa.event.listen(engine, "before_cursor_execute", on_execute)
        sa.event.listen(engine, "commit", on_commit)
        try:
            yield counter
        finally:
            sa.event.remove(engine, "before_cursor_execute", on_execute)
            sa.event.remove(engine, "commit", on_commit)

    def session_rows(self) -> list[dict[str, Any]]:
        with self.app.app_context(), self.db.engine.connect() as connection:
            table = self.datastore.session_model.__table__
            return [dict(row._mapping) for row in connection.execute(sa.select(table))]
