"""The Flask-SQLAlchemy session rows: the ``SessionRows`` half of the SQLAlchemy
translator (:mod:`flask_sessionstore.orm.sqlalchemy` has the rest), and the error
translation both halves share.

Rows are read through ``db.session`` (the user and its roles in the same SELECT) but
written in short transactions of their own on ``db.engine``, so a session save never
commits, or is undone with, the view's changes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import has_app_context
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import contains_eager, relationship

from ..contract import SessionRows
from ..exceptions import DatastoreUnavailableError, InvalidValueError
from ..records import ANY_USER, SessionRecord
from ._dbapi import translate

__all__ = ["MYSQL", "SQLAlchemyRows", "session_model_for", "translated"]

#: Session models made, per metadata and table name, for a second datastore on one ``db``.
_models: weakref.WeakKeyDictionary[sa.MetaData, dict[str, type[Any]]] = weakref.WeakKeyDictionary()
#: The dialect names of MySQL and MariaDB.
MYSQL = ("mysql", "mariadb")
#: The columns a :class:`SessionRecord` shares with a row, under the same names.
_FIELDS = ("key", "data", "created_at", "last_seen_at", "expires_at", "user_agent", "ip_address",
           "stamp")


def session_model_for(db: Any, user_model: type[Any], *,
                      tablename: str = "sessionstore_session") -> type[Any]:
    """Return the session model for ``db``, made on first use; ``db.create_all()``
    creates its table. Its ``user_id`` column has the type of ``user_model``'s primary
    key and a foreign key to it that cascades on delete."""
    made = _models.setdefault(db.metadata, {})
    if tablename not in made:
        pk = sa.inspect(user_model).primary_key[0]
        # MariaDB's DATETIME drops fractions of a second unless asked to keep them.
        moment = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *MYSQL)
        made[tablename] = type(f"SessionStoreRow_{tablename}", (db.Model,), {
            "__tablename__": tablename,
            "__doc__": "A server-side session: one row per live session id (stored hashed).",
            "key": sa.Column(sa.String(64), primary_key=True),
            "user_id": sa.Column(pk.type, sa.ForeignKey(pk, ondelete="CASCADE"), index=True),
            "data": sa.Column(sa.Text().with_variant(mysql.MEDIUMTEXT(), *MYSQL), nullable=False),
            "created_at": sa.Column(moment, nullable=False),
            "last_seen_at": sa.Column(moment, nullable=False),
            "expires_at": sa.Column(moment, nullable=False, index=True),
            "user_agent": sa.Column(sa.String(512)), "ip_address": sa.Column(sa.String(45)),
            "stamp": sa.Column(sa.String(64)),
            "user": relationship(user_model, lazy="select"),
        })
    return made[tablename]


@contextmanager
def translated(session: Any) -> Iterator[None]:
    """Raise what the database said as the library's error, ``session`` rolled back."""
    try:
        yield
    except (sa_exc.SQLAlchemyError, OverflowError) as exc:
        error = translate(exc)
        if isinstance(exc, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
            error = DatastoreUnavailableError(str(exc))  # a dead connection, a full pool
        elif error is None and isinstance(exc, sa_exc.StatementError) \
                and isinstance(exc.orig, (TypeError, ValueError)):
            # SQLAlchemy refused a value itself (SQLite's DateTime takes no string).
            error = InvalidValueError(str(exc.orig))
        if error is None:
            raise
        # PostgreSQL has aborted the transaction: roll back everywhere alike.
        with suppress(sa_exc.SQLAlchemyError):
            session.rollback()
        raise error from exc


class SQLAlchemyRows(SessionRows):
    """The session table, written on ``db.engine`` in transactions of its own."""

    def __init__(self, models: Any, session_model: type[Any]) -> None:
        self.models, self.db, self.model = models, models.db, session_model
        self.table: sa.Table = session_model.__table__

    @property
    def purge_batch(self) -> int:  # type: ignore[override]
        """100,000 on SQLite, whose writes lock the whole file anyway; else 5,000."""
        return 100_000 if has_app_context() and self.db.engine.dialect.name == "sqlite" else 5000

    def _write(self, statement: Any) -> int:
        with translated(self.db.session), self.db.engine.begin() as connection:
            return int(connection.execute(statement).rowcount)

    def _read(self, query: Any, owner: Any) -> Sequence[Any]:
        column = self.table.c.user_id
        if owner is not ANY_USER:
            query = query.where(column.is_(None) if owner is None else column == owner)
        with translated(self.db.session), self.db.engine.connect() as connection:
            return connection.execute(query).all()  # type: ignore[no-any-return]

    def insert(self, record: SessionRecord) -> None:
        fields = {name: getattr(record, name) for name in _FIELDS}
        self._write(sa.insert(self.table).values(user_id=record.user_pk, **fields))

    def load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        model = self.model
        query = self.models._with_roles(sa.select(model).outerjoin(model.user),
                                        contains_eager(model.user))
        row = self.models._first(query.where(model.key == key, model.expires_at > now))
        return None if row is None else (_record(row), row.user)

    def update(self, key: str, now: datetime, *, data: str | None,
               expires_at: datetime) -> bool:
        live = (self.table.c.key == key, self.table.c.expires_at > now)
        query = sa.update(self.table).where(*live).values(expires_at=expires_at, last_seen_at=now)
        return self._write(query if data is None else query.values(data=data)) == 1

    def delete(self, keys: Iterable[str]) -> int:
        keys = [*keys]
        return self._write(sa.delete(self.table).where(self.table.c.key.in_(keys))) if keys else 0

    def delete_owned(self, owner: Any, *, keep: str | None = None) -> int:
        query = sa.delete(self.table).where(self.table.c.user_id == owner)
        return self._write(query if keep is None else query.where(self.table.c.key != keep))

    def clear(self) -> int:
        return self._write(sa.delete(self.table))

    def find(self, now: datetime, *, owner: Any = ANY_USER, offset: int = 0,
             limit: int | None = None) -> list[SessionRecord]:
        table = self.table
        query = (sa.select(table).where(table.c.expires_at > now)
                 .order_by(table.c.last_seen_at.desc(), table.c.key).offset(offset).limit(limit))
        return [_record(row) for row in self._read(query, owner)]

    def count(self, now: datetime, *, owner: Any = ANY_USER, expired: bool = False) -> int:
        alive = self.table.c.expires_at <= now if expired else self.table.c.expires_at > now
        return int(self._read(sa.select(sa.func.count()).where(alive), owner)[0][0])

    def purge(self, now: datetime, limit: int) -> int:
        table, dead = self.table, self.table.c.expires_at <= now
        # One statement per batch, locking only its rows. MariaDB takes a LIMIT on
        # DELETE but none inside an IN subquery; the others take the subquery.
        if self.db.engine.dialect.name in MYSQL:
            return self._write(sa.delete(table).where(dead).with_dialect_options(mysql_limit=limit))
        batch = sa.select(table.c.key).where(dead).limit(limit).scalar_subquery()
        return self._write(sa.delete(table).where(table.c.key.in_(batch)))


def _record(row: Any) -> SessionRecord:
    return SessionRecord(user_pk=row.user_id, **{name: getattr(row, name) for name in _FIELDS})
