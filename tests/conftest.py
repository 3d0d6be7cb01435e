"""Fixtures of the contract suite: every test that takes ``backend`` runs on every ORM
and every database configured (see ``tests/backends/__init__.py`` for the variables)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_sessionstore import SessionStore, UserDatastore
from flask_sessionstore.records import utcnow

from .app import make_app
from .backends import REQUIRE_SERVERS_ENV, SERVER_ENV, Backend, drop_own_databases, server_url

#: Each ORM: its backend module and class, and the databases it runs on.
ORMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sqlalchemy": ("sqlalchemy", "SQLAlchemyBackend", ("sqlite", "postgresql", "mariadb")),
    "peewee": ("peewee", "PeeweeBackend", ("sqlite", "postgresql", "mariadb")),
    "pony": ("pony", "PonyBackend", ("sqlite", "postgresql", "mariadb")),
    "mongoengine": ("mongoengine", "MongoEngineBackend", ("mongomock", "mongodb")),
}


def _params() -> list[Any]:
    params = []
    for orm, (_, _, databases) in ORMS.items():
        for database in databases:
            marks = [] if database in ("sqlite", "mongomock") else [pytest.mark.server]
            params.append(pytest.param((orm, database), id=f"{orm}-{database}", marks=marks))
    return params


def make_backend(orm: str, database: str, tmp_path: Path) -> Backend:
    """Build the backend for ``orm`` on ``database``; skip (or fail in CI) without a URL."""
    module_name, class_name, _ = ORMS[orm]
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.sqlite3'}"
    elif database == "mongomock":
        url = "mongomock://localhost/sessionstore_test"
    else:
        found = server_url(database)
        if found is None:
            message = f"{database} not configured: set {SERVER_ENV[database]} to run on it"
            # No MongoDB server can be installed where CI runs: a real MongoDB is used
            # when MONGODB_URI is set, and only the other servers are required.
            if os.environ.get(REQUIRE_SERVERS_ENV) == "1" and database != "mongodb":
                pytest.fail(message)
            pytest.skip(message)
        url = found
    module = importlib.import_module(f"tests.backends.{module_name}")
    backend: Backend = getattr(module, class_name)(url, database)
    return backend


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "server: runs against a database server")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    drop_own_databases()


@pytest.fixture(params=_params())
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    orm, database = request.param
    found = make_backend(orm, database, tmp_path)
    with found.running(make_app()):
        yield found


@pytest.fixture
def app(backend: Backend) -> Flask:
    """The test app of ``tests/app.py`` with a SessionStore on the backend's datastore."""
    flask_app: Flask = backend.app
    SessionStore(flask_app, datastore=backend.datastore)
    return flask_app


@pytest.fixture
def ds(backend: Backend, app: Flask) -> Iterator[UserDatastore[Any, Any]]:
    """The datastore, usable directly (inside an app context and the ORM's unit)."""
    with backend.unit(app):
        yield backend.datastore


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A clock the library reads instead of the real one; ``clock.advance(seconds)``."""

    class Clock:
        def __init__(self) -> None:
            self.now = datetime(2030, 1, 1, 12, 0, 0)

        def __call__(self) -> datetime:
            return self.now

        def advance(self, seconds: float) -> None:
            self.now += timedelta(seconds=seconds)

    fake = Clock()
    # Every module of the library that reads the clock imported records.utcnow.
    for name, module in list(sys.modules.items()):
        if name.startswith("flask_sessionstore") and getattr(module, "utcnow", None) is utcnow:
            monkeypatch.setattr(module, "utcnow", fake)
    return fake
