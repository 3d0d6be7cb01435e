"""Sessions bound to the user's credentials (S29), and the findings it closes: a
deleted user's session opening the next account (S15) and a login made with the old
password surviving a password change (S16), however the change is made.

Changes "behind the library's back" go through the ORM's own model store and commit
(``ds.models.put`` / ``ds.models.delete``, as ``db.session`` would), never through the
datastore's rules, which end sessions themselves.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask, jsonify, request, session

from flask_sessionstore import SessionStore, current_datastore, login_user

from .backends import Backend
from .helpers import cookie, login


def _user(ds: Any, email: str = "ann@example.com") -> Any:
    found = ds.find_user(email=email)
    assert found is not None
    return found


def _behind_its_back(ds: Any, user: Any, **changes: Any) -> None:
    for name, value in changes.items():
        setattr(user, name, value)
    ds.models.put(user)
    ds.commit()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ann_with_a_cookie_and_a_token(app: Flask, ds: Any) -> tuple[Any, str]:
    ds.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    login(client)
    return client, ds.create_session("ann@example.com", "pw")


def test_s15_a_deleted_users_session_never_opens_the_next_account(
    app: Flask, ds: Any, backend: Backend
) -> None:
    client, token = _ann_with_a_cookie_and_a_token(app, ds)
    assert client.get("/me").data == b"ann@example.com"
    # Deleted the ORM's way: on SQLite nothing enforces the session rows' foreign key,
    # and the next user created gets the freed primary key.
    ds.models.delete(_user(ds))
    ds.commit()
    ds.create_user(email="eve@example.com", password="pw")
    replay = client.get("/me")
    assert replay.status_code == 401, replay.data
    assert app.test_client().get("/me", headers=_bearer(token)).status_code == 401


def test_s16_a_password_changed_behind_the_librarys_back_ends_every_session(
    app: Flask, ds: Any
) -> None:
    client, token = _ann_with_a_cookie_and_a_token(app, ds)
    _behind_its_back(ds, _user(ds), password=ds.hash_password("new password"))
    assert client.get("/me").status_code == 401
    assert app.test_client().get("/me", headers=_bearer(token)).status_code == 401
    # The new password opens a new session as usual.
    response = app.test_client().post(
        "/login", data={"email": "ann@example.com", "password": "new password"}
    )
    assert response.status_code == 200


def test_s29_a_deactivation_behind_its_back_ends_sessions_for_good(
    app: Flask, ds: Any, backend: Backend
) -> None:
    ds.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    login(client)
    _behind_its_back(ds, _user(ds), active=False)
    assert client.get("/me").status_code == 401
    _behind_its_back(ds, _user(ds), active=True)
    assert client.get("/me").status_code == 401  # reactivating brings no session back
    assert backend.session_rows() == []


def test_s29_an_identity_change_behind_its_back_ends_sessions(app: Flask, ds: Any) -> None:
    ds.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    login(client)
    _behind_its_back(ds, _user(ds), email="ann@example.org")
    assert client.get("/me").status_code == 401


def test_s29_the_current_session_survives_the_librarys_own_password_change(
    app: Flask, ds: Any
) -> None:
    ds.create_user(email="ann@example.com", password="pw")
    client, other = app.test_client(), app.test_client()
    login(client)
    login(other)
    before = cookie(client)
    assert client.post("/password", data={"new_password": "new"}).status_code == 200
    assert cookie(client) != before  # rotated (S16)...
    assert client.get("/me").status_code == 200  # ...and kept, under the new stamp
    assert other.get("/me").status_code == 401


def _racing_login(app: Flask) -> tuple[threading.Event, threading.Event]:
    """Add a login view that checks the password, then waits until told to go on before
    logging in: a slow request that read the old credentials."""
    read, go = threading.Event(), threading.Event()

    @app.post("/slow-login")
    def slow_login() -> object:
        user = current_datastore.authenticate(request.form["email"], request.form["password"])
        read.set()
        assert go.wait(30), "the test never let the login go on"
        if user is None:
            return "bad credentials", 401
        login_user(user)
        return "ok"

    return read, go


def _start(app: Flask) -> tuple[Any, threading.Thread, dict[str, Any]]:
    client = app.test_client()
    outcome: dict[str, Any] = {}

    def run() -> None:
        response = client.post(
            "/slow-login", data={"email": "ann@example.com", "password": "pw"}
        )
        outcome["status"] = response.status_code

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return client, thread, outcome


@pytest.mark.parametrize("how", ["library", "behind its back"])
def test_s16_a_login_racing_a_password_change_does_not_survive_it(
    app: Flask, ds: Any, how: str
) -> None:
    """Real threads against the real database: the login reads the old hash, the
    password change commits, then the login stores its session."""
    ds.create_user(email="ann@example.com", password="pw")
    read, go = _racing_login(app)
    client, thread, outcome = _start(app)
    try:
        assert read.wait(30)
        ann = _user(ds)
        if how == "library":
            ds.change_password(ann, "new password")
        else:
            _behind_its_back(ds, ann, password=ds.hash_password("new password"))
    finally:
        go.set()
        thread.join(30)
    assert outcome.get("status") == 200  # the login itself finished...
    assert client.get("/me").status_code == 401  # ...but its session is dead


def test_s15_a_login_racing_a_deletion_never_opens_the_next_account(
    app: Flask, ds: Any
) -> None:
    ds.create_user(email="ann@example.com", password="pw")
    read, go = _racing_login(app)
    client, thread, outcome = _start(app)
    try:
        assert read.wait(30)
        ds.models.delete(_user(ds))
        ds.commit()
        ds.create_user(email="eve@example.com", password="pw")
    finally:
        go.set()
        thread.join(30)
    # A database with foreign keys refuses the login's row; one without stores it, and
    # the stamp kills it. Either way the login answers, and its cookie opens no account.
    assert outcome.get("status") == 200
    assert client.get("/me").status_code == 401


# -- S30: rotation moves a session, never re-creates one ------------------------------


def test_s30_a_rotation_racing_a_revocation_never_brings_the_session_back(
    app: Flask, ds: Any, backend: Backend
) -> None:
    """S09 with real threads: a role change rotates the session id of a request that
    then waits; meanwhile every session of the user is revoked; the request ends."""
    ds.create_role(name="admin")
    ds.create_user(email="ann@example.com", password="pw")
    read, go = threading.Event(), threading.Event()

    @app.post("/promote-me")
    def promote_me() -> object:
        from flask_login import current_user

        current_datastore.add_role_to_user(current_user._get_current_object(), "admin")
        read.set()
        assert go.wait(30), "the test never let the request go on"
        return "promoted"

    client = app.test_client()
    login(client)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(status=client.post("/promote-me").status_code),
        daemon=True,
    )
    thread.start()
    try:
        assert read.wait(30)
        assert ds.revoke_user_sessions(_user(ds)) == 1
    finally:
        go.set()
        thread.join(30)
    assert outcome.get("status") == 200
    assert client.get("/me").status_code == 401
    assert backend.session_rows() == []


def test_s30_rotation_keeps_the_absolute_timeout(app: Flask, ds: Any, clock: Any) -> None:
    """S11: "end all other sessions" (a rotation) every few hours must not make a
    session immortal; it dies 12 hours after login however it was rotated."""
    ds.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    login(client)
    for minute in range(50, 12 * 60, 50):  # active all along: never idle for an hour
        clock.advance(50 * 60)
        if minute % 300 == 0:  # a rotation every five hours
            assert client.post("/password", data={"new_password": "pw"}).status_code == 200
        assert client.get("/me").status_code == 200, minute
    clock.advance(25 * 60)  # 12 h 5 min after login, 25 min after the last request
    assert client.get("/me").status_code == 401


# -- S31: login drops what belonged to someone else ------------------------------------


def test_s31_a_login_as_another_user_drops_the_previous_users_data(
    app: Flask, ds: Any
) -> None:
    ds.create_user(email="ann@example.com", password="pw")
    ds.create_user(email="bob@example.com", password="pw")
    client = app.test_client()
    client.post("/cart")  # an anonymous cart...
    login(client)
    assert client.get("/cart").get_json() == {"cart": 1}  # ...is kept by the login
    client.post("/cart")
    login(client, "bob@example.com")  # Bob logs in on Ann's browser, no logout
    assert client.get("/cart").get_json() == {"cart": 0}
    login(client, "bob@example.com")  # and his own data survives his own new login
    client.post("/cart")
    login(client, "bob@example.com")
    assert client.get("/cart").get_json() == {"cart": 1}


def test_s31_keys_the_app_names_never_survive_a_login(backend: Backend) -> None:
    app: Flask = backend.app
    app.config["SESSIONSTORE_DROP_ON_LOGIN"] = ("csrf_token", "_app_nonce")
    SessionStore(app, datastore=backend.datastore)

    @app.post("/plant")
    def plant() -> object:
        session["csrf_token"] = "known-to-the-attacker"
        session["_app_nonce"] = "also known"
        session["theme"] = "dark"
        return "planted"

    @app.get("/peek")
    def peek() -> object:
        return jsonify({key: session.get(key) for key in ("csrf_token", "_app_nonce", "theme")})

    with backend.unit(app):
        backend.datastore.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    client.post("/plant")
    login(client)
    assert client.get("/peek").get_json() == {"csrf_token": None, "_app_nonce": None,
                                              "theme": "dark"}


def test_s31_the_default_drops_flask_wtfs_csrf_token(app: Flask, ds: Any) -> None:
    ds.create_user(email="ann@example.com", password="pw")

    @app.post("/plant")
    def plant() -> object:
        session["csrf_token"] = "known-to-the-attacker"
        return "planted"

    @app.get("/peek")
    def peek() -> object:
        return jsonify(token=session.get("csrf_token"))

    client = app.test_client()
    client.post("/plant")
    login(client)
    assert client.get("/peek").get_json() == {"token": None}
