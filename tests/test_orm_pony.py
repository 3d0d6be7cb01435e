"""What only Pony has: the seed's example as written, inside and outside a db_session;
the session entity declared before the mapping; db_sessions that never outlive a
request; what a request costs outside the suite's db_session; the user that comes with
the session, usable in the view; and how session writes meet Pony's unit of work."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, session
from flask_login import current_user
from pony import orm
from pony.orm import core as pony_core

from flask_sessionstore import (
    ConstraintError,
    PonyUserDatastore,
    RoleMixin,
    SessionStore,
    UserMixin,
)
from flask_sessionstore.datastore import session_key
from flask_sessionstore.orm.pony import session_entity_for

from .app import make_app
from .backends import fast_hasher, own_database
from .backends.pony import PonyBackend, bind_arguments
from .conftest import make_backend

_DATABASES = [
    pytest.param("sqlite", id="pony-sqlite"),
    pytest.param("postgresql", id="pony-postgresql", marks=pytest.mark.server),
    pytest.param("mariadb", id="pony-mariadb", marks=pytest.mark.server),
]


@pytest.fixture(params=_DATABASES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PonyBackend]:
    """The Pony backend only (overrides the suite's fixture in this module)."""
    found = make_backend("pony", request.param, tmp_path)
    assert isinstance(found, PonyBackend)
    with found.running(make_app()):
        yield found


def _login(client: Any, email: str = "ann@example.com") -> Any:
    response = client.post("/login", data={"email": email, "password": "pw"})
    assert response.status_code == 200, response.data
    return response


def _seed(ds: Any) -> None:
    ds.create_role(name="admin")
    ds.create_user(email="ann@example.com", password="pw", roles=["admin"])
    ds.create_user(email="bob@example.com", password="pw")


def _no_db_session() -> bool:
    """True when this thread has no db_session and holds no Pony cache (connection)."""
    local = pony_core.local
    return local.db_session is None and local.db_context_counter == 0 and not local.db2cache


# -- the seed's example --------------------------------------------------------------


@pytest.mark.parametrize("outer", [False, True], ids=["outside", "inside-db_session"])
@pytest.mark.parametrize("database", _DATABASES)
def test_seed_example_runs_as_written(database: str, outer: bool, tmp_path: Path) -> None:
    # The suite's URL for the database (skipped, or failed in CI, when not configured);
    # the backend also empties the database of the tables the seed is about to make.
    probe = make_backend("pony", database, tmp_path)
    probe.setup(make_app())
    url = probe.server_url if database != "sqlite" else f"sqlite:///{tmp_path / 'seed.db'}"
    probe.teardown()

    # The seed's models and usage, as its documentation shows them.
    from pony.orm import Database, Optional, Required, Set

    db = Database()

    class Role(db.Entity, RoleMixin):
        name = Required(str, unique=True)
        description = Optional(str, nullable=True)
        users = Set(lambda: User)

    class User(db.Entity, UserMixin):
        email = Required(str)
        password = Optional(str, nullable=True)
        active = Optional(bool)
        confirmed_at = Optional(datetime)
        roles = Set(lambda: Role)

    user_datastore = PonyUserDatastore(db, User, Role)
    db.bind(**bind_arguments(url, database, counting=False))
    db.generate_mapping(create_tables=True)
    # The one line the seed adds for this library.
    app = make_app()
    SessionStore(app, datastore=user_datastore)
    try:
        # Outside any db_session, each call makes its own.
        user_datastore.create_role(name="admin", description="Administrators")
        user_datastore.create_user(email="ann@example.com", password="pw", roles=["admin"])
        user_datastore.create_user(email="bob@example.com", password="pw")
        assert _no_db_session()

        def flow() -> None:
            ann, bob = app.test_client(), app.test_client()
            _login(ann)
            _login(bob, "bob@example.com")
            assert ann.get("/admin").data == b"ann@example.com"
            assert bob.get("/admin").status_code == 403
            assert ann.post("/cart").get_json() == {"cart": 1}
            assert ann.get("/cart").get_json() == {"cart": 1}
            ann.post("/logout")
            assert ann.get("/admin").status_code == 401

        if outer:
            with orm.db_session:
                flow()
                # The requests joined this db_session and left it as they found it.
                assert pony_core.local.db_context_counter == 1
                assert Role.get(name="admin").description == "Administrators"
        else:
            flow()
        assert _no_db_session()
        with orm.db_session:
            ann = User.get(email="ann@example.com")
            assert ann.password.startswith("$argon2") and ann.has_role("admin")
            assert orm.count(s for s in user_datastore.session_entity) == 1  # bob's
    finally:
        db.drop_all_tables(with_all_data=True)
        db.disconnect()


# -- other user models ---------------------------------------------------------------


@pytest.mark.parametrize("database", _DATABASES)
def test_uuid_keys_a_username_and_a_token_column(database: str, tmp_path: Path) -> None:
    from pony.orm import Optional, PrimaryKey, Required, Set

    url = make_backend("pony", database, tmp_path).url
    if database != "sqlite":
        url = own_database(url, "sessionstore_pony")
    db = orm.Database()

    class TeamRole(db.Entity, RoleMixin):
        name = Required(str, unique=True)
        members = Set(lambda: Member)

    class Member(db.Entity, UserMixin):
        id = PrimaryKey(uuid.UUID, auto=True)
        email = Required(str, unique=True)
        username = Required(str, unique=True)
        password = Optional(str, nullable=True)
        active = Optional(bool)
        fs_uniquifier = Required(str, 64, unique=True)
        roles = Set(TeamRole)

    ds = PonyUserDatastore(db, Member, TeamRole, password_hasher=fast_hasher())
    db.bind(**bind_arguments(url, database, counting=False))
    db.generate_mapping(create_tables=False, check_tables=False)
    db.drop_all_tables(with_all_data=True)  # what an earlier test may have left
    db.create_tables()
    app = make_app()

    @app.post("/end-others")
    def end_others() -> str:
        ds.revoke_user_sessions(current_user._get_current_object(), keep_current=True)
        return "ok"

    SessionStore(app, datastore=ds)
    try:
        ds.create_role(name="admin")
        ann = ds.create_user(email="ann@example.com", username="ann", password="pw",
                             roles=["admin"])
        assert isinstance(ann.id, uuid.UUID) and len(ann.fs_uniquifier) == 43
        for identifier in (ann.id, str(ann.id), "ANN", "Ann@Example.com"):
            found = ds.get_user(identifier)
            assert found is not None and found.id == ann.id, identifier
        for garbage in ("not-a-uuid", uuid.uuid4(), "", 7):
            assert ds.get_user(garbage) is None, garbage

        here, there = app.test_client(), app.test_client()
        for client in (here, there):
            assert client.post("/login", data={"email": "ann", "password": "pw"}).status_code \
                == 200
        assert here.get("/admin").data == b"ann@example.com"
        records = ds.list_sessions(ann)
        assert [record.user_pk for record in records] == [ann.id, ann.id]
        assert here.post("/end-others").status_code == 200
        assert here.get("/me").data == b"ann@example.com"
        assert there.get("/me").status_code == 401
        assert ds.find_user(email="ann@example.com").fs_uniquifier != ann.fs_uniquifier
        assert ds.revoke_user_sessions(ds.find_user(username="ann")) == 1
        assert here.get("/me").status_code == 401
    finally:
        db.drop_all_tables(with_all_data=True)
        db.disconnect()


# -- declaring the session entity ----------------------------------------------------


def _entities(db: Any) -> tuple[Any, Any]:
    from pony.orm import Optional, Required, Set

    class Role(db.Entity, RoleMixin):
        name = Required(str, unique=True)
        users = Set(lambda: User)

    class User(db.Entity, UserMixin):
        email = Required(str)
        password = Optional(str, nullable=True)
        roles = Set(lambda: Role)

    return User, Role


def test_too_late_says_what_to_do(tmp_path: Path) -> None:
    db = orm.Database()
    user_model, role_model = _entities(db)
    db.bind(provider="sqlite", filename=str(tmp_path / "late.db"), create_db=True)
    db.generate_mapping(create_tables=True)
    with pytest.raises(RuntimeError) as raised:
        PonyUserDatastore(db, user_model, role_model)
    message = str(raised.value)
    assert "before db.generate_mapping()" in message
    assert "session_entity_for(db, User)" in message and "session_entity=" in message
    db.disconnect()


def test_own_entity_declared_early_is_accepted_after_the_mapping(tmp_path: Path) -> None:
    db = orm.Database()
    user_model, role_model = _entities(db)
    entity = session_entity_for(db, user_model)
    assert session_entity_for(db, user_model) is entity  # declared once per db
    db.bind(provider="sqlite", filename=str(tmp_path / "early.db"), create_db=True)
    db.generate_mapping(create_tables=True)
    datastore = PonyUserDatastore(db, user_model, role_model, session_entity=entity)
    app = make_app()
    SessionStore(app, datastore=datastore)
    datastore.create_user(email="ann@example.com", password="pw")
    _login(app.test_client())
    with orm.db_session:
        assert orm.count(s for s in entity) == 1
    db.disconnect()


def test_the_constructor_creates_no_table_and_the_model_source_is_unchanged(
    tmp_path: Path,
) -> None:
    db = orm.Database()
    user_model, role_model = _entities(db)
    declared = set(vars(user_model))
    PonyUserDatastore(db, user_model, role_model)
    # Pony requires the reverse side of the session's user: it is added to the class,
    # not to its source, and is the only change.
    assert set(vars(user_model)) - declared == {"sessionstore_sessions"}
    db.bind(provider="sqlite", filename=str(tmp_path / "tables.db"), create_db=True)
    db.generate_mapping(create_tables=False, check_tables=False)
    with orm.db_session:
        assert db.select("name FROM sqlite_master WHERE type = 'table'") == []
    db.disconnect()


# -- db_sessions and requests --------------------------------------------------------


def test_no_db_session_survives_a_request(backend: PonyBackend, app: Flask) -> None:
    ds = backend.datastore
    _seed(ds)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    assert _no_db_session()
    for method, path, status in [("POST", "/login", 200), ("GET", "/admin", 200),
                                 ("POST", "/cart", 200), ("GET", "/boom", 500),
                                 ("GET", "/public", 200), ("POST", "/logout", 200)]:
        data = {"email": "ann@example.com", "password": "pw"} if path == "/login" else None
        assert client.open(path, method=method, data=data).status_code == status, path
        assert _no_db_session(), path


def test_a_failed_request_commits_nothing_of_its_view_even_when_its_session_is_saved(
    backend: PonyBackend, app: Flask
) -> None:
    ds = backend.datastore

    @app.post("/half-done")
    def half_done() -> str:
        backend.Role(name="half-done")
        session["cart"] = 5
        backend.db.flush()
        raise RuntimeError("after the write")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    assert client.post("/half-done").status_code == 500
    assert ds.find_role("half-done") is None
    # The error response still stored its session, in a transaction of its own.
    assert client.get("/cart").get_json() == {"cart": 5}


def test_the_user_of_the_session_is_usable_in_the_view(backend: PonyBackend, app: Flask) -> None:
    ds = backend.datastore
    _seed(ds)
    ds.create_role(name="editor")

    @app.post("/confirm")
    def confirm() -> Any:
        user = current_user._get_current_object()
        with backend.count() as counter:
            held = sorted(role.name for role in user.roles)
        # A Pony object of this request's db_session: it can change, and gain roles.
        user.confirmed_at = datetime(2030, 1, 1)
        user.roles.add(backend.Role.get(name="editor"))
        return jsonify(held=held, reads=counter.count)

    client = app.test_client()
    _login(client)
    assert client.post("/confirm").get_json() == {"held": ["admin"], "reads": 0}
    with orm.db_session:
        ann = backend.User.get(email="ann@example.com")
        assert ann.confirmed_at == datetime(2030, 1, 1)
        assert sorted(role.name for role in ann.roles) == ["admin", "editor"]
    assert client.get("/staff").status_code == 200


def test_the_datastore_works_outside_any_db_session(backend: PonyBackend) -> None:
    ds = backend.datastore
    _seed(ds)
    ann = ds.find_user(email="ann@example.com")
    assert _no_db_session()
    # Objects from earlier calls are loaded again into the call's own db_session.
    assert ds.add_role_to_user(ann, ds.create_role(name="editor")) is True
    assert sorted(role.name for role in ds.models.roles_of(ann)) == ["admin", "editor"]
    assert ds.remove_role_from_user(ann, "admin") is True
    assert ds.authenticate("ann@example.com", "pw") is not None
    ds.delete_user(ds.find_user(email="bob@example.com"))
    assert ds.find_user(email="bob@example.com") is None
    assert ds.deactivate_user(ann) is True
    assert ds.find_user(email="ann@example.com").active is False
    assert _no_db_session()
    # What a call returns is a snapshot: Pony allows no change to it after its
    # db_session, and the datastore's changes above went to a copy read again.
    assert ann.active is True
    with pytest.raises(orm.DatabaseSessionIsOver):
        ann.active = False


# -- what a request costs, outside the suite's db_session ----------------------------


def test_what_a_request_costs_in_a_db_session_of_its_own(
    backend: PonyBackend, app: Flask
) -> None:
    # The suite holds a db_session around each test, so its requests join it. Here each
    # request opens and ends its own, as on a server; what Pony adds is pinned per
    # database: PostgreSQL's pool resets a released connection with DISCARD ALL, and
    # on MariaDB Pony reads inside a transaction, which ends with a COMMIT.
    _seed(backend.datastore)
    client = app.test_client()
    _login(client)
    client.get("/admin")
    with backend.count() as role_check:
        assert client.get("/admin").status_code == 200
    with backend.count() as write:
        assert client.post("/cart").get_json() == {"cart": 1}
    assert _no_db_session()

    assert role_check.count == 1 and role_check.writes == []
    assert write.count == 2 and len(write.writes) == 1
    reset = ["DISCARD ALL"] if backend.database == "postgresql" else []
    assert role_check.control == reset and write.control == reset
    read_commit = 1 if backend.database == "mariadb" else 0
    assert role_check.commits == read_commit
    assert write.commits == read_commit  # the UPDATE autocommits on SQLite and PostgreSQL


def test_one_select_brings_the_row_the_user_and_its_roles(backend: PonyBackend,
                                                           app: Flask) -> None:
    _seed(backend.datastore)
    client = app.test_client()
    _login(client)
    with backend.count() as counter:
        assert client.get("/admin").status_code == 200
    [statement] = counter.statements
    assert "sessionstore_session" in statement
    assert statement.count("LEFT JOIN") == 3  # the user, the link table, the role

    # What that saves: the same user and roles read the usual Pony way, in a fresh
    # db_session, cost three statements (the user, the link table, the roles).
    with orm.db_session, backend.count() as usual:
        ann = backend.User.get(email="ann@example.com")
        assert [role.name for role in ann.roles] == ["admin"]
    assert usual.count == 3


# -- session writes and Pony's unit of work ------------------------------------------


def test_a_session_write_is_durable_when_it_returns(backend: PonyBackend, ds: Any) -> None:
    _seed(ds)
    token = ds.create_session(user_id="ann@example.com", password="pw")
    key = session_key(token)
    # Seen at once by a connection of its own, while this db_session goes on.
    assert [row["key"] for row in backend.session_rows()] == [key]
    assert ds.revoke_session(key) is True
    assert backend.session_rows() == []


def test_a_session_write_commits_what_the_db_session_had_pending(
    backend: PonyBackend, ds: Any
) -> None:
    # Pony gives a thread one connection per database: a session row cannot be
    # committed apart from the db_session's pending changes, so they go with it.
    backend.Role(name="pending")
    ds.sessions.delete_all()
    orm.rollback()
    assert ds.find_role("pending") is not None


def test_inside_a_transaction_block_session_writes_are_part_of_it(
    backend: PonyBackend, ds: Any
) -> None:
    _seed(ds)
    ds.create_session(user_id="ann@example.com", password="pw")
    with pytest.raises(RuntimeError), ds.transaction():
        ds.create_role(name="editor")
        assert ds.sessions.delete_all() == 1
        raise RuntimeError("undo all of it")
    assert ds.find_role("editor") is None
    assert len(backend.session_rows()) == 1


def test_a_duplicate_key_is_a_constraint_error_after_rollback(
    backend: PonyBackend, ds: Any
) -> None:
    _seed(ds)
    orm.rollback()  # a fresh cache, which knows of no role
    # So only the database can refuse the duplicate name.
    duplicate = backend.Role(name="admin")
    with pytest.raises(ConstraintError):
        ds.put(duplicate)
    # Rolled back: the db_session goes on, without the duplicate.
    assert [role.name for role in backend.Role.select()] == ["admin"]


def test_deleting_a_user_any_way_deletes_its_sessions(backend: PonyBackend, app: Flask,
                                                      ds: Any) -> None:
    _seed(ds)
    ann_client, bob_client = app.test_client(), app.test_client()
    _login(ann_client)
    _login(bob_client, "bob@example.com")
    # Through Pony, not the datastore: the reverse Set cascades.
    backend.User.get(email="ann@example.com").delete()
    orm.commit()
    assert ann_client.get("/me").status_code == 401
    orm.commit()  # SQLite: let the other connection below write
    # With SQL: the foreign key cascades.
    connection = backend.raw_connection()
    try:
        cursor = connection.cursor()
        table = "`user`" if backend.database == "mariadb" else '"user"'
        if backend.database == "sqlite":
            cursor.execute("PRAGMA foreign_keys = ON")
            table = '"User"'
        cursor.execute(f"DELETE FROM {table} WHERE email = 'bob@example.com'")
        connection.commit()
    finally:
        connection.close()
    assert backend.session_rows() == []


@pytest.mark.parametrize(
    ("value", "parsed"),
    [(2**31 - 1, 2**31 - 1), (2**31, None), (-(2**31), -(2**31)), (" 7 ", 7), ("-7", -7),
     ("\u00b2", None), ("\u0667", None), ("7.0", None), (7.0, None), (None, None)],
)
def test_parse_pk_keeps_to_the_columns_range(backend: PonyBackend, value: Any,
                                             parsed: Any) -> None:
    # Pony's int is a 32-bit column unless declared otherwise.
    assert backend.datastore.parse_key(value) == parsed


def test_a_request_in_another_thread_has_a_db_session_of_its_own(
    backend: PonyBackend, app: Flask, ds: Any
) -> None:
    states: list[bool] = []

    @app.get("/probe")
    def probe() -> str:
        states.append(pony_core.local.db_context_counter == 1)
        return str(current_user.email)

    _seed(ds)
    client = app.test_client()
    _login(client)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(client.get("/probe")))
    thread.start()
    thread.join(10)
    assert results[0].data == b"ann@example.com"
    assert states == [True]
    assert pony_core.local.db_context_counter == 1  # the test's own, untouched
