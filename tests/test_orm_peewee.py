"""What is particular to Peewee: the seed run as written on FlaskDB and on a plain
Database, connections per request, units of work in autocommit mode, the session table.

The contract suite runs on FlaskDB (``tests/backends/peewee.py``); this module runs the
contract's datastore and session tests once more on a plain ``Database``, whose
connections the library itself closes: the ``backend`` fixture below replaces the
suite's for every test collected here.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import peewee
import pytest
from flask import Flask
from peewee import fn
from playhouse.db_url import connect
from playhouse.flask_utils import FlaskDB

from flask_sessionstore import (
    ConstraintError,
    DatastoreUnavailableError,
    PeeweeUserDatastore,
    RoleMixin,
    SessionRecord,
    SessionStore,
    SessionStoreError,
    UserMixin,
)
from flask_sessionstore.orm.peewee import session_model_for

from .app import IsolatedClient, make_app
from .backends import fast_hasher, own_database
from .backends.peewee import PeeweeBackend, bound_base, seed_models
from .conftest import make_backend

# The contract's datastore and session tests, once more on a plain Database.
from .test_datastore import *  # noqa: F403
from .test_sessions import *  # noqa: F403

T = TypeVar("T")
DATABASES = ("sqlite", "postgresql", "mariadb")
ANN = {"email": "ann@example.com", "password": "pw"}


def _params(*flavors: str) -> list[Any]:
    return [
        pytest.param(
            (flavor, database), id=f"peewee-{flavor}-{database}",
            marks=[] if database == "sqlite" else [pytest.mark.server],
        )
        for flavor in flavors
        for database in DATABASES
    ]


def _url(database: str, tmp_path: Path) -> str:
    """The URL the suite uses for ``database`` (skipping when it is not configured)."""
    url = make_backend("peewee", database, tmp_path).url
    return url if database == "sqlite" else own_database(url, "sessionstore_peewee")


@pytest.fixture(params=_params("plain"))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PeeweeBackend]:
    flavor, database = request.param
    found = PeeweeBackend(make_backend("peewee", database, tmp_path).url, database, flavor)
    with found.running(make_app()):
        yield found


def _elsewhere(database: Any, work: Callable[[], T]) -> T:
    """Run ``work`` on another thread, hence on another connection, and close it."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        finally:
            database.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert outcome, "the work failed on its thread"
    return outcome[0]  # type: ignore[no-any-return]


def _role_names_elsewhere(backend: PeeweeBackend) -> set[str]:
    role = backend.Role
    return _elsewhere(backend.peewee_db, lambda: {r.name for r in role.select()})


# -- the seed, as written --------------------------------------------------------------


@dataclass
class Seed:
    app: Flask
    database: Any
    models: list[Any]
    user_datastore: PeeweeUserDatastore


@pytest.fixture(params=_params("flaskdb", "plain"))
def seed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Seed]:
    """The seed's example: its models unchanged (but for ``backend``), its datastore
    built as it shows, on FlaskDB or on a plain Database."""
    flavor, database_name = request.param
    url = _url(database_name, tmp_path)
    app = make_app()
    if flavor == "flaskdb":
        app.config["DATABASE"] = url
        db: Any = FlaskDB(app)
        database = db.database
        User, Role, UserRoles = seed_models(db.Model, contract=False)
    else:
        db = database = connect(url)
        User, Role, UserRoles = seed_models(bound_base(db), contract=False)
    user_datastore = PeeweeUserDatastore(db, User, Role, UserRoles, password_hasher=fast_hasher())
    SessionStore(app, datastore=user_datastore)
    models = [User, Role, UserRoles, user_datastore.session_model]
    with database.connection_context():
        database.drop_tables(models)
    yield Seed(app, database, models, user_datastore)
    with database.connection_context():
        database.drop_tables(models)


def test_seed_example_runs_as_written_and_closes_connections(seed: Seed) -> None:
    database, user_datastore = seed.database, seed.user_datastore
    # The setup a script or `flask shell` would run: tables, roles, users.
    with seed.app.app_context(), database.connection_context():
        database.create_tables(seed.models)
        admin = user_datastore.create_role(name="admin", description="Administrators")
        user_datastore.create_user(email="ann@example.com", password="pw", roles=[admin])
        user_datastore.create_user(email="bob@example.com", password="pw")
    assert database.is_closed()

    ann, bob = seed.app.test_client(), seed.app.test_client()
    steps = [
        (ann.get, "/admin", {}, 401),
        (ann.post, "/login", {"email": "ann@example.com", "password": "pw"}, 200),
        (bob.post, "/login", {"email": "BOB@example.com", "password": "pw"}, 200),
        (ann.get, "/admin", {}, 200),
        (bob.get, "/admin", {}, 403),
        (bob.get, "/me", {}, 200),
        (ann.post, "/logout", {}, 200),
        (ann.get, "/admin", {}, 401),
    ]
    for send, path, form, status in steps:
        response = send(path, data=form) if form else send(path)
        assert response.status_code == status, (path, form)
        assert database.is_closed(), f"{path} left its connection open"

    with database.connection_context():
        ann_user = user_datastore.find_user(email="ann@example.com")
        # The seed's link rows still answer for their role.
        assert [(link.name, link.description) for link in ann_user.roles] == [
            ("admin", "Administrators")
        ]


def test_plain_database_connects_only_when_a_request_needs_it(
    backend: PeeweeBackend, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = backend.peewee_db
    with app.app_context():
        backend.datastore.create_role(name="admin")
        backend.datastore.create_user(email="ann@example.com", password="pw", roles=["admin"])
    connects: list[str] = []
    connect_now = database.connect

    def counted_connect(*args: Any, **kwargs: Any) -> Any:
        connects.append(threading.current_thread().name)
        return connect_now(*args, **kwargs)

    monkeypatch.setattr(database, "connect", counted_connect)
    client = app.test_client()
    assert client.get("/public").status_code == 200
    assert connects == []
    assert client.post("/login", data=ANN).status_code == 200
    assert client.get("/public").status_code == 200  # the session is not read
    assert client.get("/admin").status_code == 200
    assert len(connects) == 2  # the login and the role check; each closed after


def test_teardown_leaves_an_enclosing_transaction_alone(
    backend: PeeweeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # A request served on this thread while code around it holds a transaction (a test,
    # a script): the connection is not closed under it.
    database, app = backend.peewee_db, backend.app
    SessionStore(app, datastore=backend.datastore)
    client = IsolatedClient(app, app.response_class)  # on this thread, unlike the backend's
    with caplog.at_level(logging.WARNING, "flask_sessionstore"), database.atomic():
        backend.Role.create(name="kept")
        assert client.post("/cart").status_code == 200
        assert not database.is_closed() and database.in_transaction()
    assert "transaction is still in progress" in caplog.text
    assert _role_names_elsewhere(backend) == {"kept"}


def test_deferred_flaskdb(tmp_path: Path) -> None:
    # FlaskDB() bound to an app later: the models hold a Proxy until init_app.
    db = FlaskDB()
    User, Role, UserRoles = seed_models(db.Model, contract=False)
    user_datastore = PeeweeUserDatastore(db, User, Role, UserRoles, password_hasher=fast_hasher())
    app = make_app()
    app.config["DATABASE"] = f"sqlite:///{tmp_path / 'deferred.sqlite3'}"
    db.init_app(app)
    SessionStore(app, datastore=user_datastore)
    with db.database.connection_context():
        db.database.create_tables([User, Role, UserRoles, user_datastore.session_model])
        user_datastore.create_user(email="ann@example.com", password="pw", roles=[
            user_datastore.create_role(name="admin")
        ])
    client = app.test_client()
    assert client.post("/login", data=ANN).status_code == 200
    assert client.get("/admin").status_code == 200
    assert db.database.is_closed()


def test_models_must_fit(tmp_path: Path) -> None:
    database = peewee.SqliteDatabase(str(tmp_path / "fit.sqlite3"))
    other = peewee.SqliteDatabase(str(tmp_path / "other.sqlite3"))
    User, Role, UserRoles = seed_models(bound_base(database), contract=False)
    _, ForeignRole, _ = seed_models(bound_base(other), contract=False)
    with pytest.raises(SessionStoreError, match="another database"):
        PeeweeUserDatastore(database, User, ForeignRole, UserRoles)
    with pytest.raises(SessionStoreError, match="not to the database"):
        PeeweeUserDatastore(other, User, Role, UserRoles)
    with pytest.raises(SessionStoreError, match="exactly one foreign key to User"):
        PeeweeUserDatastore(database, User, Role, Role)


# -- units of work -----------------------------------------------------------------------


def test_outside_a_transaction_each_write_is_committed_at_once(
    backend: PeeweeBackend, ds: Any
) -> None:
    ds.put(backend.Role(name="admin"))
    assert _role_names_elsewhere(backend) == {"admin"}
    ds.rollback()  # nothing is pending
    assert _role_names_elsewhere(backend) == {"admin"}


def test_transaction_is_one_database_transaction(backend: PeeweeBackend, ds: Any) -> None:
    with backend.count() as counter, ds.transaction():
        ds.create_role(name="admin")
        ds.create_role(name="editor")
    assert _role_names_elsewhere(backend) == {"admin", "editor"}
    verbs = [statement.split()[0].upper() for statement in counter.statements]
    assert verbs == ["BEGIN", "SELECT", "INSERT", "SELECT", "INSERT", "COMMIT"]
    assert counter.commits == 1


def test_constraint_error_rolls_back_the_unit_and_the_block_goes_on(
    backend: PeeweeBackend, ds: Any
) -> None:
    with ds.transaction():
        ds.put(backend.Role(name="admin"))
        with pytest.raises(ConstraintError):
            ds.put(backend.Role(name="admin"))
        assert ds.find_role("admin") is None  # rolled back before the error was raised
        ds.put(backend.Role(name="editor"))
        assert _role_names_elsewhere(backend) == set()  # one unit again
    assert _role_names_elsewhere(backend) == {"editor"}


def test_inside_the_applications_transaction_a_unit_is_a_savepoint(
    backend: PeeweeBackend, ds: Any
) -> None:
    database, role = backend.peewee_db, backend.Role
    with database.atomic():
        role.create(name="outer")
        with pytest.raises(RuntimeError), ds.transaction():
            ds.create_role(name="undone")
            raise RuntimeError("boom")
        with ds.transaction():
            ds.create_role(name="inner")
        # The unit neither undid nor committed the application's pending work.
        assert {r.name for r in role.select()} == {"outer", "inner"}
        assert _role_names_elsewhere(backend) == set()
    assert _role_names_elsewhere(backend) == {"outer", "inner"}


# -- sessions ------------------------------------------------------------------------------


def _record(key: str, now: datetime, user_pk: Any = None, data: str = "{}") -> SessionRecord:
    return SessionRecord(key=key, user_pk=user_pk, data=data, created_at=now, last_seen_at=now,
                         expires_at=now + timedelta(hours=1))


def test_the_constructor_creates_no_table_and_the_model_is_shared(backend: PeeweeBackend) -> None:
    database, datastore = backend.peewee_db, backend.datastore
    assert session_model_for(backend.db, backend.User) is datastore.session_model
    other = session_model_for(backend.db, backend.User, table_name="sessionstore_other")
    PeeweeUserDatastore(backend.db, backend.User, backend.Role, backend.UserRoles,
                        session_model=other)
    assert not database.table_exists("sessionstore_other")
    indexed = {tuple(index.columns) for index in database.get_indexes("sessionstore_session")}
    assert {("user_id",), ("expires_at",)} <= indexed


def test_session_rows_keep_microseconds_and_large_data(backend: PeeweeBackend, ds: Any) -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, 123456)
    data = '{"blob": "' + "x" * 300_000 + '"}'  # past MariaDB's 64 KB TEXT
    ds.rows.insert(_record("a" * 64, now, data=data))
    found = ds.rows.load("a" * 64, now)
    assert found is not None
    record, user = found
    assert user is None
    assert record.created_at == now and record.expires_at == now + timedelta(hours=1)
    assert record.data == data


def test_update_that_changes_nothing_still_finds_the_row(backend: PeeweeBackend, ds: Any) -> None:
    # MySQL reports changed rows, not matched ones; a live row must still be found.
    now = datetime(2030, 1, 1, 12, 0, 0)
    ds.rows.insert(_record("b" * 64, now))
    later = now + timedelta(hours=1)
    assert ds.rows.update("b" * 64, now, data="{}", expires_at=later) is True
    assert ds.rows.update("b" * 64, now, data="{}", expires_at=later) is True
    assert ds.rows.update("c" * 64, now, data="{}", expires_at=later) is False
    assert ds.rows.update("b" * 64, later, data="{}", expires_at=later) is False


def test_deleting_a_user_row_cascades_to_its_sessions(backend: PeeweeBackend, ds: Any) -> None:
    if backend.database == "sqlite":
        pytest.skip("SQLite enforces foreign keys only with PRAGMA foreign_keys = ON")
    user = ds.create_user(email="ann@example.com", password="pw")
    now = datetime(2030, 1, 1, 12, 0, 0)
    ds.rows.insert(_record("d" * 64, now, user_pk=user.id))
    backend.User.delete().where(backend.User.id == user.id).execute()  # not via the library
    assert backend.session_rows() == []


def test_a_session_whose_user_is_gone_loads_without_one(backend: PeeweeBackend, ds: Any) -> None:
    if backend.database != "sqlite":
        pytest.skip("the foreign key deletes the session with its user")
    user = ds.create_user(email="ann@example.com", password="pw")
    now = datetime(2030, 1, 1, 12, 0, 0)
    ds.rows.insert(_record("e" * 64, now, user_pk=user.id))
    backend.User.delete().execute()
    found = ds.rows.load("e" * 64, now)
    assert found is not None and found[1] is None


def test_roles_come_in_one_statement_when_read(app: Flask, backend: PeeweeBackend,
                                               ds: Any) -> None:
    ds.create_role(name="admin")
    ds.create_role(name="editor")
    user = ds.create_user(email="ann@example.com", password="pw", roles=["admin", "editor"])
    now = datetime(2030, 1, 1, 12, 0, 0)
    ds.rows.insert(_record("f" * 64, now, user_pk=user.id))
    with backend.count() as counter:
        _, loaded = ds.rows.load("f" * 64, now)
    assert counter.count == 1  # the row and its user; the roles wait until read
    with backend.count() as counter:
        assert loaded.has_role("admin") and loaded.has_role("editor")
        assert loaded.get_permissions() == frozenset()
    assert counter.count == 1
    # A role taken in the same request shows at once.
    ds.remove_role_from_user(loaded, "editor")
    assert not loaded.has_role("editor") and loaded.has_role("admin")


# -- lookups --------------------------------------------------------------------------------


def test_case_insensitive_lookup_beyond_ascii(ds: Any) -> None:
    ds.create_user(email="Ünal@Example.com", password="pw")
    for spelling in ("Ünal@Example.com", "ÜNAL@EXAMPLE.COM", "ünal@example.com"):
        found = ds.find_user(email=spelling, case_insensitive=True)
        assert found is not None and found.email == "Ünal@Example.com", spelling
    assert ds.authenticate("ünal@example.COM", "pw") is not None


def test_case_insensitive_lookup_can_use_an_index(backend: PeeweeBackend, ds: Any) -> None:
    database, user = backend.peewee_db, backend.User
    if backend.database == "mariadb":
        pytest.skip("MariaDB has no index on an expression")
    # The index the Peewee docs page shows for each database.
    lower = fn.sessionstore_lower if backend.database == "sqlite" else fn.LOWER
    database.execute(user.index(lower(user.email), name="user_email_lower"))
    ds.create_user(email="ann@example.com", password="pw")
    sent: list[tuple[str, Any]] = []
    execute_sql = database.execute_sql

    def capture(sql: str, params: Any = None) -> Any:
        sent.append((sql, params))
        return execute_sql(sql, params)

    database.execute_sql = capture
    try:
        assert ds.find_user(email="ANN@example.com", case_insensitive=True) is not None
    finally:
        del database.execute_sql
    [(sql, params)] = sent
    if backend.database == "postgresql":
        database.execute_sql("SET enable_seqscan = off")  # a tiny table is read whole
        plan = database.execute_sql("EXPLAIN " + sql, params).fetchall()
        database.execute_sql("RESET enable_seqscan")
    else:
        plan = database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    assert "user_email_lower" in str(plan)


@dataclass
class Members:
    app: Flask
    datastore: PeeweeUserDatastore
    database: Any


@pytest.fixture(params=_params("plain"))
def members(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Members]:
    """User models beyond the seed's: a UUID key the application assigns, a username
    and a session token column."""
    _, database_name = request.param
    database = connect(_url(database_name, tmp_path))

    Base = bound_base(database)

    class Member(UserMixin, Base):
        id = peewee.UUIDField(primary_key=True, default=uuid.uuid4)
        email = peewee.CharField(max_length=255, unique=True)
        username = peewee.CharField(max_length=80, unique=True)
        password = peewee.TextField(null=True)
        active = peewee.BooleanField(default=True)
        fs_uniquifier = peewee.CharField(max_length=64, unique=True)

    class Team(RoleMixin, Base):
        name = peewee.CharField(max_length=80, unique=True)

    class MemberTeams(Base):
        # The names UserMixin reads: the user's ``roles``, each link's ``role``.
        user = peewee.ForeignKeyField(Member, backref="roles")
        role = peewee.ForeignKeyField(Team, backref="members")

    datastore = PeeweeUserDatastore(
        database, Member, Team, MemberTeams, password_hasher=fast_hasher(),
        session_model=session_model_for(database, Member, table_name="member_session"),
    )
    models = [Member, Team, MemberTeams, datastore.session_model]
    app = make_app()
    SessionStore(app, datastore=datastore)
    with database.connection_context():
        database.drop_tables(models)
        database.create_tables(models)
    with app.app_context():
        yield Members(app, datastore, database)
    with database.connection_context():
        database.drop_tables(models)


def test_a_key_the_application_assigns_is_inserted(members: Members) -> None:
    # The UUID is set when the object is made: Peewee's save() alone would update
    # nothing and report no error.
    ds = members.datastore
    ann = ds.create_user(email="ann@example.com", username="Ann", password="pw",
                         roles=[ds.create_role(name="admin")])
    assert isinstance(ann.id, uuid.UUID)
    assert ds.get_user(ann.id) == ann
    assert ds.get_user(str(ann.id)).has_role("admin")
    assert ds.get_user("ANN@example.com") == ann
    assert ds.authenticate("ann", "pw") == ann
    for garbage in ("not-a-uuid", "12345", str(uuid.uuid4()), "", "\x00", 42):
        assert ds.get_user(garbage) is None
    assert ds.deactivate_user(ann)
    assert ds.find_user(email="ann@example.com").active is False


def test_a_token_column_is_the_login_id_and_is_rotated(members: Members) -> None:
    ds = members.datastore
    ann = ds.create_user(email="ann@example.com", username="ann", password="pw")
    token = ann.fs_uniquifier
    assert ann.get_id() == token != str(ann.id)
    client = members.app.test_client()
    assert client.post("/login", data={"email": "ann", "password": "pw"}).status_code == 200
    assert client.get("/me").data == b"ann@example.com"
    assert members.database.is_closed()
    assert ds.revoke_user_sessions(ann) == 1
    assert ds.find_user(email="ann@example.com").fs_uniquifier != token
    assert client.get("/me").status_code == 401
    assert client.post("/login", data={"email": "ann", "password": "pw"}).status_code == 200
    [record] = ds.list_sessions(ann)
    assert record.user_pk == ann.id


# -- an unavailable database -------------------------------------------------------------


def test_unreachable_database_is_unavailable_not_a_crash() -> None:
    database = peewee.PostgresqlDatabase("none", host="127.0.0.1", port=1, user="nobody")
    User, Role, UserRoles = seed_models(bound_base(database), contract=False)
    datastore = PeeweeUserDatastore(database, User, Role, UserRoles)
    with pytest.raises(DatastoreUnavailableError):
        datastore.find_user(email="ann@example.com")
    app = make_app()
    SessionStore(app, datastore=datastore)
    client = app.test_client()
    client.set_cookie("session", "D" * 43)
    assert client.get("/me").status_code == 503
    assert client.get("/public").status_code == 200


def test_a_killed_connection_is_unavailable_then_replaced(backend: PeeweeBackend,
                                                          ds: Any) -> None:
    database = backend.peewee_db
    if backend.database == "sqlite":
        pytest.skip("SQLite has no server to lose")
    ds.create_user(email="ann@example.com", password="pw")
    if backend.database == "postgresql":
        mine = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        kill = "SELECT pg_terminate_backend(%s)"
    else:
        mine = database.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
        kill = "KILL %s"
    _elsewhere(database, lambda: database.execute_sql(kill, (mine,)))
    with pytest.raises(DatastoreUnavailableError):
        ds.find_user(email="ann@example.com")
    assert ds.find_user(email="ann@example.com") is not None  # a new connection
