"""The app the load scenarios serve with gunicorn: the seed's models on
:class:`~flask_sessionstore.SQLAlchemyUserDatastore`, and JSON routes that show each
client its own email and its own session counter, so that every answer can be checked.

gunicorn loads it as ``tests.load.app:create_app()``; the database URL comes from the
environment variable :data:`URL_ENV` (the contract suite's plain form,
``postgresql://...`` or ``mysql://...``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request, session
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from flask_sqlalchemy import SQLAlchemy

from flask_sessionstore import SessionStore, SQLAlchemyUserDatastore, login_user, logout_user

from ..backends import fast_hasher, own_database
from ..backends.sqlalchemy import seed_models, sqlalchemy_url

__all__ = ["DATABASE_NAME", "REDIS_URL_ENV", "URL_ENV", "LoadModels", "create_app"]

#: The server URL the app uses; its database is replaced by :data:`DATABASE_NAME`.
URL_ENV = "SESSIONSTORE_LOAD_DATABASE_URL"
#: Hook for the cache's fault scenarios: when set, the app puts a Redis session cache
#: (``SESSIONSTORE_REDIS_URL``) in front of the session rows.
REDIS_URL_ENV = "SESSIONSTORE_LOAD_REDIS_URL"
DATABASE_NAME = "sessionstore_load"
#: The session key of each client's counter.
COUNTER = "n"


@dataclass(frozen=True)
class LoadModels:
    """What the tests need to reach behind the app: the models and the datastore."""

    db: Any
    User: Any
    Role: Any
    datastore: SQLAlchemyUserDatastore


def database_url(server_url: str) -> str:
    """The SQLAlchemy URL of the load database on ``server_url``, made if missing."""
    return sqlalchemy_url(own_database(server_url, DATABASE_NAME))


def create_app(server_url: str | None = None) -> Flask:
    """Build the load app on ``server_url`` (by default the value of :data:`URL_ENV`)."""
    url = server_url or os.environ[URL_ENV]
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="load scenario secret key",
        SQLALCHEMY_DATABASE_URI=database_url(url),
        # The documented recovery setting: each pooled connection is tested when it is
        # taken, so connections that died with a database restart are replaced instead
        # of failing one request each.
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        # Plain http on 127.0.0.1.
        SESSIONSTORE_COOKIE_SECURE=False,
        # Renew often, so that reads write expiries too and those writes meet the
        # counter writes under load (the default is five minutes).
        SESSIONSTORE_RENEWAL_INTERVAL=1,
    )
    redis_url = os.environ.get(REDIS_URL_ENV)
    if redis_url:
        app.config["SESSIONSTORE_REDIS_URL"] = redis_url
    db = SQLAlchemy(app)
    user_model, role_model = seed_models(db)
    # The smallest argon2 settings: the figures measure the session store, not the
    # password hash (logins and password changes are part of the mix).
    datastore = SQLAlchemyUserDatastore(db, user_model, role_model,
                                        password_hasher=fast_hasher())
    SessionStore(app, datastore=datastore)
    app.extensions["load"] = LoadModels(db, user_model, role_model, datastore)
    _routes(app, datastore)
    return app


def _mine(email: str | None = None) -> Response:
    """The answer every route gives a logged-in client: whose session, and its counter."""
    return jsonify(email=email or current_user.email, n=session.get(COUNTER, 0))


def _routes(app: Flask, datastore: SQLAlchemyUserDatastore) -> None:
    @app.get("/health")
    def health() -> ResponseReturnValue:
        # Needs no database: tells that the workers are up.
        return jsonify(pid=os.getpid())

    @app.post("/login")
    def login() -> ResponseReturnValue:
        user = datastore.authenticate(request.form["email"], request.form["password"])
        if user is None:
            return jsonify(error="bad credentials"), 401
        login_user(user)
        return _mine()

    @app.post("/logout")
    def logout() -> ResponseReturnValue:
        logout_user()
        return jsonify(ok=True)

    @app.get("/me")
    @login_required
    def me() -> ResponseReturnValue:
        return _mine()

    @app.post("/counter")
    @login_required
    def counter() -> ResponseReturnValue:
        session[COUNTER] = session.get(COUNTER, 0) + 1
        return _mine()

    @app.post("/password")
    @login_required
    def password() -> ResponseReturnValue:
        # Read before the commit, which expires the user: a database lost after it
        # must be met by the library, not by this view reloading the user.
        email = current_user.email
        datastore.change_password(current_user._get_current_object(),
                                  request.form["new_password"])
        return _mine(email)
