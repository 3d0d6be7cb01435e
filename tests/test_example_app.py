"""The example app, driven through Flask's test client and, once, as a real server.

They test the example site, not an ORM: each test that takes ``app`` runs once per ORM
the example has a module for, on that ORM's default database (SQLite, or mongomock).
"""

from __future__ import annotations

import os
import re
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app, orms
from example_app.orms import ORMS

from .backends import fast_hasher
from .browser.server import ADMIN_EMAIL, ADMIN_PASSWORD, running_example

MEMBER = "member@example.com"
MEMBER_PASSWORD = "member password"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_ROW = re.compile(r'<tr class="(current)?" data-session="[0-9a-f]+">(.*?)</tr>', re.S)
_KEY = re.compile(r'name="key" value="([0-9a-f]{64})"')


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The example reads these; a developer's own must not change what is tested.
    for name in list(os.environ):
        if name.startswith(("EXAMPLE_", "FLASK_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def _make_app(instance: Path, **config: Any) -> Flask:
    settings = {"TESTING": True, "INSTANCE_PATH": instance,
                "EXAMPLE_PASSWORD_HASHER": fast_hasher()}
    return create_app({**settings, **config})


#: The ORMs the example has a backend module for.
EXAMPLE_ORMS = [name for name in ORMS if (Path(orms.__file__).parent / f"{name}.py").is_file()]


@pytest.fixture(params=EXAMPLE_ORMS)
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Flask:
    config: dict[str, Any] = {"EXAMPLE_ORM": request.param}
    if request.param == "mongoengine":
        # mongomock keeps its databases for the life of the process: one per test.
        config["DATABASE_URL"] = f"mongomock://localhost/example_{uuid.uuid4().hex}"
    return _make_app(tmp_path / "instance", EXAMPLE_ADMIN_PASSWORD=ADMIN_PASSWORD, **config)


def token(client: FlaskClient, path: str) -> str:
    """Return the CSRF token of the form on ``path``."""
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    found = _TOKEN.search(response.get_data(as_text=True))
    assert found is not None, f"no CSRF field on {path}"
    return found.group(1)


def post(client: FlaskClient, form_page: str, target: str, /, **data: str) -> Any:
    """Submit the form found on ``form_page`` to ``target``, as a browser would."""
    return client.post(target, data={"csrf_token": token(client, form_page), **data})


def register(client: FlaskClient, email: str = MEMBER, password: str = MEMBER_PASSWORD) -> Any:
    return post(client, "/register", "/register", email=email, password=password,
                confirm=password)


def login(client: FlaskClient, email: str = MEMBER, password: str = MEMBER_PASSWORD,
          **extra: str) -> Any:
    return post(client, "/login", "/login", email=email, password=password, **extra)


def member(app: Flask) -> FlaskClient:
    """A client logged in as a freshly registered member."""
    client = app.test_client()
    register(client)
    assert login(client).status_code == 302
    return client


def admin(app: Flask) -> FlaskClient:
    client = app.test_client()
    assert login(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 302
    return client


def session_rows(client: FlaskClient, path: str = "/account/sessions") -> list[tuple[bool, str]]:
    """Return (is current, key) for each session listed on ``path``."""
    page = client.get(path).get_data(as_text=True)
    rows = []
    for current, body in _ROW.findall(page):
        key = _KEY.search(body)
        assert key is not None
        rows.append((bool(current), key.group(1)))
    return rows


def logged_in(client: FlaskClient) -> bool:
    response = client.get("/account")
    if response.status_code == 302:
        assert "/login" in response.location
        return False
    assert response.status_code == 200
    return True


@contextmanager
def using_datastore(app: Flask) -> Iterator[Any]:
    """The example's datastore, usable directly for the block."""
    backend = app.extensions["example_backend"]
    with app.app_context(), backend.unit():
        yield backend.datastore


def user_id(app: Flask, email: str) -> Any:
    with using_datastore(app) as datastore:
        return datastore.user_pk(datastore.find_user(email=email))


# -- first run ---------------------------------------------------------------------


def test_first_run_creates_database_and_prints_admin_login(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    instance = tmp_path / "instance"
    app = _make_app(instance)
    printed = capsys.readouterr().err
    assert "admin@example.com" in printed
    found = re.search(r"password: (\S+)", printed)
    assert found is not None, printed
    assert (instance / "example-sqlalchemy.sqlite3").is_file()
    assert (instance / "secret_key").stat().st_mode & 0o077 == 0
    assert login(app.test_client(), ADMIN_EMAIL, found.group(1)).status_code == 302

    # A second start keeps the admin, the database and the key, and prints nothing.
    again = _make_app(instance)
    assert capsys.readouterr().err == ""
    assert again.secret_key == app.secret_key
    assert login(again.test_client(), ADMIN_EMAIL, found.group(1)).status_code == 302


def test_reset_admin_password_command(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["reset-admin-password"])
    assert result.exit_code == 0, result.output
    new_password = result.output.rsplit(": ", 1)[1].strip()
    client = app.test_client()
    assert login(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 401
    assert login(client, ADMIN_EMAIL, new_password).status_code == 302


def test_unknown_orm_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="EXAMPLE_ORM must be one of"):
        _make_app(tmp_path, EXAMPLE_ORM="hibernate")


# -- registering and logging in ----------------------------------------------------


def test_home_page_offers_login_to_visitors_without_storing_a_session(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/")
    assert response.status_code == 200
    assert 'href="/login"' in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers


def test_register_then_log_in(app: Flask) -> None:
    client = app.test_client()
    response = register(client)
    assert response.status_code == 302
    assert response.location.startswith("/login")
    assert not logged_in(client)

    response = login(client)
    assert response.status_code == 302
    assert response.location == "/"
    home = client.get("/").get_data(as_text=True)
    assert f"Hello, {MEMBER}" in home
    assert "Log out" in home
    assert logged_in(client)


def test_register_refuses_taken_email_bad_email_and_short_or_unconfirmed_password(
    app: Flask,
) -> None:
    client = app.test_client()
    register(client)
    assert b"already exists" in register(client, MEMBER.upper()).data
    assert register(client, "not-an-email").status_code == 400
    assert b"at least 8" in register(client, "new@example.com", "short").data
    response = post(client, "/register", "/register", email="new@example.com",
                    password="long enough", confirm="different one")
    assert b"differ" in response.data
    assert login(client, "new@example.com", "long enough").status_code == 401


def test_wrong_password_and_deactivated_account_are_refused_alike(app: Flask) -> None:
    client = app.test_client()
    register(client)
    wrong = login(client, password="not the password")
    assert wrong.status_code == 401
    with using_datastore(app) as datastore:
        datastore.deactivate_user(datastore.find_user(email=MEMBER))
    deactivated = login(client)
    assert deactivated.status_code == 401
    assert wrong.data.count(b"Wrong email or password") == 1
    assert deactivated.data.count(b"Wrong email or password") == 1


def test_remember_me_makes_a_lasting_cookie(app: Flask) -> None:
    plain, remembered = app.test_client(), app.test_client()
    register(plain)
    login(plain)
    login(remembered, remember="on")
    plain_cookie = plain.get_cookie("example_session")
    lasting_cookie = remembered.get_cookie("example_session")
    assert plain_cookie is not None and plain_cookie.expires is None
    assert lasting_cookie is not None and lasting_cookie.expires is not None


def test_login_returns_to_the_page_asked_for_but_never_off_site(app: Flask) -> None:
    client = app.test_client()
    register(client)
    response = client.get("/account/sessions")
    assert response.status_code == 302
    assert response.location == "/login?next=/account/sessions"
    assert login(client, next="/account/sessions").location == "/account/sessions"
    client.post("/logout", data={"csrf_token": token(client, "/")})
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        assert login(client, next=target).location == "/"
        client.post("/logout", data={"csrf_token": token(client, "/")})


def test_logout_ends_the_session(app: Flask) -> None:
    client = member(app)
    response = client.post("/logout", data={"csrf_token": token(client, "/")})
    assert response.status_code == 302
    assert not logged_in(client)
    with using_datastore(app) as datastore:
        assert datastore.list_sessions(datastore.find_user(email=MEMBER)) == []


# -- CSRF --------------------------------------------------------------------------


def test_posts_without_the_csrf_token_are_refused(app: Flask) -> None:
    visitor = app.test_client()
    response = visitor.post("/register", data={
        "email": "forged@example.com", "password": "password1", "confirm": "password1",
    })
    assert response.status_code == 400
    assert b"form has expired" in response.data
    with using_datastore(app) as datastore:
        assert datastore.find_user(email="forged@example.com") is None

    assert visitor.post("/login", data={"email": ADMIN_EMAIL,
                                        "password": ADMIN_PASSWORD}).status_code == 400
    assert not logged_in(visitor)

    client = member(app)
    assert client.post("/logout").status_code == 400
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert client.post("/logout", data={"csrf_token": "é" * 43}).status_code == 400
    assert logged_in(client)


def test_s31_the_csrf_token_of_before_the_login_dies_with_the_login(app: Flask) -> None:
    """A planted pre-login cookie knows the pre-login token; after the login it is
    refused, and the form pages carry a new one."""
    register(app.test_client())
    client = app.test_client()
    before = token(client, "/login")
    response = client.post("/login", data={"csrf_token": before, "email": MEMBER,
                                           "password": MEMBER_PASSWORD})
    assert response.status_code == 302 and logged_in(client)
    assert client.post("/logout", data={"csrf_token": before}).status_code == 400
    after = token(client, "/")
    assert after != before
    assert client.post("/logout", data={"csrf_token": after}).status_code == 302


def test_a_token_from_another_session_is_refused(app: Flask) -> None:
    first, second = member(app), app.test_client()
    login(second)
    stolen = token(first, "/")
    assert second.post("/logout", data={"csrf_token": stolen}).status_code == 400
    assert logged_in(second)
    # The header is accepted too, for scripts.
    assert first.post("/logout", headers={"X-CSRF-Token": stolen}).status_code == 302


# -- roles and permissions ---------------------------------------------------------


def test_admin_area_is_forbidden_to_members_and_closed_to_visitors(app: Flask) -> None:
    visitor = app.test_client()
    response = visitor.get("/admin/")
    assert response.status_code == 302
    assert response.location == "/login?next=/admin/"
    response = visitor.get("/admin/", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"

    client = member(app)
    response = client.get("/admin/")
    assert response.status_code == 403
    assert b"do not have the role" in response.data
    assert client.get(f"/admin/users/{user_id(app, MEMBER)}").status_code == 403
    response = post(client, "/", f"/admin/users/{user_id(app, MEMBER)}/roles",
                    role="admin", action="grant")
    assert response.status_code == 403
    assert client.get("/admin/").status_code == 403

    assert admin(app).get("/admin/").status_code == 200


def test_admin_grants_and_takes_the_role_that_opens_reports(app: Flask) -> None:
    client = member(app)
    boss = admin(app)
    page = f"/admin/users/{user_id(app, MEMBER)}"
    assert client.get("/reports").status_code == 403
    assert b"Reports</a>" not in client.get("/").data

    response = post(boss, page, f"{page}/roles", role="analyst", action="grant")
    assert response.status_code == 302
    assert client.get("/reports").status_code == 200
    assert b"Reports</a>" in client.get("/").data

    post(boss, page, f"{page}/roles", role="analyst", action="take")
    assert client.get("/reports").status_code == 403


def test_admin_cannot_lock_themselves_out(app: Flask) -> None:
    boss = admin(app)
    page = f"/admin/users/{user_id(app, ADMIN_EMAIL)}"
    post(boss, page, f"{page}/roles", role="admin", action="take")
    post(boss, page, f"{page}/active", action="deactivate")
    assert boss.get("/admin/").status_code == 200


def test_admin_creates_a_user_with_roles(app: Flask) -> None:
    boss = admin(app)
    response = post(boss, "/admin/users/new", "/admin/users/new", email="new@example.com",
                    password="new password", roles="analyst")
    assert response.status_code == 302
    created = app.test_client()
    assert login(created, "new@example.com", "new password").status_code == 302
    assert created.get("/reports").status_code == 200
    users_page = boss.get("/admin/").get_data(as_text=True)
    assert "new@example.com" in users_page


def test_deactivation_ends_the_users_sessions(app: Flask) -> None:
    client = member(app)
    boss = admin(app)
    page = f"/admin/users/{user_id(app, MEMBER)}"
    post(boss, page, f"{page}/active", action="deactivate")
    assert not logged_in(client)
    assert login(client).status_code == 401
    post(boss, page, f"{page}/active", action="activate")
    assert login(client).status_code == 302


# -- sessions ----------------------------------------------------------------------


def test_sessions_page_marks_the_current_one_and_ends_another(app: Flask) -> None:
    laptop, phone = member(app), app.test_client()
    login(phone)
    rows = session_rows(laptop)
    assert len(rows) == 2
    assert [current for current, _ in rows].count(True) == 1
    assert b"this session" in laptop.get("/account/sessions").data
    other = next(key for current, key in rows if not current)
    assert [key for current, key in session_rows(phone) if current] == [other]

    response = post(laptop, "/account/sessions", "/account/sessions/end", key=other)
    assert response.status_code == 302
    assert not logged_in(phone)
    assert logged_in(laptop)
    assert len(session_rows(laptop)) == 1


def test_ending_the_current_session_logs_out(app: Flask) -> None:
    client = member(app)
    [(_, key)] = session_rows(client)
    post(client, "/account/sessions", "/account/sessions/end", key=key)
    assert not logged_in(client)


def test_end_all_other_sessions(app: Flask) -> None:
    laptop, phone, tablet = member(app), app.test_client(), app.test_client()
    login(phone)
    login(tablet)
    assert len(session_rows(laptop)) == 3
    post(laptop, "/account/sessions", "/account/sessions/end-others")
    assert not logged_in(phone)
    assert not logged_in(tablet)
    assert logged_in(laptop)
    assert len(session_rows(laptop)) == 1


def test_a_member_cannot_end_someone_elses_session(app: Flask) -> None:
    boss, client = admin(app), member(app)
    [(_, admin_key)] = session_rows(boss)
    response = post(client, "/account/sessions", "/account/sessions/end", key=admin_key)
    assert response.status_code == 404
    assert boss.get("/admin/").status_code == 200


def test_admin_sees_and_ends_a_users_sessions(app: Flask) -> None:
    laptop, phone = member(app), app.test_client()
    login(phone)
    boss = admin(app)
    page = f"/admin/users/{user_id(app, MEMBER)}"
    rows = session_rows(boss, page)
    assert len(rows) == 2
    assert not any(current for current, _ in rows)

    post(boss, page, f"{page}/sessions/end", key=rows[0][1])
    assert len(session_rows(boss, page)) == 1
    post(boss, page, f"{page}/sessions/end-all")
    assert session_rows(boss, page) == []
    assert not logged_in(laptop)
    assert not logged_in(phone)
    assert boss.get("/admin/").status_code == 200


def test_changing_the_password_ends_the_other_sessions(app: Flask) -> None:
    laptop, phone = member(app), app.test_client()
    login(phone)
    response = post(laptop, "/account", "/account", current_password="wrong password",
                    new_password="brand new password", confirm="brand new password")
    assert response.status_code == 400
    assert logged_in(phone)

    response = post(laptop, "/account", "/account", current_password=MEMBER_PASSWORD,
                    new_password="brand new password", confirm="brand new password")
    assert response.status_code == 302
    assert b"1 other session(s) were ended" in laptop.get("/account").data
    assert logged_in(laptop)
    assert not logged_in(phone)
    assert login(phone).status_code == 401
    assert login(phone, password="brand new password").status_code == 302


# -- the real server ---------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    with running_example(tmp_path / "instance") as running:
        yield running


def test_real_server_serves_the_home_page_with_a_login_link(server: Any) -> None:
    with urllib.request.urlopen(server.url + "/", timeout=10) as response:  # noqa: S310
        assert response.status == 200
        page = response.read().decode()
    assert 'href="/login"' in page
    assert "Running on " + server.url in server.log()
