"""Session administration: every stored session, for administrators and commands."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import signals
from .lifecycle import SessionLifecycle
from .records import ANY_USER, SessionRecord, utcnow

__all__ = ["SessionAdmin"]


class SessionAdmin:
    """Every stored session, for administrators: ``user_datastore.sessions``.

    Counts and lists see live sessions only; dead rows wait for :meth:`purge`.

    :param lifecycle: the datastore's session lifecycle.
    :param key_of: returns a user's primary key.
    """

    def __init__(self, lifecycle: SessionLifecycle, key_of: Callable[[Any], Any]) -> None:
        self.lifecycle = lifecycle
        self.key_of = key_of

    def _owner(self, user: Any, anonymous: bool | None) -> Any:
        if user is not None:
            return self.key_of(user)
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
        return self.lifecycle.rows.find(
            utcnow(), owner=self._owner(user, anonymous),
            offset=(page - 1) * per_page, limit=per_page,
        )

    def count(self, *, user: Any = None, anonymous: bool | None = None) -> int:
        """Count live sessions, filtered as in :meth:`get_all`."""
        return self.lifecycle.rows.count(utcnow(), owner=self._owner(user, anonymous))

    def get(self, key: str) -> SessionRecord | None:
        """Return the live session stored under ``key``, with its ``user``, or None."""
        found = self.lifecycle.load(key, utcnow())
        if found is None:
            return None
        record, user = found
        record.user = user
        return record

    def delete(self, key: str) -> int:
        """End the session stored under ``key``; return 1 if it existed, else 0."""
        ended = self.lifecycle.end(key)
        if ended:
            signals.session_revoked.send(self, key=key, user_pk=None)
        return int(ended)

    def delete_many(self, keys: Iterable[str]) -> int:
        """End the sessions stored under ``keys``; return how many existed."""
        return sum(self.delete(key) for key in set(keys))

    def delete_all(self) -> int:
        """End every session, of every user; return how many rows were deleted."""
        count = self.lifecycle.end_all()
        signals.session_revoked.send(self, key=None, user_pk=ANY_USER, count=count)
        return count

    def purge(self, *, batch_size: int | None = None) -> int:
        """Delete expired rows, ``batch_size`` at a time; return how many."""
        return self.lifecycle.purge(batch_size=batch_size)

    def stats(self) -> dict[str, int]:
        """Return counts of live, authenticated, anonymous and expired-unpurged rows."""
        now = utcnow()
        rows = self.lifecycle.rows
        live = rows.count(now)
        anonymous = rows.count(now, owner=None)
        return {
            "live": live,
            "authenticated": live - anonymous,
            "anonymous": anonymous,
            "expired": rows.count(now, expired=True),
        }
