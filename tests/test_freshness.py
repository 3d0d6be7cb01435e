"""Freshness (S35): a login is fresh only in the browser session where the password
was given, and for at most SESSIONSTORE_FRESHNESS; remembered devices after a browser
restart and bearer tokens are never fresh. Flask-Login's ``fresh_login_required``
answers 401 to a login that is not fresh (no refresh view is configured here)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import Flask
from flask_login import confirm_login, current_user, fresh_login_required

from flask_sessionstore import SessionStore

from .backends import Backend
from .helpers import login


def _fresh_views(app: Flask) -> None:
    @app.get("/sensitive")
    @fresh_login_required
    def sensitive() -> str:
        return str(current_user.email)

    @app.post("/reauthenticate")
    def reauthenticate() -> str:
        confirm_login()  # the app checked the password again
        return "confirmed"


def _restart_the_browser(client: Any) -> None:
    """What a browser does when it closes: it forgets every cookie without an expiry."""
    for cookie in list(client._cookies.values()):
        if cookie.expires is None:
            client.delete_cookie(cookie.key, domain=cookie.domain, path=cookie.path)


def _logged_in(app: Flask, ds: Any, **extra: str) -> Any:
    _fresh_views(app)
    ds.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    login(client, **extra)
    return client


def test_s35_a_remembered_login_is_not_fresh_after_a_browser_restart(
    app: Flask, ds: Any
) -> None:
    client = _logged_in(app, ds, remember="1")
    assert client.get("/sensitive").status_code == 200  # fresh where the password was given
    _restart_the_browser(client)
    assert client.get("/me").status_code == 200  # still remembered...
    assert client.get("/sensitive").status_code == 401  # ...but no longer fresh
    assert client.post("/reauthenticate").status_code == 200
    assert client.get("/sensitive").status_code == 200  # fresh again after re-auth


def test_s35_a_login_that_is_not_remembered_is_fresh_in_its_browser_session(
    app: Flask, ds: Any
) -> None:
    client = _logged_in(app, ds)
    for _ in range(3):
        assert client.get("/sensitive").status_code == 200


def test_s35_freshness_has_a_maximum_age(backend: Backend, clock: Any) -> None:
    app: Flask = backend.app
    app.config["SESSIONSTORE_FRESHNESS"] = timedelta(minutes=10)
    SessionStore(app, datastore=backend.datastore)
    _fresh_views(app)
    with backend.unit(app):
        backend.datastore.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    login(client)
    clock.advance(9 * 60)
    assert client.get("/sensitive").status_code == 200
    clock.advance(2 * 60)
    assert client.get("/me").status_code == 200
    assert client.get("/sensitive").status_code == 401


def test_s35_bearer_tokens_are_never_fresh(app: Flask, ds: Any) -> None:
    _fresh_views(app)
    ds.create_user(email="ann@example.com", password="pw")
    token = ds.create_session("ann@example.com", "pw")
    bearer = {"Authorization": f"Bearer {token}"}
    assert app.test_client().get("/me", headers=bearer).status_code == 200
    assert app.test_client().get("/sensitive", headers=bearer).status_code == 401
    record = ds.retrieve_session(token)
    assert record is not None and json.loads(record.data)["_fresh"] is False
