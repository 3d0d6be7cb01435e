"""The session and account security checklist (shared/design/SECURITY.md), S01-S28.

Each test carries its line's number and runs on every ORM and database. S19 (the cache)
is tested with the cache, in tests/test_cache.py.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from datetime import datetime
from typing import Any

import pytest
from flask import Flask, jsonify, session

from flask_sessionstore import PasswordHasher, signals
from flask_sessionstore.datastore import session_key

from .backends import Backend
from .helpers import cookie as _cookie
from .helpers import login as _login
from .helpers import seed as _seed

# -- identifier ----------------------------------------------------------------------


def test_s01_ids_are_256_random_bits(app: Flask, ds: Any) -> None:
    _seed(ds)
    ids = set()
    for _ in range(20):
        client = app.test_client()
        client.post("/cart")
        ids.add(_cookie(client))
    assert len(ids) == 20
    for session_id in ids:
        assert session_id is not None and len(session_id) == 43
        raw = base64.urlsafe_b64decode(session_id + "=")
        assert len(raw) == 32
        assert b"ann" not in raw and b"2030" not in raw


def test_s02_only_the_hash_is_stored(app: Flask, ds: Any, backend: Backend) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    session_id = _cookie(client)
    assert session_id is not None
    for row in backend.session_rows():
        assert row["key"] == session_key(session_id)
        assert all(session_id not in str(value) for value in row.values())


def test_s03_a_colliding_id_is_drawn_again(
    app: Flask, ds: Any, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(ds)
    first = app.test_client()
    _login(first)
    taken = _cookie(first)
    fresh = "B" * 43
    draws = iter([taken, fresh])
    monkeypatch.setattr("flask_sessionstore.lifecycle.secrets.token_urlsafe", lambda n: next(draws))
    second = app.test_client()
    _login(second, "bob@example.com")
    assert _cookie(second) == fresh
    assert first.get("/me").data == b"ann@example.com"  # never overwritten
    assert second.get("/me").data == b"bob@example.com"
    assert len(backend.session_rows()) == 2


@pytest.mark.parametrize(
    "value",
    [
        "",
        "short",
        "A" * 42,
        "A" * 44,
        "A" * 10_000,
        "\u00e9" * 43,
        "' OR '1'='1' --" + "A" * 28,
        "A" * 42 + "\x00",
        "A" * 42 + "=",
        "../../etc/passwd",
    ],
)
def test_s04_malformed_cookies_are_refused_before_any_query(
    app: Flask, ds: Any, backend: Backend, value: str
) -> None:
    client = app.test_client()
    client.set_cookie("session", value)
    with backend.count() as counter:
        response = client.get("/cart")
    assert response.status_code == 200
    assert response.get_json() == {"cart": 0}
    assert counter.count == 0
    assert backend.session_rows() == []


def test_s05_unknown_expired_or_revoked_ids_are_not_adopted(
    app: Flask, ds: Any, backend: Backend, clock: Any
) -> None:
    _seed(ds)
    unknown = "C" * 43
    client = app.test_client()
    client.set_cookie("session", unknown)
    response = client.get("/cart")
    assert "session=;" in response.headers["Set-Cookie"]  # the stale cookie is cleared
    client.set_cookie("session", unknown)
    client.post("/cart")
    assert _cookie(client) not in (None, unknown)
    assert session_key(unknown) not in {row["key"] for row in backend.session_rows()}

    expired = app.test_client()
    _login(expired)
    old = _cookie(expired)
    clock.advance(13 * 3600)
    expired.post("/cart")
    assert _cookie(expired) not in (None, old)
    assert expired.get("/me").status_code == 401


def test_s06_only_the_cookie_carries_the_id(app: Flask, ds: Any, backend: Backend) -> None:
    _seed(ds)
    owner = app.test_client()
    _login(owner)
    session_id = _cookie(owner)
    other = app.test_client()
    assert other.get(f"/me?session={session_id}").status_code == 401
    assert other.get("/me", headers={"X-Session": str(session_id)}).status_code == 401
    assert other.get("/me", headers={"Authorization": f"Bearer {session_id}"}).status_code == 401
    # And a bearer token is not a cookie.
    token = ds.create_session(user_id="ann@example.com", password="pw")
    planted = app.test_client()
    planted.set_cookie("session", token)
    assert planted.get("/me").status_code == 401
    assert app.test_client().get("/me", headers={"Authorization": f"Bearer {token}"}).data == (
        b"ann@example.com"
    )


# -- rotation ------------------------------------------------------------------------


def test_s07_login_issues_a_new_id_and_the_old_one_dies(app: Flask, ds: Any) -> None:
    _seed(ds)
    client = app.test_client()
    client.post("/cart")
    before = _cookie(client)
    _login(client)
    assert _cookie(client) not in (None, before)
    replay = app.test_client()
    replay.set_cookie("session", str(before))
    assert replay.get("/cart").get_json() == {"cart": 0}


def test_s08_a_privilege_change_issues_a_new_id(app: Flask, ds: Any) -> None:
    _seed(ds)

    @app.post("/promote")
    def promote() -> str:
        from flask_login import current_user

        ds.create_role(name="editor") if ds.find_role("editor") is None else None
        ds.add_role_to_user(current_user._get_current_object(), "editor")
        return "ok"

    client = app.test_client()
    _login(client)
    before = _cookie(client)
    client.post("/promote")
    after = _cookie(client)
    assert after not in (None, before)
    assert client.get("/staff").status_code == 200
    before_password = after
    client.post("/password", data={"new_password": "new"})
    assert _cookie(client) not in (None, before_password)


def test_s09_a_revoked_session_is_not_brought_back(app: Flask, ds: Any, backend: Backend) -> None:
    """Two interleaved requests: A loads the session, B logs out, A saves later."""
    _seed(ds)
    loaded, go = threading.Event(), threading.Event()

    @app.post("/slow-cart")
    def slow_cart() -> Any:
        count = session.get("cart", 0)
        loaded.set()
        assert go.wait(10), "the test never let the slow request go on"
        session["cart"] = count + 1
        return jsonify(cart=session["cart"])

    slow, other = app.test_client(), app.test_client()
    _login(slow)
    other.set_cookie("session", str(_cookie(slow)))
    results: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: results.update(r=slow.post("/slow-cart")))
    thread.start()
    try:
        assert loaded.wait(10)
        assert other.post("/logout").status_code == 200
        assert backend.session_rows() == []
    finally:
        go.set()
        thread.join(10)
    assert not thread.is_alive()
    response = results["r"]
    assert response.status_code == 200
    assert backend.session_rows() == []
    assert "session=;" in response.headers["Set-Cookie"]
    assert slow.get("/me").status_code == 401


# -- timeouts ------------------------------------------------------------------------


def test_s10_idle_timeout(app: Flask, ds: Any, clock: Any) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    clock.advance(3600 - 1)
    assert client.get("/me").status_code == 200
    clock.advance(3600 + 1)
    assert client.get("/me").status_code == 401


def test_s11_absolute_timeout(app: Flask, ds: Any, clock: Any) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    for _ in range(12 * 4 - 1):
        clock.advance(15 * 60)
        assert client.get("/me").status_code == 200
    clock.advance(15 * 60 + 1)
    assert client.get("/me").status_code == 401


def test_s12_anonymous_sessions_have_shorter_limits(app: Flask, ds: Any, clock: Any) -> None:
    _seed(ds)
    anonymous, member = app.test_client(), app.test_client()
    anonymous.post("/cart")
    _login(member)
    member.post("/cart")
    clock.advance(31 * 60)
    assert anonymous.get("/cart").get_json() == {"cart": 0}
    assert member.get("/cart").get_json() == {"cart": 1}
    for _ in range(3):  # kept alive, an anonymous session still ends after 2 hours
        anonymous.post("/cart")
    for _ in range(4):
        clock.advance(29 * 60)
        anonymous.get("/cart")
    clock.advance(5 * 60)
    assert anonymous.get("/cart").get_json() == {"cart": 0}


def test_s13_renewal_writes_at_most_once_per_interval(
    app: Flask, ds: Any, backend: Backend, clock: Any
) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    writes = 0
    for _ in range(30):
        clock.advance(20)  # ten minutes of requests, one every 20 seconds
        with backend.count() as counter:
            client.get("/admin")
        writes += len(counter.writes)
    assert writes == 2


# -- termination ---------------------------------------------------------------------


def test_s14_logout_deletes_the_row_and_the_cookie(app: Flask, ds: Any, backend: Backend) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    old = _cookie(client)
    response = client.post("/logout")
    assert "session=;" in response.headers["Set-Cookie"]
    assert backend.session_rows() == []
    replay = app.test_client()
    replay.set_cookie("session", str(old))
    assert replay.get("/me").status_code == 401


def test_s15_deactivating_or_deleting_a_user_ends_its_sessions(
    app: Flask, ds: Any, backend: Backend
) -> None:
    _seed(ds)
    ann, bob = app.test_client(), app.test_client()
    _login(ann)
    _login(bob, "bob@example.com")
    ds.deactivate_user(ds.find_user(email="ann@example.com"))
    assert ann.get("/me").status_code == 401
    ds.delete_user(ds.find_user(email="bob@example.com"))
    assert bob.get("/me").status_code == 401
    assert backend.session_rows() == []


def test_s16_password_change_ends_the_others_and_rotates_this_one(
    app: Flask, ds: Any, backend: Backend
) -> None:
    _seed(ds)
    here, there = app.test_client(), app.test_client()
    _login(here)
    _login(there)
    before = _cookie(here)
    here.post("/password", data={"new_password": "new"})
    assert _cookie(here) not in (None, before)
    assert here.get("/me").status_code == 200
    assert there.get("/me").status_code == 401
    assert len(backend.session_rows()) == 1


def test_s17_users_list_and_end_sessions_admins_end_anyones(
    app: Flask, ds: Any, backend: Backend
) -> None:
    _seed(ds)

    @app.get("/devices")
    def devices() -> Any:
        from flask_login import current_user

        records = ds.list_sessions(current_user._get_current_object())
        return jsonify(
            [[r.current, r.user_agent, r.ip_address, str(r.created_at)] for r in records]
        )

    phone, laptop, bob = app.test_client(), app.test_client(), app.test_client()
    phone.post(
        "/login",
        data={"email": "ann@example.com", "password": "pw"},
        headers={"User-Agent": "Phone/1.0"},
    )
    _login(laptop)
    _login(bob, "bob@example.com")
    listed = phone.get("/devices", headers={"User-Agent": "Phone/1.0"}).get_json()
    assert len(listed) == 2
    assert sorted(item[0] for item in listed) == [False, True]
    assert "Phone/1.0" in [item[1] for item in listed]
    assert all(item[2] == "127.0.0.1" for item in listed)

    ann = ds.find_user(email="ann@example.com")
    assert ds.sessions.count(user=ann) == 2
    assert ds.sessions.stats() == {"live": 3, "authenticated": 3, "anonymous": 0, "expired": 0}
    laptop_key = session_key(str(_cookie(laptop)))
    assert ds.sessions.get(laptop_key).user == ann
    assert ds.sessions.delete(laptop_key) == 1
    assert laptop.get("/me").status_code == 401
    assert phone.get("/me").status_code == 200
    page = ds.sessions.get_all(page=1, per_page=1)
    assert len(page) == 1 and len(ds.sessions.get_all(page=3, per_page=1)) == 0
    assert ds.sessions.delete_all() == 2
    assert phone.get("/me").status_code == 401 and bob.get("/me").status_code == 401
    assert backend.session_rows() == []


def test_s18_an_optional_cap_ends_the_oldest_sessions(
    app: Flask, ds: Any, backend: Backend, clock: Any
) -> None:
    _seed(ds)
    app.session_interface.policy = type(app.session_interface.policy)(  # type: ignore[attr-defined]
        **{**app.session_interface.policy.__dict__, "max_per_user": 2}  # type: ignore[attr-defined]
    )
    clients = [app.test_client() for _ in range(3)]
    for client in clients:
        _login(client)
        clock.advance(1)
    assert [c.get("/me").status_code for c in clients] == [401, 200, 200]
    assert len(backend.session_rows()) == 2


# -- cookie --------------------------------------------------------------------------


def test_s20_cookie_flags(app: Flask, ds: Any) -> None:
    _seed(ds)
    cookie = _login(app.test_client()).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    # Secure by default outside debug and testing: tests/test_extension.py.


def test_s21_cookies_last_for_the_browser_session_unless_permanent(app: Flask, ds: Any) -> None:
    _seed(ds)
    assert "Expires=" not in _login(app.test_client()).headers["Set-Cookie"]
    assert "Expires=" not in app.test_client().post("/cart").headers["Set-Cookie"]
    assert "Expires=" in _login(app.test_client(), remember="1").headers["Set-Cookie"]


def test_s22_vary_and_no_cookie_unless_changed_or_renewed(app: Flask, ds: Any, clock: Any) -> None:
    _seed(ds)
    plain, remembered = app.test_client(), app.test_client()
    _login(plain)
    _login(remembered, remember="1")
    response = plain.get("/me")
    assert "Cookie" in response.headers["Vary"]
    assert "Set-Cookie" not in response.headers
    assert "Set-Cookie" not in plain.get("/public").headers
    clock.advance(10 * 60)  # renewal due
    assert "Set-Cookie" not in plain.get("/me").headers  # its cookie has no expiry to move
    renewed = remembered.get("/me")
    assert "Expires=" in renewed.headers["Set-Cookie"]


# -- store and passwords -------------------------------------------------------------


def test_s23_data_is_tagged_json_never_pickle(app: Flask, ds: Any, backend: Backend) -> None:
    @app.post("/rich")
    def rich() -> str:
        session["when"] = datetime(2030, 1, 2, 3, 4, 5)
        session["raw"] = b"\x00\x01"
        session["pair"] = (1, "two")
        return "ok"

    @app.get("/rich")
    def read_rich() -> Any:
        return jsonify(
            when=session["when"].isoformat(), raw=list(session["raw"]), pair=list(session["pair"])
        )

    client = app.test_client()
    client.post("/rich")
    assert client.get("/rich").get_json() == {
        "when": "2030-01-02T03:04:05+00:00",  # tagged JSON keeps datetimes in UTC
        "raw": [0, 1],
        "pair": [1, "two"],
    }
    [row] = backend.session_rows()
    assert isinstance(json.loads(row["data"]), dict)


def test_s24_argon2_default_other_schemes_upgraded_no_truncation(ds: Any) -> None:
    user = ds.create_user(email="ann@example.com", password="x" * 100)
    assert user.password.startswith("$argon2id$")
    for scheme in ("bcrypt_sha256", "pbkdf2_sha256"):
        hasher = PasswordHasher([scheme])
        digest = hasher.hash("y" * 100)
        assert hasher.verify("y" * 100, digest)[0]
        assert not hasher.verify("y" * 99 + "z", digest)[0]  # past bcrypt's 72 bytes
        user.password = digest
        ds.put(user)
        ds.commit()
        assert ds.authenticate("ann@example.com", "y" * 100) is not None
        assert ds.find_user(email="ann@example.com").password.startswith("$argon2id$")


def test_s25_unknown_user_and_wrong_password_take_the_same_path(
    ds: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(ds)
    context = ds.password_hasher._context
    calls: list[str] = []
    real_verify, real_update = context.verify, context.verify_and_update
    monkeypatch.setattr(
        context, "verify", lambda *a, **k: calls.append("v") or real_verify(*a, **k)
    )
    monkeypatch.setattr(
        context, "verify_and_update", lambda *a, **k: calls.append("v") or real_update(*a, **k)
    )
    failures: list[Any] = []
    signals.login_failed.connect(lambda sender, **kw: failures.append(kw), weak=False)
    try:
        for identifier in ("nobody@example.com", "ann@example.com", "12345"):
            calls.clear()
            assert ds.authenticate(identifier, "wrong") is None
            assert calls == ["v"], identifier  # exactly one verification, always
    finally:
        signals.login_failed.receivers.clear()
    assert len(failures) == 3


def test_s26_empty_passwords_and_users_without_one_never_authenticate(ds: Any) -> None:
    ds.create_user(email="ann@example.com", password="pw")
    ds.create_user(email="nopass@example.com")
    assert ds.authenticate("ann@example.com", "") is None
    assert ds.authenticate("nopass@example.com", "") is None
    assert ds.authenticate("nopass@example.com", "anything") is None


def test_s27_events_are_logged_by_hash_and_signalled(
    app: Flask, ds: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _seed(ds)
    seen: list[str] = []
    receivers = {
        signal: (lambda sender, _name=name, **kw: seen.append(_name))
        for name, signal in [
            ("created", signals.session_created),
            ("rotated", signals.session_rotated),
            ("revoked", signals.session_revoked),
            ("invalid", signals.session_invalid),
            ("login", signals.login_succeeded),
            ("failed", signals.login_failed),
        ]
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    caplog.set_level(logging.INFO, logger="flask_sessionstore")
    try:
        client = app.test_client()
        client.post("/cart")
        anonymous_id = _cookie(client)
        _login(client)
        logged_in_id = _cookie(client)
        client.post("/logout")
        client.post("/login", data={"email": "ann@example.com", "password": "wrong"})
        stale = app.test_client()
        stale.set_cookie("session", str(logged_in_id))
        stale.get("/cart")
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)
    assert {"created", "rotated", "revoked", "invalid", "login", "failed"} <= set(seen)
    text = caplog.text
    assert session_key(str(logged_in_id))[:12] in text
    for raw in (anonymous_id, logged_in_id):
        assert raw is not None and raw not in text


def test_s28_bots_preflights_and_logouts_create_no_rows(
    app: Flask, ds: Any, backend: Backend
) -> None:
    client = app.test_client()
    for _ in range(5):
        assert "Set-Cookie" not in client.get("/public").headers
        assert "Set-Cookie" not in client.head("/cart").headers
        assert "Set-Cookie" not in client.options("/cart").headers
        assert "Set-Cookie" not in client.get("/cart").headers
        assert client.post("/logout").status_code == 200
        assert client.get("/me").status_code == 401
    assert backend.session_rows() == []
    assert client.get_cookie("session") is None
