"""A database that goes away at one precise moment of a request, on the private servers.

Each test stops the server from inside the request (a view, or a statement hook), so
the moment is exact and the outcome the same on every run; the load run finds the same
moments by chance.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask.typing import ResponseReturnValue
from flask_login import current_user

from .app import create_app
from .clients import Account
from .scenario import make_accounts
from .servers import PrivateServer

pytestmark = [pytest.mark.load, pytest.mark.server]

_END_OTHER_SESSIONS = re.compile(
    r'\s*DELETE FROM [`"]?sessionstore_session[`"]? WHERE .*user_id', re.IGNORECASE | re.S
)


@pytest.fixture
def site(private_server: PrivateServer) -> Iterator[tuple[Flask, Account]]:
    app = create_app(private_server.url)
    account = make_accounts(app, 1)[0]
    yield app, account
    with app.app_context():
        app.extensions["load"].db.engine.dispose()


def _logged_in(app: Flask, account: Account) -> FlaskClient:
    client = app.test_client()
    response = client.post("/login", data={"email": account.email,
                                           "password": account.passwords[0]})
    assert response.status_code == 200
    return client


def _request(client: FlaskClient, method: str, path: str, **kwargs: Any) -> Any:
    try:
        return client.open(path, method=method, **kwargs)
    except Exception as exc:  # any escape is the failure shown
        pytest.fail(f"{method} {path} ended in an unhandled {type(exc).__name__}, which a "
                    f"real server answers with a 500: {exc}")


def test_a_connection_lost_after_the_last_query_is_not_a_500(
    site: tuple[Flask, Account], private_server: PrivateServer
) -> None:
    """The request read its session (so the ORM session holds a connection in a
    transaction), then the database went away before the request ended."""
    app, account = site

    @app.get("/read-then-lose")
    def read_then_lose() -> ResponseReturnValue:
        email = str(current_user.email)
        private_server.stop()
        return email

    client = _logged_in(app, account)
    try:
        response = _request(client, "GET", "/read-then-lose")
    finally:
        private_server.start()
    # The view's work was done: its answer stands (a 503 would do, never a 500).
    assert response.status_code in (200, 503)
    assert _request(client, "GET", "/me").get_json() == {"email": account.email, "n": 0}


def test_a_database_lost_right_after_a_commit_is_a_clear_503(
    site: tuple[Flask, Account], private_server: PrivateServer
) -> None:
    """The password change committed, then the database went away before the work
    that follows the commit (ending the other sessions, rotating this one's id)."""
    app, account = site
    client = _logged_in(app, account)
    db_session = app.extensions["load"].db.session
    cut: list[bool] = []

    def go_away(session: Any) -> None:
        if not cut:
            cut.append(True)
            private_server.stop()

    sa.event.listen(db_session, "after_commit", go_away)
    try:
        response = _request(client, "POST", "/password",
                            data={"new_password": account.passwords[1]},
                            headers={"Accept": "application/json"})
    finally:
        sa.event.remove(db_session, "after_commit", go_away)
        private_server.start()
    assert cut, "the password change never committed"
    assert response.status_code in (200, 503)
    if response.status_code == 503:
        assert response.get_json()["error"] == "unavailable"


def test_a_password_change_cut_after_its_commit_still_ends_the_other_sessions(
    site: tuple[Flask, Account], private_server: PrivateServer
) -> None:
    app, account = site
    changer = _logged_in(app, account)
    other = _logged_in(app, account)
    cut: list[str] = []

    def go_away(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not cut and _END_OTHER_SESSIONS.match(statement):
            cut.append(statement)
            private_server.stop()

    with app.app_context():
        engine = app.extensions["load"].db.engine
    sa.event.listen(engine, "before_cursor_execute", go_away)
    try:
        response = _request(changer, "POST", "/password",
                            data={"new_password": account.passwords[1]})
    finally:
        sa.event.remove(engine, "before_cursor_execute", go_away)
        private_server.start()
    assert cut, "the other sessions were never ended"
    assert response.status_code == 503
    changed = app.test_client().post("/login", data={
        "email": account.email, "password": account.passwords[1]}).status_code == 200
    still_open = _request(other, "GET", "/me").status_code == 200
    # Either nothing happened (the client is told to retry, and may), or the password
    # changed and, with it, every other session ended.
    assert not (changed and still_open), "password changed, other session still open"
