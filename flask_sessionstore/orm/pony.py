"""The datastore for Pony ORM: users and roles through Pony in the caller's ``db_session``
(or a short one of its own); session rows in plain SQL on its connection, never cached
as objects, so no row another request changed is served stale. Pony's internals are met
in ``_pony_internals`` only."""

from __future__ import annotations

import builtins
import functools
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar, cast

from pony import orm
from pony.orm.core import PartialCommitException

from ..contract import ModelStore
from ..datastore import UserDatastore
from ..exceptions import DatastoreUnavailableError, DuplicateError, SessionStoreError
from ..records import KeyKind
from . import _pony_internals as internals
from ._dbapi import translate
from .pony_rows import SESSION_FIELDS, PonyRows, SessionTable

__all__ = ["SESSION_ENTITY_NAME", "PonyUserDatastore", "session_entity_for"]

U = TypeVar("U")
R = TypeVar("R")

#: The name of the session entity the datastore declares on ``db``, and its table.
SESSION_ENTITY_NAME = "SessionStoreSession"
SESSION_TABLE = "sessionstore_session"
#: The attribute added to the user entity: Pony requires both sides of a relationship.
REVERSE_ATTRIBUTE = "sessionstore_sessions"

_TOO_LATE = (
    "PonyUserDatastore must be created before db.generate_mapping(): it declares the entity "
    f"{SESSION_ENTITY_NAME} (table {SESSION_TABLE}) for the session rows, and Pony maps every "
    "entity at once. Create the datastore right after your entity classes, then call "
    "db.bind(...) and db.generate_mapping(create_tables=True). (Or call flask_sessionstore."
    "orm.pony.session_entity_for(db, User) before generate_mapping() and pass what it "
    "returns as session_entity=.)")


def session_entity_for(db: Any, user_model: type[Any]) -> Any:
    """Return the session entity of ``db``, declaring it on first use.

    The entity ``SessionStoreSession`` (table ``sessionstore_session``) references
    ``user_model`` by ``user_id``, a foreign key cascading on delete; the reverse side
    Pony requires, ``sessionstore_sessions`` (a cascading ``Set``), is added to
    ``user_model``, not to its source.

    :raises RuntimeError: when ``db``'s mapping was generated before.
    """
    if SESSION_ENTITY_NAME in db.entities:
        return db.entities[SESSION_ENTITY_NAME]
    if db.schema is not None:
        raise RuntimeError(_TOO_LATE)
    internals.check_entity(db, user_model, "user_model")
    if internals.has_attribute(user_model, REVERSE_ATTRIBUTE):
        raise SessionStoreError(
            f"{user_model.__name__} already has an attribute {REVERSE_ATTRIBUTE!r}; declare "
            "your own session entity and pass it as session_entity=.")
    entity = type(SESSION_ENTITY_NAME, (db.Entity,), {
        "__module__": __name__,
        "__doc__": "A server-side session: one row per live session id (stored hashed).",
        "_table_": SESSION_TABLE,
        "key": orm.PrimaryKey(str, 64),
        "user": orm.Optional(user_model, column="user_id", index=True,
                             reverse=REVERSE_ATTRIBUTE),
        "data": orm.Required(orm.LongStr),
        # Microseconds everywhere: MariaDB's DATETIME drops them unless asked.
        "created_at": orm.Required(datetime, precision=6),
        "last_seen_at": orm.Required(datetime, precision=6),
        "expires_at": orm.Required(datetime, precision=6, index=True),
        "user_agent": orm.Optional(str, 512, nullable=True),
        "ip_address": orm.Optional(str, 45, nullable=True),
        "stamp": orm.Optional(str, 64, nullable=True),
    })
    internals.add_attribute(user_model, REVERSE_ATTRIBUTE,
                            orm.Set(entity, reverse="user", cascade_delete=True))
    return entity


class PonyModels(ModelStore[U, R]):
    """Users and roles over Pony, each call in the caller's ``db_session`` or its own."""

    def __init__(self, db: Any, user_model: type[U], role_model: type[R],
                 session_entity: Any) -> None:
        internals.check_entity(db, user_model, "user_model", single_key=True)
        internals.check_entity(db, role_model, "role_model")
        session_entity = session_entity or session_entity_for(db, user_model)
        internals.check_entity(db, session_entity, "session_entity", needs=SESSION_FIELDS)
        self.db, self.user_model, self.role_model = db, user_model, role_model
        self.session_entity = session_entity
        self._pk = internals.primary_key(user_model)[0]
        # True inside unit(): session rows written then are part of it.
        self._in_unit = ContextVar(f"sessionstore_pony_{id(self)}", default=False)

    @functools.cached_property  # read-only: known once the mapping exists
    def key_kind(self) -> KeyKind:  # type: ignore[override]
        """The kind of the user entity's key, with its column's range or length."""
        self._table  # noqa: B018  # Pony's converters (which tell) exist with the mapping
        return _key_kind(self._pk)

    @functools.cached_property
    def _table(self) -> SessionTable:
        # Kept once made; until the mapping exists, each use raises again.
        if self.db.schema is None:
            raise RuntimeError(
                "The Pony mapping is not generated yet: call db.bind(...) and "
                "db.generate_mapping(create_tables=True) before using the datastore.")
        return SessionTable.build(self.db, self.session_entity, self.user_model,
                                            SESSION_FIELDS)

    def init_app(self, app: Any) -> None:
        """Run each request of ``app`` in a ``db_session`` (or the one open already), from
        before any ``before_request`` function to its teardown, which commits it."""
        internals.db_session_per_request(app, self.db, f"flask_sessionstore.pony.{id(self)}")

    def scope(self) -> AbstractContextManager[None]:
        """The caller's ``db_session``, or a new one."""
        return cast(AbstractContextManager[None], orm.db_session)

    def adopt(self, value: Any) -> Any:
        """Read entities of an ended ``db_session`` (in a list or not) into this one."""
        return internals.attached(value, self.db)

    @contextmanager
    def unit(self) -> Iterator[None]:
        """A unit of work in the caller's ``db_session`` (or one of its own), joined by
        a unit inside it. Pony gives the ``db_session`` one connection: session rows
        written inside are part of it, and it commits all the ``db_session`` holds."""
        if self._in_unit.get():
            yield
            return
        token = self._in_unit.set(True)
        try:
            with self._work():
                try:
                    yield
                    self.db.commit()
                except BaseException:
                    self._safe_rollback()
                    raise
        finally:
            self._in_unit.reset(token)

    @contextmanager
    def _work(self) -> Iterator[None]:
        # The caller's db_session, or a short one (whose commit at the end is translated).
        try:
            with orm.db_session:
                yield
        except (orm.OrmError, orm.DBException) as exc:
            error = _error_of(exc)
            if error is None:
                raise
            # On every database, as PostgreSQL has done already; Pony then drops a dead
            # connection, and the next call reconnects.
            self._safe_rollback()
            raise error from exc

    def _safe_rollback(self) -> None:
        with suppress(orm.OrmError, orm.DBException):
            self.db.rollback()

    def rollback(self) -> None:
        self.db.rollback()

    def put(self, model: Any) -> Any:
        with self._work():
            self.db.flush()
        return model

    def delete(self, model: Any) -> None:  # with its role links, and a user's sessions
        with self._work():
            self.adopt(model).delete()
            self.db.flush()

    def find_user(self, criteria: dict[str, Any], *, case_insensitive: bool = False) -> U | None:
        for name in criteria:
            if not internals.is_column(self.user_model, name):
                raise SessionStoreError(f"{self.user_model.__name__}.{name} is not a column.")
        with self._work():
            query = cast(Any, self.user_model).select()
            # Pony reads a lambda's outer names when filter() is called: each filter keeps
            # the name and value of its own turn of the loop.
            for name, value in criteria.items():
                if isinstance(value, str) and _autostrip(getattr(self.user_model, name)):
                    value = value.strip()  # as stored, or " ann@example.com" finds no Ann
                if case_insensitive and isinstance(value, str):
                    query = query.filter(lambda u: getattr(u, name).lower() == value)  # noqa: B023
                else:
                    query = query.filter(lambda u: getattr(u, name) == value)  # noqa: B023
            return cast("U | None", query.first())

    def get_user(self, key: Any) -> U | None:
        # With its roles in one SELECT, as a session's user comes (the cache reads it so).
        load = self._table.user_load
        with self._work():
            return cast("U | None", load.user(self.db.select(
                load.sql, {}, {"pk": self._table.value("user", key)})))

    def find_role(self, name: str) -> R | None:
        role_model = cast(Any, self.role_model)
        if _autostrip(role_model.name):
            name = name.strip()  # as Pony stores it (see find_user)
        with self._work():
            return cast("R | None", role_model.select(lambda r: r.name == name).first())

    def list(self, model: type[Any], offset: int, limit: int | None) -> Sequence[Any]:
        with self._work():
            query = cast(Any, model).select().order_by(*internals.primary_key(model))
            return builtins.list(query[offset:None if limit is None else offset + limit])

    def key_of(self, user: U) -> Any:
        if getattr(user, self._pk.name) is None:  # a new user gets its key when written
            with self._work():
                self.db.flush()
        return getattr(user, self._pk.name)

    def roles_of(self, user: U) -> Iterable[R]:
        try:
            return builtins.list(getattr(user, "roles", ()))
        except orm.DatabaseSessionIsOver:
            # Read whole into this call's db_session: the names stay readable after it.
            with self._work():
                return builtins.list(self.adopt(user).roles.select())

    def link(self, user: U, role: R) -> None:
        with self._work():
            self.adopt(user).roles.add(self.adopt(role))
            self.db.flush()

    def unlink(self, user: U, role: R) -> None:
        with self._work():
            self.adopt(user).roles.remove(self.adopt(role))
            self.db.flush()


class PonyUserDatastore(UserDatastore[U, R]):
    """The datastore over Pony ORM: ``PonyUserDatastore(db, User, Role)``.

    Create it after the entity classes and before ``db.generate_mapping()``: it declares
    the session entity on ``db``, whose table the mapping creates with yours.

    :param session_entity: your own entity for the session rows, with the attributes of
        the one :func:`session_entity_for` declares (by default, that one).

    Other keyword arguments are those of :class:`~flask_sessionstore.UserDatastore`.
    Each method runs in the caller's ``db_session``, or in one of its own: what it
    returns is then read-only, as Pony makes every object of an ended ``db_session``;
    such objects passed to a method are read again.
    """

    user_model: type[U]
    role_model: type[R]

    def __init__(self, db: Any, user_model: type[U], role_model: type[R], *,
                 session_entity: Any = None, **options: Any) -> None:
        models = PonyModels(db, user_model, role_model, session_entity)
        super().__init__(models, PonyRows(models), **options)
        #: The Pony ``Database``, and the entity of the session rows.
        self.db = db
        self.session_entity = models.session_entity


def _error_of(exc: BaseException) -> Exception | None:
    """Return the library's error for one of Pony's (see ``orm/_dbapi.py``), or None.

    Pony wraps the driver's error (and its own) in a few layers, a failed commit or
    rollback keeping the ``sys.exc_info()`` of what failed: the innermost tells what
    happened. Pony's own unique index (in its cache) reports a duplicate itself.
    """
    for _ in range(5):  # wrappers nest a few levels at most
        if isinstance(exc, (orm.CommitException, PartialCommitException,
                            orm.RollbackException)) and exc.exceptions:
            exc = exc.exceptions[0][1]
        elif isinstance(exc, (orm.UnexpectedError, orm.TransactionIntegrityError)) \
                and exc.original_exc is not None:
            exc = exc.original_exc
        else:
            break
    if isinstance(exc, (orm.CacheIndexError, orm.TransactionIntegrityError)):
        return DuplicateError(str(exc))
    if isinstance(exc, orm.ConnectionClosedError):
        return DatastoreUnavailableError(str(exc))
    return translate(exc)


def _key_kind(attribute: Any) -> KeyKind:
    """Return the kind of the primary key ``attribute``: an int column's range (32 bits
    unless declared with ``size=64``), a str column's length."""
    py_type, converter = attribute.py_type, attribute.converters[0]
    if py_type is int:
        return KeyKind.integer(converter.min_val, converter.max_val)
    if py_type is str:
        return KeyKind.text(getattr(converter, "max_len", None) or None)
    return KeyKind.uuid() if py_type is uuid.UUID else KeyKind(py_type)


def _autostrip(attribute: Any) -> bool:
    """Return whether Pony strips a string stored in ``attribute`` (its default)."""
    converters = attribute.converters
    return bool(converters) and bool(getattr(converters[0], "autostrip", False))
