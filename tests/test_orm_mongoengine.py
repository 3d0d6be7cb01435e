"""What only MongoEngine has: the seed's example as written, the session collection's
indexes and query plans, joins in one aggregate, atomic single-document writes, regex
lookups that match whole values, and the unit of work MongoDB can and cannot give."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bson.son import SON

from flask_sessionstore import SessionRecord, SessionStore, UserExistsError
from flask_sessionstore.datastore import utcnow

from .app import make_app
from .backends import mongoengine as mongo_backend
from .backends.mongoengine import MongoEngineBackend
from .conftest import make_backend

_DATABASES = [
    pytest.param("mongomock", id="mongoengine-mongomock"),
    pytest.param("mongodb", id="mongoengine-mongodb", marks=pytest.mark.server),
]


@pytest.fixture(params=_DATABASES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MongoEngineBackend]:
    """The MongoEngine backend only (overrides the suite's fixture in this module)."""
    found = make_backend("mongoengine", request.param, tmp_path)
    assert isinstance(found, MongoEngineBackend)
    with found.running(make_app()):
        yield found


def _login(client: Any, email: str = "ann@example.com") -> None:
    response = client.post("/login", data={"email": email, "password": "pw"})
    assert response.status_code == 200, response.data


def _seed(ds: Any) -> None:
    ds.create_role(name="admin")
    ds.create_user(email="ann@example.com", password="pw", roles=["admin"])


# -- the seed's example --------------------------------------------------------------


@pytest.mark.parametrize("database", _DATABASES)
def test_seed_example_runs_as_written(database: str, tmp_path: Path) -> None:
    from mongoengine import (
        BooleanField,
        DateTimeField,
        Document,
        ListField,
        ReferenceField,
        StringField,
        disconnect,
    )

    from flask_sessionstore import MongoEngineUserDatastore, RoleMixin, UserMixin

    # The suite's URL for the database (skipped, or failed in CI, when not configured).
    url = make_backend("mongoengine", database, tmp_path).url
    disconnect()
    # The seed says: db = connect("mydatabase", host="mongodb://localhost")
    db, name = mongo_backend.connect(url, database)
    db.drop_database(name)
    try:

        class Role(Document, RoleMixin):
            name = StringField(max_length=80, unique=True)
            description = StringField(max_length=255)

        class User(Document, UserMixin):
            email = StringField(max_length=255)
            password = StringField(max_length=255)
            active = BooleanField(default=True)
            confirmed_at = DateTimeField()
            roles = ListField(ReferenceField(Role), default=[])

        user_datastore = MongoEngineUserDatastore(db, User, Role)

        app = make_app()
        SessionStore(app, datastore=user_datastore)
        with app.app_context():
            admin = user_datastore.create_role(name="admin", description="Administrators")
            user_datastore.create_user(email="ann@example.com", password="pw", roles=["admin"])
            user_datastore.create_user(email="bob@example.com", password="pw")
        stored = User._get_collection().find_one({"email": "ann@example.com"})
        assert stored["roles"] == [admin.pk]  # plain references, as the seed's field stores
        assert stored["password"].startswith("$argon2")
        ann, bob = app.test_client(), app.test_client()
        _login(ann)
        _login(bob, "bob@example.com")
        assert ann.get("/admin").data == b"ann@example.com"
        assert bob.get("/admin").status_code == 403
        ann.post("/logout")
        assert ann.get("/admin").status_code == 401
    finally:
        db.drop_database(name)
        disconnect()


# -- the session collection ----------------------------------------------------------


def test_session_collection_has_its_indexes(backend: MongoEngineBackend) -> None:
    indexes = {tuple(spec["key"]): spec for spec in backend.sessions().index_information().values()}
    assert (("_id", 1),) in indexes  # the hashed key
    assert (("user_id", 1),) in indexes
    ttl = indexes[(("expires_at", 1),)]
    assert ttl["expireAfterSeconds"] == 0
    # The role's unique name is an index too (MongoEngine makes it from the model).
    role_indexes = backend.Role._get_collection().index_information().values()
    assert any(spec["key"] == [("name", 1)] and spec.get("unique") for spec in role_indexes)


def _plan_stages(explained: Any) -> tuple[list[str], list[str]]:
    """Every plan stage and every join strategy named anywhere in an explain answer."""
    stages: list[str] = []
    strategies: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("stage"), str):
                stages.append(node["stage"])
            if isinstance(node.get("strategy"), str):
                strategies.append(node["strategy"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(explained)
    return stages, strategies


def test_session_queries_use_indexes_not_collection_scans(
    backend: MongoEngineBackend, app: Any, ds: Any
) -> None:
    if backend.database == "mongomock":
        pytest.skip("mongomock has no query planner (no explain); the index definitions "
                    "are checked by test_session_collection_has_its_indexes")
    _seed(ds)
    client = app.test_client()
    _login(client)
    [record] = ds.list_sessions(ds.find_user(email="ann@example.com"))
    sessions = backend.sessions()
    explain = SON([
        ("explain", SON([
            ("aggregate", sessions.name),
            ("pipeline", ds.rows._session_pipeline(record.key, utcnow())),
            ("cursor", {}),
        ])),
        ("verbosity", "queryPlanner"),
    ])
    stages, strategies = _plan_stages(sessions.database.command(explain))
    assert "COLLSCAN" not in stages, stages
    assert any("IXSCAN" in stage or stage == "IDHACK" for stage in stages), stages
    assert "NestedLoopJoin" not in strategies, strategies
    # Listing a user's sessions and purging dead ones use their indexes too.
    pk = ds.user_pk(ds.find_user(email="ann@example.com"))
    for query in ({"user_id": pk, "expires_at": {"$gt": utcnow()}},
                  {"expires_at": {"$lte": utcnow()}}):
        stages, _ = _plan_stages(sessions.find(query).explain())
        assert "COLLSCAN" not in stages and any("IXSCAN" in s for s in stages), stages


# -- round trips ---------------------------------------------------------------------


def test_role_check_is_one_aggregate_and_writes_nothing(
    backend: MongoEngineBackend, app: Any, ds: Any
) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    client.get("/admin")
    with backend.count() as counter:
        assert client.get("/admin").status_code == 200
    assert counter.statements == ["AGGREGATE sessionstore_session"]
    assert counter.commits == 0


def test_counter_sees_every_round_trip_including_lazy_references(
    backend: MongoEngineBackend, ds: Any
) -> None:
    # What makes the count above meaningful: a role read the usual MongoEngine way
    # (a user, then its references dereferenced on access) costs a second round trip.
    _seed(ds)
    with backend.count() as counter:
        user = backend.User.objects(email="ann@example.com").first()
        assert [role.name for role in user.roles] == ["admin"]
    assert counter.statements == ["FIND user", "FIND role"]


def test_create_user_with_roles_is_one_insert(backend: MongoEngineBackend, ds: Any) -> None:
    ds.create_role(name="admin")
    ds.create_role(name="editor")
    with backend.count() as counter:
        user = ds.create_user(email="ann@example.com", password="pw", roles=["admin", "editor"])
    assert counter.writes == ["INSERT user"]
    stored = backend.User._get_collection().find_one({"_id": user.pk})
    assert stored["roles"] == [ds.find_role("admin").pk, ds.find_role("editor").pk]


def test_role_grants_are_atomic_updates_of_one_document(
    backend: MongoEngineBackend, ds: Any
) -> None:
    ds.create_role(name="admin")
    ds.create_role(name="editor")
    user = ds.create_user(email="ann@example.com", password="pw")
    # Another process grants "editor" meanwhile; this copy of the user does not know.
    stale = backend.User.objects(pk=user.pk).first()
    ds.add_role_to_user(backend.User.objects(pk=user.pk).first(), "editor")
    with backend.count() as counter:
        assert ds.add_role_to_user(stale, "admin") is True
    assert counter.writes == ["UPDATE user"]
    fresh = ds.find_user(email="ann@example.com")
    assert sorted(role.name for role in fresh.roles) == ["admin", "editor"]  # none lost
    # A later save of the stale copy does not write its (incomplete) role list back.
    stale.confirmed_at = utcnow()
    ds.put(stale)
    fresh = ds.find_user(email="ann@example.com")
    assert sorted(role.name for role in fresh.roles) == ["admin", "editor"]
    assert ds.remove_role_from_user(fresh, "editor") is True
    assert [role.name for role in ds.find_user(email="ann@example.com").roles] == ["admin"]


def test_session_update_never_brings_back_a_deleted_or_dead_session(
    backend: MongoEngineBackend, ds: Any
) -> None:
    now = utcnow()
    record = SessionRecord(key="k" * 64, user_pk=None, data="{}", created_at=now,
                           last_seen_at=now, expires_at=now + timedelta(hours=1))
    ds.rows.insert(record)
    assert ds.rows.update(record.key, now, data='{"a": 1}',
                          expires_at=now + timedelta(hours=2)) is True
    assert ds.rows.update(record.key, now + timedelta(hours=3), data=None,
                          expires_at=now + timedelta(hours=4)) is False  # dead
    assert ds.rows.delete([record.key]) == 1
    assert ds.rows.update(record.key, now, data="{}",
                          expires_at=now + timedelta(hours=1)) is False
    assert backend.session_rows() == []


# -- deleting ------------------------------------------------------------------------


def test_user_deleted_by_mongoengine_leaves_no_sessions(
    backend: MongoEngineBackend, app: Any, ds: Any
) -> None:
    _seed(ds)
    ds.create_user(email="bob@example.com", password="pw")
    ann, ann_elsewhere, bob = app.test_client(), app.test_client(), app.test_client()
    _login(ann)
    _login(ann_elsewhere)
    _login(bob, "bob@example.com")
    assert len(backend.session_rows()) == 3
    # Past the datastore, as an application might: the reference's CASCADE rule acts.
    backend.User.objects(email="ann@example.com").first().delete()
    bob_pk = ds.user_pk(ds.find_user(email="bob@example.com"))
    assert [row["user_id"] for row in backend.session_rows()] == [bob_pk]
    assert ann.get("/me").status_code == 401
    assert ann_elsewhere.get("/me").status_code == 401
    assert bob.get("/me").status_code == 200


def test_deleted_role_is_unlinked_from_its_users(
    backend: MongoEngineBackend, app: Any, ds: Any
) -> None:
    _seed(ds)
    client = app.test_client()
    _login(client)
    assert client.get("/admin").status_code == 200
    ds.delete(ds.find_role("admin"))
    assert ds.find_role("admin") is None
    assert backend.User._get_collection().find_one({"email": "ann@example.com"})["roles"] == []
    assert client.get("/admin").status_code == 403


# -- lookups -------------------------------------------------------------------------


def test_case_insensitive_lookup_matches_the_whole_value_literally(ds: Any) -> None:
    ds.create_user(email="a.b+c@example.com", password="pw")
    # Stored with a final newline through the model store: the datastore would strip it
    # (S32), and the translator's regular expression must not need that.
    ds.models.put(ds.user_model(email="bob@example.com\n", password="x", active=True))
    ds.commit()
    assert ds.find_user(email="A.B+C@EXAMPLE.COM", case_insensitive=True) is not None
    models = ds.models
    for other in ("axb+c@example.com", "a.b+c@example.co", "a.b+c@example.com ",
                  " a.b+c@example.com", ".*", "a.b+c@.*", "^a", "", "bob@example.com"):
        # "bob@example.com" must not find "bob@example.com\n": "$" alone would.
        assert models.find_user({"email": other}, case_insensitive=True) is None, other
    assert models.find_user({"email": "bob@example.com\n"}, case_insensitive=True) is not None


def test_operator_documents_and_non_keys_never_reach_a_query(ds: Any) -> None:
    user = ds.create_user(email="ann@example.com", password="pw")
    assert ds.find_user(email={"$ne": None}) is None
    assert ds.find_user(email={"$regex": "."}, case_insensitive=True) is None
    for garbage in ({"$ne": None}, ["x"], b"123456789012", "g" * 24, "0" * 23,
                    str(user.pk) + "0", 1, -1):
        assert ds.parse_key(garbage) is None, garbage
        assert ds.get_user(garbage) is None, garbage
    assert ds.parse_key(str(user.pk).upper()) == user.pk
    assert ds.get_user(str(user.pk).upper()) == user


# -- units of work -------------------------------------------------------------------


def _emails(backend: MongoEngineBackend) -> list[str]:
    return sorted(user.email for user in backend.User.objects)


def test_unit_of_work_discards_what_was_not_yet_sent(backend: MongoEngineBackend, ds: Any) -> None:
    """What MongoDB without multi-document transactions can promise (pinned here):
    writes are held until the block ends or the datastore next reads; an error discards
    the writes not yet sent, and keeps those a read has sent."""
    with pytest.raises(RuntimeError), ds.transaction():
        ds.create_user(email="ann@example.com", password="pw")
        assert _emails(backend) == []  # held back: not yet sent
        raise RuntimeError("boom")
    assert _emails(backend) == []
    with pytest.raises(RuntimeError), ds.transaction():
        ds.create_user(email="ann@example.com", password="pw")
        ds.create_user(email="bob@example.com", password="pw")  # its lookup sends ann
        raise RuntimeError("boom")
    assert _emails(backend) == ["ann@example.com"]
    with pytest.raises(UserExistsError), ds.transaction():
        ds.create_user(email="cat@example.com", password="pw")
        ds.create_user(email="cat@example.com", password="pw")
    assert _emails(backend) == ["ann@example.com", "cat@example.com"]


def test_unit_of_work_reads_its_own_writes(backend: MongoEngineBackend, ds: Any) -> None:
    with ds.transaction():
        admin = ds.create_role(name="admin")
        user = ds.create_user(email="ann@example.com", password="pw", roles=[admin])
        assert ds.find_role("admin") == admin  # the read sends what was held back
        assert ds.user_pk(user) is not None
    assert ds.find_user(email="ann@example.com").has_role("admin")


def test_own_session_document(backend: MongoEngineBackend, ds: Any) -> None:
    from flask_sessionstore import MongoEngineUserDatastore
    from flask_sessionstore.orm.mongoengine import session_document_for

    document = session_document_for(backend.User, collection="my_sessions")
    assert session_document_for(backend.User, collection="my_sessions") is document
    own = MongoEngineUserDatastore(backend.client, backend.User, backend.Role,
                                   session_document=document)
    app = make_app()
    SessionStore(app, datastore=own)
    _seed(ds)
    client = app.test_client()
    _login(client)
    assert client.get("/admin").status_code == 200
    assert document.objects.count() == 1
    assert backend.session_rows() == []
    document.drop_collection()


@pytest.mark.parametrize("where", ["mongoengine-unreachable"])
def test_unreachable_server_is_reported_as_unavailable(where: str) -> None:
    from mongoengine import Document, ListField, ReferenceField, StringField, connect, disconnect

    from flask_sessionstore import DatastoreUnavailableError, MongoEngineUserDatastore

    alias = "sessionstore_unreachable"
    # Nothing listens on port 1 of the loopback: the driver gives up after 200 ms.
    connect("sessionstore_unreachable", alias=alias, connect=False,
            uuidRepresentation="standard",
            host="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200")
    try:

        # MongoEngine reads ``meta`` as a plain class attribute.
        class DownRole(Document):
            name = StringField(unique=True)
            meta = {"db_alias": alias}  # noqa: RUF012

        class DownUser(Document):
            email = StringField()
            roles = ListField(ReferenceField(DownRole))
            meta = {"db_alias": alias}  # noqa: RUF012

        ds = MongoEngineUserDatastore(None, DownUser, DownRole)
        with pytest.raises(DatastoreUnavailableError):
            ds.find_user(email="ann@example.com")
        with pytest.raises(DatastoreUnavailableError):
            ds.rows.load("k" * 64, utcnow())
        with pytest.raises(DatastoreUnavailableError):
            ds.put(DownUser(email="ann@example.com"))
    finally:
        disconnect(alias)
