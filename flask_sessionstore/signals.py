"""Signals sent on session and login events, in Flask's blinker namespace.

Every session signal carries ``key``, the stored key (a hash of the id), never the raw
id. Connect with ``signals.session_created.connect(receiver)``.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = [
    "login_failed",
    "login_succeeded",
    "session_created",
    "session_invalid",
    "session_revoked",
    "session_rotated",
]

_signals = Namespace()

#: A session row was stored under a new id. Arguments: ``key``, ``user_pk``.
session_created = _signals.signal("session-created")
#: A session got a new id (login, privilege change). Arguments: ``old_key``, ``key``.
session_rotated = _signals.signal("session-rotated")
#: Sessions were ended by logout or revocation. Arguments: ``key`` and ``user_pk``
#: (either may be None when unknown); when several of a user's sessions end at once,
#: ``key`` is None and ``count`` says how many.
session_revoked = _signals.signal("session-revoked")
#: A cookie named no live session (unknown, expired, revoked or malformed).
#: Arguments: ``key`` (None when the cookie was malformed).
session_invalid = _signals.signal("session-invalid")
#: A login succeeded. Arguments: ``user``.
login_succeeded = _signals.signal("login-succeeded")
#: A login failed. Arguments: ``identifier``.
login_failed = _signals.signal("login-failed")
