"""A tiny CSRF guard: one random token per session, required on every unsafe request.

Every form that changes something carries ``{{ csrf_field() }}``; a POST (or PUT,
PATCH, DELETE) whose token does not match the session's is answered with 400 before
the view runs. The token lives in the server-side session, so it dies with it: after
logout, or after the session was ended from another device, an old form is refused.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, abort, request, session
from markupsafe import Markup

__all__ = ["FIELD_NAME", "HEADER_NAME", "csrf_token", "init_csrf"]

#: The form field and the header a token may come in.
FIELD_NAME = "csrf_token"
HEADER_NAME = "X-CSRF-Token"
_SESSION_KEY = "_csrf_token"
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_token() -> str:
    """Return this session's token, making one the first time a form needs it."""
    token = session.get(_SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[_SESSION_KEY] = token
    return token


def csrf_field() -> Markup:
    """Return the hidden input carrying the token, for use inside a ``<form>``."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(FIELD_NAME, csrf_token())


def _check() -> None:
    if request.method not in _UNSAFE_METHODS:
        return
    sent = request.form.get(FIELD_NAME) or request.headers.get(HEADER_NAME) or ""
    # Reading the session only when a token was sent keeps a tokenless POST from
    # costing a database read.
    expected = session.get(_SESSION_KEY) if sent else None
    if not isinstance(expected, str) or not hmac.compare_digest(
        sent.encode(), expected.encode()
    ):
        abort(400, description="csrf")


def init_csrf(app: Flask) -> None:
    """Check the token before every unsafe request, and give templates the helpers."""
    app.before_request(_check)
    app.jinja_env.globals.update(csrf_token=csrf_token, csrf_field=csrf_field)
