"""The settings the extension reads, with their defaults (see docs/configuration.rst)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

__all__ = ["CONFIG_DEFAULTS"]

#: Every setting the extension reads, with its default. Flask's own ``SESSION_COOKIE_*``
#: settings and ``PERMANENT_SESSION_LIFETIME`` are honoured as Flask documents them.
CONFIG_DEFAULTS: dict[str, Any] = {
    # An authenticated session dies after this long without a request...
    "SESSIONSTORE_IDLE_TIMEOUT": timedelta(hours=1),
    # ...and this long after login, however active (NIST SP 800-63B-4 allows AAL2 24
    # hours; 12 is its AAL3 limit, and was AAL2's in 800-63B-3).
    "SESSIONSTORE_ABSOLUTE_TIMEOUT": timedelta(hours=12),
    # Anonymous sessions hold less and are cheaper to lose: shorter limits (S12).
    "SESSIONSTORE_ANONYMOUS_IDLE_TIMEOUT": timedelta(minutes=30),
    "SESSIONSTORE_ANONYMOUS_ABSOLUTE_TIMEOUT": timedelta(hours=2),
    # A busy session writes its new expiry at most this often (S13).
    "SESSIONSTORE_RENEWAL_INTERVAL": timedelta(minutes=5),
    # At most this many sessions per user, the oldest ended first (S18); None: no cap.
    "SESSIONSTORE_MAX_SESSIONS_PER_USER": None,
    # None: Secure unless the app runs in debug or testing mode (S20).
    "SESSIONSTORE_COOKIE_SECURE": None,
    # Sign the id in the cookie with the app's secret key, so forged ids are refused
    # without a query.
    "SESSIONSTORE_SIGN_COOKIE": False,
    # A Redis in front of the session rows ("redis://host:6379/0"); None: no cache.
    "SESSIONSTORE_REDIS_URL": None,
    # The longest a cache entry lives (it never outlives its session).
    "SESSIONSTORE_CACHE_TTL": timedelta(hours=1),
    # Session keys that never survive a login (S31), such as a CSRF token a pre-login
    # page planted; Flask-WTF's "csrf_token" by default. Another user's data never does.
    "SESSIONSTORE_DROP_ON_LOGIN": ("csrf_token",),
    # How long a login stays fresh (fresh_login_required passes), and only in the browser
    # session where the password was given (S35); Flask-Security's FRESHNESS default.
    "SESSIONSTORE_FRESHNESS": timedelta(hours=24),
    # Record user agent and IP address on each session, for "your devices" pages.
    "SESSIONSTORE_STORE_CLIENT_INFO": True,
    # How a request may authenticate, tried in this order: the session cookie, a bearer
    # token from create_session, a header set by a trusted proxy.
    "SESSIONSTORE_AUTH_METHODS": ("session", "token"),
    # For the "header" method: the header naming the user, and the proxies trusted to
    # set it (exact client addresses).
    "SESSIONSTORE_TRUSTED_HEADER": None,
    "SESSIONSTORE_TRUSTED_PROXIES": (),
}

#: Flask's own default for PERMANENT_SESSION_LIFETIME, used outside an app.
FLASK_PERMANENT_LIFETIME = timedelta(days=31)
