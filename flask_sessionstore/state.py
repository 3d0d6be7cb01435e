"""The per-app state: what ``SessionStore.init_app`` leaves in ``app.extensions``.

Everything Flask-facing (views, commands, the auth chain) finds the app's datastore
here, through :func:`get_state` or :data:`current_datastore`; the extension object
itself keeps no reference to any app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from werkzeug.local import LocalProxy

from .datastore import UserDatastore

if TYPE_CHECKING:  # the layers above this one; types only
    from .auth import AuthMethod
    from .sessions import ServerSessionInterface

__all__ = ["EXTENSION_KEY", "SessionStoreState", "current_datastore", "get_state"]

#: The key of the state in ``app.extensions``.
EXTENSION_KEY = "sessionstore"


@dataclass(frozen=True)
class SessionStoreState:
    """What one app's ``SessionStore`` set up: ``app.extensions["sessionstore"]``."""

    #: The datastore of the app.
    datastore: UserDatastore[Any, Any]
    #: The app's session interface (also ``app.session_interface``).
    session_interface: ServerSessionInterface
    #: The authentication chain, in the order it is tried.
    auth_methods: tuple[AuthMethod, ...]


def get_state(app: Flask | None = None) -> SessionStoreState:
    """Return the state of ``app`` (by default the current app).

    :raises RuntimeError: when the app has no ``SessionStore``.
    """
    found = (app or current_app).extensions.get(EXTENSION_KEY)
    if found is None:
        raise RuntimeError(
            "This app has no SessionStore: call SessionStore(app, datastore=...) or "
            "SessionStore(datastore=...).init_app(app) first."
        )
    state: SessionStoreState = found
    return state


def _current_datastore() -> UserDatastore[Any, Any]:
    return get_state().datastore


#: The datastore of the current app, for use in views and commands.
current_datastore: UserDatastore[Any, Any] = LocalProxy(_current_datastore)  # type: ignore[assignment]
