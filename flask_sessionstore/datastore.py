"""The :class:`UserDatastore`: every user, role, password and session rule, written once.

An ORM module subclasses :class:`UserDatastore` and implements only the abstract
*primitives* below (find, save, delete, commit, and the session-row operations). It
holds no rule of its own: what makes a user active, how a role is granted, when
sessions end, all lives here.
"""

from __future__ import annotations

import abc
import contextvars
import hashlib
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import signals
from .exceptions import (
    ConstraintError,
    InvalidValueError,
    PasswordError,
    SessionStoreError,
    UnknownRoleError,
    UserExistsError,
)
from .mixins import parse_permissions
from .passwords import PasswordHasher

if TYPE_CHECKING:
    from .cache import RedisSessionCache

__all__ = ["ANY_USER", "SessionAdmin", "SessionRecord", "UserDatastore", "session_key", "utcnow"]

U = TypeVar("U")
R = TypeVar("R")


#: The session-data key that marks a session made by ``create_session`` (a token).
TOKEN_MARK = "_sessionstore_token"  # noqa: S105 (a key name, not a secret)


class _AnyUser:
    def __repr__(self) -> str:
        return "ANY_USER"


#: Selects the sessions of every user and the anonymous ones, in session queries.
ANY_USER: Any = _AnyUser()


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime, the form every store keeps.

    Naive UTC is used because SQLite and MariaDB have no time-zone-aware column type;
    keeping one form everywhere makes comparisons in queries exact.
    """
    return datetime.now(timezone.utc).replace(tzinfo=None)


def session_key(session_id: str) -> str:
    """Return the key a session is stored under: the SHA-256 of its id, in hex.

    Only this hash is stored (S02), so a leaked session table opens no session.
    """
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


@dataclass
class SessionRecord:
    """One stored session, as the core sees it, whatever the ORM.

    ``data`` is the session's content serialized by Flask's tagged JSON serializer.
    ``expires_at`` is the moment the session dies: the earlier of its idle expiry and its
    absolute expiry, so that one indexed column serves both the read check and purging.
    """

    key: str
    user_pk: Any
    data: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    user_agent: str | None = None
    ip_address: str | None = None
    #: Set by :meth:`UserDatastore.list_sessions`: this is the current request's session.
    current: bool = False
    #: Set when the record was read with its user (:meth:`UserDatastore.retrieve_session`).
    user: Any = None


@dataclass
class _Transaction:
    after_commit: list[Callable[[], object]] = field(default_factory=list)


class UserDatastore(abc.ABC, Generic[U, R]):
    """Users, roles, passwords and sessions over one ORM.

    :param db: the ORM's database object, as the application made it.
    :param user_model: the application's user model.
    :param role_model: the application's role model.
    :param identity_attributes: the user attributes :meth:`get_user` and
        :meth:`authenticate` look up, in order; those the model lacks are skipped.
    :param password_hasher: how passwords are hashed; argon2 by default.

    Each mutating method commits its own work, unless it runs inside
    :meth:`transaction`, in which case everything commits (or rolls back) together when
    the outermost block ends.
    """

    def __init__(
        self,
        db: Any,
        user_model: type[U],
        role_model: type[R],
        *,
        identity_attributes: Sequence[str] = ("email", "username"),
        password_hasher: PasswordHasher | None = None,
    ) -> None:
        self.db = db
        self.user_model = user_model
        self.role_model = role_model
        self.identity_attributes = tuple(
            name for name in identity_attributes if hasattr(user_model, name)
        )
        self.password_hasher = password_hasher or PasswordHasher()
        #: The cache in front of the session rows, if any (set by ``SessionStore``).
        self.cache: RedisSessionCache | None = None
        self._transaction: contextvars.ContextVar[_Transaction | None] = contextvars.ContextVar(
            f"sessionstore_transaction_{id(self)}", default=None
        )

    def init_app(self, app: Any) -> None:
        """Hook for an ORM module to set up per-request work on ``app`` (opening and
        closing connections, say). Called by :meth:`SessionStore.init_app`."""

    # ------------------------------------------------------------------------------
    # Primitives: what an ORM module translates. Nothing else is ORM-specific.
    # ------------------------------------------------------------------------------

    @abc.abstractmethod
    def put(self, model: Any) -> Any:
        """Add or update ``model`` in the current unit of work and write it now.

        :raises ConstraintError: when a unique or integrity constraint fails.
        :returns: ``model``.
        """

    @abc.abstractmethod
    def delete(self, model: Any) -> None:
        """Delete ``model`` and the rows that only exist for it (such as role links)."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Commit the current unit of work.

        :raises ConstraintError: when a unique or integrity constraint fails.
        """

    @abc.abstractmethod
    def rollback(self) -> None:
        """Roll back the current unit of work."""

    @abc.abstractmethod
    def _find_user(self, case_insensitive: bool, criteria: dict[str, Any]) -> U | None:
        """Return the first user whose attributes equal all of ``criteria``, or None.

        With ``case_insensitive``, string values (already lower-cased by the caller)
        are compared with the lower-cased column. Values are known to be storable.
        """

    @abc.abstractmethod
    def _find_role(self, name: str) -> R | None:
        """Return the role named ``name`` (a storable string), or None."""

    @abc.abstractmethod
    def _list(self, model: type[Any], offset: int, limit: int | None) -> list[Any]:
        """Return stored objects of ``model`` (the user or the role model) in primary-key
        order, ``offset`` and ``limit`` applied."""

    @abc.abstractmethod
    def _get_user_by_pk(self, pk: Any) -> U | None:
        """Return the user whose primary key is ``pk`` (already parsed), or None."""

    @abc.abstractmethod
    def _parse_pk(self, value: Any) -> Any:
        """Return ``value`` converted to the user model's primary-key type, or None.

        None means ``value`` cannot be a primary key (``"ann@example.com"`` for an
        integer key), so no query is made that the database would reject.
        """

    @abc.abstractmethod
    def user_pk(self, user: U) -> Any:
        """Return ``user``'s primary key."""

    @abc.abstractmethod
    def _roles_of(self, user: U) -> Iterable[R]:
        """Return the roles ``user`` holds."""

    @abc.abstractmethod
    def _add_role(self, user: U, role: R) -> None:
        """Link ``role`` to ``user`` (known not to be linked yet) in the unit of work."""

    @abc.abstractmethod
    def _remove_role(self, user: U, role: R) -> None:
        """Unlink ``role`` from ``user`` (known to be linked) in the unit of work."""

    # Session rows. Each of these is durable when it returns and independent of the
    # caller's unit of work, so that a request's session save never commits (or is
    # undone with) the view's own changes.

    @abc.abstractmethod
    def _session_insert(self, record: SessionRecord) -> None:
        """Store a new session row.

        :raises ConstraintError: when a row with the same key exists; it is never
            overwritten (S03).
        """

    @abc.abstractmethod
    def _session_load(self, key: str, now: datetime) -> tuple[SessionRecord, U | None] | None:
        """Return the live row stored under ``key`` and its user, or None.

        A row whose ``expires_at`` is not after ``now`` is dead and not returned: the
        check is part of the query. The user comes with its roles, in one round trip
        with the row where the ORM allows.
        """

    @abc.abstractmethod
    def _session_update(
        self, key: str, now: datetime, *, data: str | None, expires_at: datetime
    ) -> bool:
        """Update a live row in place: its ``expires_at``, ``last_seen_at`` (= ``now``)
        and, unless ``data`` is None, its data.

        :returns: False when no live row has ``key``: a session ended meanwhile is not
            brought back (S09).
        """

    @abc.abstractmethod
    def _session_delete(self, key: str) -> bool:
        """Delete the row stored under ``key``; return whether there was one."""

    @abc.abstractmethod
    def _session_delete_for_user(self, user_pk: Any, *, keep: str | None = None) -> int:
        """Delete every row of the user ``user_pk`` except the one keyed ``keep``.

        :returns: how many rows were deleted.
        """

    @abc.abstractmethod
    def _session_find(
        self, now: datetime, *, user_pk: Any = ANY_USER, offset: int = 0, limit: int | None = None
    ) -> list[SessionRecord]:
        """Return live rows, most recently seen first, ``offset`` and ``limit`` applied.

        ``user_pk`` selects: :data:`ANY_USER` every row, None the anonymous rows only,
        any other value the rows of that user.
        """

    @abc.abstractmethod
    def _session_count(self, now: datetime, *, user_pk: Any = ANY_USER,
                       expired: bool = False) -> int:
        """Count the live rows (or, with ``expired``, the dead rows not yet purged);
        ``user_pk`` selects as in :meth:`_session_find`."""

    @abc.abstractmethod
    def _session_delete_all(self) -> int:
        """Delete every session row; return how many."""

    @abc.abstractmethod
    def _session_delete_expired(self, now: datetime, limit: int) -> int:
        """Delete at most ``limit`` rows that expired before ``now``; return how many."""

    # ------------------------------------------------------------------------------
    # Session rows through the cache. Everything in the library that reads or ends a
    # session goes through these, so the cache can never miss an end (S19).
    # ------------------------------------------------------------------------------

    def _load_row(self, key: str, now: datetime) -> tuple[SessionRecord, U | None] | None:
        cache = self.cache
        if cache is not None:
            cached = cache.get(key)
            if cached is False:
                return None
            if isinstance(cached, SessionRecord) and cached.expires_at > now:
                if cached.user_pk is None:
                    return cached, None
                cached.user_pk = self._parse_pk(cached.user_pk)
                user = self._get_user_by_pk(cached.user_pk) if cached.user_pk is not None else None
                if user is not None:
                    return cached, user
        found = self._session_load(key, now)
        if found is not None and cache is not None:
            cache.add(found[0], now)
        return found

    def _update_row(self, record: SessionRecord, now: datetime, *, data: str | None,
                    expires_at: datetime) -> bool:
        updated = self._session_update(record.key, now, data=data, expires_at=expires_at)
        if updated:
            record.expires_at, record.last_seen_at = expires_at, now
            if data is not None:
                record.data = data
        if self.cache is not None:
            if updated:
                self.cache.replace(record, now)
            else:
                self.cache.end([record.key])
        return updated

    def _delete_row(self, key: str) -> bool:
        deleted = self._session_delete(key)
        if self.cache is not None:
            self.cache.end([key])
        return deleted

    def _delete_user_rows(self, user_pk: Any, *, keep: str | None = None) -> int:
        keys: list[str] = []
        if self.cache is not None:
            keys = [r.key for r in self._session_find(utcnow(), user_pk=user_pk) if r.key != keep]
        count = self._session_delete_for_user(user_pk, keep=keep)
        if self.cache is not None:
            self.cache.end(keys)
        return count

    def _delete_all_rows(self) -> int:
        count = self._session_delete_all()
        if self.cache is not None:
            self.cache.clear()
        return count

    # ------------------------------------------------------------------------------
    # Units of work
    # ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a block as one unit of work: commit at the end, roll back on any error.

        Blocks nest: only the outermost one commits. Work that must follow a successful
        commit (ending sessions after a deactivation) runs after it, and never when the
        block rolled back.
        """
        if self._transaction.get() is not None:
            yield
            return
        state = _Transaction()
        token = self._transaction.set(state)
        try:
            self._begin()
            yield
            self.commit()
        except BaseException:
            self.rollback()
            raise
        finally:
            self._transaction.reset(token)
        for action in state.after_commit:
            action()

    def _begin(self) -> None:
        """Hook: the outermost :meth:`transaction` block starts. An ORM that commits
        each statement by itself (Peewee) opens a real transaction here."""

    def _in_transaction(self) -> bool:
        """Whether a :meth:`transaction` block is open in this context."""
        return self._transaction.get() is not None

    def _after_commit(self, action: Callable[[], object]) -> None:
        state = self._transaction.get()
        if state is None:
            action()
        else:
            state.after_commit.append(action)

    # ------------------------------------------------------------------------------
    # Users
    # ------------------------------------------------------------------------------

    def find_user(self, case_insensitive: bool = False, **kwargs: Any) -> U | None:
        """Return the user whose attributes equal all of ``kwargs`` (AND-ed), or None.

        With ``case_insensitive``, string values are compared without regard to case.
        A value no database could hold (a string with a NUL character) matches nobody.
        """
        if not kwargs:
            raise TypeError("find_user needs at least one attribute to look up.")
        if not all(_storable(value) for value in kwargs.values()):
            return None
        if any(not _identity_value(kwargs[name]) for name in self.identity_attributes
               if name in kwargs):
            return None  # an email that is an int, a list... equals no stored one
        if case_insensitive:
            kwargs = {k: v.lower() if isinstance(v, str) else v for k, v in kwargs.items()}
        return self._find_user(case_insensitive, kwargs)

    def find_role(self, role: str) -> R | None:
        """Return the role named ``role``, or None."""
        if not isinstance(role, str) or not _storable(role):
            return None
        return self._find_role(role)

    def list_users(self, *, offset: int = 0, limit: int | None = None) -> list[U]:
        """Return users in primary-key order, ``offset`` and ``limit`` applied."""
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must not be negative.")
        return self._list(self.user_model, offset, limit)

    def list_roles(self) -> list[R]:
        """Return every role, in primary-key order."""
        return self._list(self.role_model, 0, None)

    def get_user(self, identifier: Any) -> U | None:
        """Return the user ``identifier`` names, or None.

        ``identifier`` may be a primary key (as itself or as a string) or the value of
        one of :attr:`identity_attributes`, compared without regard to case. A value
        that cannot be a primary key is never sent to the database as one.
        """
        if identifier is None or identifier == "":
            return None
        pk = self._parse_pk(identifier)
        if pk is not None:
            user = self._get_user_by_pk(pk)
            if user is not None:
                return user
        if not isinstance(identifier, str):
            return None
        for attribute in self.identity_attributes:
            user = self.find_user(case_insensitive=True, **{attribute: identifier})
            if user is not None:
                return user
        return None

    def create_user(self, **kwargs: Any) -> U:
        """Create, store and return a user.

        A plain ``password`` is hashed. ``roles`` may hold role names or role objects;
        the caller's list is not changed. ``active`` defaults to True.

        :raises UserExistsError: when a user with the same identity attribute exists.
        :raises UnknownRoleError: when a role name is unknown.
        :raises PasswordError: when the password cannot be used.
        """
        fields = dict(kwargs)
        _check_storable(fields)
        for attribute in self.identity_attributes:
            if not _identity_value(fields.get(attribute)):
                raise InvalidValueError(
                    f"{attribute} must be a str, not {type(fields[attribute]).__name__}."
                )
        roles = [self._resolve_role(role) for role in fields.pop("roles", None) or ()]
        if fields.get("password") is not None:
            fields["password"] = self.hash_password(fields["password"])
        if hasattr(self.user_model, "active"):
            fields.setdefault("active", True)
        token_attribute = self._token_attribute()
        if token_attribute and not fields.get(token_attribute):
            fields[token_attribute] = secrets.token_urlsafe(32)
        for attribute in self.identity_attributes:
            value = fields.get(attribute)
            # The exact value too: the database's lower() and Python's disagree on some
            # letters ("İ"), and a model need not make the attribute unique.
            if value is not None and (
                self.find_user(case_insensitive=True, **{attribute: value})
                or self.find_user(**{attribute: value})
            ):
                raise UserExistsError(f"A user with {attribute} {value!r} already exists.")
        try:
            with self.transaction():
                user: U = _build(self.user_model, fields)
                self.put(user)
                for role in _unique_by_name(roles):
                    self._add_role(user, role)
        except InvalidValueError:
            raise
        except ConstraintError as exc:
            # Each database words a uniqueness failure its own way; anything else (a
            # required column left empty, say) is not "the user exists".
            if any(word in str(exc).lower() for word in ("unique", "duplicate", "e11000")):
                raise UserExistsError(f"A user with these details already exists: {exc}") from exc
            raise ConstraintError(f"The user could not be stored: {exc}") from exc
        return user

    def delete_user(self, user: U) -> None:
        """Delete ``user``, its role links and all its sessions."""
        pk = self.user_pk(user)
        with self.transaction():
            self.delete(user)
            self._after_commit(lambda: self._delete_user_rows(pk))

    def activate_user(self, user: U) -> bool:
        """Mark ``user`` active; return True if that changed anything."""
        if getattr(user, "active", False):
            return False
        with self.transaction():
            user.active = True  # type: ignore[attr-defined]
            self.put(user)
        return True

    def deactivate_user(self, user: U) -> bool:
        """Mark ``user`` inactive and end all its sessions; True if anything changed."""
        if not getattr(user, "active", True):
            return False
        self._end_sessions_first(user, keep_current=False)
        with self.transaction():
            user.active = False  # type: ignore[attr-defined]
            self.put(user)
        return True

    def toggle_active(self, user: U) -> bool:
        """Flip ``user``'s active flag; return the new value."""
        if getattr(user, "active", True):
            self.deactivate_user(user)
            return False
        self.activate_user(user)
        return True

    # ------------------------------------------------------------------------------
    # Roles and permissions
    # ------------------------------------------------------------------------------

    def create_role(self, **kwargs: Any) -> R:
        """Create, store and return a role; ``permissions`` may be any iterable.

        :raises ConstraintError: when a role with that name exists.
        """
        fields = dict(kwargs)
        _check_storable(fields)
        name = fields.get("name")
        if not name or not isinstance(name, str):
            raise SessionStoreError("A role needs a non-empty string name.")
        if self.find_role(name) is not None:
            raise ConstraintError(f"A role named {name!r} already exists.")
        permissions = fields.pop("permissions", None)
        names = parse_permissions(permissions) if permissions is not None else None
        if names is not None:
            _check_permission_names(names)
        with self.transaction():
            role: R = _build(self.role_model, fields)
            if names is not None:
                _store_permissions(role, names)
            self.put(role)
        return role

    def find_or_create_role(self, name: str, **kwargs: Any) -> R:
        """Return the role named ``name``, creating it (with ``kwargs``) if needed."""
        return self.find_role(name) or self.create_role(name=name, **kwargs)

    def add_role_to_user(self, user: U, role: R | str) -> bool:
        """Grant ``role`` (an object or a name); return False if the user had it.

        :raises UnknownRoleError: when ``role`` names no role.
        """
        found = self._resolve_role(role)
        if self._holds(user, found):
            return False
        with self.transaction():
            self._add_role(user, found)
            self._after_commit(lambda: self._rotate_current(user))
        return True

    def remove_role_from_user(self, user: U, role: R | str) -> bool:
        """Take ``role`` (an object or a name) away; return False if the user lacked it.

        :raises UnknownRoleError: when ``role`` names no role.
        """
        found = self._resolve_role(role)
        if not self._holds(user, found):
            return False
        with self.transaction():
            self._remove_role(user, found)
            self._after_commit(lambda: self._rotate_current(user))
        return True

    def add_permissions_to_role(self, role: R | str, permissions: Iterable[str] | str) -> bool:
        """Add ``permissions`` to ``role``; return whether any was new."""
        return self._edit_permissions(role, parse_permissions(permissions), add=True)

    def remove_permissions_from_role(
        self, role: R | str, permissions: Iterable[str] | str
    ) -> bool:
        """Remove ``permissions`` from ``role``; return whether any was there."""
        return self._edit_permissions(role, parse_permissions(permissions), add=False)

    def _edit_permissions(self, role: R | str, names: frozenset[str], *, add: bool) -> bool:
        found = self._resolve_role(role)
        if not hasattr(found, "permissions"):
            raise SessionStoreError(
                f"{type(found).__name__} has no 'permissions' attribute; add a text or list "
                "column named 'permissions' to the role model to use permissions."
            )
        if add:
            _check_permission_names(names)
        current = parse_permissions(found.permissions)
        updated = current | names if add else current - names
        if updated == current:
            return False
        _store_permissions(found, updated)
        with self.transaction():
            self.put(found)
        return True

    def _resolve_role(self, role: R | str) -> R:
        if isinstance(role, str):
            found = self.find_role(role)
            if found is None:
                raise UnknownRoleError(f"There is no role named {role!r}.")
            return found
        if not isinstance(role, self.role_model):
            raise UnknownRoleError(
                f"{role!r} is neither a role name nor a {self.role_model.__name__}."
            )
        return role

    def _holds(self, user: U, role: R) -> bool:
        name = getattr(role, "name", None)
        return any(getattr(held, "name", None) == name for held in self._roles_of(user))

    # ------------------------------------------------------------------------------
    # Passwords
    # ------------------------------------------------------------------------------

    def hash_password(self, password: str) -> str:
        """Return the hash of ``password`` with the preferred scheme.

        :raises PasswordError: when the password is empty, too long or not a string.
        """
        return self.password_hasher.hash(password)

    def verify_password(self, password: str, user: U) -> bool:
        """Return whether ``password`` is ``user``'s; upgrades an outdated hash."""
        matched, new_hash = self.password_hasher.verify(password, getattr(user, "password", None))
        if matched and new_hash:
            with self.transaction():
                user.password = new_hash  # type: ignore[attr-defined]
                self.put(user)
        return matched

    def authenticate(self, identifier: Any, password: str) -> U | None:
        """Return the active user that ``identifier`` and ``password`` prove, or None.

        An unknown user, a user without a password, an inactive user and a wrong
        password all cost one password verification and all return None (S25, S26).
        """
        user = self.get_user(identifier)
        if user is None:
            self.password_hasher.dummy_verify()
        elif self.verify_password(password, user) and getattr(user, "is_active", True):
            signals.login_succeeded.send(self, user=user)
            return user
        signals.login_failed.send(self, identifier=identifier)
        return None

    def change_password(self, user: U, password: str, new_password: str | None = None) -> None:
        """Give ``user`` a new password and end their other sessions (S16).

        ``change_password(user, new)`` sets it; ``change_password(user, old, new)``
        first checks ``old`` and raises :class:`PasswordError` if it is wrong. The
        current request's session, if it is this user's, is kept and given a new id.
        """
        if new_password is None:
            new_password = password
        elif not self.password_hasher.verify(password, getattr(user, "password", None))[0]:
            raise PasswordError("The current password is wrong.")
        new_hash = self.hash_password(new_password)
        self._end_sessions_first(user, keep_current=True)
        with self.transaction():
            user.password = new_hash  # type: ignore[attr-defined]
            self.put(user)

    def generate_password(self, user: U, length: int = 16) -> str:
        """Give ``user`` a new random password, end their sessions, and return it."""
        new_password = secrets.token_urlsafe(length)[:length]
        self.change_password(user, new_password)
        return new_password

    # ------------------------------------------------------------------------------
    # Sessions
    # ------------------------------------------------------------------------------

    @property
    def sessions(self) -> SessionAdmin:
        """The administration API over every stored session (see :class:`SessionAdmin`)."""
        return SessionAdmin(self)

    def list_sessions(self, user: U) -> list[SessionRecord]:
        """Return ``user``'s live sessions, most recently seen first.

        Each record has ``created_at``, ``last_seen_at``, ``expires_at``, ``user_agent``
        and ``ip_address``; the current request's session has ``current`` set.
        """
        from .sessions import current_session_key

        current = current_session_key(self)
        records = self._session_find(utcnow(), user_pk=self.user_pk(user))
        for record in records:
            record.current = record.key == current
        return records

    def revoke_session(self, key: str) -> bool:
        """End the session stored under ``key``; return whether it existed."""
        ended = self._delete_row(key)
        if ended:
            signals.session_revoked.send(self, key=key, user_pk=None)
        return ended

    def revoke_user_sessions(self, user: U, *, keep_current: bool = False) -> int:
        """End all of ``user``'s sessions (with ``keep_current``, all but this request's,
        which gets a new id).

        When the user model has a session token column, the token is replaced too.

        :returns: how many sessions were ended.
        """
        from .sessions import current_session_of

        current = current_session_of(self, user)
        keep = current.key if keep_current and current is not None else None
        if current is not None:
            if keep_current:
                current.rotate()
            else:
                current.end()
        count = self._delete_user_rows(self.user_pk(user), keep=keep)
        if count:
            signals.session_revoked.send(self, key=None, user_pk=self.user_pk(user), count=count)
        token_attribute = self._token_attribute()
        if token_attribute:
            setattr(user, token_attribute, secrets.token_urlsafe(32))
            with self.transaction():
                self.put(user)
            if keep_current and current is not None:
                # The kept session must name the user by the new token, or it would
                # no longer load its own user.
                current.relogin(user)
        return count

    # The session API for clients without cookies (mobile apps, API scripts): a token
    # is a session id, sent as ``Authorization: Bearer <token>``.

    def create_session(self, user_id: Any = None, password: str | None = None,
                       verify_password: bool = True, *, permanent: bool = False) -> str:
        """Store a new session and return its token.

        With ``user_id`` (anything :meth:`get_user` accepts) the session is the user's:
        ``password`` is checked first unless ``verify_password`` is False (for a login
        proven another way). Without ``user_id`` the session is anonymous.

        :raises PasswordError: when the user is unknown, inactive, or the password is
            wrong (one error for all three, so callers cannot tell users apart).
        """
        from .sessions import store_new_session

        user = None
        if user_id is not None:
            if verify_password:
                user = self.authenticate(user_id, password or "")
            else:
                found = self.get_user(user_id)
                user = found if found is not None and getattr(found, "is_active", True) else None
            if user is None:
                raise PasswordError("Unknown user, inactive user or wrong password.")
        # Marked as a token: it authenticates as a bearer token only, never as a cookie.
        data: dict[str, Any] = {TOKEN_MARK: True}
        if permanent:
            data["_permanent"] = True
        if user is not None:
            data.update(_user_id=str(user.get_id()), _fresh=True)  # type: ignore[attr-defined]
        token, _ = store_new_session(
            self, _policy(), user_pk=self.user_pk(user) if user is not None else None,
            data=data, permanent=permanent,
        )
        return token

    def retrieve_session(self, token: str) -> SessionRecord | None:
        """Return the live session ``token`` names, with its ``user``, or None."""
        from .sessions import parse_session_id

        session_id = parse_session_id(token)
        if session_id is None:
            return None
        found = self._load_row(session_key(session_id), utcnow())
        if found is None:
            return None
        record, user = found
        record.user = user
        return record

    def remove_session(self, token: str) -> bool:
        """End the session ``token`` names; return whether it was live."""
        from .sessions import parse_session_id

        session_id = parse_session_id(token)
        return session_id is not None and self.revoke_session(session_key(session_id))

    def clear_sessions(self, user: U) -> int:
        """End every session of ``user`` ("log out everywhere"); return how many."""
        return self.revoke_user_sessions(user)

    def delete_expired(self, *, batch_size: int | None = None,
                       on_batch: Callable[[int, int], object] | None = None) -> int:
        """Delete every expired session, ``batch_size`` rows at a time; return the count.

        Each batch is its own short statement, so no lock on live rows is held for
        longer than one batch. By default the batch size suits the database (see
        :meth:`_purge_batch_size`). ``on_batch(deleted, total)`` is called after each
        batch that deleted rows, to show progress.
        """
        size = self._purge_batch_size() if batch_size is None else batch_size
        if size < 1:
            raise ValueError("batch_size must be at least 1.")
        now = utcnow()
        total = 0
        while True:
            deleted = self._session_delete_expired(now, size)
            total += deleted
            if deleted and on_batch is not None:
                on_batch(deleted, total)
            if deleted < size:
                return total

    def _purge_batch_size(self) -> int:
        """Hook: the default purge batch. Each batch costs a commit; a database with a
        single writer (SQLite) gains nothing from small ones."""
        return 5000

    def _user_for_login_id(self, login_id: str) -> U | None:
        """Return the user whose :meth:`~flask_sessionstore.UserMixin.get_id` is
        ``login_id``, for a session that is not one of this library's."""
        token_attribute = self._token_attribute()
        if token_attribute:
            return self.find_user(False, **{token_attribute: login_id})
        pk = self._parse_pk(login_id)
        return self._get_user_by_pk(pk) if pk is not None else None

    def _rotate_current(self, user: U) -> None:
        # A privilege change gives the user's current session a new id (S08).
        from .sessions import current_session_of

        current = current_session_of(self, user)
        if current is not None:
            current.rotate()

    def _end_sessions_first(self, user: U, *, keep_current: bool) -> None:
        # Sessions end *before* the change that requires it is written: if the write
        # then fails, the user was only logged out; the other order could leave the
        # sessions of a changed account open (S15, S16). Inside an open transaction the
        # end waits for its commit, since session rows are written on a connection of
        # their own that a pending write (SQLite's lock) would block.
        if self._in_transaction():
            self._after_commit(lambda: self.revoke_user_sessions(user, keep_current=keep_current))
        else:
            self.revoke_user_sessions(user, keep_current=keep_current)

    def _token_attribute(self) -> str | None:
        name = getattr(self.user_model, "session_token_attribute", None)
        if isinstance(name, str) and hasattr(self.user_model, name):
            return name
        return None


def _policy() -> Any:
    """The session policy of the current app, or the defaults outside one."""
    from flask import current_app, has_app_context

    from .sessions import SessionPolicy

    if has_app_context():
        state = current_app.extensions.get("sessionstore")
        if state is not None:
            return state.session_interface.policy
    return SessionPolicy.defaults()


class SessionAdmin:
    """Every stored session, for administrators: ``user_datastore.sessions``.

    Counts and lists see live sessions only; dead rows wait for :meth:`purge`.
    """

    def __init__(self, datastore: UserDatastore[Any, Any]) -> None:
        self.datastore = datastore

    def _select(self, user: Any, anonymous: bool | None) -> Any:
        if user is not None:
            return self.datastore.user_pk(user)
        if anonymous is True:
            return None
        return ANY_USER

    def get_all(self, *, user: Any = None, anonymous: bool | None = None, page: int = 1,
                per_page: int = 50) -> list[SessionRecord]:
        """Return one page of live sessions, most recently seen first.

        :param user: only this user's sessions.
        :param anonymous: True for anonymous sessions only.
        """
        if page < 1 or per_page < 1:
            raise ValueError("page and per_page start at 1.")
        return self.datastore._session_find(
            utcnow(), user_pk=self._select(user, anonymous),
            offset=(page - 1) * per_page, limit=per_page,
        )

    def count(self, *, user: Any = None, anonymous: bool | None = None) -> int:
        """Count live sessions, filtered as in :meth:`get_all`."""
        return self.datastore._session_count(utcnow(), user_pk=self._select(user, anonymous))

    def get(self, key: str) -> SessionRecord | None:
        """Return the live session stored under ``key``, with its ``user``, or None."""
        found = self.datastore._load_row(key, utcnow())
        if found is None:
            return None
        record, user = found
        record.user = user
        return record

    def delete(self, key: str) -> int:
        """End the session stored under ``key``; return 1 if it existed, else 0."""
        return int(self.datastore.revoke_session(key))

    def delete_many(self, keys: Iterable[str]) -> int:
        """End the sessions stored under ``keys``; return how many existed."""
        return sum(self.delete(key) for key in set(keys))

    def delete_all(self) -> int:
        """End every session, of every user; return how many rows were deleted."""
        count = self.datastore._delete_all_rows()
        signals.session_revoked.send(self.datastore, key=None, user_pk=ANY_USER, count=count)
        return count

    def purge(self, *, batch_size: int | None = None) -> int:
        """Delete expired rows: :meth:`UserDatastore.delete_expired`."""
        return self.datastore.delete_expired(batch_size=batch_size)

    def stats(self) -> dict[str, int]:
        """Return counts of live, authenticated, anonymous and expired-unpurged rows."""
        now = utcnow()
        live = self.datastore._session_count(now)
        anonymous = self.datastore._session_count(now, user_pk=None)
        return {
            "live": live,
            "authenticated": live - anonymous,
            "anonymous": anonymous,
            "expired": self.datastore._session_count(now, expired=True),
        }


def _storable(value: Any) -> bool:
    # PostgreSQL rejects NUL in text and other stores truncate at it; a lone surrogate
    # has no UTF-8 form, which every driver needs: such a value can neither be stored
    # nor match anything stored.
    if not isinstance(value, str):
        return True
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_storable(fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if not _storable(value):
            raise InvalidValueError(
                f"{name} must not contain a NUL character or a lone surrogate."
            )


def _identity_value(value: Any) -> bool:
    # Emails and usernames are strings (or unset): any other value would reach the
    # database as a number, an array or an operator, which each one treats its own way.
    return value is None or isinstance(value, str)


def _check_permission_names(names: frozenset[str]) -> None:
    if not all(_storable(name) for name in names):
        raise InvalidValueError(
            "A permission name must not contain a NUL character or a lone surrogate."
        )


def _build(model: type[Any], fields: dict[str, Any]) -> Any:
    """Make an object of ``model``. An ORM that checks values in Python (Pony) refuses
    a bad one here, with a ValueError, before any database sees it."""
    try:
        return model(**fields)
    except ValueError as exc:
        raise InvalidValueError(f"{model.__name__} refused a value: {exc}") from exc


def _unique_by_name(roles: Iterable[R]) -> list[R]:
    seen: set[Any] = set()
    unique = []
    for role in roles:
        name = getattr(role, "name", None)
        if name not in seen:
            seen.add(name)
            unique.append(role)
    return unique


def _store_permissions(role: Any, names: frozenset[str]) -> None:
    # Keep the shape the model already uses: a list-like field stays a list, a text
    # column (or an unset one) gets comma-separated names.
    current = getattr(role, "permissions", None)
    ordered = sorted(names)
    try:
        if current is not None and not isinstance(current, str):
            role.permissions = ordered
        else:
            role.permissions = ",".join(ordered)
    except ValueError as exc:  # an ORM that checks values in Python (Pony)
        raise InvalidValueError(f"The permissions cannot be stored: {exc}") from exc
