"""The session half of :class:`~flask_sessionstore.UserDatastore`: a user's sessions,
the token API for clients without cookies, and purging.

Every rule here is the lifecycle's (:mod:`flask_sessionstore.lifecycle`); these methods
add what only the datastore knows: users, their keys and passwords, and the current
request's session, reached through the :attr:`current_session` hook.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from . import signals
from .admin import SessionAdmin
from .cache import CachedSessionRows, RedisSessionCache
from .contract import ModelStore, SessionRows, in_scope
from .exceptions import PasswordError
from .lifecycle import SessionLifecycle
from .records import (
    TOKEN_MARK,
    SessionRecord,
    credential_stamp,
    parse_session_id,
    session_key,
    utcnow,
)

__all__ = ["RequestSession", "UserSessions"]

U = TypeVar("U")
R = TypeVar("R")


class RequestSession(Protocol):
    """The current request's session, as the datastore needs it (a
    :class:`~flask_sessionstore.ServerSession` is one)."""

    @property
    def key(self) -> str | None: ...
    user_pk: Any

    def rotate(self) -> None: ...
    def end(self) -> None: ...
    def relogin(self, user: Any) -> None: ...


class UserSessions(Generic[U, R]):
    """Session methods of :class:`~flask_sessionstore.UserDatastore` (a base class of
    it; not used alone)."""

    models: ModelStore[U, R]
    rows: SessionRows
    lifecycle: SessionLifecycle
    #: Returns the current request's session when it is this datastore's, else None
    #: (installed by ``SessionStore``; outside an app there is none).
    current_session: Callable[[], RequestSession | None]

    identity_attributes: tuple[str, ...]
    _own_rows: SessionRows
    _cache: RedisSessionCache | None

    if TYPE_CHECKING:  # provided by UserDatastore
        def parse_key(self, value: Any) -> Any: ...
        def find_user(self, case_insensitive: bool = False, **kwargs: Any) -> U | None: ...
        def user_pk(self, user: U) -> Any: ...
        def get_user(self, identifier: Any) -> U | None: ...
        def authenticate(self, identifier: Any, password: str) -> U | None: ...
        def transaction(self) -> AbstractContextManager[None]: ...
        def _token_attribute(self) -> str | None: ...
        def _after_commit(self, action: Callable[[], object]) -> None: ...

    def credential_stamp(self, user: U) -> str:
        """Return the stamp of ``user``'s credentials that each of its sessions keeps:
        a hash of its password hash, its token column and its identity attributes. A
        change to any of them ends every session made before it (S29)."""
        token = self._token_attribute()
        names = ["password", token or "", *self.identity_attributes]
        return credential_stamp(self.models.attributes(user, names))

    @property
    def cache(self) -> RedisSessionCache | None:
        """The Redis cache in front of the session rows, if any (set by ``SessionStore``)."""
        return self._cache

    @cache.setter
    def cache(self, cache: RedisSessionCache | None) -> None:
        self._cache = cache
        self.rows = self._own_rows if cache is None else CachedSessionRows(
            self._own_rows, cache, self._user_by_key_text
        )
        self.lifecycle.rows = self.rows

    def _user_by_key_text(self, text: str) -> U | None:
        key = self.parse_key(text)
        return None if key is None else self.models.get_user(key)

    @in_scope
    def user_by_login_id(self, login_id: str) -> U | None:
        """Return the user whose :meth:`~flask_sessionstore.UserMixin.get_id` is
        ``login_id``, for a session that is not one of this library's."""
        token_attribute = self._token_attribute()
        if token_attribute:
            return self.find_user(False, **{token_attribute: login_id})
        key = self.parse_key(login_id)
        return self.models.get_user(key) if key is not None else None


    @property
    def sessions(self) -> SessionAdmin:
        """The administration API over every stored session (see :class:`SessionAdmin`)."""
        return SessionAdmin(self.lifecycle, self.user_pk)

    @in_scope
    def list_sessions(self, user: U) -> list[SessionRecord]:
        """Return ``user``'s live sessions, most recently seen first.

        Each record has ``created_at``, ``last_seen_at``, ``expires_at``, ``user_agent``
        and ``ip_address``; the current request's session has ``current`` set.
        """
        current = self.current_session()
        current_key = current.key if current is not None else None
        records = self.rows.find(utcnow(), owner=self.user_pk(user))
        for record in records:
            record.current = record.key == current_key
        return records

    def revoke_session(self, key: str) -> bool:
        """End the session stored under ``key``; return whether it existed."""
        return bool(self.sessions.delete(key))

    @in_scope
    def revoke_user_sessions(self, user: U, *, keep_current: bool = False) -> int:
        """End all of ``user``'s sessions (with ``keep_current``, all but this request's,
        which gets a new id).

        When the user model has a session token column, the token is replaced too.

        :returns: how many sessions were ended.
        """
        current = self._current_of(user)
        keep = current.key if keep_current and current is not None else None
        if current is not None:
            if keep_current:
                current.rotate()
            else:
                current.end()
        count = self.lifecycle.end_owned(self.user_pk(user), keep=keep)
        if count:
            signals.session_revoked.send(self, key=None, user_pk=self.user_pk(user), count=count)
        token_attribute = self._token_attribute()
        if token_attribute:
            setattr(user, token_attribute, secrets.token_urlsafe(32))
            with self.transaction():
                self.models.put(user)
        if keep_current and current is not None:
            # The kept session is stored again (rotated) with ``user``'s id and stamp as
            # they are when the request ends: after the change that called for this.
            current.relogin(user)
        return count

    # The session API for clients without cookies (mobile apps, API scripts): a token
    # is a session id, sent as ``Authorization: Bearer <token>``.

    @in_scope
    def create_session(self, user_id: Any = None, password: str | None = None,
                       verify_password: bool = True, *, permanent: bool = False) -> str:
        """Store a new session and return its token.

        With ``user_id`` (anything :meth:`get_user` accepts) the session is the user's:
        ``password`` is checked first unless ``verify_password`` is False (for a login
        proven another way). Without ``user_id`` the session is anonymous.

        :raises PasswordError: when the user is unknown, inactive, or the password is
            wrong (one error for all three, so callers cannot tell users apart).
        """
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
            # Never fresh (S35): a token proves no password given in a browser session.
            data.update(_user_id=str(user.get_id()), _fresh=False)  # type: ignore[attr-defined]
        token, _ = self.lifecycle.issue(
            owner=self.user_pk(user) if user is not None else None, user=user, data=data,
            permanent=permanent,
        )
        return token

    def retrieve_session(self, token: str) -> SessionRecord | None:
        """Return the live session ``token`` names, with its ``user``, or None."""
        session_id = parse_session_id(token)
        if session_id is None:
            return None
        return self.sessions.get(session_key(session_id))

    def remove_session(self, token: str) -> bool:
        """End the session ``token`` names; return whether it was live."""
        session_id = parse_session_id(token)
        return session_id is not None and self.revoke_session(session_key(session_id))

    @in_scope
    def clear_sessions(self, user: U) -> int:
        """End every session of ``user`` ("log out everywhere"); return how many."""
        return self.revoke_user_sessions(user)

    def delete_expired(self, *, batch_size: int | None = None,
                       on_batch: Callable[[int, int], object] | None = None) -> int:
        """Delete every expired session, ``batch_size`` rows at a time; return the count
        (see :meth:`~flask_sessionstore.lifecycle.SessionLifecycle.purge`)."""
        return self.lifecycle.purge(batch_size=batch_size, on_batch=on_batch)

    def _current_of(self, user: U) -> RequestSession | None:
        current = self.current_session()
        if current is None or current.user_pk is None or current.user_pk != self.user_pk(user):
            return None
        return current

    def _rotate_current(self, user: U) -> None:
        # A privilege change gives the user's current session a new id (S08).
        current = self._current_of(user)
        if current is not None:
            current.rotate()

    def _end_sessions_first(self, user: U, *, keep_current: bool) -> None:
        # Sessions end *before* the change that requires it is written: if the write
        # then fails, the user was only logged out; the other order could leave the
        # sessions of a changed account open (S15, S16). Inside an open transaction the
        # end waits for its commit, since session rows are written on a connection of
        # their own that a pending write (SQLite's lock) would block.
        self._after_commit(lambda: self.revoke_user_sessions(user, keep_current=keep_current))
