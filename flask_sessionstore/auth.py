"""How a request proves its user: an ordered chain of small methods.

``SESSIONSTORE_AUTH_METHODS`` lists them by name (``"session"``, ``"token"``,
``"header"``) or as :class:`AuthMethod` instances; the first that finds a user wins.
The cookie session is always tried first when it is listed (Flask-Login's order); the
others follow in the listed order. :func:`~flask_sessionstore.auth_required` names the
methods a view accepts.
"""

from __future__ import annotations

import abc
import ipaddress
from collections.abc import Iterable
from typing import Any, ClassVar

from flask import Request, g
from flask.sessions import session_json_serializer

from .records import TOKEN_MARK, parse_session_id, session_key, utcnow
from .state import SessionStoreState

__all__ = ["AuthMethod", "BearerToken", "SessionCookie", "TrustedHeader", "build_methods"]


class AuthMethod(abc.ABC):
    """One way a request can prove its user. Subclass it to add one."""

    #: The name views use in :func:`~flask_sessionstore.auth_required`.
    name: ClassVar[str]

    @abc.abstractmethod
    def load_user(self, request: Request, state: SessionStoreState) -> Any:
        """Return the active user this request proves, or None."""


class SessionCookie(AuthMethod):
    """The session cookie; Flask-Login's user loader does the work."""

    name = "session"

    def load_user(self, request: Request, state: SessionStoreState) -> Any:
        return None  # Already tried by the user loader before the chain runs.


class BearerToken(AuthMethod):
    """``Authorization: Bearer <token>``, a token from
    :meth:`~flask_sessionstore.UserDatastore.create_session`.

    The token is a session id: it expires and renews like a session and is revoked the
    same way. It never becomes the request's cookie session (S06).
    """

    name = "token"

    def load_user(self, request: Request, state: SessionStoreState) -> Any:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        session_id = parse_session_id(token.strip())
        if session_id is None:
            return None
        now = utcnow()
        found = state.datastore.lifecycle.load(session_key(session_id), now)
        if found is None:
            return None
        record, user = found
        if user is None or not user.is_active:
            return None
        if not session_json_serializer.loads(record.data).get(TOKEN_MARK):
            return None  # A cookie session's id is not a bearer token (S06).
        state.datastore.lifecycle.renew_if_due(record, now)
        return user


class TrustedHeader(AuthMethod):
    """A header naming the user by an identity attribute (an email, a username; never a
    primary key, S33), set by a front proxy that authenticated the user; accepted only
    from the listed proxy addresses.

    :param header: the header, such as ``"X-Remote-User"``.
    :param proxies: the proxies' addresses or networks (``"10.0.0.5"``, ``"10.0.0.0/24"``).
    """

    name = "header"

    def __init__(self, header: str, proxies: Iterable[str]) -> None:
        if not header:
            raise RuntimeError("The 'header' method needs SESSIONSTORE_TRUSTED_HEADER.")
        self.header = header
        self.proxies = tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)
        if not self.proxies:
            raise RuntimeError(
                "The 'header' method needs SESSIONSTORE_TRUSTED_PROXIES: the addresses of "
                "the proxies allowed to set the header."
            )

    def _from_proxy(self, address: str | None) -> bool:
        try:
            client = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(client in network for network in self.proxies)

    def load_user(self, request: Request, state: SessionStoreState) -> Any:
        value = request.headers.get(self.header)
        if not value or not self._from_proxy(request.remote_addr):
            return None
        user = state.datastore.user_by_identity(value)  # never a key (S33)
        return user if user is not None and user.is_active else None


def build_methods(config: Any) -> tuple[AuthMethod, ...]:
    """Make the chain ``SESSIONSTORE_AUTH_METHODS`` describes."""
    methods: list[AuthMethod] = []
    for item in config["SESSIONSTORE_AUTH_METHODS"]:
        if isinstance(item, AuthMethod):
            methods.append(item)
        elif item == "session":
            methods.append(SessionCookie())
        elif item == "token":
            methods.append(BearerToken())
        elif item == "header":
            methods.append(
                TrustedHeader(
                    config["SESSIONSTORE_TRUSTED_HEADER"], config["SESSIONSTORE_TRUSTED_PROXIES"]
                )
            )
        else:
            raise RuntimeError(
                f"Unknown authentication method {item!r} in SESSIONSTORE_AUTH_METHODS: use "
                "'session', 'token', 'header' or an AuthMethod instance."
            )
    names = [method.name for method in methods]
    if len(set(names)) != len(names):
        raise RuntimeError(f"SESSIONSTORE_AUTH_METHODS names a method twice: {names}.")
    return tuple(methods)


def record_method(name: str) -> None:
    """Remember which method authenticated this request, for ``auth_required``."""
    g._sessionstore_auth_method = name


def current_method() -> str | None:
    """The name of the method that authenticated this request, if any."""
    name: str | None = g.get("_sessionstore_auth_method")
    return name
