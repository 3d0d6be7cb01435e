"""The :class:`SessionStore` extension: wires one datastore into a Flask app."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import flask_login
from flask import Flask, Response, current_app

from .auth import build_methods
from .cache import RedisSessionCache
from .cli import register_commands
from .config import CONFIG_DEFAULTS
from .datastore import UserDatastore
from .exceptions import DatastoreUnavailableError
from .lifecycle import SessionPolicy
from .login import init_login
from .sessions import ServerSessionInterface, current_request_session, unavailable_response
from .state import EXTENSION_KEY, SessionStoreState, current_datastore

__all__ = ["CONFIG_DEFAULTS", "SessionStore", "current_datastore"]


class SessionStore:
    """Users, roles and server-side sessions for a Flask app.

    :param app: the app to set up now; or call :meth:`init_app` later.
    :param datastore: the :class:`~flask_sessionstore.datastore.UserDatastore` used by
        every app this object is initialised on, unless :meth:`init_app` is given one.
    :param login_manager: the app's :class:`flask_login.LoginManager`, if it has one
        already; otherwise one is made.
    :param cache: a :class:`~flask_sessionstore.cache.RedisSessionCache` in front of
        the session rows; by default one is made when ``SESSIONSTORE_REDIS_URL`` is set.

    The extension keeps no reference to an app: its per-app state is in
    ``app.extensions["sessionstore"]``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        datastore: UserDatastore[Any, Any] | None = None,
        login_manager: flask_login.LoginManager | None = None,
        cache: RedisSessionCache | None = None,
    ) -> None:
        self.datastore = datastore
        self.login_manager = login_manager
        self.cache = cache
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        *,
        datastore: UserDatastore[Any, Any] | None = None,
        login_manager: flask_login.LoginManager | None = None,
        cache: RedisSessionCache | None = None,
    ) -> None:
        """Install the session interface, the user loader and the CLI on ``app``.

        Configuration is read here, once.

        :raises RuntimeError: when no datastore is given, when the app was already set
            up, or when the cookie settings contradict each other.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A SessionStore is already set up on this app. Call init_app once per app; "
                "to change the datastore, build a new app."
            )
        store = datastore or self.datastore
        if store is None:
            raise RuntimeError(
                "SessionStore needs a datastore: pass SessionStore(app, datastore=...) or "
                "init_app(app, datastore=...)."
            )
        if not isinstance(store, UserDatastore):
            raise TypeError(f"datastore must be a UserDatastore, not {type(store).__name__}.")

        for name, value in CONFIG_DEFAULTS.items():
            app.config.setdefault(name, value)
        cache = cache or self.cache
        if cache is None and app.config["SESSIONSTORE_REDIS_URL"]:
            cache = RedisSessionCache.from_url(
                app.config["SESSIONSTORE_REDIS_URL"],
                ttl=_duration(app.config, "SESSIONSTORE_CACHE_TTL"),
            )
        if cache is not None:
            if store.cache is not None and store.cache is not cache:
                raise RuntimeError(
                    "This datastore already has another session cache: use one cache per "
                    "datastore (share the cache object between apps)."
                )
            if not cache.secret:
                if not app.secret_key:
                    raise RuntimeError(
                        "The session cache authenticates its entries with the app's "
                        "SECRET_KEY: set it, or pass secret= to RedisSessionCache."
                    )
                cache.secret = app.secret_key
            store.cache = cache
        store.lifecycle.bind(_policy(app.config))
        interface = _make_interface(app, store)
        store.current_session = partial(current_request_session, store)
        app.extensions[EXTENSION_KEY] = SessionStoreState(
            store, interface, build_methods(app.config)
        )
        app.session_interface = interface
        init_login(app, login_manager or self.login_manager)
        app.register_error_handler(DatastoreUnavailableError, _unavailable)
        store.init_app(app)
        register_commands(app)


def _unavailable(error: DatastoreUnavailableError) -> Response:
    current_app.logger.warning("database unavailable: %s", error)
    return unavailable_response()


def _policy(config: Any) -> SessionPolicy:
    return SessionPolicy(
        idle=_duration(config, "SESSIONSTORE_IDLE_TIMEOUT"),
        absolute=_duration(config, "SESSIONSTORE_ABSOLUTE_TIMEOUT"),
        anonymous_idle=_duration(config, "SESSIONSTORE_ANONYMOUS_IDLE_TIMEOUT"),
        anonymous_absolute=_duration(config, "SESSIONSTORE_ANONYMOUS_ABSOLUTE_TIMEOUT"),
        permanent=_duration(config, "PERMANENT_SESSION_LIFETIME"),
        renewal_interval=_duration(config, "SESSIONSTORE_RENEWAL_INTERVAL"),
        max_per_user=_cap(config["SESSIONSTORE_MAX_SESSIONS_PER_USER"]),
    )


def _make_interface(app: Flask, datastore: UserDatastore[Any, Any]) -> ServerSessionInterface:
    config = app.config
    secure = config["SESSIONSTORE_COOKIE_SECURE"]
    if secure is None:
        secure = bool(config.get("SESSION_COOKIE_SECURE")) or not (app.debug or app.testing)
    samesite = config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    name = config.get("SESSION_COOKIE_NAME", "session")
    if name.startswith(("__Host-", "__Secure-")) and not secure:
        raise RuntimeError(
            f"The cookie name {name!r} needs a Secure cookie: set SESSIONSTORE_COOKIE_SECURE "
            "to True or choose another SESSION_COOKIE_NAME."
        )
    if name.startswith("__Host-") and (
        config.get("SESSION_COOKIE_DOMAIN") or (config.get("SESSION_COOKIE_PATH") or "/") != "/"
    ):
        raise RuntimeError(
            f"The cookie name {name!r} forbids a domain and needs the path '/': unset "
            "SESSION_COOKIE_DOMAIN and SESSION_COOKIE_PATH."
        )
    sign_with = None
    if config["SESSIONSTORE_SIGN_COOKIE"]:
        sign_with = app.secret_key
        if not sign_with:
            raise RuntimeError("SESSIONSTORE_SIGN_COOKIE needs the app's SECRET_KEY to be set.")
    return ServerSessionInterface(
        datastore,
        secure=secure,
        samesite=samesite,
        sign_with=sign_with,
        store_client_info=bool(config["SESSIONSTORE_STORE_CLIENT_INFO"]),
        drop_on_login=_names(config, "SESSIONSTORE_DROP_ON_LOGIN"),
        freshness=_duration(config, "SESSIONSTORE_FRESHNESS"),
    )


def _duration(config: Any, name: str) -> timedelta:
    value = config[name]
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return timedelta(seconds=value)
    raise RuntimeError(
        f"{name} must be a timedelta or a positive number of seconds, not {value!r}."
    )


def _names(config: Any, name: str) -> tuple[str, ...]:
    value = config[name]
    if isinstance(value, str) or not all(isinstance(item, str) for item in value):
        raise RuntimeError(f"{name} must be a list of session key names, not {value!r}.")
    return tuple(value)


def _cap(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise RuntimeError(
        f"SESSIONSTORE_MAX_SESSIONS_PER_USER must be None or a whole number >= 1, not {value!r}."
    )
