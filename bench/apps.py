"""Apps the benchmarks drive; ``flask --app bench.apps`` finds :func:`create_app`.

The database comes from ``BENCH_DATABASE_URL`` (a SQLAlchemy URL).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_sessionstore import RoleMixin, SessionStore, SQLAlchemyUserDatastore, UserMixin


def seed_models(db: Any) -> tuple[Any, Any]:
    """The quickstart's models."""
    roles_users = db.Table(
        "roles_users",
        db.Column("user_id", db.Integer(), db.ForeignKey("user.id")),
        db.Column("role_id", db.Integer(), db.ForeignKey("role.id")),
    )

    class Role(db.Model, RoleMixin):
        id = db.Column(db.Integer(), primary_key=True)
        name = db.Column(db.String(80), unique=True)
        description = db.Column(db.String(255))

    class User(db.Model, UserMixin):
        id = db.Column(db.Integer, primary_key=True)
        email = db.Column(db.String(255), unique=True)
        password = db.Column(db.String(255))
        active = db.Column(db.Boolean())
        confirmed_at = db.Column(db.DateTime())
        roles = db.relationship(
            "Role", secondary=roles_users, backref=db.backref("users", lazy="dynamic")
        )

    return User, Role


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="bench",
        SQLALCHEMY_DATABASE_URI=os.environ.get("BENCH_DATABASE_URL", "sqlite:///bench.sqlite3"),
    )
    db = SQLAlchemy(app)
    user_model, role_model = seed_models(db)
    datastore = SQLAlchemyUserDatastore(db, user_model, role_model)
    SessionStore(app, datastore=datastore)
    app.extensions["bench_db"] = db
    return app
