"""View decorators that require roles or permissions.

An anonymous request gets 401, a signed-in user lacking the role or permission gets 403.
When the request prefers JSON (an ``Accept`` header that ranks ``application/json``
above HTML), the error body is JSON: ``{"error": "forbidden", "message": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import abort, jsonify, make_response, request
from flask_login import current_user

from .auth import current_method

__all__ = [
    "auth_required",
    "permissions_accepted",
    "permissions_required",
    "roles_accepted",
    "roles_required",
]

F = TypeVar("F", bound=Callable[..., Any])

_MESSAGES = {
    401: ("unauthorized", "You must sign in to see this page."),
    403: ("forbidden", "You do not have the role or permission this page requires."),
}


def _deny(status: int) -> None:
    error, message = _MESSAGES[status]
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    if best == "application/json":
        abort(make_response(jsonify(error=error, message=message), status))
    abort(status)


def _guard(check: Callable[[Any], bool]) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                _deny(401)
            if not check(current_user):
                _deny(403)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


def auth_required(*methods: str) -> Callable[[F], F]:
    """Let the view run only for a user authenticated by one of ``methods``
    (``"session"``, ``"token"``, ``"header"`` or a custom method's name); with no
    argument, by any configured method. Anything else gets 401.
    """

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated or (methods and current_method() not in methods):
                _deny(401)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


def roles_required(*roles: str) -> Callable[[F], F]:
    """Let the view run only for a user who holds every one of ``roles``."""
    return _guard(lambda user: all(user.has_role(role) for role in roles))


def roles_accepted(*roles: str) -> Callable[[F], F]:
    """Let the view run only for a user who holds at least one of ``roles``."""
    return _guard(lambda user: any(user.has_role(role) for role in roles))


def permissions_required(*permissions: str) -> Callable[[F], F]:
    """Let the view run only for a user granted every one of ``permissions``."""
    return _guard(lambda user: set(permissions) <= user.get_permissions())


def permissions_accepted(*permissions: str) -> Callable[[F], F]:
    """Let the view run only for a user granted at least one of ``permissions``."""
    return _guard(lambda user: bool(set(permissions) & user.get_permissions()))
