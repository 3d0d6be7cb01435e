"""The :class:`UserDatastore`: every user, role, password and session rule, written once.

It is concrete: an ORM module gives it a :class:`~flask_sessionstore.contract.ModelStore`
and :class:`~flask_sessionstore.contract.SessionRows` (the whole ORM contract) and holds
no rule of its own. Session rules live one layer down, in
:class:`~flask_sessionstore.lifecycle.SessionLifecycle`; the request's own session is
reached through :attr:`UserDatastore.current_session`, a hook the session interface
installs, so this module never reads Flask's request globals.
"""

from __future__ import annotations

import contextvars
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from . import signals
from .cache import RedisSessionCache
from .contract import ModelStore, SessionRows, in_scope
from .exceptions import (
    ConstraintError,
    DuplicateError,
    InvalidValueError,
    PasswordError,
    SessionStoreError,
    UnknownRoleError,
    UserExistsError,
)
from .fields import (
    build,
    check_storable,
    is_identity_value,
    normalize_identity,
    unique_by_name,
)
from .lifecycle import SessionLifecycle, SessionPolicy
from .passwords import PasswordHasher
from .permissions import check_permission_names, parse_permissions, store_permissions
from .records import ANY_USER, SessionRecord, matches, parse_key, session_key, storable, utcnow
from .user_sessions import RequestSession, UserSessions

__all__ = ["ANY_USER", "RequestSession", "SessionRecord", "UserDatastore", "session_key",
           "utcnow"]

U = TypeVar("U")
R = TypeVar("R")
#: Values a criterion never has: drivers send them as arrays, lists or operators.
_CONTAINERS = (list, tuple, set, frozenset, dict)


class UserDatastore(UserSessions[U, R]):
    """Users, roles, passwords and sessions over one ORM.

    An application makes it through its ORM's class (``SQLAlchemyUserDatastore(db,
    User, Role)``...), which passes these:

    :param models: the ORM's users and roles.
    :param rows: the ORM's session rows.
    :param identity_attributes: the user attributes :meth:`get_user` and
        :meth:`authenticate` look up, in order; those the model lacks are skipped.
    :param password_hasher: how passwords are hashed; argon2 by default.

    Each mutating method commits its own work, unless it runs inside
    :meth:`transaction`, in which case everything commits (or rolls back) together when
    the outermost block ends.
    """

    def __init__(self, models: ModelStore[U, R], rows: SessionRows, *,
                 identity_attributes: Sequence[str] = ("email", "username"),
                 password_hasher: PasswordHasher | None = None) -> None:
        self.models = models
        self.user_model: type[U] = models.user_model
        self.role_model: type[R] = models.role_model
        self.identity_attributes = tuple(
            name for name in identity_attributes if hasattr(self.user_model, name)
        )
        self.password_hasher = password_hasher or PasswordHasher()
        self._own_rows = rows
        #: The session rows the library reads and writes: the ORM's, or the cache's
        #: layer over them once :attr:`cache` is set.
        self.rows: SessionRows = rows
        #: The session rules, under the policy of the app (set by ``SessionStore``).
        self.lifecycle = SessionLifecycle(rows, SessionPolicy.defaults(), self.credential_stamp)
        self.current_session: Callable[[], RequestSession | None] = lambda: None
        self._cache: RedisSessionCache | None = None
        self._after: contextvars.ContextVar[list[Callable[[], object]] | None] = (
            contextvars.ContextVar(f"sessionstore_transaction_{id(self)}", default=None)
        )

    def init_app(self, app: Any) -> None:
        """Set up the ORM's per-request work on ``app``; called by ``SessionStore``."""
        self.models.init_app(app)

    # -- units of work -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a block as one unit of work: commit at the end, roll back on any error.

        Blocks nest: only the outermost one commits. Work that must follow a successful
        commit (ending sessions after a deactivation) runs after it, and never when the
        block rolled back.
        """
        if self._after.get() is not None:
            yield
            return
        after: list[Callable[[], object]] = []
        token = self._after.set(after)
        try:
            with self.models.scope(), self.models.unit():
                yield
        finally:
            self._after.reset(token)
        for action in after:
            action()

    def _after_commit(self, action: Callable[[], object]) -> None:
        pending = self._after.get()
        if pending is None:
            action()
        else:
            pending.append(action)

    @in_scope
    def put(self, model: Any) -> Any:
        """Add ``model`` to the unit of work, or write its changes; return it."""
        return self.models.put(model)

    @in_scope
    def delete(self, model: Any) -> None:
        """Delete ``model`` (and its role links) in the unit of work."""
        self.models.delete(model)

    def commit(self) -> None:
        """Commit the work pending in the ORM's session."""
        with self.models.scope(), self.models.unit():
            pass

    def rollback(self) -> None:
        """Discard the work pending in the ORM's session."""
        self.models.rollback()

    # -- users ---------------------------------------------------------------------

    def parse_key(self, value: Any) -> Any:
        """Return ``value`` as a primary key of the user model, or None if it cannot be
        one (never raises; no query)."""
        return parse_key(self.models.key_kind, value)

    def user_pk(self, user: U) -> Any:
        """Return ``user``'s primary key."""
        return self.models.key_of(user)

    @in_scope
    def find_user(self, case_insensitive: bool = False, **kwargs: Any) -> U | None:
        """Return the user whose attributes equal all of ``kwargs`` (AND-ed), or None.

        With ``case_insensitive``, string values are compared without regard to case.
        The match is exact, whatever the database would call equal (S33): a value of
        another type, or equal only under the column's collation (MariaDB's trailing
        spaces, accents), matches nobody; so does a value no database could hold (NUL).
        Identity attributes (email, username) are compared without surrounding spaces.
        """
        if not kwargs:
            raise TypeError("find_user needs at least one attribute to look up.")
        unknown = [name for name in kwargs if not hasattr(self.user_model, name)]
        if unknown:
            raise SessionStoreError(f"{self.user_model.__name__} has no attribute {unknown[0]!r}.")
        if not all(storable(value) and not isinstance(value, _CONTAINERS)
                   for value in kwargs.values()):
            return None  # NUL, a surrogate, or a list: no column holds one (S33)
        if any(not is_identity_value(kwargs[name]) for name in self.identity_attributes
               if name in kwargs):
            return None  # an email that is an int, a list... equals no stored one
        kwargs = {name: normalize_identity(value) if name in self.identity_attributes else value
                  for name, value in kwargs.items()}
        if case_insensitive:
            kwargs = {k: v.lower() if isinstance(v, str) else v for k, v in kwargs.items()}
        try:
            found = self.models.find_user(kwargs, case_insensitive=case_insensitive)
        except InvalidValueError:
            return None  # a value the column cannot even be compared with equals nothing
        return found if found is not None and matches(found, kwargs, case_insensitive) else None

    @in_scope
    def find_role(self, role: str) -> R | None:
        """Return the role named ``role``, or None."""
        if not isinstance(role, str) or not storable(role):
            return None
        return self.models.find_role(role)

    @in_scope
    def list_users(self, *, offset: int = 0, limit: int | None = None) -> list[U]:
        """Return users in primary-key order, ``offset`` and ``limit`` applied."""
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must not be negative.")
        return list(self.models.list(self.user_model, offset, limit))

    @in_scope
    def list_roles(self) -> list[R]:
        """Return every role, in primary-key order."""
        return list(self.models.list(self.role_model, 0, None))

    @in_scope
    def get_user(self, identifier: Any) -> U | None:
        """Return the user ``identifier`` names, or None.

        ``identifier`` may be a primary key (as itself or as a string) or the value of
        one of :attr:`identity_attributes`, compared without regard to case. A value
        that cannot be a primary key is never sent to the database as one.
        """
        if identifier is None or identifier == "":
            return None
        key = self.parse_key(identifier)
        if key is not None:
            user = self.models.get_user(key)
            if user is not None:
                return user
        return self.user_by_identity(identifier)

    @in_scope
    def user_by_identity(self, value: Any) -> U | None:
        """Return the user one of :attr:`identity_attributes` names (case aside), never
        reading ``value`` as a key: for identities from outside (a proxy's header)."""
        for attribute in self.identity_attributes if isinstance(value, str) else ():
            user = self.find_user(case_insensitive=True, **{attribute: value})
            if user is not None:
                return user
        return None

    @in_scope
    def create_user(self, **kwargs: Any) -> U:
        """Create, store and return a user.

        A plain ``password`` is hashed. ``roles`` may hold role names or role objects;
        the caller's list is not changed. ``active`` defaults to True.

        :raises UserExistsError: when a user with the same identity attribute exists.
        :raises UnknownRoleError: when a role name is unknown.
        :raises PasswordError: when the password cannot be used.
        """
        fields = dict(kwargs)
        check_storable(fields)
        for attribute in self.identity_attributes:
            if not is_identity_value(fields.get(attribute)):
                raise InvalidValueError(
                    f"{attribute} must be a str, not {type(fields[attribute]).__name__}."
                )
            if fields.get(attribute) is not None:
                fields[attribute] = normalize_identity(fields[attribute])
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
                user: U = build(self.user_model, fields)
                self.models.put(user)
                for role in unique_by_name(roles):
                    self.models.link(user, role)
        except DuplicateError as exc:
            raise UserExistsError(f"A user with these details already exists: {exc}") from exc
        except InvalidValueError:
            raise
        except ConstraintError as exc:
            raise ConstraintError(f"The user could not be stored: {exc}") from exc
        return user

    @in_scope
    def delete_user(self, user: U) -> None:
        """Delete ``user``, its role links and all its sessions."""
        pk = self.user_pk(user)
        with self.transaction():
            self.models.delete(user)
            self._after_commit(lambda: self.lifecycle.end_owned(pk))

    @in_scope
    def activate_user(self, user: U) -> bool:
        """Mark ``user`` active; return True if that changed anything."""
        if getattr(user, "active", False):
            return False
        with self.transaction():
            user.active = True  # type: ignore[attr-defined]
            self.models.put(user)
        return True

    @in_scope
    def deactivate_user(self, user: U) -> bool:
        """Mark ``user`` inactive and end all its sessions; True if anything changed."""
        if not getattr(user, "active", True):
            return False
        self._end_sessions_first(user, keep_current=False)
        with self.transaction():
            user.active = False  # type: ignore[attr-defined]
            self.models.put(user)
        return True

    @in_scope
    def toggle_active(self, user: U) -> bool:
        """Flip ``user``'s active flag; return the new value."""
        if getattr(user, "active", True):
            self.deactivate_user(user)
            return False
        self.activate_user(user)
        return True

    # -- roles and permissions -----------------------------------------------------

    @in_scope
    def create_role(self, **kwargs: Any) -> R:
        """Create, store and return a role; ``permissions`` may be any iterable.

        :raises DuplicateError: when a role with that name exists.
        """
        fields = dict(kwargs)
        check_storable(fields)
        name = fields.get("name")
        if not name or not isinstance(name, str):
            raise SessionStoreError("A role needs a non-empty string name.")
        if self.find_role(name) is not None:
            raise DuplicateError(f"A role named {name!r} already exists.")
        permissions = fields.pop("permissions", None)
        names = parse_permissions(permissions) if permissions is not None else None
        if names is not None:
            check_permission_names(names)
        with self.transaction():
            role: R = build(self.role_model, fields)
            if names is not None:
                store_permissions(role, names)
            self.models.put(role)
        return role

    @in_scope
    def find_or_create_role(self, name: str, **kwargs: Any) -> R:
        """Return the role named ``name``, creating it (with ``kwargs``) if needed."""
        return self.find_role(name) or self.create_role(name=name, **kwargs)

    @in_scope
    def add_role_to_user(self, user: U, role: R | str) -> bool:
        """Grant ``role`` (an object or a name); return False if the user had it.

        :raises UnknownRoleError: when ``role`` names no role.
        """
        found = self._resolve_role(role)
        if self._holds(user, found):
            return False
        with self.transaction():
            self.models.link(user, found)
            self._after_commit(lambda: self._rotate_current(user))
        return True

    @in_scope
    def remove_role_from_user(self, user: U, role: R | str) -> bool:
        """Take ``role`` (an object or a name) away; return False if the user lacked it.

        :raises UnknownRoleError: when ``role`` names no role.
        """
        found = self._resolve_role(role)
        if not self._holds(user, found):
            return False
        with self.transaction():
            self.models.unlink(user, found)
            self._after_commit(lambda: self._rotate_current(user))
        return True

    @in_scope
    def add_permissions_to_role(self, role: R | str, permissions: Iterable[str] | str) -> bool:
        """Add ``permissions`` to ``role``; return whether any was new."""
        return self._edit_permissions(role, parse_permissions(permissions), add=True)

    @in_scope
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
            check_permission_names(names)
        current = parse_permissions(found.permissions)
        updated = current | names if add else current - names
        if updated == current:
            return False
        store_permissions(found, updated)
        with self.transaction():
            self.models.put(found)
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
        return any(getattr(held, "name", None) == name for held in self.models.roles_of(user))

    # -- passwords -----------------------------------------------------------------

    def hash_password(self, password: str) -> str:
        """Return the hash of ``password`` with the preferred scheme.

        :raises PasswordError: when the password is empty, too long or not a string.
        """
        return self.password_hasher.hash(password)

    @in_scope
    def verify_password(self, password: str, user: U) -> bool:
        """Return whether ``password`` is ``user``'s; upgrades an outdated hash."""
        matched, new_hash = self.password_hasher.verify(password, getattr(user, "password", None))
        if matched and new_hash:
            with self.transaction():
                user.password = new_hash  # type: ignore[attr-defined]
                self.models.put(user)
        return matched

    @in_scope
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

    @in_scope
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
            self.models.put(user)

    @in_scope
    def generate_password(self, user: U, length: int = 16) -> str:
        """Give ``user`` a new random password, end their sessions, and return it."""
        new_password = secrets.token_urlsafe(length)[:length]
        self.change_password(user, new_password)
        return new_password

    def _token_attribute(self) -> str | None:
        name = getattr(self.user_model, "session_token_attribute", None)
        if isinstance(name, str) and hasattr(self.user_model, name):
            return name
        return None
