"""The SessionStore extension: setup, configuration and packaging.

These tests are about the extension, not an ORM, so they run on SQLAlchemy and SQLite.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_sessionstore import ServerSessionInterface, SessionStore

from .app import make_app
from .backends import Backend
from .conftest import make_backend


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    backend = make_backend("sqlalchemy", "sqlite", tmp_path)
    backend.app = make_app()
    backend.setup(backend.app)
    yield backend
    backend.teardown()


def _fresh_app(**config: Any) -> Flask:
    app = make_app()
    app.config.update(config)
    return app


def test_state_lives_in_app_extensions(sqlite_backend: Backend) -> None:
    app = sqlite_backend.app
    store = SessionStore(app, datastore=sqlite_backend.datastore)
    assert app.extensions["sessionstore"].datastore is sqlite_backend.datastore
    assert isinstance(app.session_interface, ServerSessionInterface)
    assert not hasattr(store, "app")


def test_one_extension_object_serves_several_apps(sqlite_backend: Backend) -> None:
    store = SessionStore(datastore=sqlite_backend.datastore)
    first = sqlite_backend.app
    second = _fresh_app(SQLALCHEMY_DATABASE_URI=first.config["SQLALCHEMY_DATABASE_URI"])
    sqlite_backend.db.init_app(second)  # type: ignore[attr-defined]
    store.init_app(first)
    store.init_app(second)
    assert first.session_interface is not second.session_interface
    assert first.extensions["sessionstore"].datastore is sqlite_backend.datastore
    with second.app_context():
        sqlite_backend.datastore.create_user(email="ann@example.com", password="pw")
    response = second.test_client().post(
        "/login", data={"email": "ann@example.com", "password": "pw"}
    )
    assert response.status_code == 200


def test_an_app_without_the_datastores_db_is_refused(sqlite_backend: Backend) -> None:
    with pytest.raises(RuntimeError, match=r"db\.init_app\(app\)"):
        SessionStore(_fresh_app(), datastore=sqlite_backend.datastore)


def test_second_init_app_says_what_to_do(sqlite_backend: Backend) -> None:
    store = SessionStore(sqlite_backend.app, datastore=sqlite_backend.datastore)
    with pytest.raises(RuntimeError, match="already set up on this app"):
        store.init_app(sqlite_backend.app)


def test_missing_datastore_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match=r"datastore=\.\.\."):
        SessionStore(_fresh_app())
    with pytest.raises(TypeError):
        SessionStore(_fresh_app(), datastore=object())  # type: ignore[arg-type]


def test_config_defaults_are_set_and_read_once(sqlite_backend: Backend) -> None:
    app = sqlite_backend.app
    app.config["SESSIONSTORE_IDLE_TIMEOUT"] = 600
    SessionStore(app, datastore=sqlite_backend.datastore)
    assert app.config["SESSIONSTORE_ABSOLUTE_TIMEOUT"] == timedelta(hours=12)
    interface = app.session_interface
    assert isinstance(interface, ServerSessionInterface)
    assert interface.policy.idle == timedelta(seconds=600)
    assert interface.policy.permanent == app.config["PERMANENT_SESSION_LIFETIME"]
    app.config["SESSIONSTORE_IDLE_TIMEOUT"] = 1
    assert interface.policy.idle == timedelta(seconds=600)


@pytest.mark.parametrize("value", [0, -5, "an hour", True, None])
def test_bad_durations_are_refused(sqlite_backend: Backend, value: Any) -> None:
    sqlite_backend.app.config["SESSIONSTORE_IDLE_TIMEOUT"] = value
    with pytest.raises(RuntimeError, match="SESSIONSTORE_IDLE_TIMEOUT"):
        SessionStore(sqlite_backend.app, datastore=sqlite_backend.datastore)


def test_cookie_is_secure_by_default_outside_debug_and_testing(sqlite_backend: Backend) -> None:
    app = sqlite_backend.app
    app.config["TESTING"] = False
    SessionStore(app, datastore=sqlite_backend.datastore)
    with app.app_context():
        sqlite_backend.datastore.create_user(email="ann@example.com", password="pw")
    response = app.test_client().post("/login", data={"email": "ann@example.com", "password": "pw"})
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_flask_cookie_settings_are_honoured(sqlite_backend: Backend) -> None:
    app = sqlite_backend.app
    app.config.update(
        SESSION_COOKIE_NAME="sid", SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_PATH="/app"
    )
    SessionStore(app, datastore=sqlite_backend.datastore)
    with app.app_context():
        sqlite_backend.datastore.create_user(email="ann@example.com", password="pw")
    response = app.test_client().post("/login", data={"email": "ann@example.com", "password": "pw"})
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("sid=") and "SameSite=Strict" in cookie and "Path=/app" in cookie


def test_host_prefix_needs_secure_and_no_domain(sqlite_backend: Backend) -> None:
    app = sqlite_backend.app
    app.config["SESSION_COOKIE_NAME"] = "__Host-session"
    with pytest.raises(RuntimeError, match="Secure"):
        SessionStore(app, datastore=sqlite_backend.datastore)
    app.config.update(SESSIONSTORE_COOKIE_SECURE=True, SESSION_COOKIE_DOMAIN="example.com")
    with pytest.raises(RuntimeError, match="domain"):
        SessionStore(app, datastore=sqlite_backend.datastore)
    app.config["SESSION_COOKIE_DOMAIN"] = None
    SessionStore(app, datastore=sqlite_backend.datastore)
    with app.app_context():
        sqlite_backend.datastore.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    response = client.post(
        "/login", data={"email": "ann@example.com", "password": "pw"}, base_url="https://localhost"
    )
    assert response.headers["Set-Cookie"].startswith("__Host-session=")
    assert "Secure" in response.headers["Set-Cookie"]


def test_signed_cookies_refuse_forgeries_without_a_query(sqlite_backend: Backend) -> None:
    app = sqlite_backend.app
    app.config["SESSIONSTORE_SIGN_COOKIE"] = True
    SessionStore(app, datastore=sqlite_backend.datastore)
    with app.app_context():
        sqlite_backend.datastore.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    client.post("/login", data={"email": "ann@example.com", "password": "pw"})
    assert client.get("/me").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None and "." in cookie.value
    session_id, signature = cookie.value.rsplit(".", 1)
    forged = app.test_client()
    forged.set_cookie("session", session_id + "." + signature[::-1])
    with sqlite_backend.count() as counter:
        assert forged.get("/me").status_code == 401
    assert counter.count == 0
    unsigned = app.test_client()
    unsigned.set_cookie("session", session_id)
    assert unsigned.get("/me").status_code == 401


def test_signing_needs_a_secret_key(sqlite_backend: Backend) -> None:
    app = sqlite_backend.app
    app.config.update(SESSIONSTORE_SIGN_COOKIE=True, SECRET_KEY=None)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        SessionStore(app, datastore=sqlite_backend.datastore)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (a fixed interpreter and code of ours)
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )


def test_importing_the_package_imports_no_orm() -> None:
    result = _python(
        "import sys, flask_sessionstore\n"
        "orms = {'sqlalchemy', 'flask_sqlalchemy', 'peewee', 'pony', 'mongoengine', 'pymongo'}\n"
        "print(sorted(orms & set(sys.modules)))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("name", "blocked", "extra"),
    [
        ("SQLAlchemyUserDatastore", "sqlalchemy", "sqlalchemy"),
        ("PeeweeUserDatastore", "peewee", "peewee"),
        ("PonyUserDatastore", "pony", "pony"),
        ("MongoEngineUserDatastore", "mongoengine", "mongoengine"),
    ],
)
def test_a_missing_orm_names_the_extra(name: str, blocked: str, extra: str) -> None:
    result = _python(
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import flask_sessionstore\n"
        "try:\n"
        f"    flask_sessionstore.{name}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert f"pip install 'flask-sessionstore[{extra}]'" in result.stdout


def test_permission_names_split_the_same_from_text_and_lists() -> None:
    from flask_sessionstore.mixins import parse_permissions

    expected = {"reports.read", "reports.write", "admin"}
    assert parse_permissions("reports.read, reports.write admin") == expected
    assert parse_permissions(["reports.read,reports.write", " admin "]) == expected
    assert parse_permissions(None) == frozenset()
