"""The values users and roles are made of: checked and normalized before any
database sees them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from .exceptions import InvalidValueError
from .records import storable

__all__ = ["build", "check_storable", "is_identity_value", "normalize_identity",
           "unique_by_name"]

R = TypeVar("R")


def check_storable(fields: dict[str, Any]) -> None:
    """Refuse a value no database could store (NUL, a lone surrogate)."""
    for name, value in fields.items():
        if not storable(value):
            raise InvalidValueError(
                f"{name} must not contain a NUL character or a lone surrogate."
            )


def is_identity_value(value: Any) -> bool:
    """Whether ``value`` can be an email or a username: a str, or unset."""
    # Emails and usernames are strings (or unset): any other value would reach the
    # database as a number, an array or an operator, which each one treats its own way.
    return value is None or isinstance(value, str)


def normalize_identity(value: Any) -> Any:
    """Return an email or a username in its one spelling."""
    # One spelling for an email or a username: surrounding spaces are never part of it
    # (some ORMs strip them when storing, some databases when comparing).
    return value.strip() if isinstance(value, str) else value


def build(model: type[Any], fields: dict[str, Any]) -> Any:
    """Make an object of ``model``. An ORM that checks values in Python (Pony) refuses
    a bad one here, with a ValueError, before any database sees it."""
    try:
        return model(**fields)
    except ValueError as exc:
        raise InvalidValueError(f"{model.__name__} refused a value: {exc}") from exc


def unique_by_name(roles: Iterable[R]) -> list[R]:
    """Return ``roles`` without repeated names, in order."""
    seen: set[Any] = set()
    unique = []
    for role in roles:
        name = getattr(role, "name", None)
        if name not in seen:
            seen.add(name)
            unique.append(role)
    return unique
