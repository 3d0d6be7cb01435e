"""The datastore for Peewee 4 (``FlaskDB`` or a plain ``Database``): a translator of
the ORM contract. Peewee keeps one connection per thread, in autocommit mode: each session
write is one statement, durable when it returns; a unit of work is a real transaction (a
savepoint inside one the application opened), or a block's writes could not be undone."""

from __future__ import annotations

import contextvars
import logging
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import peewee
from playhouse.flask_utils import FlaskDB

from ..contract import ModelStore, SessionRows
from ..datastore import UserDatastore
from ..exceptions import SessionStoreError
from ..records import ANY_USER, SessionRecord
from . import _peewee_internals as internals
from ._dbapi import SQLITE_LOWER, python_lower, translate

__all__ = ["PeeweeModels", "PeeweeRows", "PeeweeUserDatastore", "session_model_for"]

log = logging.getLogger("flask_sessionstore")
U = TypeVar("U")
R = TypeVar("R")

#: Session models made, per user model and table name: a second datastore reuses them.
_models: weakref.WeakKeyDictionary[type[Any], dict[str, type[Any]]] = weakref.WeakKeyDictionary()
#: The columns a :class:`SessionRecord` shares with a row, under the same names.
_FIELDS = ("key", "data", "created_at", "last_seen_at", "expires_at", "user_agent", "ip_address",
           "stamp")


def session_model_for(db: Any, user_model: type[Any], *,
                      table_name: str = "sessionstore_session") -> type[Any]:
    """Return the session model for ``user_model``, made on first use and bound to its
    database (``db`` is FlaskDB or that database). It creates no table: add it to your
    ``db.create_tables([...])``. Its ``user`` foreign key (column ``user_id``) has the
    type of the user's primary key, cascades on delete and adds no back-reference."""
    database = internals.bound_database(db, user_model)
    made = _models.setdefault(user_model, {})
    if table_name not in made:
        # Index names start with the table name (legacy_table_names off), so two session
        # tables never share one: PostgreSQL's index names are per schema.
        meta = type("Meta", (), {"database": database, "table_name": table_name,
                                 "legacy_table_names": False})
        when = internals.PreciseDateTimeField
        made[table_name] = type(f"SessionStoreRow_{table_name}", (peewee.Model,), {
            "__module__": __name__, "Meta": meta,
            "__doc__": "A server-side session: one row per live session id (stored hashed).",
            "key": peewee.CharField(max_length=64, primary_key=True),
            "user": peewee.ForeignKeyField(user_model, null=True, index=True, backref="+",
                                           on_delete="CASCADE", column_name="user_id"),
            "data": internals.SessionDataField(),
            "created_at": when(), "last_seen_at": when(), "expires_at": when(index=True),
            "user_agent": peewee.CharField(max_length=512, null=True),
            "ip_address": peewee.CharField(max_length=45, null=True),
            "stamp": peewee.CharField(max_length=64, null=True),
        })
    return made[table_name]


class PeeweeModels(ModelStore[U, R]):
    """Users and roles over Peewee, and this thread's connection, which both stores use."""

    def __init__(self, db: Any, user_model: type[U], role_model: type[R],
                 user_role_model: type[Any]) -> None:
        self.db, self.user_model, self.role_model = db, user_model, role_model
        self.database = internals.bound_database(db, user_model, role_model, user_role_model)
        models: tuple[Any, Any, Any] = (user_model, role_model, user_role_model)
        self._users, self._roles, self._links = models
        self._pk, self.key_kind = internals.user_key(user_model)
        self._user_link = internals.foreign_key(user_role_model, user_model)
        self._role_link = internals.foreign_key(user_role_model, role_model)
        self._roles_at = internals.Backref(self._user_link)
        #: The open unit: Peewee's transaction (or savepoint) object.
        self._unit: contextvars.ContextVar[Any] = contextvars.ContextVar(
            f"sessionstore_peewee_unit_{id(self)}", default=None)
        self._prepared: Any = None
        self.prepared()

    def prepared(self) -> Any:
        """Return the database (None until FlaskDB's is known), prepared for lookups."""
        database = internals.resolved(self.database)
        if database is not None and database is not self._prepared:
            if isinstance(database, peewee.SqliteDatabase):
                database.register_function(python_lower, SQLITE_LOWER, 1, deterministic=True)
            self._prepared = database
        return database

    def init_app(self, app: Any) -> None:
        # FlaskDB closes connections itself. With a plain database the connection opens
        # when a request first needs it (Peewee's autoconnect) and closes at teardown.
        self.prepared()
        if not isinstance(self.db, FlaskDB):
            app.teardown_request(self._close)
            app.teardown_appcontext(self._close)

    def _close(self, exc: BaseException | None = None, *, lost: bool = False) -> None:
        database = self.prepared()
        if database is None or database.is_closed():
            return
        if database.in_transaction():
            # Code around this context holds it (a script, a test), or its rollback ends
            # it: closing would end it. Peewee refuses to, and so does this.
            if not lost:
                log.warning("database connection left open: a transaction is still in progress")
            return
        try:
            database.close()
        except Exception:  # PyMySQL refuses to close a dead socket; Peewee forgets it anyway
            log.warning("closing a broken database connection failed", exc_info=True)

    @contextmanager
    def unit(self) -> Iterator[None]:
        if self._unit.get() is not None:
            yield  # joined: the unit already open in this context commits
            return
        # Peewee's atomic(): a transaction, or a savepoint inside the application's own,
        # ended as a with statement ends it (a commit that fails is rolled back).
        with self.translated():
            block = self.database.atomic().__enter__()
        token, error = self._unit.set(block), None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._unit.reset(token)
            with self.translated():
                block.__exit__(type(error) if error else None, error, None)

    def rollback(self) -> None:
        # Outside a unit each write was committed as it was made. Peewee's rollback()
        # begins the unit again: the block goes on, and what it writes next is one unit.
        unit = self._unit.get()
        if unit is not None:
            with self.translated():
                unit.rollback()

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Raise the library's error for the database's, the open unit rolled back first."""
        try:
            yield
        except (peewee.PeeweeException, OverflowError) as exc:
            error = translate(exc)
            if error is None:
                raise  # a malformed statement: a bug, raised as it is
            unit = self._unit.get()
            if self.prepared() is not None and internals.link_lost(self.database):
                self._close(lost=True)  # so that the next use reconnects
            elif unit is not None:
                try:
                    unit.rollback()
                except peewee.PeeweeException:
                    log.warning("rolling back after a failed statement failed", exc_info=True)
            raise error from exc

    def put(self, model: Any) -> Any:
        with self.translated():
            model.save(force_insert=internals.is_new(model))
        return model

    def delete(self, model: Any) -> None:
        with self.translated():
            for link in (self._user_link, self._role_link):
                if isinstance(model, link.rel_model):
                    self._links.delete().where(link == model).execute()
            model.delete_instance()

    def find_user(self, criteria: dict[str, Any], *, case_insensitive: bool = False) -> U | None:
        columns = internals.fields(self.user_model)
        for name in criteria.keys() - columns.keys():
            raise SessionStoreError(f"{self.user_model.__name__}.{name} is not a column.")
        # An index on LOWER(column) serves this (see the docs page).
        sqlite = isinstance(self.prepared(), peewee.SqliteDatabase)
        lower = getattr(peewee.fn, SQLITE_LOWER) if sqlite else peewee.fn.LOWER
        conditions = [lower(columns[name]) == value
                      if case_insensitive and isinstance(value, str) else columns[name] == value
                      for name, value in criteria.items()]
        with self.translated():
            return self._users.select().where(*conditions).first()  # type: ignore[no-any-return]

    def get_user(self, key: Any) -> U | None:
        with self.translated():
            user = self._users.get_or_none(self._pk == key)
        return None if user is None else self.with_roles(user)

    def find_role(self, name: str) -> R | None:
        with self.translated():
            return self._roles.get_or_none(self._roles.name == name)  # type: ignore[no-any-return]

    def list(self, model: type[Any], offset: int, limit: int | None) -> Sequence[Any]:
        query = model.select().order_by(internals.primary_key(model)).offset(offset)
        with self.translated():
            return [*query.limit(limit)]

    def key_of(self, user: U) -> Any:
        if getattr(user, self._pk.name) is None:
            self.put(user)  # a key the database assigns exists once the user is stored
        return getattr(user, self._pk.name)

    def roles_of(self, user: U) -> Iterable[R]:
        link = self._role_link
        with self.translated():
            return [*self._roles.select().join(self._links, on=(link == link.rel_field))
                    .where(self._user_link == user)]

    def link(self, user: U, role: R) -> None:
        self.put(self._links(**{self._user_link.name: user, self._role_link.name: role}))
        if self._roles_at.is_set(user):  # so that the grant shows in the attached query
            self.with_roles(user)

    def unlink(self, user: U, role: R) -> None:
        with self.translated():
            self._links.delete().where(self._user_link == user, self._role_link == role).execute()
        if self._roles_at.is_set(user):
            self.with_roles(user)

    def with_roles(self, user: U) -> U:
        """Return ``user``, whose back-reference now reads its link rows and their roles in
        one SELECT, sent when first read (Peewee's own sends one more per role)."""
        links = self._links
        self._roles_at.set(user, links.select(links, self._roles).join(
            self._roles, on=self._role_link).where(self._user_link == user))
        return user


class PeeweeRows(SessionRows):
    """The session rows over Peewee, in ``session_model``'s table. Inside the application's
    own ``db.atomic()`` block (or a unit), a write joins it: Peewee has one connection per
    thread, and a second one could deadlock against the first."""

    def __init__(self, models: PeeweeModels[Any, Any], session_model: type[Any]) -> None:
        self._models, self._table = models, session_model

    def insert(self, record: SessionRecord) -> None:
        values = {name: getattr(record, name) for name in _FIELDS}
        with self._models.translated():
            self._table.insert(user=record.user_pk, **values).execute()

    def load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        rows, users = self._table, self._models.user_model
        query = (rows.select(rows, users).join(users, peewee.JOIN.LEFT_OUTER, on=rows.user)
                 .where(rows.key == key, rows.expires_at > now))
        with self._models.translated():
            row = query.first()
            user = None if row is None else row.user
        if row is None:
            return None
        return _record(row), None if user is None else self._models.with_roles(user)

    def update(self, key: str, now: datetime, *, data: str | None,
               expires_at: datetime) -> bool:
        rows = self._table
        values: dict[Any, Any] = {rows.expires_at: expires_at, rows.last_seen_at: now}
        if data is not None:
            values[rows.data] = data
        live = (rows.key == key) & (rows.expires_at > now)
        with self._models.translated():
            if rows.update(values).where(live).execute() == 1:
                return True
            if not isinstance(self._models.prepared(), peewee.MySQLDatabase):
                return False
            # MySQL reports the rows an UPDATE changed, not those it matched: writing
            # the values a row already holds reports 0. Ask whether the row lives.
            return bool(rows.select(rows.key).where(live).exists())

    def delete(self, keys: Iterable[str]) -> int:
        keys, rows = [*keys], self._table
        with self._models.translated():
            return int(rows.delete().where(rows.key.in_(keys)).execute()) if keys else 0

    def delete_owned(self, owner: Any, *, keep: str | None = None) -> int:
        rows = self._table
        query = rows.delete().where(rows.user == owner)
        with self._models.translated():
            return int((query if keep is None else query.where(rows.key != keep)).execute())

    def clear(self) -> int:
        with self._models.translated():
            return int(self._table.delete().execute())

    def find(self, now: datetime, *, owner: Any = ANY_USER, offset: int = 0,
             limit: int | None = None) -> list[SessionRecord]:
        rows = self._table
        query = self._where(rows.select(), now, owner).order_by(rows.last_seen_at.desc(), rows.key)
        with self._models.translated():
            return [_record(row) for row in query.offset(offset).limit(limit)]

    def count(self, now: datetime, *, owner: Any = ANY_USER, expired: bool = False) -> int:
        rows = self._table
        query = self._where(rows.select(peewee.fn.COUNT(rows.key)), now, owner, expired)
        with self._models.translated():
            return int(query.scalar())

    def purge(self, now: datetime, limit: int) -> int:
        rows = self._table
        dead = rows.expires_at <= now
        # Select, then delete by key: MariaDB allows no LIMIT in an IN subquery. The delete
        # repeats the expiry test, so a row renewed between the two is spared.
        with self._models.translated():
            keys = [key for (key,) in rows.select(rows.key).where(dead).limit(limit).tuples()]
            return int(rows.delete().where(rows.key.in_(keys), dead).execute()) if keys else 0

    def _where(self, query: Any, now: datetime, owner: Any, expired: bool = False) -> Any:
        rows = self._table
        query = query.where(rows.expires_at <= now if expired else rows.expires_at > now)
        if owner is ANY_USER:
            return query
        return query.where(rows.user.is_null() if owner is None else rows.user == owner)


class PeeweeUserDatastore(UserDatastore[U, R]):
    """The datastore over Peewee: ``PeeweeUserDatastore(db, User, Role, UserRoles)``.

    :param db: ``playhouse.flask_utils.FlaskDB`` or the ``peewee.Database`` of the models.
    :param user_role_model: the model linking users to roles, one foreign key to each; the
        user's back-reference (``backref='roles'`` in the seed) yields its rows, whose
        ``role`` :class:`~flask_sessionstore.UserMixin` reads.
    :param session_model: a model with the fields of :func:`session_model_for` (by default
        made by it): :attr:`session_model`, whose table you create.

    Other keyword arguments are those of :class:`~flask_sessionstore.UserDatastore`.
    """

    user_model: type[U]
    role_model: type[R]

    def __init__(self, db: Any, user_model: type[U], role_model: type[R],
                 user_role_model: type[Any], *, session_model: type[Any] | None = None,
                 **options: Any) -> None:
        models = PeeweeModels(db, user_model, role_model, user_role_model)
        self.db, self.user_role_model = db, user_role_model
        self.session_model = session_model or session_model_for(db, user_model)
        super().__init__(models, PeeweeRows(models, self.session_model), **options)


def _record(row: Any) -> SessionRecord:
    return SessionRecord(user_pk=row.user_id, **{name: getattr(row, name) for name in _FIELDS})

