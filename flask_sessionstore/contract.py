"""The whole contract between the core and an ORM: :class:`ModelStore` and :class:`SessionRows`.

An ORM module implements these two small classes (two classes of its own: both have a
``delete``, of a model and of session keys) and nothing else: every rule of the product
(who may log in, when a session ends, how a role is granted) lives above them.
``tests/test_contract.py`` checks each promise written here on every ORM and database.

Every method raises only the library's errors for what the database reports:

- :class:`~flask_sessionstore.exceptions.DuplicateError` for a uniqueness violation;
- :class:`~flask_sessionstore.exceptions.InvalidValueError` for a value the column or
  the driver refuses (too long, out of range, of another type);
- :class:`~flask_sessionstore.exceptions.ConstraintError` for any other integrity
  failure (a required column left empty, a foreign key);
- :class:`~flask_sessionstore.exceptions.DatastoreUnavailableError` when the database
  cannot serve (connection lost or refused, lock timeout, deadlock).

After any of them the unit of work has been rolled back. ``orm/_dbapi.py`` classifies
DB-API errors once for every SQL translator.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from .records import ANY_USER, KeyKind, SessionRecord

__all__ = ["ModelStore", "SessionRows", "in_scope"]

U = TypeVar("U")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


class ModelStore(abc.ABC, Generic[U, R]):
    """Users and roles of one ORM: the application's own model classes, read and written.

    Values given to these methods were checked by the core: identity values are text
    without NUL characters, keys were parsed with :attr:`key_kind`, and ``criteria``
    names only attributes of the user model (whether each is a column is the
    translator's to say: :meth:`find_user`).
    """

    #: The application's user model and role model.
    user_model: type[U]
    role_model: type[R]
    #: What the user model's primary key is (declared data, not a query); the core
    #: parses every key with it.
    key_kind: KeyKind

    def init_app(self, app: Any) -> None:
        """Set up per-request work on ``app`` (open and close connections, join the
        ORM's unit of work to the request). Called once per app by ``SessionStore``."""

    def scope(self) -> AbstractContextManager[None]:
        """Return the scope in which objects read stay usable, around each public
        datastore method (a Pony ``db_session``; nothing for ORMs without one)."""
        return nullcontext()

    def attributes(self, model: Any, names: Sequence[str]) -> list[Any]:
        """Return the values of ``model``'s attributes ``names`` (None for one it lacks).
        An ORM whose objects load expired attributes lazily (SQLAlchemy after a commit)
        translates a failure of that load into the library's errors."""
        return [getattr(model, name, None) for name in names]

    def adopt(self, value: Any) -> Any:
        """Return ``value``, an argument of a public datastore method, usable in the
        current :meth:`scope` (a Pony entity of an ended ``db_session`` is read again);
        other values unchanged."""
        return value

    @abc.abstractmethod
    def unit(self) -> AbstractContextManager[None]:
        """Return a unit of work: on normal exit everything written in it (and what the
        application had pending in the ORM's session) is committed and durable; on an
        error it is all rolled back and the error propagates.

        Where the application already has a transaction of its own open, the unit joins
        it (as a savepoint where the ORM has them) and does not commit the
        application's work.
        """

    @abc.abstractmethod
    def rollback(self) -> None:
        """Discard whatever is pending in the ORM's session (nothing when none is)."""

    @abc.abstractmethod
    def put(self, model: Any) -> Any:
        """Insert ``model`` if it is new, else write its changed attributes; return it.

        The write is sent at once (so a violated constraint is raised here), and made
        durable when the unit of work ends; a store without multi-document
        transactions (MongoDB) may hold it back inside a unit until the unit ends or the
        next read. A new object is never written over a stored one with the same key:
        that is a :class:`DuplicateError`.
        """

    @abc.abstractmethod
    def delete(self, model: Any) -> None:
        """Delete ``model`` and the links that exist only for it (a user's or a role's
        rows in the user-role link)."""

    @abc.abstractmethod
    def find_user(self, criteria: dict[str, Any], *, case_insensitive: bool = False) -> U | None:
        """Return the first user whose attributes equal every one of ``criteria``, or
        None; a name that is not a stored attribute (a property, a method) raises
        :class:`SessionStoreError`. Values are compared as they are (no conversion); with
        ``case_insensitive``, string values (lower-cased by the core with Python's
        ``str.lower``) are compared with the column lower-cased the same way, beyond
        ASCII too."""

    @abc.abstractmethod
    def get_user(self, key: Any) -> U | None:
        """Return the user whose primary key is ``key`` (parsed already), with its
        roles loaded in the same round trip where the ORM allows, or None."""

    @abc.abstractmethod
    def find_role(self, name: str) -> R | None:
        """Return the role named exactly ``name``, or None."""

    @abc.abstractmethod
    def list(self, model: type[Any], offset: int, limit: int | None) -> Sequence[Any]:
        """Return stored objects of ``model`` (the user or the role model) in primary-key
        order, ``offset`` and ``limit`` applied (None: no limit)."""

    @abc.abstractmethod
    def key_of(self, user: U) -> Any:
        """Return ``user``'s primary key, without a query where the ORM can tell it
        (a user not stored yet gets its key written first)."""

    @abc.abstractmethod
    def roles_of(self, user: U) -> Iterable[R]:
        """Return the roles ``user`` holds (the role objects, not link rows)."""

    @abc.abstractmethod
    def link(self, user: U, role: R) -> None:
        """Grant ``role`` to ``user`` (known not to hold it) in the unit of work; what
        the application reads from ``user`` afterwards shows it."""

    @abc.abstractmethod
    def unlink(self, user: U, role: R) -> None:
        """Take ``role`` from ``user`` (known to hold it) in the unit of work; what the
        application reads from ``user`` afterwards shows it."""


class SessionRows(abc.ABC):
    """The table (or collection) of server-side sessions, one row per live session.

    Every write is durable when it returns, and independent of the application's
    pending work: a request's session save never commits, or is undone with, the view's
    own changes. One exception: where the ORM gives a thread a single connection
    (Peewee, Pony), a row written while a :meth:`ModelStore.unit` is open is part of
    that unit, and commits or rolls back with it (a second connection would deadlock on
    the unit's own locks). Liveness (``expires_at`` after ``now``) is checked inside the query that
    reads or updates a row, never by a read followed by a write.
    """

    #: How many dead rows :meth:`purge` deletes per statement by default. Each batch
    #: costs a commit; a database with a single writer (SQLite) gains nothing from
    #: small ones.
    purge_batch: int = 5000

    @abc.abstractmethod
    def insert(self, record: SessionRecord) -> None:
        """Store a new row.

        :raises DuplicateError: when a row with the same key exists; it is never
            overwritten (S03).
        """

    @abc.abstractmethod
    def load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        """Return the live row stored under ``key`` and its user (None for an anonymous
        row), or None when there is no live row.

        One round trip brings the row, the user and the user's roles, so reading
        ``user.roles`` sends nothing more.
        """

    @abc.abstractmethod
    def update(self, key: str, now: datetime, *, data: str | None,
               expires_at: datetime) -> bool:
        """Set a live row's ``expires_at``, its ``last_seen_at`` (to ``now``) and, unless
        ``data`` is None, its data.

        :returns: False when no live row has ``key``; nothing is then written (never an
            upsert), so a session ended meanwhile is not brought back (S09).
        """

    @abc.abstractmethod
    def delete(self, keys: Iterable[str]) -> int:
        """Delete the rows stored under ``keys``; return how many there were."""

    @abc.abstractmethod
    def delete_owned(self, owner: Any, *, keep: str | None = None) -> int:
        """Delete every row of the user whose key is ``owner`` (not None), except the
        one stored under ``keep``; return how many were deleted."""

    @abc.abstractmethod
    def clear(self) -> int:
        """Delete every row; return how many."""

    @abc.abstractmethod
    def find(self, now: datetime, *, owner: Any = ANY_USER, offset: int = 0,
             limit: int | None = None) -> list[SessionRecord]:
        """Return live rows, most recently seen first (then by key), ``offset`` and
        ``limit`` applied.

        ``owner`` selects: :data:`~flask_sessionstore.records.ANY_USER` every row, None
        the anonymous rows, any other value the rows of the user with that key.
        """

    @abc.abstractmethod
    def count(self, now: datetime, *, owner: Any = ANY_USER, expired: bool = False) -> int:
        """Count the live rows, or with ``expired`` the dead rows not yet purged;
        ``owner`` selects as in :meth:`find`."""

    @abc.abstractmethod
    def purge(self, now: datetime, limit: int) -> int:
        """Delete at most ``limit`` rows dead at ``now`` in one short statement (locking
        only those rows); return how many. A row renewed meanwhile is spared."""



def in_scope(method: F) -> F:
    """Run a method of an object with a ``models`` :class:`ModelStore` in the models'
    :meth:`~ModelStore.scope`, its arguments passed through :meth:`~ModelStore.adopt`.

    The public methods of the datastore wear it, so that objects stay usable across the
    several calls a rule makes (one Pony ``db_session``), whatever the caller holds.
    """

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        models: ModelStore[Any, Any] = self.models
        with models.scope():
            args = tuple(models.adopt(value) for value in args)
            kwargs = {name: models.adopt(value) for name, value in kwargs.items()}
            return method(self, *args, **kwargs)

    return cast(F, run)
