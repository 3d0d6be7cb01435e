"""Flask's own session semantics that apps rely on (issue 12's bugs 9 and 10), on every
ORM and database."""

from __future__ import annotations

from typing import Any

from flask import Flask, session

from .helpers import login


def test_session_clear_detaches_the_session_from_its_user(app: Flask, ds: Any) -> None:
    @app.post("/clear")
    def clear() -> str:
        session.clear()
        session["theme"] = "dark"  # what the app keeps after clearing is anonymous
        return "cleared"

    ann = ds.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    login(client)
    assert len(ds.list_sessions(ann)) == 1
    assert client.post("/clear").status_code == 200
    assert ds.list_sessions(ann) == []  # the device is no longer listed as Ann's
    assert client.get("/me").status_code == 401


def test_permanent_false_sends_a_browser_session_cookie(app: Flask, ds: Any) -> None:
    @app.post("/forget-me")
    def forget_me() -> str:
        session.permanent = False
        return "ok"

    ds.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    response = login(client, remember="1")
    assert "Expires=" in response.headers["Set-Cookie"]
    response = client.post("/forget-me")
    cookies = [value for name, value in response.headers.items() if name == "Set-Cookie"]
    main = [value for value in cookies if value.startswith("session=")]
    assert main, cookies  # the cookie is sent again...
    assert "Expires=" not in main[0]  # ...without an expiry: the browser drops it on close
    assert client.get("/me").status_code == 200


def test_a_request_without_a_cookie_that_reads_nothing_varies_on_nothing(
    app: Flask, ds: Any
) -> None:
    """Issue 12, bug 7: Flask-Login's after-request look for its remember key is no read
    of the session, with or without a cookie (S22)."""
    response = app.test_client().get("/public")
    assert response.status_code == 200
    assert "Cookie" not in response.headers.get("Vary", "")
    assert "Set-Cookie" not in response.headers
    read = app.test_client().get("/cart")  # a view that reads the session varies
    assert "Cookie" in read.headers.get("Vary", "")
