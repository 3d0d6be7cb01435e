"""The library's errors: one root, :class:`SessionStoreError`, and a few leaves.

Catch the root to handle every failure the library reports on purpose; catch a leaf to
handle one case. Errors raised by a database driver that the library cannot interpret
are not wrapped: they are bugs or outages, and hiding them would lose information.
"""

from __future__ import annotations

__all__ = [
    "ConstraintError",
    "DatastoreUnavailableError",
    "DuplicateError",
    "InvalidValueError",
    "PasswordError",
    "SessionStoreError",
    "UnknownRoleError",
    "UnknownUserError",
    "UserExistsError",
]


class SessionStoreError(Exception):
    """Root of every error the library raises on purpose."""


class ConstraintError(SessionStoreError):
    """A write broke a uniqueness or integrity constraint of the database.

    The unit of work has been rolled back when this is raised: nothing is half-written.
    """


class DuplicateError(ConstraintError):
    """A write would have stored a second row with a value that must be unique (a key,
    an email, a role name). Nothing was overwritten."""


class InvalidValueError(ConstraintError, ValueError):
    """A value cannot be stored: of the wrong type for its field, too long for its
    column, or holding a character the database refuses (NUL, a lone surrogate).
    Nothing was written."""


class UserExistsError(DuplicateError):
    """A user with the same unique attribute (email, username, ...) already exists."""


class UnknownRoleError(SessionStoreError, LookupError):
    """A role was named that does not exist."""


class UnknownUserError(SessionStoreError, LookupError):
    """A user was named that does not exist."""


class PasswordError(SessionStoreError, ValueError):
    """A password cannot be used: empty, too long, or not a string."""


class DatastoreUnavailableError(SessionStoreError):
    """The database could not be reached; the request should be answered with 503."""
