"""A unit of work cut by the database going away: all of it is stored, or none of it.

``create_user`` with roles writes a user row and one link row per role. The private
server is stopped at one of three moments of that work (before the user row is sent,
before the role links are, before the commit); afterwards the tables, read on a fresh
connection, must hold either the whole user with every role or nothing of it. Then the
same app, not restarted, creates the user for real.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_sessionstore import DatastoreUnavailableError

from .app import create_app, database_url
from .servers import PrivateServer

pytestmark = [pytest.mark.load, pytest.mark.server]

EMAIL = "half@load.example"
ROLES = ("admin", "editor")
_USER_INSERT = re.compile(r'\s*INSERT INTO [`"]?user[`"]?\s', re.IGNORECASE)
_LINK_INSERT = re.compile(r'\s*INSERT INTO [`"]?roles_users[`"]?\s', re.IGNORECASE)


@pytest.fixture
def app(private_server: PrivateServer) -> Iterator[Flask]:
    flask_app = create_app(private_server.url)
    models = flask_app.extensions["load"]
    with flask_app.app_context():
        models.db.drop_all()
        models.db.create_all()
        for name in ROLES:
            models.datastore.create_role(name=name)
    yield flask_app
    with flask_app.app_context():
        models.db.session.remove()
        models.db.engine.dispose()


def stored(server: PrivateServer) -> tuple[int, int]:
    """How many users have :data:`EMAIL`, and how many role links exist at all, read on
    a connection of the test's own (the tables were made empty of links)."""
    engine = sa.create_engine(database_url(server.url), poolclass=sa.pool.NullPool)
    quote = '"' if engine.dialect.name == "postgresql" else "`"
    try:
        with engine.connect() as connection:
            users = connection.execute(
                sa.text(f"SELECT count(*) FROM {quote}user{quote} WHERE email = :email"),
                {"email": EMAIL},
            ).scalar_one()
            links = connection.execute(sa.text("SELECT count(*) FROM roles_users")).scalar_one()
    finally:
        engine.dispose()
    return int(users), int(links)


@pytest.mark.parametrize("moment", ["user row", "role links", "commit"])
def test_create_user_cut_by_an_outage_stores_all_or_nothing(
    app: Flask, private_server: PrivateServer, moment: str
) -> None:
    models = app.extensions["load"]
    cut: list[str] = []

    def go_away(*args: Any) -> None:
        if cut:
            return
        statement = args[2] if len(args) > 2 else ""
        due = {
            "user row": bool(_USER_INSERT.match(statement)),
            "role links": bool(_LINK_INSERT.match(statement)),
            "commit": not statement,
        }[moment]
        if due:
            cut.append(statement or "COMMIT")
            private_server.stop()

    with app.app_context():
        engine = models.db.engine
        event = "commit" if moment == "commit" else "before_cursor_execute"
        sa.event.listen(engine, event, go_away)
        try:
            with pytest.raises(DatastoreUnavailableError):
                models.datastore.create_user(email=EMAIL, password="pw", roles=list(ROLES))
        finally:
            sa.event.remove(engine, event, go_away)
            private_server.start()
        assert cut, f"the database was never stopped at the {moment}"
        assert stored(private_server) in ((0, 0), (1, len(ROLES))), (
            f"half a user after an outage at the {moment}: (users, links) = "
            f"{stored(private_server)}"
        )
        # The same app and engine, without a restart: the pool drops the dead
        # connections (pool_pre_ping) and the whole user is stored.
        if stored(private_server) == (0, 0):
            user = models.datastore.create_user(email=EMAIL, password="pw", roles=list(ROLES))
            assert sorted(role.name for role in user.roles) == list(ROLES)
        assert stored(private_server) == (1, len(ROLES))
        models.db.session.remove()
    with app.app_context():
        user = models.datastore.find_user(email=EMAIL)
        assert user is not None
        assert sorted(role.name for role in user.roles) == list(ROLES)
