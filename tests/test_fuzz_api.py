"""Bad input, fuzzed on every ORM and database: the datastore API, the test app's login
form and the example app's register and login forms.

The standard: a call either works or raises one of the library's errors (a
:class:`~flask_sessionstore.SessionStoreError`), or, for a value of the wrong Python
type (an int, bytes, a list... where a string belongs), a ``TypeError`` or
``ValueError``; never a driver's or an ORM's own exception. After a failure nothing is
half-written: the numbers of users, roles and role links are what they were, and the
datastore goes on working. A form answers 2xx, 3xx or 4xx, never 5xx.

Every example starts from empty user, role and link tables, so that an example
hypothesis replays (to shrink a failure) meets the same database.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_sessionstore import (
    DatastoreUnavailableError,
    SessionStoreError,
    UnknownRoleError,
    UserExistsError,
)

from .backends import Backend, fast_hasher, own_database, server_url

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
    ],
)

# -- what is sent -----------------------------------------------------------------------

#: Strings that have broken, or could break, a query, a driver or a comparison: SQL and
#: NoSQL fragments, LIKE and regular-expression characters, NUL and other controls,
#: letters whose case folding is special, and whitespace that some collations ignore.
FRAGMENTS = [
    "",
    " ",
    "' OR '1'='1",
    "'; DROP TABLE user; --",
    "admin'--",
    '{"$gt": ""}',
    '{"$ne": null}',
    "$where",
    "%",
    "_",
    "\\",
    ".*",
    "^a$",
    "\x00",
    "a\x00b",
    "\\x00",
    "%00",
    "\t\r\n",
    "\x7f\x1b",
    "ann@example.com ",
    "ANN@EXAMPLE.COM",
    "\u0130",  # İ: lower() gives two code points
    "\u00df",  # ß: equal to "ss" in some collations
    "e\u0301",  # e and a combining accent
    "\ufeff",
    "\U0001f600",
    "1",
    "-1",
    "99999999999999999999999",
]

#: Strings only Python code can make: a lone surrogate is a str that no UTF-8 encodes,
#: so no request can carry one, but a caller of the API can pass one.
UNENCODABLE = ["\ud800", "a\udfffb"]

#: About 10 KB: longer than any column the seeds declare.
LONG = [
    "A" * 10_000,
    "\u00e9" * 5_000,
    "\U0001f600" * 2_500,
    "a@" + "b" * 10_000 + ".com",
]

texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(FRAGMENTS + UNENCODABLE),
    st.sampled_from(LONG),
    st.text(min_size=1, max_size=4).map(lambda s: (s * 10_000)[:10_000]),
)

#: Values of a type no string column holds.
wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.binary(max_size=12),
    st.lists(st.text(max_size=6), max_size=3),
    st.dictionaries(st.sampled_from(["$gt", "$ne", "$regex", "$where", "a"]),
                    st.text(max_size=6), max_size=2),
)

anything = st.one_of(texts, wrong_types)


def _wrong_type(*values: Any) -> bool:
    return any(value is not None and not isinstance(value, str) for value in values)


# -- the database, read directly -------------------------------------------------------


def census(backend: Backend) -> tuple[int, int, int]:
    """Return how many users, roles and user-role links are stored, read through the
    ORM's own session (so that work a failure left pending in it counts too)."""
    if backend.orm == "sqlalchemy":
        import sqlalchemy as sa

        session = backend.db.session  # type: ignore[attr-defined]
        link = backend.db.metadata.tables["roles_users"]  # type: ignore[attr-defined]

        def count(table: Any) -> int:
            return int(session.scalar(sa.select(sa.func.count()).select_from(table)))

        return (count(backend.User.__table__), count(backend.Role.__table__), count(link))
    if backend.orm == "peewee":
        links = backend.UserRoles  # type: ignore[attr-defined]
        return (backend.User.select().count(), backend.Role.select().count(),
                links.select().count())
    if backend.orm == "pony":
        from pony import orm

        users = orm.count(u for u in backend.User)
        links = orm.count((u, r) for u in backend.User for r in u.roles)
        return users, orm.count(r for r in backend.Role), links
    collection = backend.User._get_collection()
    links = sum(len(son.get("roles") or ()) for son in collection.find({}, {"roles": True}))
    return (collection.count_documents({}),
            backend.Role._get_collection().count_documents({}), links)


def reset(backend: Backend, ds: Any) -> None:
    """Empty the session, link, user and role tables; undo what a failure left pending."""
    ds.rollback()
    ds.sessions.delete_all()
    if backend.orm == "sqlalchemy":
        import sqlalchemy as sa

        db = backend.db  # type: ignore[attr-defined]
        db.session.execute(sa.delete(db.metadata.tables["roles_users"]))
        db.session.execute(sa.delete(backend.User.__table__))
        db.session.execute(sa.delete(backend.Role.__table__))
        db.session.commit()
    elif backend.orm == "peewee":
        for model in (backend.UserRoles, backend.User, backend.Role):  # type: ignore[attr-defined]
            model.delete().execute()
    elif backend.orm == "pony":
        from pony import orm

        for entity in (backend.User, backend.Role):
            for found in entity.select()[:]:
                found.delete()
        orm.commit()
    else:
        backend.User._get_collection().delete_many({})
        backend.Role._get_collection().delete_many({})
    assert census(backend) == (0, 0, 0)


def attempt(call: Callable[[], Any], *, wrong_type: bool) -> tuple[bool, Any]:
    """Run ``call``; return (True, its result), or (False, the error) when it raised a
    library error, or a TypeError or ValueError for a value of the wrong type. Any
    other error propagates: that is the failure this file looks for. So does
    :class:`DatastoreUnavailableError`: the database is up, and bad input must not be
    answered as if it were down (a 503 that invites the client to try again)."""
    try:
        return True, call()
    except DatastoreUnavailableError:
        raise
    except SessionStoreError as exc:
        return False, exc
    except (TypeError, ValueError) as exc:
        if not wrong_type:
            raise
        return False, exc


# -- the datastore API -----------------------------------------------------------------


@FUZZ
@given(email=anything, password=anything)
@example(email="A" * 10_000, password=None)  # too long for the column
@example(email="", password="0")  # Pony refuses an empty required string
@example(email=[], password="0")  # Peewee sends a list as "()"
@example(email=False, password="0")  # PostgreSQL: text = boolean
@example(email="0" * 10_000, password="0")  # int() refuses over 4300 digits
@example(email=" ann@example.com\r", password="pw")  # Pony stores it stripped
@example(email="\u0130", password="pw")  # İ: Python lowers it to "i̇", PostgreSQL to "i"
@example(email="\u0391\u03a3@example.com", password="pw")  # final sigma: Python and SQL differ
def test_create_user_stores_a_user_or_nothing(
    backend: Backend, ds: Any, email: Any, password: Any
) -> None:
    reset(backend, ds)
    ds.create_role(name="member")
    fields = {"email": email, "password": password}
    # None is no email at all, which a model may refuse; no password is allowed.
    wrong = not isinstance(email, str) or _wrong_type(password)
    before = census(backend)
    done, user = attempt(lambda: ds.create_user(roles=["member"], **fields), wrong_type=wrong)
    if not done:
        assert census(backend) == before, user
        return
    assert census(backend) == (before[0] + 1, before[1], before[2] + 1)
    if isinstance(email, str) and email:
        found = ds.find_user(email=email)
        assert found is not None and ds.user_pk(found) == ds.user_pk(user)
        # The same email again is refused and stores nothing; so is another case of an
        # ASCII one. (Beyond ASCII, Python's lower() and the database's may disagree:
        # "İ" is "i̇" in Python, "i" in PostgreSQL; which case variants are the same
        # email then depends on the database.)
        variants = {email, email.upper(), email.lower()} if email.isascii() else {email}
        for again in variants:
            with pytest.raises(UserExistsError):
                ds.create_user(email=again, password="another password")
            assert census(backend) == (before[0] + 1, before[1], before[2] + 1)
    if isinstance(password, str) and ds.get_user(email) is not None and ds.user_pk(
        ds.get_user(email)
    ) == ds.user_pk(user):
        assert ds.authenticate(email, password) is not None
    # Still usable: an ordinary user can be added.
    ds.create_user(email=f"{uuid.uuid4().hex}@example.com", password="pw")
    assert census(backend)[0] == before[0] + 2


@FUZZ
@given(confirmed_at=st.one_of(
    st.datetimes(), texts, st.none(), st.booleans(), st.integers(), st.floats()
))
@example(confirmed_at="not a date")  # MariaDB: error 1292, an OperationalError
@example(confirmed_at="")  # SQLite's DateTime in SQLAlchemy: a StatementError
@example(confirmed_at="2024-02-30 25:61:00")
@example(confirmed_at=2**64)  # sqlite3: OverflowError, outside the DB-API errors
@example(confirmed_at=datetime(999, 12, 31))  # before MariaDB's DATETIME: error 1292
@example(confirmed_at=float("inf"))  # PyMySQL: "inf can not be used with MySQL"
def test_create_user_with_any_confirmed_at(
    backend: Backend, ds: Any, confirmed_at: Any
) -> None:
    # A field the library knows nothing of, of another type than str: what the model
    # and the database make of a value is theirs, but a refusal is a library error.
    # Scalars only, as a form or a JSON value brings them: a list sent for a column that
    # is no string reaches MySQL as SQL ("()"), which no translation can tell from a bug
    # of the library (string columns, above, do get lists and dicts).
    reset(backend, ds)
    done, user = attempt(
        lambda: ds.create_user(email="ann@example.com", password="pw",
                               confirmed_at=confirmed_at),
        wrong_type=not isinstance(confirmed_at, datetime | None),
    )
    assert census(backend) == ((1, 0, 0) if done else (0, 0, 0)), user
    ds.create_user(email="bob@example.com", password="pw")  # still usable


@FUZZ
@given(name=anything, description=anything, permissions=st.one_of(anything, st.lists(texts,
       max_size=3)))
@example(name="reports", description=None, permissions=["read\x00write"])
@example(name="A" * 10_000, description=None, permissions="")
@example(name="0", description="A" * 10_000, permissions="")
@example(name=" ", description="", permissions=None)  # Pony strips it to ""
@example(name="0 ", description="", permissions=None)  # and this to "0"
@example(name="0", description=[], permissions="")
@example(name="0", description={"$gt": ""}, permissions=None)
def test_create_role_stores_a_role_or_nothing(
    backend: Backend, ds: Any, name: Any, description: Any, permissions: Any
) -> None:
    reset(backend, ds)
    fields: dict[str, Any] = {"name": name, "description": description}
    if permissions is not None:
        fields["permissions"] = permissions
    wrong = _wrong_type(name, description) or not (
        isinstance(permissions, str | None)
        or (isinstance(permissions, list) and not _wrong_type(*permissions))
    )
    done, role = attempt(lambda: ds.create_role(**fields), wrong_type=wrong)
    if not done:
        assert census(backend) == (0, 0, 0), role
        return
    assert census(backend) == (0, 1, 0)
    assert ds.find_role(name) is not None
    # The same name again is refused.
    done, error = attempt(lambda: ds.create_role(name=name), wrong_type=False)
    assert not done and census(backend) == (0, 1, 0), error


@FUZZ
@given(permissions=st.one_of(anything, st.lists(anything, max_size=3)))
@example(permissions="read\x00write")
@example(permissions=["a" * 10_000])  # Pony on MariaDB: at most 255 characters
@example(permissions="\ud800")
def test_add_permissions_to_role_changes_the_role_or_nothing(
    backend: Backend, ds: Any, permissions: Any
) -> None:
    reset(backend, ds)
    ds.create_role(name="editor", permissions=["posts.read"])
    wrong = not (isinstance(permissions, str)
                 or (isinstance(permissions, list) and not _wrong_type(*permissions)))
    done, changed = attempt(lambda: ds.add_permissions_to_role("editor", permissions),
                            wrong_type=wrong)
    role = ds.find_role("editor")
    if not done:
        assert role.get_permissions() == {"posts.read"}, changed
        return
    # What was added can be read back, and checked.
    stored = role.get_permissions()
    assert "posts.read" in stored
    assert changed == (stored != {"posts.read"})
    if isinstance(permissions, str):
        assert stored >= {name for name in permissions.replace(",", " ").split()}


@FUZZ
@given(identifier=anything, password=anything)
@example(identifier='{"$gt": ""}', password='{"$gt": ""}')
@example(identifier={"$ne": None}, password={"$ne": None})
@example(identifier="ann@example.com\x00", password="pw")
@example(identifier=2**70, password="pw")
@example(identifier="0" * 10_000, password="pw")
@example(identifier=[], password=None)
@example(identifier=["", ""], password=None)
@example(identifier=False, password=None)
@example(identifier="\ud800", password="\ud800")
def test_lookups_find_the_user_or_nobody(
    backend: Backend, ds: Any, identifier: Any, password: Any
) -> None:
    reset(backend, ds)
    ann = ds.create_user(email="ann@example.com", password="ann password")
    wrong = _wrong_type(identifier)
    candidates = [
        lambda: ds.get_user(identifier),
        lambda: ds.authenticate(identifier, password),
        lambda: ds.find_role(identifier),
    ]
    for call in candidates:
        # These take any value: an identifier from a form, a token's payload. None of
        # them may fail, whatever it is.
        assert call() in (None, ann)
    for case_insensitive in (False, True):
        done, found = attempt(
            lambda c=case_insensitive: ds.find_user(case_insensitive=c, email=identifier),
            wrong_type=wrong,
        )
        assert not done or found in (None, ann), found
    done, _ = attempt(lambda: ds.create_session(identifier, password), wrong_type=True)
    if done and identifier is not None:  # None asks for an anonymous session
        # Only Ann's own password opens a session, and only by an identifier that is hers.
        assert password == "ann password" and ds.get_user(identifier) == ann
    assert census(backend) == (1, 0, 0)


@FUZZ
@given(name=anything)
@example(name="admin\x00")
@example(name="ADMIN")
@example(name=123)
@example(name=2**31)
@example(name={})
@example(name=[])
@example(name=b"")
def test_add_role_to_user_with_unknown_role_names(backend: Backend, ds: Any, name: Any) -> None:
    reset(backend, ds)
    ds.create_role(name="admin")
    user = ds.create_user(email="ann@example.com", password="pw")
    done, granted = attempt(lambda: ds.add_role_to_user(user, name), wrong_type=_wrong_type(name))
    if done:
        # Only the name of the role itself grants it (MariaDB's collation may equate
        # others: "ADMIN", "admin ").
        assert granted is True and census(backend) == (1, 1, 1)
        assert ds.find_role(name) is not None
        return
    if isinstance(name, str):
        assert isinstance(granted, UnknownRoleError), granted
    assert census(backend) == (1, 1, 0)
    done, created = attempt(
        lambda: ds.create_user(email="bob@example.com", password="pw", roles=["admin", name]),
        wrong_type=_wrong_type(name),
    )
    assert census(backend) == ((2, 1, 1) if done else (1, 1, 0)), created


# -- the test app's login form ---------------------------------------------------------

form_values = st.one_of(
    st.none(),  # the field is missing
    st.text(max_size=30),
    st.sampled_from(FRAGMENTS),
    st.sampled_from(LONG),
)


def _form(**values: str | None) -> dict[str, str]:
    return {name: value for name, value in values.items() if value is not None}


@FUZZ
@given(email=form_values, password=form_values, remember=st.sampled_from([None, "1", "x"]))
@example(email="ann@example.com", password="ann password", remember="1")
@example(email="ann@example.com\x00", password="ann password", remember=None)
@example(email=None, password=None, remember=None)
def test_login_form_answers_200_or_4xx(
    backend: Backend, app: Flask, ds: Any, email: str | None, password: str | None,
    remember: str | None,
) -> None:
    reset(backend, ds)
    ds.create_user(email="ann@example.com", password="ann password")
    response = app.test_client().post(
        "/login", data=_form(email=email, password=password, remember=remember)
    )
    assert response.status_code in (200, 400, 401), response.status_code
    rows = backend.session_rows()
    if response.status_code == 200:
        assert password == "ann password" and len(rows) == 1
    else:
        assert rows == []


# -- the example app ---------------------------------------------------------------------

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
EXAMPLE_DATABASES = ["sqlite", "postgresql", "mariadb"]


@pytest.fixture(params=EXAMPLE_DATABASES)
def example_site(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    """The example app on SQLAlchemy, on SQLite and on each server configured."""
    from example_app import create_app

    for name in list(os.environ):
        if name.startswith(("EXAMPLE_", "FLASK_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    config: dict[str, Any] = {
        "TESTING": True, "INSTANCE_PATH": tmp_path / "instance", "EXAMPLE_ORM": "sqlalchemy",
        "EXAMPLE_PASSWORD_HASHER": fast_hasher(), "EXAMPLE_ADMIN_PASSWORD": "admin password",
    }
    if request.param != "sqlite":
        url = server_url(request.param)
        if url is None:
            pytest.skip(f"{request.param} not configured")
        config["DATABASE_URL"] = own_database(url, "sessionstore_fuzz_example")
    app = create_app(config)
    backend = app.extensions["example_backend"]
    try:
        yield app
    finally:
        with app.app_context():
            backend.db.session.remove()
            backend.db.drop_all()
            backend.db.engine.dispose()


def _emails(app: Flask) -> list[str]:
    backend = app.extensions["example_backend"]
    with app.app_context():
        return [user.email for user in backend.users()]


def _csrf(client: Any, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    found = _TOKEN.search(response.get_data(as_text=True))
    assert found is not None
    return found.group(1)


@FUZZ
@given(email=form_values, password=form_values, confirm=st.one_of(st.just("same"), form_values))
@example(email="new\x00@example.com", password="long enough", confirm="same")
@example(email="new@example.com", password="x" * 2_000, confirm="same")
@example(email="admin@example.com", password="long enough", confirm="same")
@example(email=None, password=None, confirm=None)
def test_example_register_answers_without_5xx(
    example_site: Flask, email: str | None, password: str | None, confirm: str | None
) -> None:
    if confirm == "same":
        confirm = password
    before = _emails(example_site)
    client = example_site.test_client()
    data = _form(email=email, password=password, confirm=confirm)
    response = client.post("/register", data={"csrf_token": _csrf(client, "/register"), **data})
    assert response.status_code in (302, 400), response.status_code
    after = _emails(example_site)
    if response.status_code == 400:
        assert after == before
    else:
        assert len(after) == len(before) + 1
        # Remove the new account, so that every example meets the same database.
        backend = example_site.extensions["example_backend"]
        with example_site.app_context():
            for user in backend.users():
                if user.email not in before:
                    backend.datastore.delete_user(user)


@FUZZ
@given(email=form_values, password=form_values, next_url=form_values)
@example(email="admin@example.com", password="admin password", next_url="//evil.example")
@example(email="admin@example.com\x00", password="admin password", next_url=None)
@example(email="1", password="admin password", next_url="\x00")
def test_example_login_answers_without_5xx(
    example_site: Flask, email: str | None, password: str | None, next_url: str | None
) -> None:
    client = example_site.test_client()
    data = _form(email=email, password=password, next=next_url)
    response = client.post("/login", data={"csrf_token": _csrf(client, "/login"), **data})
    assert response.status_code in (302, 400, 401), response.status_code
    if response.status_code == 302:
        # Logged in, and sent somewhere on this site, whatever "next" said.
        assert password == "admin password"
        target = urlsplit(response.location)
        assert target.scheme in ("", "http") and target.netloc in ("", "localhost"), target
