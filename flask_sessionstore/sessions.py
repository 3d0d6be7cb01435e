"""Server-side sessions behind Flask's :class:`~flask.sessions.SessionInterface`.

The cookie carries only an opaque random id. The data lives in the datastore's session
rows, keyed by the SHA-256 of the id. A session is read from the database the first time
the request touches it, and written back only when it changed, when its expiry is due
for renewal, or when its id must change.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, Response, has_request_context
from flask import session as flask_session
from flask.sessions import SessionInterface, SessionMixin, session_json_serializer
from itsdangerous import BadSignature, Signer

from . import signals
from .exceptions import ConstraintError, DatastoreUnavailableError, DuplicateError
from .lifecycle import SessionPolicy
from .records import TOKEN_MARK, SessionRecord, parse_session_id, session_key, short_hash, utcnow

if TYPE_CHECKING:
    from .datastore import UserDatastore

__all__ = [
    "ServerSession",
    "ServerSessionInterface",
    "SessionPolicy",
    "current_request_session",
    "parse_session_id",
    "short_hash",
    "unavailable_response",
]

log = logging.getLogger("flask_sessionstore")

#: Flask-Login keys that steer its remember cookie. Remember-me is a long-lived
#: server-side session here, so these are never stored; knowing that lets the
#: interface answer Flask-Login's after-request check without reading the database.
_UNSTORED_KEYS = frozenset({"_remember", "_remember_seconds"})
#: Where the session keeps the digest of its freshness cookie, and when it was set.
_FRESH_MARK, _FRESH_SINCE = "_sessionstore_fresh_mark", "_sessionstore_fresh_since"
#: What Flask-Login itself sets for the login under way, before it tells the session.
_LOGIN_KEYS = frozenset({"_user_id", "_fresh", "_id"}) | _UNSTORED_KEYS
#: A cookie value longer than this is refused unread (an id is 43 characters, a
#: signed one about 70).
_MAX_COOKIE = 200


class ServerSession(SessionMixin):
    """A session whose data lives in the datastore, read on first use.

    Besides the mapping, it knows its stored :attr:`record`, the :attr:`user` that came
    with it, and whether its id must change (:meth:`rotate`) or it must end (:meth:`end`).
    """

    def __init__(self, interface: ServerSessionInterface, session_id: str | None,
                 *, had_cookie: bool, fresh_mark: str | None = None) -> None:
        self.interface = interface
        self.session_id = session_id
        self.had_cookie = had_cookie
        # The browser-session cookie that proves the password was given in this browser
        # session (S35), as the request brought it; and the one to set, if any.
        self._fresh_mark = fresh_mark
        self._new_fresh_mark: str | None = None
        self._stored_permanent = False
        self.record: SessionRecord | None = None
        self.user: Any = None
        self.user_pk: Any = None
        self.modified = False
        self._read = False
        self.loaded = session_id is None
        self._data: dict[str, Any] = {}
        self._rotate = False
        self._ended = False
        # Set by login(): the new id belongs to a new login, not to a moved session.
        self._logged_in = False

    # -- loading -------------------------------------------------------------------

    @property
    def accessed(self) -> bool:
        """True once the request read or wrote the data (it then varies on the cookie).

        Flask also sets this whenever the ``session`` proxy is touched, as Flask-Login
        does after every request; that alone reads nothing here, so it is ignored.
        """
        return self._read

    @accessed.setter
    def accessed(self, value: bool) -> None:
        pass

    def _load(self) -> None:
        self._read = True
        if self.loaded:
            return
        assert self.session_id is not None
        key = session_key(self.session_id)
        # Marked loaded only once the read succeeded: a request whose read failed (the
        # database went away) must not save an empty session over the stored one, nor
        # clear the cookie.
        found = self.interface.datastore.lifecycle.load(key, utcnow())
        self.loaded = True
        if found is None:
            # Unknown, expired or revoked: never adopted (S05).
            log.info("session %s not found or expired; starting a new one", short_hash(key))
            signals.session_invalid.send(self.interface, key=key)
            self.session_id = None
            return
        record, user = found
        data = dict(self.interface.serializer.loads(record.data))
        if data.get(TOKEN_MARK):
            # A bearer token's session is never adopted through a cookie (S06).
            log.info("session %s is a token, not a cookie session", short_hash(key))
            signals.session_invalid.send(self.interface, key=key)
            self.session_id = None
            return
        if data.get("_fresh") and not self._fresh_here(data):
            # Not where (or no longer when) the password was given: Flask-Login then
            # asks for it again (S35). Not written back unless something else changes.
            data["_fresh"] = False
        self.record, self.user, self.user_pk, self._data = record, user, record.user_pk, data
        self._stored_permanent = bool(data.get("_permanent"))

    def _fresh_here(self, data: dict[str, Any]) -> bool:
        mark, since = data.get(_FRESH_MARK), data.get(_FRESH_SINCE)
        if not (self._fresh_mark and isinstance(mark, str) and isinstance(since, str)):
            return False
        if not hmac.compare_digest(_digest(self._fresh_mark), mark):
            return False
        try:
            age = utcnow() - datetime.fromisoformat(since)
        except ValueError:
            return False
        return age <= self.interface.freshness

    def mark_fresh(self) -> None:
        """Record that the password was just given in this browser session: the session
        is fresh there, until ``SESSIONSTORE_FRESHNESS`` has passed (S35)."""
        self._load()
        self._new_fresh_mark = secrets.token_urlsafe(32)
        self._data[_FRESH_MARK] = _digest(self._new_fresh_mark)
        self._data[_FRESH_SINCE] = utcnow().isoformat()
        self._data["_fresh"] = True
        self.modified = True

    @property
    def new(self) -> bool:  # type: ignore[override]
        """True until the session is stored."""
        self._load()
        return self.record is None

    @property
    def key(self) -> str | None:
        """The stored key of this session (the hash of its id), or None if not stored."""
        self._load()
        return self.record.key if self.record is not None else None

    # -- the mapping ---------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        self._load()
        return self._data[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._load()
        self._data[name] = value
        self.modified = True

    def __delitem__(self, name: str) -> None:
        self._load()
        del self._data[name]
        self.modified = True

    def __contains__(self, name: object) -> bool:
        if name in _UNSTORED_KEYS and not (self.loaded and self._read):
            # Flask-Login looks for these after every request. They are never stored, so
            # only this request can have set them: answering reads nothing (not even
            # again after a failed read), and a response that read nothing does not vary
            # on the cookie (S22).
            return self.loaded and name in self._data
        self._load()
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._data)

    def __len__(self) -> int:
        self._load()
        return len(self._data)

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"<ServerSession {state} user={self.user_pk!r}>"

    # -- lifecycle -----------------------------------------------------------------

    def login(self, user: Any, user_pk: Any) -> None:
        """Attach ``user`` to this session and give it a new id (S07).

        Data that belonged to another user, and the keys the app names in
        ``SESSIONSTORE_DROP_ON_LOGIN``, do not survive (S31); an anonymous visitor's data
        (a cart) does.
        """
        self._load()
        if self.user_pk is not None and self.user_pk != user_pk:
            self._data = {k: v for k, v in self._data.items() if k in _LOGIN_KEYS}
        for name in self.interface.drop_on_login:
            self._data.pop(name, None)
        if self._data.get("_fresh"):
            self.mark_fresh()
        self.user, self.user_pk = user, user_pk
        self._ended = False
        self._logged_in = True
        self.rotate()

    def relogin(self, user: Any) -> None:
        """Record ``user``'s current login id (Flask-Login's ``_user_id``) after it
        changed, keeping the session attached to the same user."""
        self._load()
        self._data["_user_id"] = str(user.get_id())
        self.user = user
        self.modified = True

    def rotate(self) -> None:
        """Give this session a new id when the response is saved; the old id dies."""
        self._load()
        self._rotate = True
        self.modified = True

    def end(self) -> None:
        """End this session: its data is dropped and its row deleted when saved (S14)."""
        self._load()
        self._data.clear()
        self.user = self.user_pk = None
        self._ended = True
        self.modified = True


class ServerSessionInterface(SessionInterface):
    """Stores Flask sessions in the rows of a :class:`UserDatastore`.

    Made and installed by :class:`~flask_sessionstore.SessionStore`; see the
    configuration page for the settings it reads.
    """

    serializer = session_json_serializer
    pickle_based = False

    def __init__(
        self,
        datastore: UserDatastore[Any, Any],
        *,
        secure: bool,
        samesite: str | None,
        sign_with: str | bytes | None = None,
        store_client_info: bool = True,
        drop_on_login: tuple[str, ...] = (),
        freshness: timedelta = timedelta(hours=24),
    ) -> None:
        self.datastore = datastore
        self.secure = secure
        self.samesite = samesite
        self.store_client_info = store_client_info
        #: Session keys that never survive a login (S31).
        self.drop_on_login = drop_on_login
        #: How long a login stays fresh, in the browser session where it was made (S35).
        self.freshness = freshness
        self._signer = (
            Signer(sign_with, salt="flask-sessionstore.cookie") if sign_with else None
        )

    @property
    def policy(self) -> SessionPolicy:
        """The session policy: the datastore's lifecycle's, set from the app's config."""
        return self.datastore.lifecycle.policy

    @policy.setter
    def policy(self, policy: SessionPolicy) -> None:
        self.datastore.lifecycle.policy = policy

    # -- cookie --------------------------------------------------------------------

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True  # S20: script never needs the id.

    def get_cookie_secure(self, app: Flask) -> bool:
        return self.secure

    def get_cookie_samesite(self, app: Flask) -> str | None:
        return self.samesite

    def parse_cookie(self, value: str | None) -> str | None:
        """Return the session id a cookie value carries, or None if it is not one.

        Length, alphabet and (when configured) signature are checked before any query
        is made (S04).
        """
        if not value or len(value) > _MAX_COOKIE:
            return None
        if self._signer is not None:
            try:
                value = self._signer.unsign(value.encode("ascii")).decode("ascii")
            except (BadSignature, UnicodeError):
                return None
        return parse_session_id(value)

    def _cookie_value(self, session_id: str) -> str:
        if self._signer is None:
            return session_id
        return self._signer.sign(session_id.encode("ascii")).decode("ascii")

    # -- SessionInterface ----------------------------------------------------------

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        raw = request.cookies.get(self.get_cookie_name(app))
        session_id = self.parse_cookie(raw)
        if raw is not None and session_id is None:
            log.info("rejected a malformed session cookie of %d characters", len(raw))
            signals.session_invalid.send(self, key=None)
        return ServerSession(self, session_id, had_cookie=raw is not None,
                             fresh_mark=request.cookies.get(self._fresh_cookie_name(app)))

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, ServerSession):
            return
        try:
            self._save(app, session, response)
        except DatastoreUnavailableError as exc:
            if session.modified or session._rotate or session._ended:
                # The change could not be stored: say so instead of answering as if it
                # had been (the client retries; nothing stored was overwritten).
                log.warning("session not saved, the database is unavailable: %s", exc)
                _make_unavailable(response)
            else:
                log.warning("session renewal skipped, the database is unavailable: %s", exc)

    def _save(self, app: Flask, session: ServerSession, response: Response) -> None:
        if session.accessed:
            response.vary.add("Cookie")
        if not session.loaded:
            return  # Never touched: nothing was read, so nothing is written.
        from flask import request

        now = utcnow()
        lifecycle = self.datastore.lifecycle
        if session.user_pk is not None and "_user_id" not in session._data:
            # Flask-Login's key is gone (session.clear(), or the app removed it): the
            # session is no longer its user's. What it still holds is kept as an
            # anonymous session, under a new id.
            session.user = session.user_pk = None
            session._rotate = True
        data = {k: v for k, v in session._data.items() if k not in _UNSTORED_KEYS}
        keep = bool(data) or session.user_pk is not None
        record = session.record

        rotated_from = born = None
        if record is not None and (session._rotate or session._ended or not keep):
            ended_here = lifecycle.end(record.key)
            if session._ended or not keep:
                log.info("session %s ended", short_hash(record.key))
                signals.session_revoked.send(self, key=record.key, user_pk=record.user_pk)
            elif not (ended_here or session._logged_in):
                # S30: a rotation moves a live session. This one was ended (a logout, a
                # revoke) while the request ran: it stays ended, under no id.
                log.info("session %s ended while a rotation was under way",
                         short_hash(record.key))
                self._delete_cookie(app, response)
                return
            else:
                rotated_from = record.key
                # A moved session keeps its creation time, and so its absolute
                # timeout (S11); a login starts a new one.
                born = None if session._logged_in else record.created_at
            session.record = record = None
        if not keep:
            # An empty anonymous session is never stored and gets no cookie (S28).
            if session.had_cookie:
                self._delete_cookie(app, response)
            return

        if record is None:
            try:
                created = self._insert(session, data, request, born)
            except ConstraintError as exc:
                if session.user_pk is None or isinstance(exc, DuplicateError):
                    raise
                # The user was deleted while this request ran (a login racing the
                # deletion): the row's foreign key refuses it, and no session is kept.
                log.warning("session not stored: its user no longer exists")
                if session.had_cookie:
                    self._delete_cookie(app, response)
                return
            if rotated_from is not None and session.record is not None:
                log.info("session %s rotated to %s", short_hash(rotated_from),
                         short_hash(session.record.key))
                signals.session_rotated.send(self, old_key=rotated_from, key=session.record.key)
            self._set_cookie(app, response, session, created)
            self._set_fresh_cookie(app, response, session)
            return

        if not (session.modified or lifecycle.renewal_due(record, now)):
            return
        if not lifecycle.renew(
            record, now,
            data=self.serializer.dumps(data) if session.modified else None,
            permanent=session.permanent,
        ):
            # Ended by a logout or revoke while this request ran: stays ended (S09).
            self._delete_cookie(app, response)
            return
        if session.permanent or session._stored_permanent:
            # A permanent cookie carries the expiry, so it changes with it (S22); one
            # that stops being permanent is sent again without it, so that the browser
            # drops it when it closes.
            assert session.session_id is not None
            self._set_cookie(app, response, session, session.session_id)
            session._stored_permanent = session.permanent
        self._set_fresh_cookie(app, response, session)

    # -- helpers -------------------------------------------------------------------

    def _insert(self, session: ServerSession, data: dict[str, Any], request: Request,
                born: datetime | None) -> str:
        session_id, record = self.datastore.lifecycle.issue(
            owner=session.user_pk,
            user=session.user,
            created_at=born,
            data=data,
            permanent=session.permanent,
            user_agent=request.user_agent.string if self.store_client_info else None,
            ip_address=request.remote_addr if self.store_client_info else None,
        )
        session.session_id, session.record = session_id, record
        session._rotate = session._ended = session._logged_in = False
        return session_id

    def _set_cookie(self, app: Flask, response: Response, session: ServerSession,
                    session_id: str) -> None:
        expires = None
        if session.permanent and session.record is not None:
            expires = session.record.expires_at.replace(tzinfo=timezone.utc)
        response.set_cookie(
            self.get_cookie_name(app),
            self._cookie_value(session_id),
            expires=expires,
            httponly=True,
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.secure,
            samesite=self.samesite,
            partitioned=self.get_cookie_partitioned(app),
        )

    def _fresh_cookie_name(self, app: Flask) -> str:
        return f"{self.get_cookie_name(app)}_fresh"

    def _set_fresh_cookie(self, app: Flask, response: Response, session: ServerSession) -> None:
        # Never persistent: a browser forgets it when it closes, and a remembered
        # session that outlives it is then no longer fresh (S35).
        if session._new_fresh_mark is None:
            return
        response.set_cookie(
            self._fresh_cookie_name(app), session._new_fresh_mark, httponly=True,
            domain=self.get_cookie_domain(app), path=self.get_cookie_path(app),
            secure=self.secure, samesite=self.samesite,
            partitioned=self.get_cookie_partitioned(app),
        )
        session._new_fresh_mark = None

    def _delete_cookie(self, app: Flask, response: Response) -> None:
        response.delete_cookie(
            self.get_cookie_name(app),
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.secure,
            samesite=self.samesite,
            httponly=True,
            partitioned=self.get_cookie_partitioned(app),
        )


def current_request_session(datastore: UserDatastore[Any, Any]) -> ServerSession | None:
    """Return this request's session, loaded, if it is one of ``datastore``'s; else None.

    ``SessionStore`` installs this as the datastore's ``current_session`` hook, so the
    datastore reaches the request's session without reading Flask's globals itself.
    """
    if not has_request_context():
        return None
    current = flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(current, ServerSession) or current.interface.datastore is not datastore:
        return None
    current._load()
    return current


_UNAVAILABLE = "The database is unavailable. Please try again in a few seconds."


def unavailable_response() -> Response:
    """The 503 answered while the database cannot be reached (JSON when asked)."""
    from flask import request

    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    if best == "application/json":
        response = Response(
            '{"error": "unavailable", "message": "%s"}' % _UNAVAILABLE,  # noqa: UP031
            status=503, mimetype="application/json",
        )
    else:
        response = Response(_UNAVAILABLE, status=503, mimetype="text/plain")
    response.headers["Retry-After"] = "5"
    return response


def _make_unavailable(response: Response) -> None:
    replacement = unavailable_response()
    response.status_code = 503
    response.set_data(replacement.get_data())
    response.headers["Content-Type"] = replacement.headers["Content-Type"]
    response.headers["Retry-After"] = "5"
    response.headers.pop("Set-Cookie", None)


def _digest(mark: str) -> str:
    return hashlib.sha256(mark.encode()).hexdigest()
