"""User models beyond the seed's: a username, a session token column, a UUID key.

Run on SQLAlchemy over every configured database (the seed's models, used by the
contract suite, have none of these).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_sessionstore import RoleMixin, SessionStore, SQLAlchemyUserDatastore, UserMixin

from .app import make_app
from .backends import REQUIRE_SERVERS_ENV, SERVER_ENV, fast_hasher, own_database, server_url
from .backends.sqlalchemy import sqlalchemy_url


def _models(db: Any) -> tuple[Any, Any]:
    links = db.Table(
        "member_roles",
        db.Column("member_id", db.Uuid(), db.ForeignKey("member.id")),
        db.Column("role_id", db.Integer(), db.ForeignKey("team_role.id")),
    )

    class TeamRole(db.Model, RoleMixin):
        __tablename__ = "team_role"
        id = db.Column(db.Integer(), primary_key=True)
        name = db.Column(db.String(80), unique=True)

    class Member(db.Model, UserMixin):
        id = db.Column(db.Uuid(), primary_key=True, default=uuid.uuid4)
        email = db.Column(db.String(255), unique=True)
        username = db.Column(db.String(80), unique=True)
        password = db.Column(db.String(255))
        active = db.Column(db.Boolean())
        fs_uniquifier = db.Column(db.String(64), unique=True, nullable=False)
        roles = db.relationship("TeamRole", secondary=links)

    return Member, TeamRole


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def member_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Flask, Any]]:
    database = request.param
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'members.sqlite3'}"
    else:
        found = server_url(database)
        if found is None:
            message = f"{database} not configured: set {SERVER_ENV[database]}"
            if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
                pytest.fail(message)
            pytest.skip(message)
        url = sqlalchemy_url(own_database(found, "sessionstore_members"))
    app = make_app()
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    db = SQLAlchemy(app)
    member, role = _models(db)
    datastore = SQLAlchemyUserDatastore(db, member, role, password_hasher=fast_hasher())
    SessionStore(app, datastore=datastore)
    with app.app_context():
        db.drop_all()
        db.create_all()
    with app.app_context():
        yield app, datastore
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def test_get_user_by_uuid_email_and_username(member_app: tuple[Flask, Any]) -> None:
    _, ds = member_app
    ann = ds.create_user(email="ann@example.com", username="Ann", password="pw")
    assert isinstance(ann.id, uuid.UUID)
    assert ds.get_user(ann.id) == ann
    assert ds.get_user(str(ann.id)) == ann
    assert ds.get_user("ANN@example.com") == ann
    assert ds.get_user("ann") == ann
    assert ds.authenticate("Ann", "pw") == ann
    for garbage in ("not-a-uuid", "12345", str(uuid.uuid4()), "", "\x00"):
        assert ds.get_user(garbage) is None


def test_a_token_column_is_the_login_id_and_is_rotated(member_app: tuple[Flask, Any]) -> None:
    app, ds = member_app
    ann = ds.create_user(email="ann@example.com", username="ann", password="pw")
    token = ann.fs_uniquifier
    assert token and len(token) >= 32
    assert ann.get_id() == token != str(ann.id)
    client = app.test_client()
    assert client.post("/login", data={"email": "ann", "password": "pw"}).status_code == 200
    assert client.get("/me").data == b"ann@example.com"
    assert ds.revoke_user_sessions(ann) == 1
    assert ds.find_user(email="ann@example.com").fs_uniquifier != token
    assert client.get("/me").status_code == 401
    # The session row's user column has the UUID type of the key it points to.
    assert client.post("/login", data={"email": "ann", "password": "pw"}).status_code == 200
    [record] = ds.list_sessions(ann)
    assert record.user_pk == ann.id


def test_keeping_the_current_session_survives_the_token_change(
    member_app: tuple[Flask, Any],
) -> None:
    app, ds = member_app
    ds.create_user(email="ann@example.com", username="ann", password="pw")

    @app.post("/end-others")
    def end_others() -> str:
        from flask_login import current_user

        ds.revoke_user_sessions(current_user._get_current_object(), keep_current=True)
        return "ok"

    here, there = app.test_client(), app.test_client()
    for client in (here, there):
        assert client.post("/login", data={"email": "ann", "password": "pw"}).status_code == 200
    assert here.post("/end-others").status_code == 200
    assert here.get("/me").data == b"ann@example.com"
    assert there.get("/me").status_code == 401
    assert here.post("/password", data={"new_password": "new"}).status_code == 200
    assert here.get("/me").data == b"ann@example.com"


def test_deleting_a_role_removes_its_links_without_a_backref(
    member_app: tuple[Flask, Any],
) -> None:
    _, ds = member_app
    ds.create_role(name="admin")
    ds.create_user(email="ann@example.com", username="ann", password="pw", roles=["admin"])
    ds.delete(ds.find_role("admin"))
    ds.commit()
    ann = ds.find_user(email="ann@example.com")
    assert list(ann.roles) == []
    links = ds.db.metadata.tables["member_roles"]
    assert ds.db.session.execute(sa.select(sa.func.count()).select_from(links)).scalar() == 0
    ds.create_role(name="admin")  # may reuse the id on SQLite: must not regrant it
    assert not ds.find_user(email="ann@example.com").has_role("admin")
