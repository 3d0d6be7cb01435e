"""Pure values every layer shares: session records, ids and keys, the clock, user keys.

Nothing here touches a database, Flask or an ORM; every function is total (it returns a
value or None, it never raises on odd input), so any layer can call it on anything a
request brought.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "ANY_USER",
    "TOKEN_MARK",
    "KeyKind",
    "SessionRecord",
    "credential_stamp",
    "matches",
    "parse_key",
    "parse_session_id",
    "session_key",
    "short_hash",
    "utcnow",
]

#: The session-data key that marks a session made by ``create_session`` (a token).
TOKEN_MARK = "_sessionstore_token"  # noqa: S105 (a key name, not a secret)

#: 32 random bytes in URL-safe base64 without padding: 43 characters (S01).
SESSION_ID_BYTES = 32
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")


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


def parse_session_id(value: object) -> str | None:
    """Return ``value`` if it has the form of a session id, else None (no query made)."""
    if isinstance(value, str) and _SESSION_ID.fullmatch(value):
        return value
    return None


def session_key(session_id: str) -> str:
    """Return the key a session is stored under: the SHA-256 of its id, in hex.

    Only this hash is stored (S02), so a leaked session table opens no session.
    """
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def credential_stamp(values: Sequence[object]) -> str:
    """Return the stamp of a user's credentials: the SHA-256, in hex, of ``values`` (the
    password hash, the token column, the identity attributes) in a fixed form.

    A session stores its owner's stamp and is dead once the owner's differs (S29), so
    any change to one of these values, however it is made, ends every session made
    before it. Only a hash is stored: the session table never holds the password hash.
    """
    fixed = [None if value is None else str(value) for value in values]
    return hashlib.sha256(json.dumps(fixed).encode()).hexdigest()


def short_hash(key: str) -> str:
    """Return the first characters of a session key, for logs (never the raw id)."""
    return key[:12]


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
    #: The owner's credential stamp when the session was made (S29); None if anonymous.
    stamp: str | None = None
    #: Set by :meth:`UserDatastore.list_sessions`: this is the current request's session.
    current: bool = False
    #: Set when the record was read with its user (:meth:`UserDatastore.retrieve_session`).
    user: Any = None


#: The range of a signed 64-bit integer column, the widest any supported database has.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: An integer key as text: ASCII digits only (``int()`` also takes "٣", "1_000" and
#: "²"-like digits), and at most 20 of them (``int()`` refuses 4,300 and more).
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,20}")


@dataclass(frozen=True)
class KeyKind:
    """What a user model's primary key is. An ORM translator declares it; the core
    parses every key with :func:`parse_key`, so all ORMs read keys alike.

    Build it with one of the class methods: :meth:`integer`, :meth:`uuid`,
    :meth:`text`, or :meth:`other` for a type of the ORM's own (MongoDB's ObjectId).
    """

    python_type: type
    min_value: int = INT64_MIN
    max_value: int = INT64_MAX
    max_length: int | None = None
    #: For :meth:`other`: the only text form accepted, and how it becomes a key.
    text_form: re.Pattern[str] | None = None
    from_text: Callable[[str], Any] | None = None

    @classmethod
    def integer(cls, min_value: int = INT64_MIN, max_value: int = INT64_MAX) -> KeyKind:
        """An integer key within the column's range."""
        return cls(int, min_value=min_value, max_value=max_value)

    @classmethod
    def uuid(cls) -> KeyKind:
        """A UUID key, given as a :class:`uuid.UUID` or any text form it parses."""
        return cls(uuid.UUID)

    @classmethod
    def text(cls, max_length: int | None = None) -> KeyKind:
        """A text key of at most ``max_length`` characters."""
        return cls(str, max_length=max_length)

    @classmethod
    def other(cls, python_type: type, text_form: str,
              from_text: Callable[[str], Any]) -> KeyKind:
        """A key of the ORM's own ``python_type``; text matching the regular expression
        ``text_form`` (whole) is turned into one by ``from_text``."""
        return cls(python_type, text_form=re.compile(text_form), from_text=from_text)


def parse_key(kind: KeyKind, value: object) -> Any:
    """Return ``value`` as a key of ``kind``, or None when it cannot be one.

    None means no query is made: a value that cannot be a key (``"ann@example.com"``
    for an integer key, an integer beyond the column, a bool) never reaches a database
    that would refuse it or compare it across types.
    """
    if value is None or isinstance(value, bool):
        return None
    python_type = kind.python_type
    if python_type is int:
        if isinstance(value, str):
            text = value.strip()
            if not _INTEGER_TEXT.fullmatch(text):
                return None
            value = int(text)
        if isinstance(value, int) and kind.min_value <= value <= kind.max_value:
            return value
        return None
    if python_type is str:
        if not isinstance(value, str) or not _storable_text(value):
            return None
        return value if kind.max_length is None or len(value) <= kind.max_length else None
    if isinstance(value, python_type):
        return value
    if not isinstance(value, str):
        return None
    if python_type is uuid.UUID:
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    if kind.text_form is not None and kind.from_text is not None \
            and kind.text_form.fullmatch(value):
        return kind.from_text(value)
    return None


def _storable_text(value: str) -> bool:
    # PostgreSQL rejects NUL in text and other stores truncate at it; a lone surrogate
    # has no UTF-8 form, which every driver needs.
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def matches(obj: object, criteria: dict[str, Any], case_insensitive: bool = False) -> bool:
    """Return whether ``obj``'s attributes equal ``criteria`` in Python's terms: a value
    of another type never equals (``"1"`` is not ``1``), nor do strings a database's
    collation calls equal. With ``case_insensitive``, strings are compared lower-cased
    (the criteria's already are)."""
    for name, wanted in criteria.items():
        stored = getattr(obj, name, None)
        if case_insensitive and isinstance(stored, str) and isinstance(wanted, str):
            stored = stored.lower()
        if stored != wanted:
            return False
    return True


def storable(value: object) -> bool:
    """Return whether ``value`` could be stored in (or match) a text column: any
    non-string, or a string with no NUL character and no lone surrogate."""
    return not isinstance(value, str) or _storable_text(value)
