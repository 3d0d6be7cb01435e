"""Server-side sessions and the Flask-Login integration, on every ORM and database."""

from __future__ import annotations

import json
from typing import Any

import flask_login
from flask import Flask

from flask_sessionstore.datastore import session_key

from .backends import Backend
from .helpers import cookie as _cookie
from .helpers import login as _login
from .helpers import seed as _seed


def test_seed_flow_roles_required(app: Flask, ds: Any) -> None:
    _seed(ds)
    ann, bob = app.test_client(), app.test_client()
    assert ann.get("/admin").status_code == 401
    _login(ann)
    _login(bob, "bob@example.com")
    assert ann.get("/admin").status_code == 200
    assert ann.get("/admin").data == b"ann@example.com"
    assert bob.get("/admin").status_code == 403
    assert bob.get("/me").data == b"bob@example.com"
    assert ann.get("/staff").status_code == 200
    assert bob.get("/staff").status_code == 403


def test_permission_decorator(app: Flask, ds: Any) -> None:
    _seed(ds)
    ds.add_role_to_user(ds.find_user(email="bob@example.com"), "analyst")
    ann, bob = app.test_client(), app.test_client()
    _login(ann)
    _login(bob, "bob@example.com")
    assert bob.get("/reports").status_code == 200
    assert ann.get("/reports").status_code == 403


def test_denials_answer_json_when_asked(app: Flask, ds: Any) -> None:
    _seed(ds)
    client = app.test_client()
    response = client.get("/admin", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    _login(client, "bob@example.com")
    response = client.get("/admin", headers={"Accept": "application/json"})
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert client.get("/admin").mimetype == "text/html"


def test_plain_flask_login_calls_work(app: Flask, ds: Any, backend: Backend) -> None:
    _seed(ds)

    @app.post("/plain-login")
    def plain_login() -> str:
        flask_login.login_user(ds.find_user(email="ann@example.com"))
        return "ok"

    @app.post("/plain-logout")
    def plain_logout() -> str:
        flask_login.logout_user()
        return "bye"

    client = app.test_client()
    client.post("/cart")
    anonymous_id = _cookie(client)
    client.post("/plain-login")
    assert _cookie(client) != anonymous_id
    assert client.get("/admin").status_code == 200
    assert len(backend.session_rows()) == 1
    client.post("/plain-logout")
    assert backend.session_rows() == []
    assert client.get("/admin").status_code == 401


# -- what a request costs ------------------------------------------------------------


def test_authenticated_role_check_costs_one_statement_and_no_commit(
    app: Flask, ds: Any, backend: Backend
) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    client.get("/admin")  # warm: the first request of a process may set things up
    with backend.count() as counter:
        response = client.get("/admin")
    assert response.status_code == 200
    assert counter.count == backend.budget("role_check"), counter.statements
    assert counter.writes == []
    assert counter.commits == 0
    assert "Set-Cookie" not in response.headers


def test_untouched_session_costs_nothing(app: Flask, ds: Any, backend: Backend) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    with backend.count() as counter:
        response = client.get("/public")
    assert response.status_code == 200
    assert counter.count == 0, counter.statements
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.headers.get("Vary", "")


def test_session_write_costs_at_most_two_statements_and_one_commit(
    app: Flask, ds: Any, backend: Backend
) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    with backend.count() as counter:
        response = client.post("/cart")
    assert response.get_json() == {"cart": 1}
    assert counter.count <= backend.budget("session_write"), counter.statements
    assert len(counter.writes) == 1
    assert counter.commits <= 1
    assert client.get("/cart").get_json() == {"cart": 1}


# -- what is stored ------------------------------------------------------------------


def test_table_holds_only_the_hash_and_json(app: Flask, ds: Any, backend: Backend) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    client.post("/cart")
    session_id = _cookie(client)
    assert session_id is not None and len(session_id) >= 43
    rows = backend.session_rows()
    assert len(rows) == 1
    row = rows[0]
    assert row["key"] == session_key(session_id)
    assert all(session_id not in str(value) for value in row.values())
    data = json.loads(row["data"])
    assert data["cart"] == 1
    assert not str(row["data"]).startswith(("\x80", "b'\\x80"))  # no pickle
    assert row["user_id"] is not None


def test_empty_anonymous_session_is_not_stored(app: Flask, ds: Any, backend: Backend) -> None:
    client = app.test_client()
    response = client.get("/cart")
    assert response.get_json() == {"cart": 0}
    assert "Set-Cookie" not in response.headers
    assert response.headers.get("Vary") == "Cookie"
    assert backend.session_rows() == []


def test_anonymous_session_with_data_is_stored(app: Flask, ds: Any, backend: Backend) -> None:
    client = app.test_client()
    client.post("/cart")
    client.post("/cart")
    assert client.get("/cart").get_json() == {"cart": 2}
    rows = backend.session_rows()
    assert len(rows) == 1 and rows[0]["user_id"] is None


def test_unknown_id_is_not_adopted(app: Flask, ds: Any, backend: Backend) -> None:
    client = app.test_client()
    forged = "A" * 43
    client.set_cookie("session", forged)
    response = client.post("/cart")
    assert response.get_json() == {"cart": 1}
    assert _cookie(client) not in (None, forged)
    keys = [row["key"] for row in backend.session_rows()]
    assert keys == [session_key(_cookie(client))]
    assert session_key(forged) not in keys


def test_login_rotates_the_id_and_the_old_one_dies(app: Flask, ds: Any, backend: Backend) -> None:
    _seed(ds)
    client = app.test_client()
    client.post("/cart")
    before = _cookie(client)
    _login(client)
    after = _cookie(client)
    assert after not in (None, before)
    assert client.get("/cart").get_json() == {"cart": 1}  # data survives the rotation
    replay = app.test_client()
    replay.set_cookie("session", before)
    assert replay.get("/cart").get_json() == {"cart": 0}
    assert replay.get("/me").status_code == 401


def test_remember_me_is_a_permanent_server_side_session(
    app: Flask, ds: Any, backend: Backend
) -> None:
    _seed(ds)
    client = app.test_client()
    plain = _login(client)
    assert "Expires=" not in plain.headers["Set-Cookie"]
    remembered = _login(app.test_client(), remember="1")
    cookie = remembered.headers["Set-Cookie"]
    assert "Expires=" in cookie
    assert "remember_token" not in " ".join(remembered.headers.getlist("Set-Cookie"))
    assert len(backend.session_rows()) == 2


# -- expiry --------------------------------------------------------------------------


def test_idle_timeout_is_checked_on_read(app: Flask, ds: Any, backend: Backend, clock: Any) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    clock.advance(59 * 60)
    assert client.get("/me").status_code == 200  # renews: last use is now
    clock.advance(59 * 60)
    assert client.get("/me").status_code == 200
    clock.advance(60 * 60 + 1)
    assert client.get("/me").status_code == 401
    assert len(backend.session_rows()) == 1  # dead rows wait for the purge


def test_delete_expired_purges_only_dead_rows(
    app: Flask, ds: Any, backend: Backend, clock: Any
) -> None:
    _seed(ds)
    old, fresh = app.test_client(), app.test_client()
    _login(old)
    clock.advance(2 * 60 * 60)
    _login(fresh, "bob@example.com")
    assert len(backend.session_rows()) == 2
    assert ds.delete_expired(batch_size=1) == 1
    assert len(backend.session_rows()) == 1
    assert fresh.get("/me").status_code == 200


def test_list_and_revoke_sessions(app: Flask, ds: Any, backend: Backend) -> None:
    _seed(ds)
    first, second = app.test_client(), app.test_client()
    _login(first)
    _login(second)
    ann = ds.find_user(email="ann@example.com")
    listed = ds.list_sessions(ann)
    assert len(listed) == 2
    assert {record.key for record in listed} == {
        session_key(_cookie(first)),
        session_key(_cookie(second)),
    }
    assert all(record.user_agent is not None for record in listed)
    assert ds.revoke_session(session_key(_cookie(first))) is True
    assert ds.revoke_session(session_key(_cookie(first))) is False
    assert first.get("/me").status_code == 401
    assert second.get("/me").status_code == 200
    assert ds.revoke_user_sessions(ann) == 1
    assert second.get("/me").status_code == 401
