"""Flask-Login integration: the user loader and the reactions to login and logout.

Plain :func:`flask_login.login_user` and :func:`flask_login.logout_user` work: the
extension listens to their signals. This module's :func:`login_user` and
:func:`logout_user` do the same and are there so an application needs one import.
"""

from __future__ import annotations

from typing import Any

import flask_login
from flask import Flask, Request, session

from .auth import record_method
from .sessions import ServerSession
from .state import EXTENSION_KEY, get_state

__all__ = ["login_user", "logout_user"]


def login_user(user: Any, remember: bool = False, *, fresh: bool = True,
               force: bool = False) -> bool:
    """Log ``user`` in, with a new session id; return False if the user is inactive.

    With ``remember``, the session becomes permanent: it outlives the browser and lasts
    ``PERMANENT_SESSION_LIFETIME``, and it stays revocable, being a server-side row.
    """
    return bool(flask_login.login_user(user, remember=remember, fresh=fresh, force=force))


def logout_user() -> None:
    """Log the current user out: the session row is deleted and the cookie cleared."""
    flask_login.logout_user()


def _on_logged_in(app: Flask, user: Any, **_: Any) -> None:
    state = app.extensions.get(EXTENSION_KEY)
    current = session._get_current_object()  # type: ignore[attr-defined]
    if state is None or not isinstance(current, ServerSession):
        return
    remember = current._data.pop("_remember", None) == "set"
    current._data.pop("_remember_seconds", None)
    current.login(user, state.datastore.user_pk(user))
    if remember:
        current.permanent = True


def _on_login_confirmed(app: Flask, **_: Any) -> None:
    # flask_login.confirm_login(): the app had the password given again.
    current = session._get_current_object()  # type: ignore[attr-defined]
    if EXTENSION_KEY in app.extensions and isinstance(current, ServerSession):
        current.mark_fresh()


def _on_logged_out(app: Flask, **_: Any) -> None:
    current = session._get_current_object()  # type: ignore[attr-defined]
    if EXTENSION_KEY in app.extensions and isinstance(current, ServerSession):
        current.end()


def _load_user(user_id: str) -> Any:
    current = session._get_current_object()  # type: ignore[attr-defined]
    state = get_state()
    if not any(method.name == "session" for method in state.auth_methods):
        return None
    if isinstance(current, ServerSession):
        # The user came with the session row, in the same query: no second lookup.
        current._load()
        user = current.user
        if user is None or str(user.get_id()) != user_id or not user.is_active:
            return None
    else:
        user = state.datastore.user_by_login_id(user_id)
        if user is None or not user.is_active:
            return None
    record_method("session")
    return user


def _load_user_from_request(request: Request) -> Any:
    state = get_state()
    for method in state.auth_methods:
        user = method.load_user(request, state)
        if user is not None:
            record_method(method.name)
            return user
    return None


def init_login(app: Flask, login_manager: flask_login.LoginManager | None) -> None:
    """Register the user loader and the signal receivers on ``app``."""
    manager = login_manager or getattr(app, "login_manager", None)
    if manager is None:
        manager = flask_login.LoginManager()
        manager.init_app(app)
    # Flask-Login's remember cookie is never set: _on_logged_in turns "remember" into a
    # permanent server-side session, which can be revoked like any other.
    manager.user_loader(_load_user)
    manager.request_loader(_load_user_from_request)
    flask_login.user_logged_in.connect(_on_logged_in, app, weak=False)
    flask_login.user_logged_out.connect(_on_logged_out, app, weak=False)
    flask_login.user_login_confirmed.connect(_on_login_confirmed, app, weak=False)
