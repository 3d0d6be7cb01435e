"""The datastore for Pony ORM.

Users and roles are the application's own entities, read and written through Pony in
the caller's ``db_session`` (or a short one of the datastore's own when there is none).
Session rows live in an entity the datastore declares on ``db``; they are read and
written with plain SQL on the ``db_session``'s connection, never cached as entity
objects, so that a row another request changed is never served stale from Pony's cache.
The user and its roles come in the same SELECT as the session row.

Pony needs every entity before :meth:`pony.orm.Database.generate_mapping`, so the
datastore must be created before the mapping (see :class:`PonyUserDatastore`).
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import flask
from pony import orm
from pony.orm import core as pony_core
from pony.orm import dbapiprovider

from ..datastore import ANY_USER, SessionRecord, UserDatastore
from ..exceptions import ConstraintError, DatastoreUnavailableError, SessionStoreError

__all__ = ["SESSION_ENTITY_NAME", "PonyUserDatastore", "session_entity_for"]

#: The name of the session entity the datastore declares on ``db``.
SESSION_ENTITY_NAME = "SessionStoreSession"
#: Its table.
SESSION_TABLE = "sessionstore_session"
#: The attribute added to the user entity: Pony requires both sides of a relationship.
REVERSE_ATTRIBUTE = "sessionstore_sessions"
#: The session entity's attributes, in the order of :class:`SessionRecord`.
_FIELDS = (
    "key", "user", "data", "created_at", "last_seen_at", "expires_at", "user_agent",
    "ip_address",
)

_TOO_LATE = (
    "PonyUserDatastore must be created before db.generate_mapping(): it declares the "
    f"entity {SESSION_ENTITY_NAME} (table {SESSION_TABLE}) for the session rows, and Pony "
    "maps every entity at once. Create the datastore right after your entity classes, "
    "then call db.bind(...) and db.generate_mapping(create_tables=True). (Or call "
    "flask_sessionstore.orm.pony.session_entity_for(db, User) before generate_mapping() "
    "and pass what it returns as session_entity=.)"
)


def session_entity_for(db: Any, user_model: type[Any]) -> Any:
    """Return the session entity of ``db``, declaring it on first use.

    The entity ``SessionStoreSession`` maps the table ``sessionstore_session``; its
    ``user`` attribute references ``user_model`` through the column ``user_id``, with a
    foreign key that cascades on delete. Declaring it also adds the reverse attribute
    ``sessionstore_sessions`` (a ``Set`` with ``cascade_delete=True``) to
    ``user_model``, which Pony requires for every relationship: the model's source is
    unchanged, and deleting a user deletes its sessions, however it is deleted.

    :raises RuntimeError: when ``db``'s mapping was already generated and the entity
        was not declared before.
    """
    existing = db.entities.get(SESSION_ENTITY_NAME)
    if existing is not None:
        return existing
    if db.schema is not None:
        raise RuntimeError(_TOO_LATE)
    _check_entity(db, user_model, "user_model")
    if REVERSE_ATTRIBUTE in user_model.__dict__ or REVERSE_ATTRIBUTE in user_model._adict_:
        raise SessionStoreError(
            f"{user_model.__name__} already has an attribute {REVERSE_ATTRIBUTE!r}; declare "
            "your own session entity and pass it as session_entity=."
        )
    attributes: dict[str, Any] = {
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
    }
    entity = type(SESSION_ENTITY_NAME, (db.Entity,), attributes)
    _add_attribute(user_model, REVERSE_ATTRIBUTE,
                   orm.Set(entity, reverse="user", cascade_delete=True))
    return entity


def _add_attribute(entity: Any, name: str, attribute: Any) -> None:
    # Pony reads an entity's attributes from its class body, and has no public way to
    # add one later. Until generate_mapping() the attribute lists below are all it keeps
    # (columns, bits and SQL are derived at mapping time), so appending to them is what
    # the class statement would have done.
    attribute._init_(entity, name)
    setattr(entity, name, attribute)
    entity._new_attrs_.append(attribute)
    entity._attrs_.append(attribute)
    entity._adict_[name] = attribute
    entity._attrnames_cache_.clear()
    for subclass in entity._subclasses_:
        subclass._attrs_.insert(len(subclass._base_attrs_), attribute)
        subclass._base_attrs_.append(attribute)
        subclass._adict_[name] = attribute
        subclass._attrnames_cache_.clear()


def _check_entity(db: Any, model: Any, name: str) -> None:
    if not isinstance(model, pony_core.EntityMeta) or model._database_ is not db:
        raise SessionStoreError(f"{name} must be an entity of this Pony Database, not {model!r}.")


class _Rows:
    """The little of a DB-API cursor that Pony's row parser reads."""

    def __init__(self, rows: Sequence[Any]) -> None:
        self._rows = list(rows)

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchmany(self, size: int) -> list[Any]:
        return self._rows[:size]


@dataclass(frozen=True)
class _UserLoad:
    """A SELECT that brings users with their roles, and where each lands in its rows."""

    sql: str
    user_offsets: dict[Any, list[int]]
    user_pk_offset: int
    role_entity: Any
    role_offsets: dict[Any, list[int]]
    role_pk_offset: int
    roles_attribute: Any


@dataclass(frozen=True)
class _Plan:
    """The SQL and converters of the session table, made once the mapping exists."""

    table: str
    columns: dict[str, str]
    converters: dict[str, Any]
    #: The live row under $key, with its user and the user's roles.
    session_load: _UserLoad
    #: The user whose primary key is $pk, with its roles.
    user_load: _UserLoad
    mysql: bool


class PonyUserDatastore(UserDatastore[Any, Any]):
    """The datastore over Pony ORM: ``PonyUserDatastore(db, User, Role)``.

    Create it after the entity classes and before ``db.generate_mapping()``: it declares
    the session entity on ``db`` (see :func:`session_entity_for`) and creates no table;
    ``generate_mapping(create_tables=True)`` creates the session table with yours.

    :param session_entity: your own entity for the session rows, with the attributes of
        the one :func:`session_entity_for` declares (``key``, ``user``, ``data``,
        ``created_at``, ``last_seen_at``, ``expires_at``, ``user_agent``,
        ``ip_address``); by default that function declares one on ``db``.

    Other keyword arguments are those of :class:`~flask_sessionstore.UserDatastore`.

    Each method runs in the caller's ``db_session``, or in one of its own when there is
    none; objects it returns are then read-only, as Pony makes every object whose
    ``db_session`` ended, and objects of an ended ``db_session`` passed to a method are
    read again in the method's. :meth:`init_app` runs every request in a
    ``db_session``.
    """

    def __init__(self, db: Any, user_model: type[Any], role_model: type[Any], *,
                 session_entity: Any = None, **options: Any) -> None:
        _check_entity(db, user_model, "user_model")
        _check_entity(db, role_model, "role_model")
        if len(user_model._pk_attrs_) != 1:
            raise SessionStoreError(
                f"{user_model.__name__} has a composite primary key; the session rows need a "
                "single-column one."
            )
        super().__init__(db, user_model, role_model, **options)
        if session_entity is None:
            session_entity = session_entity_for(db, user_model)
        _check_entity(db, session_entity, "session_entity")
        missing = [name for name in _FIELDS if name not in session_entity._adict_]
        if missing:
            raise SessionStoreError(
                f"{session_entity.__name__} lacks the attributes {', '.join(missing)}."
            )
        self.session_entity = session_entity
        self._pk_attribute = user_model._pk_attrs_[0]
        self._plan_made: _Plan | None = None
        self._request_key = f"flask_sessionstore.pony.{id(self)}"

    # -- requests ------------------------------------------------------------------

    def init_app(self, app: Any) -> None:
        """Run each request of ``app`` in a ``db_session``, as ``pony.flask.Pony`` does.

        It starts before any ``before_request`` function and ends when the request is
        torn down: committed, or rolled back if the request failed. A ``db_session``
        already open (the app's own, a test's) is joined instead. Nothing is read or
        connected for a request that does not use the database.
        """
        flask.request_started.connect(self._request_started, app, weak=False)
        flask.got_request_exception.connect(self._request_failed, app, weak=False)
        app.teardown_request(self._request_finished)

    def _request_started(self, sender: Any, **_: Any) -> None:
        joined = pony_core.local.db_session is not None
        orm.db_session.__enter__()
        flask.request.environ[self._request_key] = joined

    def _request_failed(self, sender: Any, **_: Any) -> None:
        # An unhandled error: the request's own db_session will be rolled back when it
        # ends. Do it now, before the error response saves the session, so that the
        # session write cannot commit the view's half-done work with it.
        if flask.request.environ.get(self._request_key) is False:
            self._safe_rollback()

    def _request_finished(self, exc: BaseException | None) -> None:
        if flask.request.environ.pop(self._request_key, None) is None:
            return  # request_started never ran for this request
        if exc is None:
            orm.db_session.__exit__(None, None, None)
        else:
            orm.db_session.__exit__(type(exc), exc, exc.__traceback__)

    # -- units of work -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a block as one unit of work (see
        :meth:`~flask_sessionstore.UserDatastore.transaction`), inside a ``db_session``.

        Session rows written inside the block are part of it: they commit or roll back
        with it, since Pony gives the block one connection.
        """
        with orm.db_session, super().transaction():
            yield

    @contextmanager
    def _unit(self) -> Iterator[None]:
        # The caller's db_session, or a short one around the block (its commit at the
        # end is translated too).
        with self._translated(), orm.db_session:
            yield

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (pony_core.OrmError, dbapiprovider.DBException) as exc:
            cause = _cause(exc)
            if isinstance(cause, (dbapiprovider.IntegrityError,
                                  pony_core.TransactionIntegrityError,
                                  pony_core.CacheIndexError)):
                self._safe_rollback()
                raise ConstraintError(str(cause)) from exc
            if _refused_value(cause):
                # A value the column cannot hold or be compared with (too long, out of
                # range, of another type): the input is at fault, not the database.
                # PostgreSQL has aborted the transaction by now, so it is rolled back on
                # every database alike.
                self._safe_rollback()
                raise ConstraintError(str(cause)) from exc
            if isinstance(cause, (dbapiprovider.OperationalError, dbapiprovider.InterfaceError,
                                  pony_core.ConnectionClosedError)):
                # A lost or refused connection, a lock timeout, a deadlock: the database
                # cannot serve now. Pony drops a dead connection when it rolls back, so
                # the next db_session reconnects.
                self._safe_rollback()
                raise DatastoreUnavailableError(str(cause)) from exc
            raise

    def _safe_rollback(self) -> None:
        with suppress(pony_core.OrmError, dbapiprovider.DBException):
            self.db.rollback()

    def put(self, model: Any) -> Any:
        with self._unit():
            self.db.flush()
        return model

    def delete(self, model: Any) -> None:
        with self._unit():
            self._attached(model).delete()
            self.db.flush()

    def commit(self) -> None:
        with self._translated():
            self.db.commit()

    def rollback(self) -> None:
        self.db.rollback()

    def _attached(self, obj: Any) -> Any:
        # Pony binds an object to the db_session it was loaded in. One that came from an
        # earlier call (made outside any db_session, or before a rollback) is loaded
        # again into this one.
        cache = obj._session_cache_
        if cache is not None and cache.is_alive:
            return obj
        return type(obj)[obj.get_pk()]

    def _reattached(self, value: Any) -> Any:
        # Entities given to a public method, alone or in a list (create_user's roles).
        if type(value) in (list, tuple):
            return type(value)(self._reattached(item) for item in value)
        if isinstance(value, pony_core.Entity) and value._database_ is self.db:
            return self._attached(value)
        return value

    # -- users and roles -----------------------------------------------------------

    def _find_user(self, case_insensitive: bool, criteria: dict[str, Any]) -> Any:
        for name in criteria:
            if not isinstance(getattr(self.user_model, name, None), pony_core.Attribute):
                raise SessionStoreError(f"{self.user_model.__name__} has no attribute {name!r}.")
        with self._unit():
            query = self.user_model.select()
            # Pony reads a lambda's outer names when filter() is called, so each filter
            # keeps the name and value of its own turn of the loop.
            for name, value in criteria.items():
                if isinstance(value, str) and _autostrip(getattr(self.user_model, name)):
                    # Pony strips a string when it stores it (autostrip, on by default):
                    # compare as stored, or " ann@example.com" would find no Ann and
                    # create_user would store a second one.
                    value = value.strip()
                if case_insensitive and isinstance(value, str):
                    query = query.filter(lambda u: getattr(u, name).lower() == value)  # noqa: B023
                else:
                    query = query.filter(lambda u: getattr(u, name) == value)  # noqa: B023
            return query.first()

    def _find_role(self, name: str) -> Any:
        if _autostrip(self.role_model.name):
            name = name.strip()  # compared as Pony stores it (see _find_user)
        with self._unit():
            return self.role_model.select(lambda r: r.name == name).first()

    def _list(self, model: type[Any], offset: int, limit: int | None) -> list[Any]:
        with self._unit():
            query = model.select().order_by(*model._pk_attrs_)
            stop = None if limit is None else offset + limit
            return list(query[offset:stop])

    def _get_user_by_pk(self, pk: Any) -> Any:
        # With its roles, in one SELECT, as a session's user comes (the cache in front
        # of the session rows reads the user this way).
        load = self._plan().user_load
        with self._unit():
            rows = self.db.select(load.sql, {}, {"pk": self._sql_value("user", pk)})
            return self._user_from(load, rows) if rows else None

    def _parse_pk(self, value: Any) -> Any:
        if isinstance(value, bool):
            return None
        py_type = self._pk_attribute.py_type
        if py_type is int:
            if isinstance(value, str):
                text = value.strip()
                digits = text[1:] if text.startswith("-") else text
                # A key has at most 20 digits; int() would refuse a string of thousands.
                if not (digits.isascii() and digits.isdecimal()) or len(digits) > 20:
                    return None
                value = int(text)
            if not isinstance(value, int):
                return None
            # The column's range (32 bits unless declared with size=64): Pony refuses a
            # value outside it, so such a value cannot name a row.
            converter = self._pk_converter()
            return value if converter.min_val <= value <= converter.max_val else None
        if py_type is uuid.UUID:
            try:
                return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
            except ValueError:
                return None
        if py_type is str:
            if not isinstance(value, str) or "\x00" in value:
                return None
            max_len = getattr(self._pk_converter(), "max_len", None)
            return value if not max_len or len(value) <= max_len else None
        return value if isinstance(value, py_type) else None

    def _pk_converter(self) -> Any:
        self._plan()  # the converters exist once the mapping does
        return self._pk_attribute.converters[0]

    def user_pk(self, user: Any) -> Any:
        pk = getattr(user, self._pk_attribute.name)
        if pk is None:
            # A new object gets its key when Pony writes it.
            with self._unit():
                self.db.flush()
            pk = getattr(user, self._pk_attribute.name)
        return pk

    def _roles_of(self, user: Any) -> Iterable[Any]:
        try:
            return list(getattr(user, "roles", ()))
        except pony_core.DatabaseSessionIsOver:
            # A user of an ended db_session whose roles were never read: read them, whole
            # (their names must stay readable once this db_session ends too).
            with self._unit():
                return list(self._attached(user).roles.select())

    def _add_role(self, user: Any, role: Any) -> None:
        with self._unit():
            self._attached(user).roles.add(self._attached(role))
            self.db.flush()

    def _remove_role(self, user: Any, role: Any) -> None:
        with self._unit():
            self._attached(user).roles.remove(self._attached(role))
            self.db.flush()

    # -- session rows --------------------------------------------------------------

    def _plan(self) -> _Plan:
        if self._plan_made is None:
            if self.db.schema is None:
                raise RuntimeError(
                    "The Pony mapping is not generated yet: call db.bind(...) and "
                    "db.generate_mapping(create_tables=True) before using the datastore."
                )
            self._plan_made = _make_plan(self.db, self.session_entity, self.user_model)
        return self._plan_made

    def _sql_value(self, name: str, value: Any) -> Any:
        return None if value is None else self._plan().converters[name].py2sql(value)

    def _select(self, sql: str, params: dict[str, Any]) -> list[Any]:
        with self._unit():
            return list(self.db.select(sql, {}, params))

    def _write(self, sql: str, params: dict[str, Any]) -> int:
        # Durable on return. Outside ds.transaction(), the statement runs in autocommit
        # when the db_session has no transaction open (SQLite and PostgreSQL in Pony's
        # optimistic mode), or in the open one, which is then committed: Pony gives a
        # thread one connection per database, so that commit includes whatever the
        # db_session had pending. Inside ds.transaction() the statement joins the block.
        in_block = self._in_transaction()
        with self._unit():
            cursor = self.db._exec_raw_sql(sql, {}, params, 0, start_transaction=in_block)
            count = int(cursor.rowcount)
            cache = pony_core.local.db2cache.get(self.db)
            # db.commit() would also switch the rest of the db_session to transactions,
            # even with none open: call it only when there is something to commit.
            if not in_block and cache is not None and cache.in_transaction:
                self.db.commit()
        return count

    def _record(self, row: Sequence[Any]) -> SessionRecord:
        converters = self._plan().converters
        values: dict[str, Any] = {
            _record_field(name): None if value is None else converters[name].sql2py(value)
            for name, value in zip(_FIELDS, row, strict=False)
        }
        return SessionRecord(**values)

    def _session_insert(self, record: SessionRecord) -> None:
        plan = self._plan()
        c = plan.columns
        self._write(
            _sql("INSERT INTO", plan.table, "(", ", ".join(c[name] for name in _FIELDS),
                 ") VALUES (", ", ".join("$" + name for name in _FIELDS), ")"),
            {name: self._sql_value(name, getattr(record, _record_field(name)))
             for name in _FIELDS},
        )

    def _session_load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        load = self._plan().session_load
        with self._unit():
            rows = self.db.select(load.sql, {}, {
                "key": key, "now": self._sql_value("expires_at", now),
            })
            if not rows:
                return None
            record = self._record(rows[0])
            return record, self._user_from(load, rows)

    def _user_from(self, load: _UserLoad, rows: Sequence[Any]) -> Any:
        # The row's user and its roles, made into the entities of this db_session by
        # Pony's own row parser, as if Pony had run the query: an object already in the
        # db_session is refreshed, not duplicated.
        if rows[0][load.user_pk_offset] is None:
            return None
        found = self.user_model._fetch_objects(_Rows(rows[:1]), load.user_offsets)
        if not found:
            return None  # deleted in this db_session
        user = found[0]
        if load.roles_attribute is None:
            return user
        role_rows = {row[load.role_pk_offset]: row for row in rows
                     if row[load.role_pk_offset] is not None}
        roles = load.role_entity._fetch_objects(_Rows(list(role_rows.values())),
                                                load.role_offsets)
        _mark_loaded(user, load.roles_attribute, roles)
        return user

    def _session_update(self, key: str, now: datetime, *, data: str | None,
                        expires_at: datetime) -> bool:
        plan = self._plan()
        c = plan.columns
        assignments = [f"{c['expires_at']} = $expires_at", f"{c['last_seen_at']} = $now"]
        params = {
            "key": key, "now": self._sql_value("last_seen_at", now),
            "expires_at": self._sql_value("expires_at", expires_at),
        }
        if data is not None:
            assignments.append(f"{c['data']} = $data")
            params["data"] = data
        count = self._write(
            _sql("UPDATE", plan.table, "SET", ", ".join(assignments),
                 "WHERE", c["key"], "= $key AND", c["expires_at"], "> $now"),
            params,
        )
        return count == 1

    def _session_delete(self, key: str) -> bool:
        plan = self._plan()
        return self._write(_sql("DELETE FROM", plan.table, "WHERE", plan.columns["key"], "= $key"),
                           {"key": key}) > 0

    def _session_delete_for_user(self, user_pk: Any, *, keep: str | None = None) -> int:
        plan = self._plan()
        c = plan.columns
        sql = _sql("DELETE FROM", plan.table, "WHERE", c["user"], "= $user")
        params = {"user": self._sql_value("user", user_pk)}
        if keep is not None:
            sql = _sql(sql, "AND", c["key"], "<> $keep")
            params["keep"] = keep
        return self._write(sql, params)

    def _user_filter(self, user_pk: Any, params: dict[str, Any]) -> str:
        column = self._plan().columns["user"]
        if user_pk is ANY_USER:
            return ""
        if user_pk is None:
            return _sql("AND", column, "IS NULL")
        params["user"] = self._sql_value("user", user_pk)
        return _sql("AND", column, "= $user")

    def _session_find(self, now: datetime, *, user_pk: Any = ANY_USER, offset: int = 0,
                      limit: int | None = None) -> list[SessionRecord]:
        plan = self._plan()
        c = plan.columns
        params: dict[str, Any] = {"now": self._sql_value("expires_at", now)}
        sql = _sql(
            "SELECT", ", ".join(c[name] for name in _FIELDS), "FROM", plan.table,
            "WHERE", c["expires_at"], "> $now", self._user_filter(user_pk, params),
            "ORDER BY", c["last_seen_at"], "DESC,", c["key"],
        )
        if limit is not None:
            sql = _sql(sql, "LIMIT $limit OFFSET $offset")
            params.update(limit=limit, offset=offset)
        rows = self._select(sql, params)
        if limit is None and offset:
            rows = rows[offset:]  # SQLite and MariaDB take no OFFSET without a LIMIT
        return [self._record(row) for row in rows]

    def _session_count(self, now: datetime, *, user_pk: Any = ANY_USER,
                       expired: bool = False) -> int:
        plan = self._plan()
        params: dict[str, Any] = {"now": self._sql_value("expires_at", now)}
        [count] = self._select(
            _sql("SELECT COUNT(*) FROM", plan.table, "WHERE", plan.columns["expires_at"],
                 "<= $now" if expired else "> $now", self._user_filter(user_pk, params)),
            params,
        )
        return int(count)

    def _session_delete_all(self) -> int:
        return self._write(_sql("DELETE FROM", self._plan().table), {})

    def _session_delete_expired(self, now: datetime, limit: int) -> int:
        plan = self._plan()
        c = plan.columns
        dead = _sql(c["expires_at"], "<= $now")
        # One statement per batch, so each batch locks only the rows it deletes and
        # commits at once. MariaDB takes a LIMIT on DELETE but no LIMIT inside an IN
        # subquery; the others take the subquery.
        if plan.mysql:
            sql = _sql("DELETE FROM", plan.table, "WHERE", dead, "LIMIT $limit")
        else:
            sql = _sql("DELETE FROM", plan.table, "WHERE", c["key"], "IN (SELECT", c["key"],
                       "FROM", plan.table, "WHERE", dead, "LIMIT $limit)")
        return self._write(sql, {"now": self._sql_value("expires_at", now), "limit": limit})


def _in_a_db_session(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``method`` in the caller's db_session, or in one of its own, with the
    entities it is given read again if their db_session ended."""

    @functools.wraps(method)
    def run(self: PonyUserDatastore, *args: Any, **kwargs: Any) -> Any:
        with orm.db_session:
            args = self._reattached(args)
            kwargs = {name: self._reattached(value) for name, value in kwargs.items()}
            return method(self, *args, **kwargs)

    return run


# The methods written once in the core (create_role, authenticate, activate_user...)
# each read and change objects over several primitive calls; Pony needs one db_session
# around all of them. The primitives above manage their own.
for _name, _method in list(vars(UserDatastore).items()):
    if (not _name.startswith("_") and inspect.isfunction(_method)
            and _name not in vars(PonyUserDatastore)):
        setattr(PonyUserDatastore, _name, _in_a_db_session(_method))


def _sql(*parts: str) -> str:
    """Join the parts of a statement: SQL words and the identifiers the provider quoted
    at mapping time. Values are never parts: they are always $parameters."""
    return " ".join(part for part in parts if part)


def _autostrip(attribute: Any) -> bool:
    """Whether Pony strips a string stored in ``attribute`` (its default for str)."""
    converters = attribute.converters
    return bool(converters) and bool(getattr(converters[0], "autostrip", False))


def _record_field(name: str) -> str:
    return "user_pk" if name == "user" else name


def _cause(exc: BaseException) -> BaseException:
    # Pony wraps the driver's error (and its own) in a few layers; the innermost tells
    # what happened.
    seen = 0
    while seen < 5:
        seen += 1
        if isinstance(exc, (pony_core.CommitException, pony_core.PartialCommitException,
                            pony_core.RollbackException)) and exc.exceptions:
            exc = exc.exceptions[0][1]
        elif isinstance(exc, (pony_core.UnexpectedError, pony_core.TransactionIntegrityError)) \
                and exc.original_exc is not None:
            exc = exc.original_exc
        else:
            break
    return exc


#: MySQL and MariaDB errors about a value in the statement, which their drivers report
#: as OperationalError like a lost connection: 1241 a row where one value belongs, 1267,
#: 1270 and 1271 an illegal mix of collations, 1292 a value malformed for its type, 4078
#: operand types that cannot be compared.
_MYSQL_REFUSED_VALUE = frozenset({1241, 1267, 1270, 1271, 1292, 4078})
#: PostgreSQL's SQLSTATE for a value whose type the column does not take.
_PG_DATATYPE_MISMATCH = "42804"


def _refused_value(cause: BaseException) -> bool:
    """Return whether the database refused a value of the statement (rather than the
    statement, the connection or the server being at fault)."""
    if isinstance(cause, dbapiprovider.DataError):
        return True
    if not isinstance(cause, dbapiprovider.DBException):
        return False
    orig = cause.original_exc
    if getattr(orig, "pgcode", None) == _PG_DATATYPE_MISMATCH:
        return True
    errno = orig.args[0] if orig is not None and orig.args else None
    return isinstance(errno, int) and errno in _MYSQL_REFUSED_VALUE


def _columns_of(entity: Any, start: int) -> tuple[dict[Any, list[int]], list[str]]:
    """The columns Pony loads for ``entity`` (lazy ones are loaded on first use, as
    Pony does), and their offsets in a row where they begin at ``start``."""
    attributes = [attr for attr in entity._attrs_with_columns_ if not attr.lazy]
    attributes += [attr for attr in entity._subclass_attrs_
                   if attr.columns and not attr.lazy and attr not in attributes]
    offsets: dict[Any, list[int]] = {}
    columns: list[str] = []
    for attr in attributes:
        offsets[attr] = list(range(start + len(columns), start + len(columns) + len(attr.columns)))
        columns.extend(attr.columns)
    return offsets, columns


def _mark_loaded(user: Any, attribute: Any, roles: Iterable[Any]) -> None:
    # What Pony's Set.load does once it has read a collection, for a collection this
    # db_session never read: it now holds exactly these roles and reads no further.
    # One that was read (or changed) already is left to Pony.
    if user._vals_.get(attribute) is not None or attribute.is_volatile:
        return
    items = set(roles)
    loaded = user._vals_[attribute] = pony_core.SetData()
    loaded |= items
    if attribute.reverse.is_collection:
        attribute.reverse.db_reverse_add(items, user)
    loaded.is_fully_loaded = True
    loaded.absent = None
    loaded.count = len(loaded)


def _make_plan(db: Any, session: Any, user_model: Any) -> _Plan:
    provider = db.provider
    quote = provider.quote_name
    user_attr = session.user
    if not (isinstance(user_attr.py_type, pony_core.EntityMeta)
            and issubclass(user_model, user_attr.py_type)):
        raise SessionStoreError(f"{session.__name__}.user must reference {user_model.__name__}.")
    if not (user_attr.reverse and user_attr.reverse.cascade_delete):
        raise SessionStoreError(
            f"The reverse of {session.__name__}.user must be a Set with cascade_delete=True, "
            "so that deleting a user deletes its sessions."
        )
    columns = {name: quote(getattr(session, name).columns[0]) for name in _FIELDS}
    table = quote(session._table_)
    user_pk = f"u.{quote(user_model._pk_columns_[0])}"
    session_load = _user_load(
        provider, user_model,
        [f"s.{columns[name]}" for name in _FIELDS],
        [table, "s", "LEFT JOIN", quote(user_model._table_), "u ON", user_pk, "=",
         f"s.{columns['user']}"],
        ["s." + columns["key"], "= $key AND", "s." + columns["expires_at"], "> $now"],
    )
    user_load = _user_load(provider, user_model, [], [quote(user_model._table_), "u"],
                           [user_pk, "= $pk"])
    return _Plan(
        table=table, columns=columns,
        converters={name: getattr(session, name).converters[0] for name in _FIELDS},
        session_load=session_load, user_load=user_load, mysql=provider.dialect == "MySQL",
    )


def _user_load(provider: Any, user_model: Any, select: list[str], source: list[str],
               where: list[str]) -> _UserLoad:
    """``SELECT select, u.*, r.* FROM source (+ the user's roles) WHERE where``: the
    columns Pony would load for the user ``u`` and each of its roles ``r``."""
    quote = provider.quote_name
    user_offsets, user_columns = _columns_of(user_model, len(select))
    select = select + [f"u.{quote(column)}" for column in user_columns]
    user_pk = f"u.{quote(user_model._pk_columns_[0])}"
    joins: list[str] = []
    roles = getattr(user_model, "roles", None)
    role_entity = None
    role_offsets: dict[Any, list[int]] = {}
    role_pk_offset = -1
    if (isinstance(roles, pony_core.Set) and isinstance(roles.py_type, pony_core.EntityMeta)
            and roles.reverse is not None and not roles.is_volatile):
        role_entity = roles.py_type
        role_offsets, role_columns = _columns_of(role_entity, len(select))
        role_pk_offset = role_offsets[role_entity._pk_attrs_[0]][0]
        select += [f"r.{quote(column)}" for column in role_columns]
        role_pk = f"r.{quote(role_entity._pk_columns_[0])}"
        role_table = quote(role_entity._table_)
        if roles.reverse.is_collection:  # many-to-many, through Pony's link table
            joins += ["LEFT JOIN", quote(roles.table), "l ON",
                      f"l.{quote(roles.reverse.columns[0])}", "=", user_pk,
                      "LEFT JOIN", role_table, "r ON", role_pk, "=",
                      f"l.{quote(roles.columns[0])}"]
        else:  # one-to-many: the role row names its user
            joins += ["LEFT JOIN", role_table, "r ON",
                      f"r.{quote(roles.reverse.columns[0])}", "=", user_pk]
    else:
        roles = None
    return _UserLoad(
        sql=_sql("SELECT", ", ".join(select), "FROM", *source, *joins, "WHERE", *where),
        user_offsets=user_offsets, user_pk_offset=user_offsets[user_model._pk_attrs_[0]][0],
        role_entity=role_entity, role_offsets=role_offsets, role_pk_offset=role_pk_offset,
        roles_attribute=roles,
    )
