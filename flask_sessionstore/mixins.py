"""ORM-neutral behaviour for the application's own user and role models.

The mixins read a few attributes by convention: a user has ``active`` and ``roles``; a
role has ``name`` and, optionally, ``permissions``. Nothing here talks to a database.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask_login import UserMixin as _LoginUserMixin

from .permissions import parse_permissions

__all__ = ["RoleMixin", "UserMixin", "parse_permissions"]


class RoleMixin:
    """Behaviour for a role model with a ``name`` and optional ``permissions``."""

    name: Any

    def get_permissions(self) -> frozenset[str]:
        """Return the permission names this role grants."""
        return parse_permissions(getattr(self, "permissions", None))

    def __str__(self) -> str:
        return str(self.name)


class UserMixin(_LoginUserMixin):  # type: ignore[misc]  # flask-login is untyped
    """Behaviour for a user model with ``active`` and ``roles`` attributes.

    :attr:`session_token_attribute` names an optional column holding a random per-user
    token. When the model has it, :meth:`get_id` returns the token, and ending all of a
    user's sessions also replaces it, so a token that leaked dies with the sessions.
    When the model has no such column, :meth:`get_id` returns the primary key: that is
    safe here because the id is kept in the server-side session row and never sent to
    the browser.
    """

    #: The attribute holding the per-user session token, when the model has one.
    session_token_attribute: str = "fs_uniquifier"  # noqa: S105 (a column name)

    @property
    def is_active(self) -> bool:
        """``False`` when the user was deactivated; a user without ``active`` is active."""
        return bool(getattr(self, "active", True))

    def get_id(self) -> str:
        """Return the id Flask-Login keeps for this user (see the class docstring)."""
        token = getattr(self, self.session_token_attribute, None)
        if token:
            return str(token)
        return str(super().get_id())

    def _role_objects(self) -> Iterable[Any]:
        # An entry may be a link row that carries the role in ``role`` (Peewee's
        # through model in the seed); permissions live on the role itself.
        for entry in getattr(self, "roles", None) or ():
            yield getattr(entry, "role", entry)

    def has_role(self, role: Any) -> bool:
        """Return whether the user holds ``role``, given as a name or a role object."""
        name = role if isinstance(role, str) else getattr(role, "name", None)
        return any(r.name == name for r in self._role_objects())

    def get_permissions(self) -> frozenset[str]:
        """Return the union of the permissions of all the user's roles."""
        found: set[str] = set()
        for role in self._role_objects():
            found.update(parse_permissions(getattr(role, "permissions", None)))
        return frozenset(found)

    def has_permission(self, permission: str) -> bool:
        """Return whether one of the user's roles grants ``permission``."""
        return permission in self.get_permissions()
