"""The ORM contract, promise by promise, on every ORM and database.

Each test calls the methods of :class:`~flask_sessionstore.contract.ModelStore`
(``ds.models``) and :class:`~flask_sessionstore.contract.SessionRows` (``ds.rows``)
directly, never the core's rules, and checks one promise their docstrings state; a test
is named after that promise. Like Litestar's one suite over all its stores, the same
tests run on each translator, so a translator that passes them can serve the core.

Times are fixed and whole seconds (MongoDB keeps milliseconds, MariaDB what its column
keeps), so that what is read back equals what was written. "A fresh read" is made on
another thread, in an app context and unit of its own (and so on another connection,
or another Pony ``db_session``): it sees only what was committed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from flask_sessionstore.contract import ModelStore, SessionRows
from flask_sessionstore.exceptions import DuplicateError
from flask_sessionstore.records import ANY_USER, KeyKind, SessionRecord, parse_key, session_key

from .backends import Backend, Counter

NOW = datetime(2030, 1, 1, 12, 0, 0)
#: A moment before any row here expires: ``find(LONG_AGO)`` lists every stored row.
LONG_AGO = datetime(2000, 1, 1)
SECOND, MINUTE, HOUR = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)
#: The ORMs that give a thread a single connection, where session rows written while a
#: unit is open are part of it (the exception SessionRows' docstring states).
ONE_CONNECTION_A_THREAD = frozenset({"peewee", "pony"})


# -- helpers --------------------------------------------------------------------------------


def row(name: str, owner: Any = None, *, expires_at: datetime = NOW + HOUR,
        last_seen_at: datetime = NOW - MINUTE, data: str = '{"n": 1}') -> SessionRecord:
    """A session record under the key of the session id ``name``."""
    return SessionRecord(
        key=session_key(name), user_pk=owner, data=data, created_at=NOW - HOUR,
        last_seen_at=last_seen_at, expires_at=expires_at,
        user_agent="Mozilla/5.0 (contract)", ip_address="192.0.2.7",
    )


def fields(record: SessionRecord) -> tuple[Any, ...]:
    """What a row stores (not ``current`` nor ``user``, which the core sets)."""
    return (record.key, record.user_pk, record.data, record.created_at, record.last_seen_at,
            record.expires_at, record.user_agent, record.ip_address)


def stored(ds: Any) -> dict[str, tuple[Any, ...]]:
    """Every stored row, dead or live, by key."""
    return {found.key: fields(found) for found in ds.rows.find(LONG_AGO)}


def insert(ds: Any, *records: SessionRecord) -> None:
    for record in records:
        ds.rows.insert(record)


def add_users(backend: Backend, ds: Any, *emails: str) -> list[Any]:
    """Store users (active), committed; return them in order."""
    with ds.models.unit():
        return [ds.models.put(backend.User(email=email, active=True)) for email in emails]


def add_roles(backend: Backend, ds: Any, *names: str) -> list[Any]:
    with ds.models.unit():
        return [ds.models.put(backend.Role(name=name)) for name in names]


def reads_before_writing(counter: Counter) -> list[str]:
    """The statements (or MongoDB commands) of ``counter`` that read before its first
    write: a check there, then a write, is what a concurrent request can come between."""
    verbs = ("SELECT", "WITH", "FIND", "AGGREGATE", "COUNT", "GETMORE")
    first_write = counter.statements.index(counter.writes[0]) if counter.writes else None
    return [s for s in counter.statements[:first_write] if s.lstrip().upper().startswith(verbs)]


def role_names(ds: Any, user: Any) -> set[str]:
    return {role.name for role in ds.models.roles_of(user)}


def fresh(backend: Backend, read: Callable[[ModelStore[Any, Any]], Any]) -> Any:
    """Return ``read(models)`` run on another thread, in an app context (and for Pony a
    ``db_session``) of its own: a read that sees only what was committed."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            with backend.unit(backend.app):
                models = backend.datastore.models
                with models.scope():
                    outcome["value"] = read(models)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            _close_thread_connection(backend)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the fresh read did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _close_thread_connection(backend: Backend) -> None:
    # Peewee and Pony keep a connection per thread; this thread's is not needed again.
    if backend.orm == "peewee":
        backend.peewee_db.close()  # type: ignore[attr-defined]
    elif backend.orm == "pony":
        backend.db.disconnect()  # type: ignore[attr-defined]


def fresh_emails(backend: Backend, *emails: str) -> set[str]:
    """Which of ``emails`` a fresh read finds users with."""
    return set(fresh(backend, lambda models: {
        email for email in emails if models.find_user({"email": email}) is not None
    }))


def fresh_rows(backend: Backend) -> list[tuple[Any, ...]]:
    """Every stored row, as a fresh read finds it."""
    rows = backend.datastore.rows
    return list(fresh(backend, lambda _: [fields(r) for r in rows.find(LONG_AGO)]))


def fresh_role_names(backend: Backend, key: Any) -> set[str]:
    def read(models: ModelStore[Any, Any]) -> set[str]:
        user = models.get_user(key)
        assert user is not None
        return {role.name for role in models.roles_of(user)}

    return set(fresh(backend, read))


def skip_unless_transactional(backend: Backend) -> None:
    if not backend.transactional:
        pytest.skip(
            f"{backend.orm} has no multi-document transactions here; what its unit of work "
            f"guarantees instead is pinned by tests/test_orm_{backend.orm}.py"
        )


@pytest.fixture
def users(backend: Backend, ds: Any) -> tuple[Any, Any]:
    """Ann (roles admin and analyst) and Bob (no role), committed: their keys."""
    admin, analyst = add_roles(backend, ds, "admin", "analyst")
    ann, bob = add_users(backend, ds, "ann@example.com", "bob@example.com")
    with ds.models.unit():
        ds.models.link(ann, admin)
        ds.models.link(ann, analyst)
    return ds.models.key_of(ann), ds.models.key_of(bob)


# -- the two ABCs ----------------------------------------------------------------------------


def test_the_datastore_has_a_model_store_and_session_rows(ds: Any) -> None:
    assert isinstance(ds.models, ModelStore)
    assert isinstance(ds.rows, SessionRows)
    assert ds.models.user_model is ds.user_model
    assert ds.models.role_model is ds.role_model


# -- ModelStore: units of work ---------------------------------------------------------------


def test_unit_commits_on_exit(backend: Backend, ds: Any) -> None:
    with ds.models.unit():
        ds.models.put(backend.User(email="ann@example.com", active=True))
    assert fresh_emails(backend, "ann@example.com") == {"ann@example.com"}


def test_unit_commits_what_was_pending_before_it(backend: Backend, ds: Any) -> None:
    # The core's public commit() is an empty unit: it must commit the earlier work.
    ds.models.put(backend.User(email="ann@example.com", active=True))
    with ds.models.unit():
        pass
    assert fresh_emails(backend, "ann@example.com") == {"ann@example.com"}


def test_unit_rolls_back_on_error_and_lets_the_error_propagate(
    backend: Backend, ds: Any
) -> None:
    skip_unless_transactional(backend)
    add_users(backend, ds, "kept@example.com")
    with pytest.raises(RuntimeError, match="boom"), ds.models.unit():
        ds.models.put(backend.User(email="ann@example.com", active=True))
        ds.models.put(backend.User(email="bob@example.com", active=True))
        raise RuntimeError("boom")
    assert ds.models.find_user({"email": "ann@example.com"}) is None
    assert ds.models.find_user({"email": "kept@example.com"}) is not None
    emails = ("ann@example.com", "bob@example.com", "kept@example.com")
    assert fresh_emails(backend, *emails) == {"kept@example.com"}


def test_unit_inside_a_unit_joins_it_and_commits_only_with_it(
    backend: Backend, ds: Any
) -> None:
    skip_unless_transactional(backend)
    with pytest.raises(RuntimeError), ds.models.unit():
        with ds.models.unit():
            ds.models.put(backend.User(email="ann@example.com", active=True))
        assert fresh_emails(backend, "ann@example.com") == set()  # not committed yet
        raise RuntimeError("the outer unit fails after the inner one ended")
    assert fresh_emails(backend, "ann@example.com") == set()
    with ds.models.unit(), ds.models.unit():
        ds.models.put(backend.User(email="bob@example.com", active=True))
    assert fresh_emails(backend, "bob@example.com") == {"bob@example.com"}


def test_rollback_discards_what_is_pending_and_keeps_what_is_committed(
    backend: Backend, ds: Any
) -> None:
    ds.models.rollback()  # nothing pending: nothing happens
    add_users(backend, ds, "ann@example.com")
    ds.models.put(backend.User(email="bob@example.com", active=True))
    ds.models.rollback()
    # Whatever put() had left pending is gone: what this session sees now is what was
    # committed (a translator that writes at once outside a unit has committed Bob).
    here = {email for email in ("ann@example.com", "bob@example.com")
            if ds.models.find_user({"email": email}) is not None}
    assert "ann@example.com" in here
    assert here == fresh_emails(backend, "ann@example.com", "bob@example.com")
    ds.models.rollback()


# -- ModelStore: put and delete ---------------------------------------------------------------


def test_put_returns_the_model_and_writes_the_changes_of_a_stored_one(
    backend: Backend, ds: Any
) -> None:
    user = backend.User(email="ann@example.com", active=True)
    with ds.models.unit():
        assert ds.models.put(user) is user
    key = ds.models.key_of(user)
    with ds.models.unit():
        user.email = "ann.new@example.com"
        user.active = False
        assert ds.models.put(user) is user
    assert fresh_emails(backend, "ann@example.com", "ann.new@example.com") == {
        "ann.new@example.com"
    }
    stored_user = fresh(backend, lambda models: (models.key_of(models.get_user(key)),
                                                 getattr(models.get_user(key), "active", None)))
    assert stored_user == (key, False)
    assert [ds.models.key_of(u) for u in ds.models.list(backend.User, 0, None)] == [key]


@pytest.mark.parametrize("in_unit", [False, True], ids=["alone", "in-a-unit"])
@pytest.mark.parametrize("what", ["role-name", "user-email"])
def test_put_of_a_duplicate_unique_value_raises_duplicate_error(
    backend: Backend, ds: Any, what: str, in_unit: bool
) -> None:
    if what == "role-name":
        add_roles(backend, ds, "admin")

        def duplicate() -> Any:
            return backend.Role(name="admin")
    else:
        if backend.orm != "sqlalchemy":
            pytest.skip(f"the seed's {backend.orm} User.email is not unique")
        add_users(backend, ds, "ann@example.com")

        def duplicate() -> Any:
            return backend.User(email="ann@example.com", active=True)

    # Pony refuses a new object whose unique value is held in its cache at once, by the
    # constructor, before put(): with the cache emptied, the database is what is tested.
    ds.models.rollback()
    # The write is sent at once, so the violation is raised by put() itself, inside a
    # unit too; the unit has been rolled back then, and ends (commits) normally. A store
    # without multi-document transactions may hold the write back to the unit's end.
    if in_unit and not backend.transactional:
        with pytest.raises(DuplicateError), ds.models.unit():
            ds.models.put(duplicate())
    elif in_unit:
        with ds.models.unit(), pytest.raises(DuplicateError):
            ds.models.put(duplicate())
    else:
        with pytest.raises(DuplicateError):
            ds.models.put(duplicate())
    # Nothing was overwritten, and the store goes on working.
    assert len(ds.models.list(backend.Role, 0, None)) == (1 if what == "role-name" else 0)
    with ds.models.unit():
        ds.models.put(backend.Role(name="other"))
    assert ds.models.find_role("other") is not None
    assert fresh(backend, lambda models: models.find_role("other")) is not None


# SQLAlchemy warns of the clash in its identity map before the database refuses it.
@pytest.mark.filterwarnings("ignore:New instance .* conflicts with persistent instance")
def test_put_never_writes_a_new_object_over_a_stored_one_with_the_same_key(
    backend: Backend, ds: Any
) -> None:
    (ann,) = add_users(backend, ds, "ann@example.com")
    key = ds.models.key_of(ann)
    # Pony refuses a new object under a key held in its cache at once, by the
    # constructor, before put(): with the cache emptied, the database is what is tested.
    ds.models.rollback()
    impostor = backend.User(id=key, email="mallory@example.com", active=True)
    with pytest.raises(DuplicateError):
        ds.models.put(impostor)
    assert fresh_emails(backend, "ann@example.com", "mallory@example.com") == {
        "ann@example.com"
    }


def test_delete_removes_a_user_and_its_role_links(backend: Backend, ds: Any) -> None:
    (admin,) = add_roles(backend, ds, "admin")
    ann, bob = add_users(backend, ds, "ann@example.com", "bob@example.com")
    with ds.models.unit():
        ds.models.link(ann, admin)
        ds.models.link(bob, admin)
    bob_key = ds.models.key_of(bob)
    with ds.models.unit():
        ds.models.delete(ann)
    assert ds.models.find_user({"email": "ann@example.com"}) is None
    assert fresh_emails(backend, "ann@example.com", "bob@example.com") == {"bob@example.com"}
    assert fresh_role_names(backend, bob_key) == {"admin"}
    assert ds.models.find_role("admin") is not None
    # A new user, which may get the deleted one's key (SQLite reuses the highest),
    # holds none of its roles.
    (carl,) = add_users(backend, ds, "carl@example.com")
    assert fresh_role_names(backend, ds.models.key_of(carl)) == set()


def test_delete_removes_a_role_and_its_links(backend: Backend, ds: Any) -> None:
    (analyst, admin) = add_roles(backend, ds, "analyst", "admin")
    (ann,) = add_users(backend, ds, "ann@example.com")
    with ds.models.unit():
        ds.models.link(ann, analyst)
        ds.models.link(ann, admin)
    key = ds.models.key_of(ann)
    with ds.models.unit():
        ds.models.delete(admin)
    assert ds.models.find_role("admin") is None
    assert role_names(ds, ds.models.get_user(key)) == {"analyst"}
    assert fresh_role_names(backend, key) == {"analyst"}
    # A new role, which may get the deleted one's key, is held by no one.
    add_roles(backend, ds, "auditor")
    assert fresh_role_names(backend, key) == {"analyst"}


# -- ModelStore: lookups ----------------------------------------------------------------------


def test_find_user_matches_every_criterion(backend: Backend, ds: Any) -> None:
    with ds.models.unit():
        ds.models.put(backend.User(email="ann@example.com", active=True))
        ds.models.put(backend.User(email="bob@example.com", active=False))
    found = ds.models.find_user({"email": "ann@example.com", "active": True})
    assert found is not None and found.email == "ann@example.com"
    assert ds.models.find_user({"email": "bob@example.com", "active": True}) is None
    assert ds.models.find_user({"email": "bob@example.com", "active": False}) is not None
    assert ds.models.find_user({"email": "carl@example.com"}) is None


def test_find_user_is_exact_and_with_case_insensitive_folds_beyond_ascii(
    backend: Backend, ds: Any
) -> None:
    add_users(backend, ds, "Ünal@Example.com", "çelik@Örnek.com")
    exact = ds.models.find_user({"email": "Ünal@Example.com"})
    assert exact is not None and exact.email == "Ünal@Example.com"
    other_case = ds.models.find_user({"email": "ünal@example.com"})
    if backend.database == "mariadb":
        # MariaDB's default collation ignores case: pinned as in test_datastore.py.
        assert other_case is not None and other_case.email == "Ünal@Example.com"
    else:
        assert other_case is None
    # The core lower-cases the value with str.lower(); the column is folded alike.
    for value in ("ünal@example.com", "çelik@örnek.com"):
        found = ds.models.find_user({"email": value}, case_insensitive=True)
        assert found is not None and found.email.lower() == value, value
    if backend.database != "mariadb":  # whose default collation ignores accents too
        assert ds.models.find_user({"email": "unal@example.com"}, case_insensitive=True) is None
    found = ds.models.find_user({"email": "ünal@example.com", "active": True},
                                case_insensitive=True)
    assert found is not None


def test_get_user_returns_the_user_with_its_roles_in_one_round_trip(
    backend: Backend, ds: Any, users: tuple[Any, Any]
) -> None:
    ann_key, bob_key = users
    ds.models.rollback()  # start from nothing the ORM has cached
    ds.models.get_user(bob_key)  # warm: a first query may set things up
    with backend.count() as counter:
        ann = ds.models.get_user(ann_key)
        names = role_names(ds, ann)
    assert names == {"admin", "analyst"}
    assert ann.email == "ann@example.com"
    assert counter.count <= backend.budget("role_check"), counter.statements
    assert counter.writes == []
    bob = ds.models.get_user(bob_key)
    assert bob.email == "bob@example.com" and role_names(ds, bob) == set()


def test_get_user_of_a_key_not_stored_returns_none(
    backend: Backend, ds: Any, users: tuple[Any, Any]
) -> None:
    ann_key, bob_key = users
    with ds.models.unit():
        ds.models.delete(ds.models.get_user(bob_key))
    assert ds.models.get_user(bob_key) is None
    assert ds.models.get_user(ann_key) is not None


def test_find_role_matches_the_exact_name(backend: Backend, ds: Any) -> None:
    add_roles(backend, ds, "admin", "admin2")
    found = ds.models.find_role("admin")
    assert found is not None and found.name == "admin"
    assert ds.models.find_role("adm") is None
    assert ds.models.find_role("%") is None
    assert ds.models.find_role("_dmin") is None
    assert ds.models.find_role("ADMIN") is None or backend.database == "mariadb"


def test_list_returns_objects_in_key_order_with_offset_and_limit(
    backend: Backend, ds: Any
) -> None:
    users = add_users(backend, ds, *(f"user{i}@example.com" for i in range(5)))
    keys = sorted(ds.models.key_of(user) for user in users)

    def listed(model: Any, offset: int, limit: int | None) -> list[Any]:
        return [ds.models.key_of(found) for found in ds.models.list(model, offset, limit)]

    assert listed(backend.User, 0, None) == keys
    assert listed(backend.User, 1, 2) == keys[1:3]
    assert listed(backend.User, 4, 10) == keys[4:]
    assert listed(backend.User, 5, None) == []
    assert listed(backend.User, 0, 0) == []
    add_roles(backend, ds, "b", "a", "c")
    assert [role.name for role in ds.models.list(backend.Role, 0, None)] == ["b", "a", "c"]
    assert [role.name for role in ds.models.list(backend.Role, 1, 1)] == ["a"]


def test_key_of_a_stored_user_sends_no_query(backend: Backend, ds: Any) -> None:
    (ann,) = add_users(backend, ds, "ann@example.com")  # committed: SQLAlchemy expired it
    with backend.count() as counter:
        key = ds.models.key_of(ann)
    assert counter.count == 0, counter.statements
    assert key is not None
    assert ds.models.key_of(ds.models.find_user({"email": "ann@example.com"})) == key


def test_key_of_a_new_user_stores_it_first(backend: Backend, ds: Any) -> None:
    with ds.models.unit():
        user = backend.User(email="ann@example.com", active=True)
        key = ds.models.key_of(user)
        assert key is not None
        found = ds.models.get_user(key)
        assert found is not None and found.email == "ann@example.com"
    assert fresh_emails(backend, "ann@example.com") == {"ann@example.com"}


def test_key_kind_parses_a_stored_key_and_its_text(
    backend: Backend, ds: Any, users: tuple[Any, Any]
) -> None:
    kind = ds.models.key_kind
    assert isinstance(kind, KeyKind)
    for key in users:
        assert isinstance(key, kind.python_type)
        assert parse_key(kind, key) == key
        # Keys come back as text from URLs and the cache: the text form parses back.
        assert parse_key(kind, str(key)) == key
        assert ds.models.get_user(parse_key(kind, str(key))) is not None


def test_link_and_unlink_show_in_roles_of_and_commit_with_the_unit(
    backend: Backend, ds: Any
) -> None:
    admin, analyst = add_roles(backend, ds, "admin", "analyst")
    (ann,) = add_users(backend, ds, "ann@example.com")
    key = ds.models.key_of(ann)
    assert role_names(ds, ann) == set()
    with ds.models.unit():
        ds.models.link(ann, admin)
        assert role_names(ds, ann) == {"admin"}
        ds.models.link(ann, analyst)
        assert role_names(ds, ann) == {"admin", "analyst"}
    assert fresh_role_names(backend, key) == {"admin", "analyst"}
    with ds.models.unit():
        ds.models.unlink(ann, admin)
        assert role_names(ds, ann) == {"analyst"}
    assert role_names(ds, ann) == {"analyst"}
    assert fresh_role_names(backend, key) == {"analyst"}
    assert all(isinstance(role, backend.Role) for role in ds.models.roles_of(ann))


def test_link_rolls_back_with_the_unit(backend: Backend, ds: Any) -> None:
    skip_unless_transactional(backend)
    (admin,) = add_roles(backend, ds, "admin")
    (ann,) = add_users(backend, ds, "ann@example.com")
    key = ds.models.key_of(ann)
    with pytest.raises(RuntimeError), ds.models.unit():
        ds.models.link(ann, admin)
        raise RuntimeError("boom")
    assert fresh_role_names(backend, key) == set()
    assert role_names(ds, ds.models.get_user(key)) == set()


# -- SessionRows: insert ----------------------------------------------------------------------


def test_insert_stores_every_field(ds: Any, users: tuple[Any, Any]) -> None:
    ann_key, _ = users
    record = row("ann", ann_key)
    anonymous = row("anonymous")
    insert(ds, record, anonymous)
    assert stored(ds) == {record.key: fields(record), anonymous.key: fields(anonymous)}


def test_insert_never_overwrites_a_stored_row(
    backend: Backend, ds: Any, users: tuple[Any, Any]
) -> None:
    ann_key, bob_key = users
    original = row("ann", ann_key, data='{"who": "ann"}')
    insert(ds, original)
    for clash in (row("ann", bob_key, data='{"who": "bob"}'), row("ann", None),
                  row("ann", ann_key, expires_at=NOW + 2 * HOUR)):
        # The database refuses the second row: no read first, which a race would beat.
        with backend.count() as counter, pytest.raises(DuplicateError):
            ds.rows.insert(clash)
        assert reads_before_writing(counter) == [], counter.statements
    assert stored(ds) == {original.key: fields(original)}
    insert(ds, row("other"))  # the rows go on working
    assert len(stored(ds)) == 2


def test_insert_is_durable_on_return(
    backend: Backend, ds: Any, users: tuple[Any, Any]
) -> None:
    ann_key, _ = users
    record = row("ann", ann_key)
    ds.rows.insert(record)
    assert fresh_rows(backend) == [fields(record)]
    with ds.models.unit():
        ds.rows.insert(anonymous := row("anonymous"))
    assert sorted(fresh_rows(backend)) == sorted([fields(record), fields(anonymous)])


def test_insert_in_a_failed_unit_stays_unless_the_orm_has_one_connection_a_thread(
    backend: Backend, ds: Any, users: tuple[Any, Any]
) -> None:
    # Peewee and Pony give a thread one connection: a row written while a unit is open
    # is part of it, and rolls back with it (the exception the contract states).
    part_of_the_unit = backend.orm in ONE_CONNECTION_A_THREAD
    ann_key, _ = users
    record = row("ann", ann_key)
    with pytest.raises(RuntimeError), ds.models.unit():
        ds.rows.insert(record)
        if not part_of_the_unit:
            assert fresh_rows(backend) == [fields(record)]  # durable on return
        ds.models.put(backend.User(email="carl@example.com", active=True))
        raise RuntimeError("the unit fails")
    expected = [] if part_of_the_unit else [fields(record)]
    assert list(stored(ds).values()) == expected
    assert fresh_rows(backend) == expected
    assert fresh_emails(backend, "carl@example.com") == set() or not backend.transactional


# -- SessionRows: load ------------------------------------------------------------------------


def test_load_returns_the_live_row_with_its_user_and_roles_in_one_round_trip(
    backend: Backend, ds: Any, users: tuple[Any, Any]
) -> None:
    ann_key, bob_key = users
    record = row("ann", ann_key)
    insert(ds, record, row("bob", bob_key))
    ds.models.rollback()  # start from nothing the ORM has cached
    ds.rows.load(session_key("bob"), NOW)  # warm: a first query may set things up
    with backend.count() as counter:
        found = ds.rows.load(record.key, NOW)
        assert found is not None
        loaded, user = found
        names = role_names(ds, user)
    assert counter.count <= backend.budget("role_check"), counter.statements
    assert counter.writes == []
    assert names == {"admin", "analyst"}
    assert fields(loaded) == fields(record)
    assert isinstance(user, backend.User) and user.email == "ann@example.com"
    assert ds.models.key_of(user) == ann_key


def test_load_returns_an_anonymous_row_with_no_user(backend: Backend, ds: Any) -> None:
    record = row("anonymous")
    insert(ds, record)
    with backend.count() as counter:
        found = ds.rows.load(record.key, NOW)
    assert found is not None
    assert fields(found[0]) == fields(record)
    assert found[1] is None
    assert counter.count <= 1, counter.statements


def test_load_returns_only_a_live_row(ds: Any, users: tuple[Any, Any]) -> None:
    ann_key, _ = users
    insert(ds, row("ends-now", ann_key, expires_at=NOW), row("ended", ann_key,
           expires_at=NOW - HOUR), row("ends-soon", ann_key, expires_at=NOW + SECOND))
    # A row expiring exactly at ``now`` is dead.
    assert ds.rows.load(session_key("ends-now"), NOW) is None
    assert ds.rows.load(session_key("ended"), NOW) is None
    assert ds.rows.load(session_key("missing"), NOW) is None
    assert ds.rows.load(session_key("ends-soon"), NOW) is not None
    assert ds.rows.load(session_key("ends-now"), NOW - SECOND) is not None
    assert len(stored(ds)) == 3  # a read deletes nothing


# -- SessionRows: update ----------------------------------------------------------------------


def test_update_renews_a_live_row_and_keeps_its_data_when_data_is_none(
    backend: Backend, ds: Any, users: tuple[Any, Any]
) -> None:
    ann_key, _ = users
    record, other = row("ann", ann_key, data='{"cart": 1}'), row("other", ann_key)
    insert(ds, record, other)
    later = NOW + 10 * MINUTE
    with backend.count() as counter:
        assert ds.rows.update(record.key, later, data=None, expires_at=later + HOUR) is True
    # Liveness is checked in the write itself, never by a read followed by a write.
    assert len(counter.writes) == 1 and reads_before_writing(counter) == [], counter.statements
    after = stored(ds)
    assert after[record.key] == (record.key, ann_key, '{"cart": 1}', record.created_at,
                                 later, later + HOUR, record.user_agent, record.ip_address)
    assert after[other.key] == fields(other)


def test_update_replaces_the_data_when_given(ds: Any) -> None:
    record = row("anonymous", data='{"cart": 1}')
    insert(ds, record)
    assert ds.rows.update(record.key, NOW, data='{"cart": 2}', expires_at=NOW + HOUR) is True
    loaded = ds.rows.load(record.key, NOW)
    assert loaded is not None and loaded[0].data == '{"cart": 2}'
    assert loaded[0].last_seen_at == NOW


def test_update_never_upserts_a_missing_or_dead_row(ds: Any, users: tuple[Any, Any]) -> None:
    ann_key, _ = users
    dead = row("dead", ann_key, expires_at=NOW)
    insert(ds, dead)
    before = stored(ds)
    for key in (session_key("missing"), dead.key):
        assert ds.rows.update(key, NOW, data='{"x": 1}', expires_at=NOW + HOUR) is False
        assert ds.rows.update(key, NOW, data=None, expires_at=NOW + HOUR) is False
    assert stored(ds) == before
    assert ds.rows.load(dead.key, NOW) is None


# -- SessionRows: delete, delete_owned, clear ---------------------------------------------------


def test_delete_returns_how_many_of_the_keys_were_stored(
    ds: Any, users: tuple[Any, Any]
) -> None:
    ann_key, _ = users
    live, dead, kept = row("live", ann_key), row("dead", expires_at=NOW), row("kept")
    insert(ds, live, dead, kept)
    assert ds.rows.delete([]) == 0
    assert ds.rows.delete([session_key("missing")]) == 0
    assert ds.rows.delete(iter([live.key, dead.key, session_key("missing")])) == 2
    assert set(stored(ds)) == {kept.key}
    assert ds.rows.delete([live.key]) == 0


def test_delete_owned_keeps_one_and_spares_other_users_and_anonymous_rows(
    ds: Any, users: tuple[Any, Any]
) -> None:
    ann_key, bob_key = users
    ann_rows = [row("ann1", ann_key), row("ann2", ann_key), row("ann3", ann_key, expires_at=NOW)]
    others = [row("bob", bob_key), row("anonymous")]
    insert(ds, *ann_rows, *others)
    assert ds.rows.delete_owned(ann_key, keep=ann_rows[0].key) == 2
    assert set(stored(ds)) == {ann_rows[0].key} | {r.key for r in others}
    assert ds.rows.delete_owned(ann_key, keep=session_key("not-hers")) == 1
    assert set(stored(ds)) == {r.key for r in others}
    assert ds.rows.delete_owned(ann_key) == 0
    assert ds.rows.delete_owned(bob_key, keep=others[1].key) == 1  # keep names Bob's rows only
    assert set(stored(ds)) == {others[1].key}


def test_clear_deletes_every_row_and_counts_them(ds: Any, users: tuple[Any, Any]) -> None:
    ann_key, _ = users
    insert(ds, row("ann", ann_key), row("dead", ann_key, expires_at=NOW), row("anonymous"))
    assert ds.rows.clear() == 3
    assert stored(ds) == {}
    assert ds.rows.clear() == 0


# -- SessionRows: find and count --------------------------------------------------------------


@pytest.fixture
def listed_rows(ds: Any, users: tuple[Any, Any]) -> dict[str, SessionRecord]:
    """Live and dead rows of Ann, Bob and anonymous visitors, with ties in last_seen_at."""
    ann_key, bob_key = users
    records = {
        "ann-recent": row("ann-recent", ann_key, last_seen_at=NOW - SECOND),
        "ann-tie-1": row("ann-tie-1", ann_key, last_seen_at=NOW - MINUTE),
        "ann-tie-2": row("ann-tie-2", ann_key, last_seen_at=NOW - MINUTE),
        "ann-dead": row("ann-dead", ann_key, expires_at=NOW, last_seen_at=NOW - SECOND),
        "bob": row("bob", bob_key, last_seen_at=NOW - 2 * MINUTE),
        "bob-dead": row("bob-dead", bob_key, expires_at=NOW - HOUR),
        "anonymous-1": row("anonymous-1", last_seen_at=NOW - MINUTE),
        "anonymous-2": row("anonymous-2", last_seen_at=NOW - HOUR),
        "anonymous-dead": row("anonymous-dead", expires_at=NOW - SECOND),
    }
    insert(ds, *records.values())
    return records


def _expected_order(records: list[SessionRecord]) -> list[tuple[Any, ...]]:
    by_key = sorted(records, key=lambda r: r.key)
    return [fields(r) for r in sorted(by_key, key=lambda r: r.last_seen_at, reverse=True)]


def test_find_returns_live_rows_most_recently_seen_first_then_by_key(
    ds: Any, listed_rows: dict[str, SessionRecord]
) -> None:
    live = [r for name, r in listed_rows.items() if not name.endswith("dead")]
    found = [fields(r) for r in ds.rows.find(NOW)]
    assert found == _expected_order(live)
    assert [fields(r) for r in ds.rows.find(NOW, owner=ANY_USER)] == found


def test_find_selects_by_owner(
    ds: Any, users: tuple[Any, Any], listed_rows: dict[str, SessionRecord]
) -> None:
    ann_key, bob_key = users

    def expected(prefix: str) -> list[tuple[Any, ...]]:
        return _expected_order([r for name, r in listed_rows.items()
                                if name.startswith(prefix) and not name.endswith("dead")])

    assert [fields(r) for r in ds.rows.find(NOW, owner=ann_key)] == expected("ann")
    assert [fields(r) for r in ds.rows.find(NOW, owner=bob_key)] == expected("bob")
    assert [fields(r) for r in ds.rows.find(NOW, owner=None)] == expected("anonymous")


def test_find_applies_offset_and_limit(
    ds: Any, users: tuple[Any, Any], listed_rows: dict[str, SessionRecord]
) -> None:
    ann_key, _ = users
    everything = [fields(r) for r in ds.rows.find(NOW)]
    assert len(everything) == 6
    assert [fields(r) for r in ds.rows.find(NOW, offset=1, limit=2)] == everything[1:3]
    assert [fields(r) for r in ds.rows.find(NOW, offset=4)] == everything[4:]
    assert [fields(r) for r in ds.rows.find(NOW, limit=1)] == everything[:1]
    assert ds.rows.find(NOW, offset=6) == []
    assert ds.rows.find(NOW, limit=0) == []
    ann = [fields(r) for r in ds.rows.find(NOW, owner=ann_key)]
    assert [fields(r) for r in ds.rows.find(NOW, owner=ann_key, offset=1, limit=1)] == ann[1:2]


def test_count_counts_live_or_expired_rows_with_the_same_selection(
    ds: Any, users: tuple[Any, Any], listed_rows: dict[str, SessionRecord]
) -> None:
    ann_key, bob_key = users
    assert ds.rows.count(NOW) == 6
    assert ds.rows.count(NOW, owner=ANY_USER) == 6
    assert ds.rows.count(NOW, expired=True) == 3
    assert ds.rows.count(NOW, owner=ann_key) == 3
    assert ds.rows.count(NOW, owner=ann_key, expired=True) == 1
    assert ds.rows.count(NOW, owner=bob_key) == 1
    assert ds.rows.count(NOW, owner=bob_key, expired=True) == 1
    assert ds.rows.count(NOW, owner=None) == 2
    assert ds.rows.count(NOW, owner=None, expired=True) == 1
    # The row expiring exactly now is dead; a second earlier it was live.
    assert ds.rows.count(NOW - SECOND, owner=ann_key) == 4
    assert ds.rows.count(NOW - SECOND, owner=ann_key, expired=True) == 0
    assert len(stored(ds)) == 9  # counting deletes nothing


# -- SessionRows: purge -----------------------------------------------------------------------


def test_purge_deletes_at_most_limit_dead_rows_and_spares_live_ones(
    backend: Backend, ds: Any, users: tuple[Any, Any]
) -> None:
    ann_key, _ = users
    dead = [row(f"dead-{i}", ann_key if i % 2 else None, expires_at=NOW - i * MINUTE)
            for i in range(5)]  # dead-0 expires exactly now
    live = [row("live", ann_key, expires_at=NOW + SECOND), row("live-anonymous")]
    insert(ds, *dead, *live)
    with backend.count() as counter:
        assert ds.rows.purge(NOW, 3) == 3
    assert len(counter.writes) == 1, counter.statements  # one statement per batch
    assert ds.rows.count(NOW, expired=True) == 2
    assert ds.rows.purge(NOW, 10) == 2
    assert ds.rows.purge(NOW, 10) == 0
    assert set(stored(ds)) == {r.key for r in live}


def test_purge_spares_a_row_renewed_before_it(ds: Any) -> None:
    renewed, left = row("renewed", expires_at=NOW), row("left", expires_at=NOW)
    insert(ds, renewed, left)
    assert ds.rows.update(renewed.key, NOW - SECOND, data=None, expires_at=NOW + HOUR)
    assert ds.rows.purge(NOW, 10) == 1
    assert set(stored(ds)) == {renewed.key}


def test_purge_batch_is_a_positive_number_of_rows(ds: Any) -> None:
    batch = ds.rows.purge_batch
    assert isinstance(batch, int) and not isinstance(batch, bool) and batch > 0


# -- the fixtures themselves ------------------------------------------------------------------


def test_the_plain_fixtures_use_the_orm_rows_with_no_cache(ds: Any) -> None:
    # Every test above checks the translator's own rows: no cache layer is configured.
    assert ds.cache is None
