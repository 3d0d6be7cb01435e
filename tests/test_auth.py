"""Request authentication as an ordered chain, and sessions for clients without
cookies (tokens), on every ORM and database."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, Request
from flask_login import current_user

from flask_sessionstore import (
    AuthMethod,
    PasswordError,
    SessionStore,
    auth_required,
)

from .backends import Backend


class ApiKey(AuthMethod):
    """A method of the application's own: ``X-Api-Key: key-<email>``."""

    name = "apikey"

    def load_user(self, request: Request, state: Any) -> Any:
        key = request.headers.get("X-Api-Key", "")
        if not key.startswith("key-"):
            return None
        return state.datastore.find_user(email=key.removeprefix("key-"))


def _store(backend: Backend, **config: Any) -> Flask:
    app: Flask = backend.app
    app.config.update(config)
    SessionStore(app, datastore=backend.datastore)

    @app.get("/by-token")
    @auth_required("token")
    def by_token() -> str:
        return str(current_user.email)

    @app.get("/by-cookie")
    @auth_required("session")
    def by_cookie() -> str:
        return str(current_user.email)

    @app.get("/by-anything")
    @auth_required()
    def by_anything() -> str:
        return str(current_user.email)

    @app.get("/by-header-or-key")
    @auth_required("header", "apikey")
    def by_header_or_key() -> str:
        return str(current_user.email)

    with backend.unit(app):
        backend.datastore.create_user(email="ann@example.com", password="pw")
        backend.datastore.create_user(email="off@example.com", password="pw", active=False)
    return app


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_lifecycle(backend: Backend) -> None:
    app = _store(backend)
    client = app.test_client()
    with backend.unit(app):
        ds = backend.datastore
        token = ds.create_session("ann@example.com", "pw")
        assert client.get("/me", headers=_bearer(token)).data == b"ann@example.com"
        record = ds.retrieve_session(token)
        assert record is not None and record.user.email == "ann@example.com"
        assert ds.retrieve_session("not a token") is None
        assert ds.remove_session(token) is True
        assert ds.remove_session(token) is False
        assert ds.retrieve_session(token) is None
    assert client.get("/me", headers=_bearer(token)).status_code == 401
    assert "Set-Cookie" not in client.get("/me", headers=_bearer(token)).headers


def test_create_session_checks_the_password_unless_told_not_to(backend: Backend) -> None:
    app = _store(backend)
    with backend.unit(app):
        ds = backend.datastore
        for identifier, password in (
            ("ann@example.com", "wrong"),
            ("nobody@x.org", "pw"),
            ("off@example.com", "pw"),
        ):
            with pytest.raises(PasswordError, match="Unknown user, inactive user or wrong"):
                ds.create_session(identifier, password)
        proven = ds.create_session("ann@example.com", verify_password=False)
        anonymous = ds.create_session()
        assert ds.retrieve_session(anonymous).user is None
    client = app.test_client()
    assert client.get("/me", headers=_bearer(proven)).status_code == 200
    assert client.get("/me", headers=_bearer(anonymous)).status_code == 401


def test_clear_sessions_ends_tokens_and_cookies(backend: Backend) -> None:
    app = _store(backend)
    browser = app.test_client()
    browser.post("/login", data={"email": "ann@example.com", "password": "pw"})
    with backend.unit(app):
        ds = backend.datastore
        token = ds.create_session("ann@example.com", "pw")
        assert ds.clear_sessions(ds.find_user(email="ann@example.com")) == 2
    assert browser.get("/me").status_code == 401
    assert app.test_client().get("/me", headers=_bearer(token)).status_code == 401


def test_tokens_expire_and_renew_like_sessions(backend: Backend, clock: Any) -> None:
    app = _store(backend)
    client = app.test_client()
    with backend.unit(app):
        token = backend.datastore.create_session("ann@example.com", "pw")
    writes = 0
    for _ in range(14):  # 11 h 40 min of use, 50 minutes apart: each within the idle hour
        clock.advance(50 * 60)
        with backend.count() as counter:
            assert client.get("/me", headers=_bearer(token)).status_code == 200
        writes += len(counter.writes)
    assert writes == 14  # every use is past the 5-minute renewal interval: one write each
    clock.advance(21 * 60)  # 12 h 01 min after login: past the absolute limit
    assert client.get("/me", headers=_bearer(token)).status_code == 401


def test_auth_required_names_the_methods_a_view_accepts(backend: Backend) -> None:
    app = _store(backend)
    browser = app.test_client()
    browser.post("/login", data={"email": "ann@example.com", "password": "pw"})
    with backend.unit(app):
        token = backend.datastore.create_session("ann@example.com", "pw")
    api = app.test_client()
    assert browser.get("/by-cookie").status_code == 200
    assert browser.get("/by-token").status_code == 401
    assert api.get("/by-token", headers=_bearer(token)).status_code == 200
    assert api.get("/by-cookie", headers=_bearer(token)).status_code == 401
    assert browser.get("/by-anything").status_code == 200
    assert api.get("/by-anything", headers=_bearer(token)).status_code == 200
    assert app.test_client().get("/by-anything").status_code == 401


def test_a_trusted_header_counts_only_from_a_trusted_proxy(backend: Backend) -> None:
    app = _store(
        backend,
        SESSIONSTORE_AUTH_METHODS=("session", "header", ApiKey()),
        SESSIONSTORE_TRUSTED_HEADER="X-Remote-User",
        SESSIONSTORE_TRUSTED_PROXIES=["127.0.0.0/8"],
    )
    client = app.test_client()
    proxied = {"X-Remote-User": "ANN@example.com"}
    assert client.get("/by-header-or-key", headers=proxied).data == b"ann@example.com"
    outsider = {"REMOTE_ADDR": "203.0.113.9"}
    assert (
        client.get("/by-header-or-key", headers=proxied, environ_base=outsider).status_code == 401
    )
    for who in ("nobody@example.com", "off@example.com", ""):
        response = client.get("/by-header-or-key", headers={"X-Remote-User": who})
        assert response.status_code == 401, who
    # The application's own method, and the order of the chain.
    keyed = client.get("/by-header-or-key", headers={"X-Api-Key": "key-ann@example.com"})
    assert keyed.data == b"ann@example.com"
    assert client.get("/by-token", headers={"X-Api-Key": "key-ann@example.com"}).status_code == 401
    # Bearer tokens are not in this app's chain.
    with backend.unit(app):
        token = backend.datastore.create_session("ann@example.com", "pw")
    assert client.get("/me", headers=_bearer(token)).status_code == 401


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"SESSIONSTORE_AUTH_METHODS": ("session", "header")}, "SESSIONSTORE_TRUSTED_HEADER"),
        (
            {"SESSIONSTORE_AUTH_METHODS": ("header",), "SESSIONSTORE_TRUSTED_HEADER": "X-User"},
            "SESSIONSTORE_TRUSTED_PROXIES",
        ),
        ({"SESSIONSTORE_AUTH_METHODS": ("session", "magic")}, "Unknown authentication method"),
        ({"SESSIONSTORE_AUTH_METHODS": ("token", "token")}, "names a method twice"),
    ],
)
def test_a_bad_chain_is_refused_at_setup(
    backend: Backend, config: dict[str, Any], message: str
) -> None:
    backend.app.config.update(config)
    with pytest.raises(RuntimeError, match=message):
        SessionStore(backend.app, datastore=backend.datastore)
