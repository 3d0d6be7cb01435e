"""How sessions are born, renewed, rotated and ended: one object below Flask.

:class:`SessionLifecycle` holds every rule about session rows (their expiry, the cap per
user, purging) over any :class:`~flask_sessionstore.contract.SessionRows`. The cookie
interface, the token API and the datastore all go through it; it knows nothing of
Flask's request globals, so the rules can be used and tested without a request.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask.sessions import session_json_serializer as serializer

from . import signals
from .config import CONFIG_DEFAULTS, FLASK_PERMANENT_LIFETIME
from .contract import SessionRows
from .exceptions import DuplicateError
from .records import SESSION_ID_BYTES, SessionRecord, session_key, short_hash, utcnow

__all__ = ["SessionLifecycle", "SessionPolicy"]

log = logging.getLogger("flask_sessionstore")

#: A colliding id is drawn again this many times before the store is called broken.
_INSERT_ATTEMPTS = 3


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions live and how often their expiry is written back.

    A session dies at the earlier of two moments: ``idle`` after it was last renewed,
    and ``absolute`` after it was created. Anonymous sessions have their own limits;
    a permanent session (remember-me, or ``session.permanent = True``) lives for
    ``permanent`` (Flask's ``PERMANENT_SESSION_LIFETIME``) in both senses.
    """

    idle: timedelta
    absolute: timedelta
    anonymous_idle: timedelta
    anonymous_absolute: timedelta
    permanent: timedelta
    renewal_interval: timedelta
    max_per_user: int | None = None

    @classmethod
    def defaults(cls) -> SessionPolicy:
        """The policy of an app that sets nothing."""
        config = CONFIG_DEFAULTS
        return cls(
            idle=config["SESSIONSTORE_IDLE_TIMEOUT"],
            absolute=config["SESSIONSTORE_ABSOLUTE_TIMEOUT"],
            anonymous_idle=config["SESSIONSTORE_ANONYMOUS_IDLE_TIMEOUT"],
            anonymous_absolute=config["SESSIONSTORE_ANONYMOUS_ABSOLUTE_TIMEOUT"],
            permanent=FLASK_PERMANENT_LIFETIME,
            renewal_interval=config["SESSIONSTORE_RENEWAL_INTERVAL"],
            max_per_user=config["SESSIONSTORE_MAX_SESSIONS_PER_USER"],
        )

    def expires_at(self, *, created_at: datetime, now: datetime, authenticated: bool,
                   permanent: bool) -> datetime:
        """Return when a session with these properties dies, renewed at ``now``."""
        if permanent:
            idle = absolute = self.permanent
        elif authenticated:
            idle, absolute = self.idle, self.absolute
        else:
            idle, absolute = self.anonymous_idle, self.anonymous_absolute
        return min(now + idle, created_at + absolute)


class SessionLifecycle:
    """Issue, renew, end and purge sessions under one :class:`SessionPolicy`.

    :param rows: where the rows live (an ORM's rows, or the cache layer over them).
    :param policy: the timeouts and the cap.
    :param stamp_of: returns a user's credential stamp; a session whose stored stamp is
        not its owner's is dead (S29).
    """

    def __init__(self, rows: SessionRows, policy: SessionPolicy,
                 stamp_of: Callable[[Any], str]) -> None:
        self.rows = rows
        self.policy = policy
        #: Returns a user's credential stamp (S29).
        self.stamp_of = stamp_of
        self._bound = False

    def bind(self, policy: SessionPolicy) -> None:
        """Adopt an app's policy. The token API uses the policy outside any request
        too, so every app a datastore serves must agree on it.

        :raises RuntimeError: when an app with another policy was bound before.
        """
        if self._bound and policy != self.policy:
            raise RuntimeError(
                "This datastore already serves an app with other session settings "
                "(SESSIONSTORE_*_TIMEOUT, SESSIONSTORE_RENEWAL_INTERVAL, "
                "SESSIONSTORE_MAX_SESSIONS_PER_USER, PERMANENT_SESSION_LIFETIME): give "
                "each app the same settings, or each its own datastore."
            )
        self.policy, self._bound = policy, True

    def load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        """Return the live session stored under ``key`` and its user, or None.

        A session of a user who is gone, inactive, or whose credentials changed since it
        was made (its stamp differs) is dead: it is ended here and None is returned
        (S15, S16, S29), whoever made the change and however. The check reads only what
        the row's one query brought.
        """
        found = self.rows.load(key, now)
        if found is None or found[0].user_pk is None:
            return found
        record, user = found
        if user is not None and getattr(user, "is_active", True) \
                and record.stamp == self.stamp_of(user):
            return found
        log.info("session %s ended: its user is gone, inactive or changed credentials",
                 short_hash(key))
        if self.end(key):
            signals.session_revoked.send(self, key=key, user_pk=record.user_pk)
        return None

    def issue(self, *, owner: Any, data: dict[str, Any], permanent: bool,
              user: Any = None, created_at: datetime | None = None,
              user_agent: str | None = None,
              ip_address: str | None = None) -> tuple[str, SessionRecord]:
        """Store a session under a new id; return the id and the stored record.

        The one place sessions are born, for cookies and tokens alike. ``user`` is the
        owner (None for an anonymous session), whose credential stamp the row keeps. A
        colliding id is drawn again, never overwritten (S03). When the policy caps
        sessions per user, the owner's oldest sessions beyond the cap are ended (S18). A
        session moved to a new id passes its ``created_at``, from which its absolute
        timeout counts (S11, S30).
        """
        if owner is not None and user is None:
            raise ValueError("A user's session is issued with the user, for its stamp.")
        now = utcnow()
        born = now if created_at is None else created_at
        for _ in range(_INSERT_ATTEMPTS):
            session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
            record = SessionRecord(
                key=session_key(session_id),
                user_pk=owner,
                data=serializer.dumps(data),
                created_at=born,
                last_seen_at=now,
                expires_at=self.policy.expires_at(
                    created_at=born, now=now, authenticated=owner is not None,
                    permanent=permanent,
                ),
                user_agent=_clip(user_agent, 512),
                ip_address=_clip(ip_address, 45),
                stamp=None if owner is None else self.stamp_of(user),
            )
            try:
                self.rows.insert(record)
            except DuplicateError:
                log.warning("session id collision; drawing again")
                continue
            signals.session_created.send(self, key=record.key, user_pk=owner)
            if owner is not None and self.policy.max_per_user is not None:
                self._enforce_cap(owner, self.policy.max_per_user, now)
            return session_id, record
        raise DuplicateError("Could not draw an unused session id; the store is inconsistent.")

    def renewal_due(self, record: SessionRecord, now: datetime) -> bool:
        """Whether ``record``'s expiry is due to be written again (S13)."""
        return now - record.last_seen_at >= self.policy.renewal_interval

    def renew(self, record: SessionRecord, now: datetime, *, data: str | None,
              permanent: bool) -> bool:
        """Write ``record``'s new expiry (and ``data``, unless None); return False when
        the session ended meanwhile, which stays ended (S09)."""
        expires_at = self.policy.expires_at(
            created_at=record.created_at, now=now,
            authenticated=record.user_pk is not None, permanent=permanent,
        )
        if not self.rows.update(record.key, now, data=data, expires_at=expires_at):
            return False
        record.expires_at, record.last_seen_at = expires_at, now
        if data is not None:
            record.data = data
        return True

    def renew_if_due(self, record: SessionRecord, now: datetime) -> bool:
        """Renew a session used without a cookie (a bearer token) if due; return whether
        it is still live."""
        if not self.renewal_due(record, now):
            return True
        permanent = bool(serializer.loads(record.data).get("_permanent"))
        return self.renew(record, now, data=None, permanent=permanent)

    def end(self, key: str) -> bool:
        """End the session stored under ``key``; return whether it was stored."""
        return self.rows.delete([key]) > 0

    def end_owned(self, owner: Any, *, keep: str | None = None) -> int:
        """End every session of the user keyed ``owner`` except ``keep``; return how
        many."""
        return self.rows.delete_owned(owner, keep=keep)

    def end_all(self) -> int:
        """End every session, of every user; return how many."""
        return self.rows.clear()

    def purge(self, *, batch_size: int | None = None,
              on_batch: Callable[[int, int], object] | None = None) -> int:
        """Delete every expired session, ``batch_size`` rows at a time; return the count.

        Each batch is its own short statement, so no lock on live rows is held for
        longer than one batch. ``on_batch(deleted, total)`` is called after each batch
        that deleted rows, to show progress.
        """
        size = self.rows.purge_batch if batch_size is None else batch_size
        if size < 1:
            raise ValueError("batch_size must be at least 1.")
        now = utcnow()
        total = 0
        while True:
            deleted = self.rows.purge(now, size)
            total += deleted
            if deleted and on_batch is not None:
                on_batch(deleted, total)
            if deleted < size:
                return total

    def _enforce_cap(self, owner: Any, cap: int, now: datetime) -> None:
        records = self.rows.find(now, owner=owner)
        if len(records) <= cap:
            return
        records.sort(key=lambda record: record.created_at)
        for record in records[: len(records) - cap]:
            if self.end(record.key):
                log.info("session %s ended: over the cap of %d per user",
                         short_hash(record.key), cap)
                signals.session_revoked.send(self, key=record.key, user_pk=owner)


def _clip(value: str | None, size: int) -> str | None:
    return value[:size] if value else None
