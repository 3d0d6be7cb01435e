"""Permission names: how a role's ``permissions`` attribute is read and written,
whatever its column (text, list, JSON)."""

from __future__ import annotations

from typing import Any

from .exceptions import InvalidValueError
from .records import storable

__all__ = ["check_permission_names", "parse_permissions", "store_permissions"]


def parse_permissions(value: Any) -> frozenset[str]:
    """Return the set of permission names held in a role's ``permissions`` attribute.

    The attribute may be ``None``, a string of names separated by commas or white space,
    or any iterable of names (a list field, a JSON column, a related set); names are
    split at commas and white space either way.
    """
    if value is None:
        return frozenset()
    items = [value] if isinstance(value, str) else [str(item) for item in value]
    # Names never hold commas or spaces, whatever the field: a list item "a,b" is two
    # names, as it would be in a text column.
    return frozenset(part for item in items for part in item.replace(",", " ").split())


def check_permission_names(names: frozenset[str]) -> None:
    """Refuse names no database could store."""
    if not all(storable(name) for name in names):
        raise InvalidValueError(
            "A permission name must not contain a NUL character or a lone surrogate."
        )


def store_permissions(role: Any, names: frozenset[str]) -> None:
    """Set ``role.permissions`` to ``names``."""
    # Keep the shape the model already uses: a list-like field stays a list, a text
    # column (or an unset one) gets comma-separated names.
    current = getattr(role, "permissions", None)
    ordered = sorted(names)
    try:
        if current is not None and not isinstance(current, str):
            role.permissions = ordered
        else:
            role.permissions = ",".join(ordered)
    except ValueError as exc:  # an ORM that checks values in Python (Pony)
        raise InvalidValueError(f"The permissions cannot be stored: {exc}") from exc
