"""The datastore for Flask-SQLAlchemy 3: users and roles go through ``db.session``, so
the objects returned are the application's own. The session rows are in
:mod:`flask_sessionstore.orm.sqlalchemy_rows`."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import contains_eager, selectinload

from ..contract import ModelStore, R, U
from ..datastore import UserDatastore
from ..exceptions import InvalidValueError, SessionStoreError
from ..records import KeyKind
from ._dbapi import SQLITE_LOWER, python_lower
from ._sqlalchemy_internals import end_sessions_quietly
from .sqlalchemy_rows import MYSQL, SQLAlchemyRows, session_model_for, translated

__all__ = ["SQLAlchemyModels", "SQLAlchemyRows", "SQLAlchemyUserDatastore", "session_model_for"]

log = logging.getLogger("flask_sessionstore")

#: Where ``db.session.info`` counts the units of work open in it.
_DEPTH = "sessionstore_units"
def _key_kind(column: sa.Column[Any]) -> KeyKind:
    with suppress(NotImplementedError):  # a type that does not know its Python type
        kinds = {int: KeyKind.integer(), uuid.UUID: KeyKind.uuid(),
                 str: KeyKind.text(getattr(column.type, "length", None))}
        return kinds.get(column.type.python_type, KeyKind(type(None)))
    return KeyKind(type(None))  # a key of another type is never parsed from text


class SQLAlchemyModels(ModelStore[U, R]):
    """Users and roles in Flask-SQLAlchemy's ``db.session``."""

    def __init__(self, db: Any, user_model: type[U], role_model: type[R]) -> None:
        self.db, self.user_model, self.role_model = db, user_model, role_model
        mapper = sa.inspect(user_model)
        self._pk = mapper.primary_key[0]
        self._columns = frozenset(attribute.key for attribute in mapper.column_attrs)
        self.key_kind = _key_kind(self._pk)
        self._roles = roles = mapper.relationships.get("roles")
        # Roles come in the user's SELECT unless their relationship cannot load so.
        self._eager = roles if roles is not None and roles.lazy not in (
            "dynamic", "write_only", "noload") else None
        if roles is not None and roles.secondary is not None:
            _warn_if_unindexed(roles.secondary, mapper.local_table)

    def init_app(self, app: Any) -> None:
        """End ``db.session`` after each request; warn of MariaDB's REPEATABLE READ."""
        end_sessions_quietly(app, self.db)
        with app.app_context():
            engine = self.db.engine
        isolation = engine.get_execution_options().get("isolation_level") or (
            app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}).get("isolation_level")
        if engine.dialect.name in MYSQL and isolation != "READ COMMITTED":
            log.warning("MariaDB/MySQL: set SQLALCHEMY_ENGINE_OPTIONS = {'isolation_level': "
                        "'READ COMMITTED'} so that sessions stored during a transaction are "
                        "visible to it (REPEATABLE READ keeps the snapshot of its first query)")

    @contextmanager
    def unit(self) -> Iterator[None]:
        """Commit ``db.session`` when the outermost unit ends; roll it back on an error."""
        info = self.db.session.info
        depth = info[_DEPTH] = info.get(_DEPTH, 0) + 1
        try:
            yield
            if depth == 1:
                with translated(self.db.session):
                    self.db.session.commit()
        except BaseException:
            self.db.session.rollback()
            raise
        finally:
            info[_DEPTH] = depth - 1

    def attributes(self, model: Any, names: Sequence[str]) -> list[Any]:
        with translated(self.db.session):  # a commit expired them: they load again
            return super().attributes(model, names)

    def rollback(self) -> None:
        self.db.session.rollback()

    def put(self, model: Any) -> Any:
        _check_strings(model)
        with translated(self.db.session):
            self.db.session.add(model)
            self.db.session.flush()
        return model

    def delete(self, model: Any) -> None:
        with translated(self.db.session):
            if isinstance(model, self.role_model):
                self._unlink_role(model)
            self.db.session.delete(model)
            self.db.session.flush()

    def _unlink_role(self, role: Any) -> None:
        # SQLAlchemy keeps them without a "users" backref: a role reusing the id gains them.
        roles, session = self._roles, self.db.session
        if roles is None or roles.secondary is None:
            return
        session.flush()
        link, mapper = roles.secondary, sa.inspect(self.role_model)
        for key in link.foreign_keys:
            if key.column.table is mapper.local_table:
                value = getattr(role, mapper.get_property_by_column(key.column).key)
                session.execute(sa.delete(link).where(key.parent == value))
        for held in list(session.identity_map.values()):
            if isinstance(held, self.user_model):
                session.expire(held, ["roles"])

    def _first(self, query: Any) -> Any:
        with translated(self.db.session):
            return self.db.session.execute(query).unique().scalars().first()

    def find_user(self, criteria: dict[str, Any], *, case_insensitive: bool = False) -> U | None:
        query = sa.select(self.user_model)
        with translated(self.db.session):
            lower = self._lower_function() if case_insensitive else (lambda column: column)
        for name, value in criteria.items():
            if name not in self._columns:
                raise SessionStoreError(f"{self.user_model.__name__}.{name} is not a column.")
            column = getattr(self.user_model, name)
            query = query.where((lower(column) if isinstance(value, str) else column) == value)
        return self._first(query.limit(1))  # type: ignore[no-any-return]

    def _lower_function(self) -> Any:
        # SQLite's lower() folds ASCII only ("Ünal" ≠ "ünal"): there Python's is used.
        connection = self.db.session.connection()
        if connection.dialect.name != "sqlite":
            return sa.func.lower
        raw = connection.connection.driver_connection
        if raw is not None:
            raw.create_function(SQLITE_LOWER, 1, python_lower, deterministic=True)
        return getattr(sa.func, SQLITE_LOWER)

    def get_user(self, key: Any) -> U | None:
        return self._first(self._with_roles(sa.select(self.user_model).where(self._pk == key)))  # type: ignore[no-any-return]

    def _with_roles(self, query: Any, user: Any = None) -> Any:
        # ``user``: the user's loader option when the query selects a session row.
        roles = self._eager
        if roles is None:
            return query if user is None else query.options(user)
        attribute = roles.class_attribute
        loader = contains_eager(attribute) if user is None else user.contains_eager(attribute)
        if roles.secondary is None:
            return query.outerjoin(attribute).options(loader)
        # Flat: SQLAlchemy nests a many-to-many join, "LEFT JOIN (link JOIN role)",
        # which SQLite materializes whole on every read (6 ms at 10,000 users).
        return (query.outerjoin(roles.secondary, roles.primaryjoin)
                .outerjoin(roles.mapper.class_, roles.secondaryjoin).options(loader))

    def find_role(self, name: str) -> R | None:
        role: Any = self.role_model
        return self._first(sa.select(role).where(role.name == name).limit(1))  # type: ignore[no-any-return]

    def list(self, model: type[Any], offset: int, limit: int | None) -> Sequence[Any]:
        query = sa.select(model).order_by(*sa.inspect(model).primary_key)
        if model is self.user_model and self._eager is not None:
            # One more statement for every user's roles, not one per user.
            query = query.options(selectinload(self._eager.class_attribute))
        with translated(self.db.session):
            return self.db.session.execute(query.offset(offset).limit(limit)).scalars().all()  # type: ignore[no-any-return]

    def key_of(self, user: U) -> Any:
        # The identity needs no query, even when a commit expired the object.
        if sa.inspect(user).identity is None:
            self.put(user)
        return sa.inspect(user).identity[0]

    def roles_of(self, user: U) -> Iterable[R]:
        return user.roles  # type: ignore[attr-defined, no-any-return]

    def link(self, user: U, role: R) -> None:
        user.roles.append(role)  # type: ignore[attr-defined]
        self.put(user)

    def unlink(self, user: U, role: R) -> None:
        user.roles.remove(role)  # type: ignore[attr-defined]
        self.put(user)


class SQLAlchemyUserDatastore(UserDatastore[U, R]):
    """The datastore over Flask-SQLAlchemy: ``SQLAlchemyUserDatastore(db, User, Role)``.

    :param session_model: a model for the session rows, with the columns of
        :func:`session_model_for` (which makes one on ``db`` by default). Other keyword
        arguments are those of :class:`~flask_sessionstore.UserDatastore`.
    """

    def __init__(self, db: Any, user_model: type[U], role_model: type[R], *,
                 session_model: type[Any] | None = None, **options: Any) -> None:
        self.db, self.session_model = db, session_model or session_model_for(db, user_model)
        models = SQLAlchemyModels(db, user_model, role_model)
        super().__init__(models, SQLAlchemyRows(models, self.session_model), **options)


def _check_strings(model: Any) -> None:
    """Refuse a value that is not a str for a string column, before it is sent: each
    driver sends a list or a dict its own way, if at all (PyMySQL as SQL: "()")."""
    state = sa.inspect(model)
    for attribute in state.mapper.column_attrs:
        kind, value = attribute.columns[0].type, state.dict.get(attribute.key)
        if (isinstance(kind, sa.String) and not isinstance(kind, sa.Enum)
                and value is not None and not isinstance(value, str)):
            raise InvalidValueError(f"{type(model).__name__}.{attribute.key} must be a "
                                    f"str, not {type(value).__name__}.")


def _warn_if_unindexed(link: sa.Table, user_table: Any) -> None:
    """Log how to index the link table's user column when no index leads with it:
    every request reads a user's roles through it (1 ms at 10,000 users on SQLite)."""
    columns = [c for c in link.c if any(fk.column.table is user_table for fk in c.foreign_keys)]
    keys: list[Any] = [*link.indexes, link.primary_key]
    if columns and not set(columns) & {key.columns.values()[0] for key in keys if len(key.columns)}:
        log.warning("%(t)s.%(c)s has no index, so every request scans %(t)s to find a user's "
                    "roles; add one: CREATE INDEX ix_%(t)s_%(c)s ON %(t)s (%(c)s)",
                    {"t": link.name, "c": columns[0].name})


