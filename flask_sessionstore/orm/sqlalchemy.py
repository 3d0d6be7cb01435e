"""The datastore for Flask-SQLAlchemy 3.

Users and roles go through ``db.session``, so the objects the library returns are the
application's own. Session rows are read through ``db.session`` too (the user and its
roles come in the same SELECT) but written with short transactions of their own on
``db.engine``: a request's session save never commits, or is undone with, the view's
own changes.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import contains_eager, relationship, selectinload

from ..datastore import ANY_USER, SessionRecord, UserDatastore
from ..exceptions import (
    ConstraintError,
    DatastoreUnavailableError,
    InvalidValueError,
    SessionStoreError,
)

__all__ = ["SQLAlchemyUserDatastore", "session_model_for"]

log = logging.getLogger("flask_sessionstore")

#: Session models already made, per metadata and table name: a second datastore on the
#: same ``db`` reuses the model instead of defining its table twice.
_models: weakref.WeakKeyDictionary[sa.MetaData, dict[str, type[Any]]] = (
    weakref.WeakKeyDictionary()
)

_BIGINT_RANGE = range(-(2**63), 2**63)
_SQLITE_LOWER = "sessionstore_lower"


def _python_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _datetime() -> sa.types.TypeEngine[datetime]:
    # MariaDB's DATETIME drops fractions of a second unless asked to keep them.
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def session_model_for(db: Any, user_model: type[Any], *,
                      tablename: str = "sessionstore_session") -> type[Any]:
    """Return the session model for ``db``, made on first use.

    The table is created by ``db.create_all()`` like the application's own. Its
    ``user_id`` column has the type of ``user_model``'s primary key and a foreign key
    to it that cascades on delete.
    """
    made = _models.setdefault(db.metadata, {})
    if tablename in made:
        return made[tablename]
    pk_column = sa.inspect(user_model).primary_key[0]
    attributes: dict[str, Any] = {
        "__tablename__": tablename,
        "__doc__": "A server-side session: one row per live session id (stored hashed).",
        "key": sa.Column(sa.String(64), primary_key=True),
        "user_id": sa.Column(
            pk_column.type,
            sa.ForeignKey(pk_column, ondelete="CASCADE"),
            nullable=True,
            index=True,
        ),
        "data": sa.Column(
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"), nullable=False
        ),
        "created_at": sa.Column(_datetime(), nullable=False),
        "last_seen_at": sa.Column(_datetime(), nullable=False),
        "expires_at": sa.Column(_datetime(), nullable=False, index=True),
        "user_agent": sa.Column(sa.String(512), nullable=True),
        "ip_address": sa.Column(sa.String(45), nullable=True),
        "user": relationship(user_model, lazy="select"),
    }
    model = type(f"SessionStoreRow_{tablename}", (db.Model,), attributes)
    made[tablename] = model
    return model


class SQLAlchemyUserDatastore(UserDatastore[Any, Any]):
    """The datastore over Flask-SQLAlchemy: ``SQLAlchemyUserDatastore(db, User, Role)``.

    :param session_model: a model for the session rows, with the columns of
        :func:`session_model_for`; by default that function makes one on ``db``.

    Other keyword arguments are those of :class:`~flask_sessionstore.UserDatastore`.
    """

    def __init__(self, db: Any, user_model: type[Any], role_model: type[Any], *,
                 session_model: type[Any] | None = None, **options: Any) -> None:
        super().__init__(db, user_model, role_model, **options)
        self.session_model = session_model or session_model_for(db, user_model)
        self._table: sa.Table = self.session_model.__table__
        self._pk_name = sa.inspect(user_model).primary_key[0].key
        self._pk_type = _python_type(sa.inspect(user_model).primary_key[0])
        roles = sa.inspect(user_model).relationships.get("roles")
        # The roles come in the same SELECT as the user, unless the relationship cannot
        # be eagerly loaded (a dynamic or write-only one).
        self._eager_roles = roles is not None and roles.lazy not in (
            "dynamic", "write_only", "noload"
        )
        if roles is not None and roles.secondary is not None:
            _warn_if_unindexed(roles.secondary, user_model.__table__)

    # -- units of work -------------------------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sa_exc.IntegrityError as exc:
            self.db.session.rollback()
            raise ConstraintError(str(exc.orig)) from exc
        except OverflowError as exc:
            # sqlite3 refuses an int beyond 64 bits itself, outside the DB-API errors.
            _safe_rollback(self.db.session)
            raise ConstraintError(str(exc)) from exc
        except (sa_exc.DBAPIError, sa_exc.DisconnectionError) as exc:
            if isinstance(exc, sa_exc.DBAPIError) and _refused_value(exc):
                # A value the column cannot hold or be compared with (too long, out of
                # range, of another type): the input is at fault, not the database.
                # PostgreSQL has aborted the transaction by now, so the unit of work is
                # rolled back on every database alike.
                _safe_rollback(self.db.session)
                raise ConstraintError(str(exc.orig)) from exc
            if not isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError,
                                    sa_exc.DisconnectionError)):
                raise
            # A lost or refused connection, a lock timeout, a deadlock: the database
            # cannot serve now. The pool drops a dead connection by itself, so the next
            # request reconnects.
            _safe_rollback(self.db.session)
            raise DatastoreUnavailableError(str(getattr(exc, "orig", exc))) from exc
        except sa_exc.StatementError as exc:
            if not isinstance(exc.orig, (TypeError, ValueError)):
                raise
            # SQLAlchemy's own conversion refused a value before sending it (SQLite's
            # DateTime takes no string): the same refusal as the database's DataError.
            _safe_rollback(self.db.session)
            raise ConstraintError(str(exc.orig)) from exc

    def put(self, model: Any) -> Any:
        _check_strings(model)
        with self._translated():
            self.db.session.add(model)
            self.db.session.flush()
        return model

    def delete(self, model: Any) -> None:
        with self._translated():
            if isinstance(model, self.role_model):
                self._unlink_role(model)
            self.db.session.delete(model)
            self.db.session.flush()

    def _unlink_role(self, role: Any) -> None:
        # SQLAlchemy removes link rows only along relationships it knows from the
        # deleted object's side; a role model without a "users" backref would leave
        # them, and a later role reusing the id would silently regain its holders.
        roles = sa.inspect(self.user_model).relationships.get("roles")
        if roles is None or roles.secondary is None:
            return
        session = self.db.session
        session.flush()
        link, mapper = roles.secondary, sa.inspect(self.role_model)
        for column in link.c:
            for key in column.foreign_keys:
                if key.column.table is self.role_model.__table__:
                    value = getattr(role, mapper.get_property_by_column(key.column).key)
                    session.execute(sa.delete(link).where(column == value))
        for held in list(session.identity_map.values()):
            if isinstance(held, self.user_model):
                session.expire(held, ["roles"])

    def commit(self) -> None:
        with self._translated():
            self.db.session.commit()

    def rollback(self) -> None:
        self.db.session.rollback()

    # -- users and roles -----------------------------------------------------------

    def _find_user(self, case_insensitive: bool, criteria: dict[str, Any]) -> Any:
        query = sa.select(self.user_model)
        with self._translated():
            lower = self._lower_function() if case_insensitive else sa.func.lower
            for name, value in criteria.items():
                column = getattr(self.user_model, name, None)
                if column is None:
                    raise SessionStoreError(
                        f"{self.user_model.__name__} has no attribute {name!r}."
                    )
                if case_insensitive and isinstance(value, str):
                    query = query.where(lower(column) == value)
                else:
                    query = query.where(column == value)
            return self.db.session.execute(query.limit(1)).scalars().first()

    def _lower_function(self) -> Any:
        """The SQL function that lower-cases as Python does.

        SQLite's ``lower()`` folds ASCII letters only, so ``Ünal`` would never match
        ``ünal``: on SQLite a Python function is registered on the session's own
        connection (once per connection; cheap) and used instead.
        """
        connection = self.db.session.connection()
        if connection.dialect.name != "sqlite":
            return sa.func.lower
        raw = connection.connection.driver_connection
        if raw is not None:
            raw.create_function(_SQLITE_LOWER, 1, _python_lower, deterministic=True)
        return getattr(sa.func, _SQLITE_LOWER)

    def _find_role(self, name: str) -> Any:
        query = sa.select(self.role_model).where(self.role_model.name == name).limit(1)
        with self._translated():
            return self.db.session.execute(query).scalars().first()

    def _list(self, model: type[Any], offset: int, limit: int | None) -> list[Any]:
        query = sa.select(model).order_by(*sa.inspect(model).primary_key)
        if model is self.user_model and self._eager_roles:
            # One more statement for every user's roles, not one per user.
            query = query.options(selectinload(self.user_model.roles))
        with self._translated():
            found = self.db.session.execute(query.offset(offset).limit(limit)).scalars()
            return list(found.all())

    def _get_user_by_pk(self, pk: Any) -> Any:
        query: Any = sa.select(self.user_model)
        if self._eager_roles:
            query = self._with_roles(query, contains_eager(self.user_model.roles))
        query = query.where(getattr(self.user_model, self._pk_name) == pk)
        with self._translated():
            return self.db.session.execute(query).unique().scalars().first()

    def _parse_pk(self, value: Any) -> Any:
        if isinstance(value, bool):
            return None
        if self._pk_type is int:
            if isinstance(value, str):
                # int() accepts more than ASCII digits ("٣", "1_000"); a key is plain.
                text = value.strip()
                digits = text.lstrip("-")
                # A key has at most 20 digits; int() would refuse a string of thousands.
                if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
                    return None
                value = int(text)
            return value if isinstance(value, int) and value in _BIGINT_RANGE else None
        if self._pk_type is uuid.UUID:
            try:
                return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
            except ValueError:
                return None
        if self._pk_type is str:
            return value if isinstance(value, str) else None
        return None

    def user_pk(self, user: Any) -> Any:
        # The identity key needs no database, even when a commit expired the object
        # (reading the attribute would reload it: a query, which may fail).
        identity = sa.inspect(user).identity
        return identity[0] if identity is not None else getattr(user, self._pk_name)

    def init_app(self, app: Any) -> None:
        if app.extensions.get("sqlalchemy") is not self.db:
            raise RuntimeError(
                "This app is not set up with the datastore's Flask-SQLAlchemy object: call "
                "db.init_app(app) before SessionStore.init_app(app)."
            )
        app.teardown_appcontext(self._end_unit_of_work)
        with app.app_context():
            engine = self.db.engine
        isolation = engine.get_execution_options().get("isolation_level") or (
            app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
        ).get("isolation_level")
        if engine.dialect.name in ("mysql", "mariadb") and isolation != "READ COMMITTED":
            # Session rows are written on their own connection. Under InnoDB's default
            # REPEATABLE READ, db.session's snapshot is taken at its first query, so a
            # session stored later in the same transaction (create_session, then
            # retrieve_session) stays invisible to it until it ends.
            log.warning(
                "MariaDB/MySQL: set SQLALCHEMY_ENGINE_OPTIONS = {'isolation_level': "
                "'READ COMMITTED'} so that sessions stored during a transaction are "
                "visible to it (REPEATABLE READ keeps the snapshot of its first query)"
            )

    def _end_unit_of_work(self, exc: BaseException | None) -> None:
        # Runs before Flask-SQLAlchemy's own teardown (registered earlier, so run
        # later). A connection lost after the request's last query makes the rollback
        # there raise, turning a finished answer into a 500; dropping the session here
        # without touching the dead connection avoids that.
        try:
            self.db.session.remove()
        except sa_exc.SQLAlchemyError:
            self.db.session.registry.clear()

    def _roles_of(self, user: Any) -> Iterable[Any]:
        return user.roles  # type: ignore[no-any-return]

    def _add_role(self, user: Any, role: Any) -> None:
        user.roles.append(role)
        self.put(user)

    def _remove_role(self, user: Any, role: Any) -> None:
        user.roles.remove(role)
        self.put(user)

    # -- session rows --------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._translated(), self.db.engine.begin() as connection:
            yield connection

    def _session_insert(self, record: SessionRecord) -> None:
        with self._write() as connection:
            connection.execute(sa.insert(self._table).values(
                key=record.key, user_id=record.user_pk, data=record.data,
                created_at=record.created_at, last_seen_at=record.last_seen_at,
                expires_at=record.expires_at, user_agent=record.user_agent,
                ip_address=record.ip_address,
            ))

    def _with_roles(self, query: Any, loader: Any) -> Any:
        # Flat LEFT JOINs through the link table, filled in with contains_eager.
        # SQLAlchemy writes any join along a many-to-many relationship as a nested
        # join, "LEFT JOIN (link JOIN role)", which SQLite materializes whole on every
        # read: about 6 ms at 10,000 users, against 0.02 ms flat (with an index on the
        # link table's user column; 1 ms without).
        roles = sa.inspect(self.user_model).relationships["roles"]
        if roles.secondary is None:
            return query.outerjoin(self.user_model.roles).options(loader)
        return (
            query.outerjoin(roles.secondary, roles.primaryjoin)
            .outerjoin(roles.mapper.class_, roles.secondaryjoin)
            .options(loader)
        )

    def _session_load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        model = self.session_model
        query = sa.select(model).outerjoin(model.user)
        loader = contains_eager(model.user)
        if self._eager_roles:
            query = self._with_roles(query, loader.contains_eager(self.user_model.roles))
        else:
            query = query.options(loader)
        query = query.where(model.key == key, model.expires_at > now)
        with self._translated():
            row = self.db.session.execute(query).unique().scalars().first()
        if row is None:
            return None
        return _record(row), row.user

    def _session_update(self, key: str, now: datetime, *, data: str | None,
                        expires_at: datetime) -> bool:
        values: dict[str, Any] = {"expires_at": expires_at, "last_seen_at": now}
        if data is not None:
            values["data"] = data
        table = self._table
        with self._write() as connection:
            result = connection.execute(
                sa.update(table).where(table.c.key == key, table.c.expires_at > now).values(values)
            )
        return bool(result.rowcount == 1)

    def _session_delete(self, key: str) -> bool:
        with self._write() as connection:
            result = connection.execute(sa.delete(self._table).where(self._table.c.key == key))
        return bool(result.rowcount)

    def _session_delete_for_user(self, user_pk: Any, *, keep: str | None = None) -> int:
        table = self._table
        query = sa.delete(table).where(table.c.user_id == user_pk)
        if keep is not None:
            query = query.where(table.c.key != keep)
        with self._write() as connection:
            return int(connection.execute(query).rowcount)

    def _user_filter(self, query: Any, user_pk: Any) -> Any:
        column = self._table.c.user_id
        if user_pk is ANY_USER:
            return query
        return query.where(column.is_(None) if user_pk is None else column == user_pk)

    def _session_find(self, now: datetime, *, user_pk: Any = ANY_USER, offset: int = 0,
                      limit: int | None = None) -> list[SessionRecord]:
        table = self._table
        query = (
            sa.select(table)
            .where(table.c.expires_at > now)
            .order_by(table.c.last_seen_at.desc(), table.c.key)
            .offset(offset)
            .limit(limit)
        )
        query = self._user_filter(query, user_pk)
        with self._translated(), self.db.engine.connect() as connection:
            return [_record(row) for row in connection.execute(query)]

    def _session_count(self, now: datetime, *, user_pk: Any = ANY_USER,
                       expired: bool = False) -> int:
        table = self._table
        alive = table.c.expires_at <= now if expired else table.c.expires_at > now
        query = self._user_filter(sa.select(sa.func.count()).select_from(table).where(alive),
                                  user_pk)
        with self._translated(), self.db.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def _session_delete_all(self) -> int:
        with self._write() as connection:
            return int(connection.execute(sa.delete(self._table)).rowcount)

    def _purge_batch_size(self) -> int:
        # SQLite locks the whole file for any write: smaller batches free nothing and
        # each costs a commit (a disk sync).
        return 100_000 if self.db.engine.dialect.name == "sqlite" else 5000

    def _session_delete_expired(self, now: datetime, limit: int) -> int:
        table = self._table
        dead = table.c.expires_at <= now
        # One statement per batch, so each batch locks only the rows it deletes and
        # commits at once. MariaDB takes a LIMIT on DELETE but no LIMIT inside an IN
        # subquery; the others take the subquery.
        if self.db.engine.dialect.name in ("mysql", "mariadb"):
            query = sa.delete(table).where(dead).with_dialect_options(mysql_limit=limit)
        else:
            batch = sa.select(table.c.key).where(dead).limit(limit).scalar_subquery()
            query = sa.delete(table).where(table.c.key.in_(batch))
        with self._write() as connection:
            return int(connection.execute(query).rowcount)


def _check_strings(model: Any) -> None:
    """Refuse a value that is not a str for a string column, before it is sent: each
    driver sends a list or a dict its own way, if at all (PyMySQL as SQL: "()")."""
    state = sa.inspect(model)
    for attribute in state.mapper.column_attrs:
        kind = attribute.columns[0].type
        value = state.dict.get(attribute.key)
        if (isinstance(kind, sa.String) and not isinstance(kind, sa.Enum)
                and value is not None and not isinstance(value, str)):
            raise InvalidValueError(
                f"{type(model).__name__}.{attribute.key} must be a str, "
                f"not {type(value).__name__}."
            )


def _warn_if_unindexed(link: sa.Table, user_table: sa.Table) -> None:
    """Log how to index the link table when its user column has no index.

    Every request reads the user's roles through it: without an index, that is a scan
    of every link (about 1 ms at 10,000 users on SQLite, growing with the table).
    """
    columns = [c for c in link.c if any(fk.column.table is user_table for fk in c.foreign_keys)]
    if not columns:
        return
    leading = {index.columns.values()[0] for index in link.indexes if len(index.columns)}
    primary = link.primary_key.columns.values()
    if primary:
        leading.add(primary[0])
    if any(column in leading for column in columns):
        return
    column = columns[0]
    log.warning(
        "%s.%s has no index, so every request scans %s to find a user's roles; add "
        "one: CREATE INDEX ix_%s_%s ON %s (%s)",
        link.name, column.name, link.name, link.name, column.name, link.name, column.name,
    )


def _record(row: Any) -> SessionRecord:
    return SessionRecord(
        key=row.key, user_pk=row.user_id, data=row.data, created_at=row.created_at,
        last_seen_at=row.last_seen_at, expires_at=row.expires_at,
        user_agent=row.user_agent, ip_address=row.ip_address,
    )


def _python_type(column: sa.Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


#: MySQL and MariaDB errors about a value in the statement, which their drivers report
#: as OperationalError like a lost connection: 1241 a row where one value belongs, 1267,
#: 1270 and 1271 an illegal mix of collations, 1292 a value malformed for its type, 4078
#: operand types that cannot be compared.
_MYSQL_REFUSED_VALUE = frozenset({1241, 1267, 1270, 1271, 1292, 4078})
#: PostgreSQL's SQLSTATE for a value whose type the column does not take.
_PG_DATATYPE_MISMATCH = "42804"


def _unsendable(orig: BaseException | None) -> bool:
    """Return whether the driver refused, before sending anything, a value it cannot
    send: sqlite3 and psycopg2 a list or a dict, PyMySQL an infinite float. Each raises
    the ProgrammingError of a bad statement, told apart only by its words."""
    message = str(orig)
    return message.startswith(("Error binding parameter", "can't adapt type")) or (
        message.endswith("can not be used with MySQL")
    )


def _refused_value(exc: sa_exc.DBAPIError) -> bool:
    """Return whether the database refused a value of the statement (rather than the
    statement, the connection or the server being at fault)."""
    if isinstance(exc, sa_exc.DataError):
        return True
    orig = exc.orig
    if getattr(orig, "pgcode", None) == _PG_DATATYPE_MISMATCH:
        return True
    if isinstance(exc, sa_exc.ProgrammingError) and _unsendable(orig):
        return True
    errno = orig.args[0] if orig is not None and orig.args else None
    return isinstance(errno, int) and errno in _MYSQL_REFUSED_VALUE


def _safe_rollback(session: Any) -> None:
    # When the connection is gone there is nothing left to undo.
    with suppress(sa_exc.SQLAlchemyError):
        session.rollback()
