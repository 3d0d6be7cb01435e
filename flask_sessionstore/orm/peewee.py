"""The datastore for Peewee 3 and 4, with ``playhouse.flask_utils.FlaskDB`` or a plain
``Database``.

Peewee keeps one connection per thread and runs it in autocommit mode: a statement sent
outside a transaction is committed when it returns. That gives the session rows their
durability for free (each session write is one autocommitted statement), and it is why
:meth:`PeeweeUserDatastore.transaction` opens a real transaction (or, inside one the
application already opened, a savepoint) when its outermost block begins: without it
the writes of a block would be committed one by one and could not be rolled back.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import peewee
from playhouse.flask_utils import FlaskDB

from ..datastore import ANY_USER, SessionRecord, UserDatastore
from ..exceptions import ConstraintError, DatastoreUnavailableError, SessionStoreError

__all__ = ["PeeweeUserDatastore", "session_model_for"]

log = logging.getLogger("flask_sessionstore")

#: Session models already made, per user model and table name: a second datastore on
#: the same models reuses the model instead of defining the table twice.
_models: weakref.WeakKeyDictionary[type[Any], dict[str, type[Any]]] = (
    weakref.WeakKeyDictionary()
)

_BIGINT_RANGE = range(-(2**63), 2**63)
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,20}")


def _resolved(database: Any) -> Any:
    """Return the database behind a ``Proxy`` (FlaskDB's before ``init_app``), if any."""
    if isinstance(database, peewee.Proxy):
        return database.obj
    return database


def _is_mysql(database: Any) -> bool:
    return isinstance(_resolved(database), peewee.MySQLDatabase)


#: The SQL function name under which SQLite connections get :func:`_fold_case`.
_SQLITE_LOWER = "sessionstore_lower"


def _fold_case(value: Any) -> Any:
    """Lower-case ``value`` as Python does: SQLite's own LOWER() folds only ASCII
    letters, and the values it is compared with were lower-cased by Python."""
    return value.lower() if isinstance(value, str) else value


class _PreciseDateTimeField(peewee.DateTimeField):
    """A date and time kept to the microsecond on every database.

    MariaDB's ``DATETIME`` drops fractions of a second unless declared ``DATETIME(6)``;
    PostgreSQL (``TIMESTAMP(6)``) and SQLite accept the same modifier unchanged.
    """

    def get_modifiers(self) -> list[int]:
        return [6]


class _SessionDataField(peewee.TextField):
    """Text, as ``MEDIUMTEXT`` on MySQL and MariaDB, whose ``TEXT`` stops at 64 KB."""

    def ddl_datatype(self, ctx: Any) -> Any:
        if _is_mysql(self.model._meta.database):
            return peewee.SQL("MEDIUMTEXT")
        return super().ddl_datatype(ctx)


def _bound_database(db: Any, user_model: type[Any]) -> Any:
    """Return the database ``user_model`` is bound to, checking that it is ``db``'s."""
    database = user_model._meta.database
    if database is None:
        raise SessionStoreError(
            f"{user_model.__name__} is bound to no database: subclass FlaskDB's db.Model or "
            "declare 'class Meta: database = db'."
        )
    if db is not database and getattr(db, "database", None) is not database:
        raise SessionStoreError(
            f"{user_model.__name__} is bound to {database!r}, not to the database of {db!r}."
        )
    return database


def session_model_for(db: Any, user_model: type[Any], *,
                      table_name: str = "sessionstore_session") -> type[Any]:
    """Return the session model for ``user_model``, made on first use.

    The model is bound to the database ``user_model`` uses (``db`` is FlaskDB or that
    database). Making it creates no table: add it to your ``db.create_tables([...])``.
    Its ``user`` foreign key (column ``user_id``) has the type of the user's primary key
    and cascades on delete; it adds no back-reference to the user model.
    """
    database = _bound_database(db, user_model)
    made = _models.setdefault(user_model, {})
    if table_name in made:
        return made[table_name]

    meta = type("Meta", (), {
        "database": database,
        "table_name": table_name,
        # Index names then start with the table name, so two session tables never share
        # one (PostgreSQL's index names are per schema, not per table).
        "legacy_table_names": False,
    })
    attributes: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": "A server-side session: one row per live session id (stored hashed).",
        "Meta": meta,
        "key": peewee.CharField(max_length=64, primary_key=True),
        "user": peewee.ForeignKeyField(
            user_model, null=True, index=True, on_delete="CASCADE", backref="+",
            column_name="user_id",
        ),
        "data": _SessionDataField(),
        "created_at": _PreciseDateTimeField(),
        "last_seen_at": _PreciseDateTimeField(),
        "expires_at": _PreciseDateTimeField(index=True),
        "user_agent": peewee.CharField(max_length=512, null=True),
        "ip_address": peewee.CharField(max_length=45, null=True),
    }
    model = type(f"SessionStoreRow_{table_name}", (peewee.Model,), attributes)
    made[table_name] = model
    return model


class _Unit:
    """One unit of work on this thread's connection.

    A transaction of its own; or, when the application already has a transaction open
    (its own ``db.atomic()`` block), a savepoint inside it, so that committing the unit
    never commits the application's pending work.
    """

    def __init__(self, database: Any) -> None:
        self._database = database
        self._savepoint: Any = None
        if database.in_transaction():
            self._savepoint = database.savepoint()
            self._savepoint.__enter__()
        else:
            database.session_start()

    def commit(self) -> None:
        if self._savepoint is not None:
            self._savepoint.commit(begin=False)
        else:
            self._database.session_commit()

    def rollback(self) -> None:
        if self._savepoint is not None:
            self._savepoint.rollback(begin=False)
        else:
            self._database.session_rollback()


class PeeweeUserDatastore(UserDatastore[Any, Any]):
    """The datastore over Peewee: ``PeeweeUserDatastore(db, User, Role, UserRoles)``.

    :param db: ``playhouse.flask_utils.FlaskDB`` or the ``peewee.Database`` the models
        are bound to.
    :param user_role_model: the model linking users to roles, with one foreign key to
        each. The user's back-reference (``backref='roles'`` in the seed) yields these
        link rows; :class:`~flask_sessionstore.UserMixin` unwraps their ``role``.
    :param session_model: a model for the session rows, with the fields of
        :func:`session_model_for`; by default that function makes one. Either way it is
        :attr:`session_model`, whose table you create.

    Other keyword arguments are those of :class:`~flask_sessionstore.UserDatastore`.

    Outside :meth:`transaction`, each write is committed as it is made (Peewee's
    autocommit), so :meth:`commit` and :meth:`rollback` have nothing to do there.
    """

    def __init__(self, db: Any, user_model: type[Any], role_model: type[Any],
                 user_role_model: type[Any], *, session_model: type[Any] | None = None,
                 **options: Any) -> None:
        super().__init__(db, user_model, role_model, **options)
        self.user_role_model = user_role_model
        self._database = _bound_database(db, user_model)
        for model in (role_model, user_role_model):
            if model._meta.database is not self._database:
                raise SessionStoreError(
                    f"{model.__name__} is bound to another database than "
                    f"{user_model.__name__}."
                )
        if user_model._meta.composite_key:
            raise SessionStoreError("A user model with a composite primary key is not supported.")
        self._pk_field = user_model._meta.primary_key
        self._user_link = _foreign_key(user_role_model, user_model)
        self._role_link = _foreign_key(user_role_model, role_model)
        backref = self._user_link.backref
        #: Where a user loaded with its session gets the query for its roles.
        self._roles_attribute: str | None = (
            backref if isinstance(backref, str) and backref.isidentifier() else None
        )
        self.session_model = session_model or session_model_for(db, user_model)
        self._unit: contextvars.ContextVar[_Unit | None] = contextvars.ContextVar(
            f"sessionstore_peewee_unit_{id(self)}", default=None
        )
        self._prepared: Any = None
        self._prepare_database()

    def _prepare_database(self) -> Any:
        """Return the database, after giving SQLite connections the case folding
        lookups need. Done as soon as the database is known (FlaskDB's may be known
        only at ``init_app``), so that every connection opened later has it."""
        database = _resolved(self._database)
        if database is not None and database is not self._prepared:
            if isinstance(database, peewee.SqliteDatabase):
                database.register_function(_fold_case, _SQLITE_LOWER, 1, deterministic=True)
            self._prepared = database
        return database

    def init_app(self, app: Any) -> None:
        """Close this thread's connection when a request or app context ends.

        FlaskDB does that itself, so nothing is added for it. With a plain database the
        connection opens when a request first needs it (Peewee's autoconnect) and
        closes at teardown, so none outlives the request that opened it.
        """
        self._prepare_database()
        if isinstance(self.db, FlaskDB):
            return
        app.teardown_request(self._close_connection)
        app.teardown_appcontext(self._close_connection)

    def _close_connection(self, exc: BaseException | None = None) -> None:
        database = self._database
        if _resolved(database) is None or database.is_closed():
            return
        if database.in_transaction():
            # The transaction belongs to code around this context (a script, a test);
            # closing would end it. Peewee refuses to, and so does this.
            log.warning("database connection left open: a transaction is still in progress")
            return
        _close_quietly(database)

    # -- units of work -------------------------------------------------------------

    def _begin(self) -> None:
        # The outermost block begins a real transaction on this thread's connection (a
        # savepoint inside the application's own), so every write in it commits or
        # rolls back together; peewee would otherwise commit each statement.
        if self._unit.get() is None:
            with self._translated():
                self._unit.set(_Unit(self._database))

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except peewee.IntegrityError as exc:
            self._discard_unit()
            raise ConstraintError(str(exc)) from exc
        except OverflowError as exc:
            # sqlite3 refuses an int beyond 64 bits itself, outside the DB-API errors.
            self._discard_unit()
            raise ConstraintError(str(exc)) from exc
        except (peewee.DataError, peewee.ProgrammingError, peewee.OperationalError,
                peewee.InterfaceError) as exc:
            if _refused_value(exc):
                # A value the column cannot hold or be compared with (too long, out of
                # range, of another type): the input is at fault, not the database.
                # PostgreSQL has aborted the transaction by now, so the unit is rolled
                # back on every database alike.
                self._discard_unit()
                raise ConstraintError(str(exc)) from exc
            database = self._database
            if isinstance(exc, peewee.DataError | peewee.ProgrammingError) or not _link_lost(
                database
            ):
                raise
            if not database.in_transaction():
                # Forget the dead link now, so that the next use (outside a request
                # too) reconnects. A transaction is first ended by its rollback.
                _close_quietly(database)
            raise DatastoreUnavailableError(str(exc)) from exc

    def _discard_unit(self) -> None:
        """Roll back the open unit after a failed write and begin a fresh one.

        The unit is rolled back before the error is reported, as
        :class:`ConstraintError` promises; the enclosing :meth:`transaction` block goes
        on, and what it writes next is again one unit.
        """
        unit = self._unit.get()
        if unit is not None:
            unit.rollback()
            self._unit.set(_Unit(self._database))

    def put(self, model: Any) -> Any:
        with self._translated():
            model.save(force_insert=_is_new(model))
        return model

    def delete(self, model: Any) -> None:
        with self._translated():
            for link in (self._user_link, self._role_link):
                if isinstance(model, link.rel_model):
                    value = getattr(model, link.rel_field.name)
                    self.user_role_model.delete().where(link == value).execute()
            model.delete_instance()

    def commit(self) -> None:
        unit = self._unit.get()
        if unit is None:
            return  # Outside transaction(), each write was committed when it was made.
        self._unit.set(None)
        with self._translated():
            unit.commit()

    def rollback(self) -> None:
        unit = self._unit.get()
        if unit is None:
            return
        self._unit.set(None)
        with self._translated():
            unit.rollback()

    # -- users and roles -----------------------------------------------------------

    def _find_user(self, case_insensitive: bool, criteria: dict[str, Any]) -> Any:
        fields = self.user_model._meta.fields
        # The caller lower-cased the values. An index on LOWER(column) serves this on
        # PostgreSQL; SQLite compares through Python's lower() (see the docs page).
        sqlite = isinstance(self._prepare_database(), peewee.SqliteDatabase)
        lower = getattr(peewee.fn, _SQLITE_LOWER) if sqlite else peewee.fn.LOWER
        conditions = []
        for name, value in criteria.items():
            field = fields.get(name)
            if field is None:
                raise SessionStoreError(f"{self.user_model.__name__} has no field {name!r}.")
            if case_insensitive and isinstance(value, str):
                conditions.append(lower(field) == value)
            else:
                conditions.append(field == value)
        with self._translated():
            return self.user_model.select().where(*conditions).first()

    def _find_role(self, name: str) -> Any:
        role = self.role_model
        with self._translated():
            return role.select().where(role.name == name).first()

    def _list(self, model: type[Any], offset: int, limit: int | None) -> list[Any]:
        query = model.select().order_by(model._meta.primary_key).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self._translated():
            return list(query)

    def _get_user_by_pk(self, pk: Any) -> Any:
        with self._translated():
            user = self.user_model.get_or_none(self._pk_field == pk)
        if user is not None:
            # Its roles in one statement when read, as a session's user gets them (the
            # cache in front of the session rows loads users this way).
            self._attach_roles(user)
        return user

    def _parse_pk(self, value: Any) -> Any:
        field = self._pk_field
        if isinstance(value, bool):
            return None
        if isinstance(field, peewee.IntegerField):
            if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
                value = int(value)
            return value if isinstance(value, int) and value in _BIGINT_RANGE else None
        if isinstance(field, peewee.UUIDField):
            try:
                return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
            except ValueError:
                return None
        if isinstance(field, peewee.CharField | peewee.TextField):
            return value if isinstance(value, str) and "\x00" not in value else None
        return None

    def user_pk(self, user: Any) -> Any:
        return getattr(user, self._pk_field.name)

    def _roles_of(self, user: Any) -> Iterable[Any]:
        role, link = self.role_model, self._role_link
        query = (
            role.select()
            .join(self.user_role_model, on=(link == link.rel_field))
            .where(self._user_link == self._link_value(user))
        )
        with self._translated():
            return list(query)

    def _add_role(self, user: Any, role: Any) -> None:
        self.put(self.user_role_model(
            **{self._user_link.name: user, self._role_link.name: role}
        ))
        self._refresh_roles(user)

    def _remove_role(self, user: Any, role: Any) -> None:
        link = self._role_link
        with self._translated():
            self.user_role_model.delete().where(
                self._user_link == self._link_value(user),
                link == getattr(role, link.rel_field.name),
            ).execute()
        self._refresh_roles(user)

    def _link_value(self, user: Any) -> Any:
        return getattr(user, self._user_link.rel_field.name)

    def _attach_roles(self, user: Any) -> None:
        """Put, where ``user``'s back-reference is read, a query for its link rows that
        brings their roles in the same SELECT.

        Nothing is sent until the roles are read; then one statement, whose rows the
        query keeps for later reads. Peewee's own back-reference would send one
        statement for the links and one more per role.
        """
        if self._roles_attribute is None:
            return
        links = self.user_role_model
        setattr(user, self._roles_attribute, (
            links.select(links, self.role_model)
            .join(self.role_model, on=self._role_link)
            .where(self._user_link == self._link_value(user))
        ))

    def _refresh_roles(self, user: Any) -> None:
        # A role granted or taken shows in a user that carries an attached query.
        if self._roles_attribute is not None and self._roles_attribute in vars(user):
            self._attach_roles(user)

    # -- session rows --------------------------------------------------------------
    #
    # Each write is one statement, committed by Peewee's autocommit when it returns
    # (durable, and separate from any work of the caller). Inside an application's own
    # db.atomic() block it joins that block instead: Peewee has one connection per
    # thread, and a second one could deadlock against the first.

    def _session_insert(self, record: SessionRecord) -> None:
        with self._translated():
            self.session_model.insert(
                key=record.key, user=record.user_pk, data=record.data,
                created_at=record.created_at, last_seen_at=record.last_seen_at,
                expires_at=record.expires_at, user_agent=record.user_agent,
                ip_address=record.ip_address,
            ).execute()

    def _session_load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        rows, users = self.session_model, self.user_model
        query = (
            rows.select(rows, users)
            .join(users, peewee.JOIN.LEFT_OUTER, on=rows.user)
            .where(rows.key == key, rows.expires_at > now)
        )
        with self._translated():
            row = query.first()
            if row is None:
                return None
            user = row.user
            if user is not None:
                self._attach_roles(user)
        return _record(row), user

    def _session_update(self, key: str, now: datetime, *, data: str | None,
                        expires_at: datetime) -> bool:
        rows = self.session_model
        values: dict[Any, Any] = {rows.expires_at: expires_at, rows.last_seen_at: now}
        if data is not None:
            values[rows.data] = data
        live = (rows.key == key) & (rows.expires_at > now)
        with self._translated():
            if rows.update(values).where(live).execute() == 1:
                return True
            if not _is_mysql(self._database):
                return False
            # MySQL reports the rows an UPDATE changed, not those it matched: writing
            # the values a row already holds reports 0. Ask whether the row lives.
            return rows.select(rows.key).where(live).exists()  # type: ignore[no-any-return]

    def _session_delete(self, key: str) -> bool:
        rows = self.session_model
        with self._translated():
            return bool(rows.delete().where(rows.key == key).execute())

    def _session_delete_for_user(self, user_pk: Any, *, keep: str | None = None) -> int:
        rows = self.session_model
        query = rows.delete().where(rows.user == user_pk)
        if keep is not None:
            query = query.where(rows.key != keep)
        with self._translated():
            return int(query.execute())

    def _for_user(self, query: Any, user_pk: Any) -> Any:
        user = self.session_model.user
        if user_pk is ANY_USER:
            return query
        return query.where(user.is_null() if user_pk is None else user == user_pk)

    def _session_find(self, now: datetime, *, user_pk: Any = ANY_USER, offset: int = 0,
                      limit: int | None = None) -> list[SessionRecord]:
        rows = self.session_model
        query = (
            rows.select()
            .where(rows.expires_at > now)
            .order_by(rows.last_seen_at.desc(), rows.key)
            .offset(offset)
            .limit(limit)
        )
        with self._translated():
            return [_record(row) for row in self._for_user(query, user_pk)]

    def _session_count(self, now: datetime, *, user_pk: Any = ANY_USER,
                       expired: bool = False) -> int:
        rows = self.session_model
        alive = rows.expires_at <= now if expired else rows.expires_at > now
        query = self._for_user(rows.select(peewee.fn.COUNT(rows.key)).where(alive), user_pk)
        with self._translated():
            return int(query.scalar())

    def _session_delete_all(self) -> int:
        with self._translated():
            return int(self.session_model.delete().execute())

    def _session_delete_expired(self, now: datetime, limit: int) -> int:
        rows = self.session_model
        dead = rows.expires_at <= now
        # Select the batch, then delete it by key: portable (MariaDB allows no LIMIT in
        # an IN subquery). The delete repeats the expiry test, so a row renewed between
        # the two statements is spared.
        with self._translated():
            keys = [key for (key,) in rows.select(rows.key).where(dead).limit(limit).tuples()]
            if not keys:
                return 0
            return int(rows.delete().where(rows.key.in_(keys), dead).execute())


def _foreign_key(model: type[Any], target: type[Any]) -> Any:
    found = [
        field for field in model._meta.sorted_fields
        if isinstance(field, peewee.ForeignKeyField) and field.rel_model is target
    ]
    if len(found) != 1:
        raise SessionStoreError(
            f"{model.__name__} needs exactly one foreign key to {target.__name__}, "
            f"not {len(found)}."
        )
    return found[0]


def _is_new(model: Any) -> bool:
    """Return whether ``model`` must be inserted rather than updated.

    Peewee's ``save()`` updates whenever the primary key is set, which for a key the
    application assigns (a UUID, a name) would update nothing. A key still marked
    dirty was set on this object and never stored: the object is new.
    """
    meta = model._meta
    if meta.primary_key is False:
        return True
    names = meta.primary_key.field_names if meta.composite_key else (meta.primary_key.name,)
    return any(name in model._dirty for name in names)


def _record(row: Any) -> SessionRecord:
    return SessionRecord(
        key=row.key, user_pk=row.user_id, data=row.data, created_at=row.created_at,
        last_seen_at=row.last_seen_at, expires_at=row.expires_at,
        user_agent=row.user_agent, ip_address=row.ip_address,
    )


#: MySQL and MariaDB errors about a value in the statement, which their drivers report
#: as OperationalError like a lost connection: 1241 a row where one value belongs, 1267,
#: 1270 and 1271 an illegal mix of collations, 1292 a value malformed for its type, 4078
#: operand types that cannot be compared.
_MYSQL_REFUSED_VALUE = frozenset({1241, 1267, 1270, 1271, 1292, 4078})
#: PostgreSQL's SQLSTATE for a value whose type the column does not take.
_PG_DATATYPE_MISMATCH = "42804"


def _refused_value(exc: Exception) -> bool:
    """Return whether the database refused a value of the statement (rather than the
    statement, the connection or the server being at fault)."""
    if isinstance(exc, peewee.DataError):
        return True
    # Peewee raises its own class while handling the driver's error, which is then the
    # context (Peewee 3 also passes it as the first argument; Peewee 4 its message).
    orig = exc.__cause__ or exc.__context__ or exc
    if getattr(orig, "pgcode", None) == _PG_DATATYPE_MISMATCH:
        return True
    if isinstance(exc, peewee.ProgrammingError) and _unsendable(orig):
        return True
    errno = orig.args[0] if orig.args else None
    return isinstance(errno, int) and errno in _MYSQL_REFUSED_VALUE


def _unsendable(orig: BaseException) -> bool:
    """Return whether the driver refused, before sending anything, a value it cannot
    send: sqlite3 and psycopg2 a list or a dict, PyMySQL an infinite float. Each raises
    the ProgrammingError of a bad statement, told apart only by its words."""
    message = str(orig)
    return message.startswith(("Error binding parameter", "can't adapt type")) or (
        message.endswith("can not be used with MySQL")
    )


def _link_lost(database: Any) -> bool:
    """Return whether a failure left this thread without a usable connection."""
    if _resolved(database) is None or database.is_closed():
        return True  # The connection could not be opened.
    connection = database.connection()
    # psycopg2 and psycopg set ``closed`` once the link is gone; PyMySQL clears ``open``.
    return bool(getattr(connection, "closed", False)) or getattr(connection, "open", True) is False


def _close_quietly(database: Any) -> None:
    try:
        database.close()
    except Exception:
        # The link was already broken (PyMySQL refuses to close a dead socket); Peewee
        # has forgotten the connection all the same.
        log.warning("closing a broken database connection failed", exc_info=True)
