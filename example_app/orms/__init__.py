"""The example's ORM backends: one small module per ORM, picked with ``EXAMPLE_ORM``.

The library's datastore does everything the site needs about users, roles, passwords
and sessions. A backend adds only what an application does with its own models: define
them, create their tables, and list users and roles for the admin pages. Adding an ORM
is one module here with a ``make_backend(app, url)`` function, and its name in
:data:`ORMS`.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask

from flask_sessionstore import UserDatastore

__all__ = ["DEFAULT_URLS", "ORMS", "ExampleBackend", "datastore_options", "load_backend"]

#: The ORMs the example knows, each with its default database (``{instance}`` is the
#: app's instance folder).
DEFAULT_URLS: dict[str, str] = {
    "sqlalchemy": "sqlite:///{instance}/example-sqlalchemy.sqlite3",
    "peewee": "sqlite:///{instance}/example-peewee.sqlite3",
    "pony": "sqlite:///{instance}/example-pony.sqlite3",
    "mongoengine": "mongomock://localhost/example_app",
}
ORMS = tuple(DEFAULT_URLS)


class ExampleBackend(abc.ABC):
    """One ORM's models for the example, and the few listings the admin pages need.

    :param datastore: the library's datastore over the backend's models.
    """

    name: str

    def __init__(self, datastore: UserDatastore[Any, Any]) -> None:
        self.datastore = datastore

    @contextmanager
    def unit(self) -> Iterator[None]:
        """Run a block of work outside a request (start-up, a command) as the ORM needs:
        nothing by default; Pony opens a ``db_session``."""
        yield

    @abc.abstractmethod
    def create_tables(self) -> None:
        """Create the tables (or collections) that do not exist yet; keep the others."""

    @abc.abstractmethod
    def users(self) -> list[Any]:
        """Return every user, ordered by email."""

    @abc.abstractmethod
    def roles(self) -> list[Any]:
        """Return every role, ordered by name."""

    def role_names(self, user: Any) -> list[str]:
        """Return the names of the roles ``user`` holds, sorted."""
        # An entry may be a link row carrying the role (a through model), as the
        # library's UserMixin also allows.
        return sorted(str(getattr(entry, "role", entry).name) for entry in user.roles or ())


def datastore_options(app: Flask) -> dict[str, Any]:
    """Return the keyword arguments every backend passes to its datastore.

    ``EXAMPLE_PASSWORD_HASHER`` (a :class:`~flask_sessionstore.PasswordHasher`) replaces
    the default argon2 settings; the tests use a cheap one.
    """
    hasher = app.config.get("EXAMPLE_PASSWORD_HASHER")
    return {"password_hasher": hasher} if hasher is not None else {}


def load_backend(name: str, app: Flask, url: str) -> ExampleBackend:
    """Return the backend of the ORM ``name`` on the database ``url``, set up on ``app``.

    :raises RuntimeError: when ``name`` is unknown or its module cannot be loaded (the
        ORM or its datastore is not installed).
    """
    if name not in ORMS:
        raise RuntimeError(f"EXAMPLE_ORM must be one of {', '.join(ORMS)}, not {name!r}.")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        raise RuntimeError(
            f"The example has no working {name!r} backend here ({exc}). Install the ORM "
            f"with: pip install 'flask-sessionstore[{name}]'"
        ) from exc
    backend: ExampleBackend = module.make_backend(app, url)
    return backend
