"""Where the Peewee translator reads or extends Peewee through underscore-named or
undocumented parts, kept apart from ``orm/peewee.py`` so that a Peewee release changing
them breaks this one module, at import:

- the models' metadata, ``Model._meta`` (its names changed from Peewee 2 to 3), read
  to check the models and to tell the user model's key kind; and the database a
  ``Proxy`` holds (FlaskDB's before ``init_app``), ``Proxy.obj``;
- :func:`link_lost` reads the driver's connection under Peewee's (psycopg's ``closed``,
  PyMySQL's ``open``): Peewee's own check pings MySQL, and on PostgreSQL takes an
  aborted transaction for a dead link;
- :class:`Backref` shadows Peewee's back-reference accessor on one instance, which
  works because that accessor is a non-data descriptor;
- :func:`is_new` reads ``Model._dirty``: Peewee's ``save()`` cannot tell a new object
  whose key the application assigned (a UUID) from a stored one, and the fields set
  since the object was made or loaded are the only record of it;
- the two field classes override ``Field.get_modifiers()`` and ``Field.ddl_datatype()``,
  which Peewee calls while writing ``CREATE TABLE``, to give the session table the
  column types it needs on MariaDB.

Peewee releases outside :data:`TESTED` are refused at import.
"""

from __future__ import annotations

import re
from typing import Any

import peewee

from ..exceptions import SessionStoreError
from ..records import KeyKind

__all__ = ["TESTED", "Backref", "PreciseDateTimeField", "SessionDataField", "bound_database",
           "fields", "foreign_key", "is_new", "link_lost", "primary_key", "resolved",
           "user_key"]

#: The Peewee releases the suite passes on: from 4.5 up to, not including, 5. (Before 4.5,
#: Peewee connects to MariaDB in utf8mb3 and loads a session whose user is gone wrongly.)
TESTED = ((4, 5), (5, 0))

_found = re.match(r"(\d+)\.(\d+)", getattr(peewee, "__version__", ""))
if _found is None or not TESTED[0] <= (int(_found[1]), int(_found[2])) < TESTED[1]:
    raise ImportError(
        f"flask-sessionstore needs Peewee >=4.5,<5, not {getattr(peewee, '__version__', '?')}"
        ": install a supported release (pip install 'flask-sessionstore[peewee]')."
    )


def resolved(database: Any) -> Any:
    """Return the database behind a ``Proxy`` (None before it is initialized), or
    ``database`` itself."""
    return database.obj if isinstance(database, peewee.Proxy) else database


def bound_database(db: Any, model: type[Any], *others: type[Any]) -> Any:
    """Return the database ``model`` is bound to, checking that it is ``db``'s (FlaskDB
    or that database) and that ``others`` are bound to it too."""
    database = model._meta.database
    if database is None:
        raise SessionStoreError(f"{model.__name__} is bound to no database: subclass "
                                "FlaskDB's db.Model or declare 'class Meta: database = db'.")
    if db is not database and getattr(db, "database", None) is not database:
        raise SessionStoreError(
            f"{model.__name__} is bound to {database!r}, not to the database of {db!r}.")
    for other in others:
        if other._meta.database is not database:
            raise SessionStoreError(
                f"{other.__name__} is bound to another database than {model.__name__}.")
    return database


def primary_key(model: type[Any]) -> Any:
    """Return the primary key field of ``model`` (a ``CompositeKey`` if it has several)."""
    return model._meta.primary_key


def user_key(model: type[Any]) -> tuple[Any, KeyKind]:
    """Return the primary key field of the user model and the kind of key it holds; a
    composite key is refused."""
    field = model._meta.primary_key
    if model._meta.composite_key:
        raise SessionStoreError("A user model with a composite primary key is not supported.")
    if isinstance(field, peewee.IntegerField):
        return field, KeyKind.integer()
    if isinstance(field, peewee.UUIDField | peewee.BinaryUUIDField):
        return field, KeyKind.uuid()
    if isinstance(field, peewee.CharField | peewee.TextField):
        return field, KeyKind.text(getattr(field, "max_length", None))
    return field, KeyKind(type(None))  # a key of another type: nothing parses as one


def fields(model: type[Any]) -> dict[str, Any]:
    """Return the fields of ``model`` by name."""
    return dict(model._meta.fields)


def foreign_key(model: type[Any], target: type[Any]) -> Any:
    """Return the one foreign key field of ``model`` to ``target``."""
    found = [field for field in model._meta.sorted_fields
             if isinstance(field, peewee.ForeignKeyField) and field.rel_model is target]
    if len(found) != 1:
        raise SessionStoreError(f"{model.__name__} needs exactly one foreign key to "
                                f"{target.__name__}, not {len(found)}.")
    return found[0]


def is_new(model: Any) -> bool:
    """Return whether ``model`` must be inserted rather than updated.

    Peewee's ``save()`` updates whenever the primary key is set, which for a key the
    application assigns (a UUID, a name) would update nothing. A key still marked
    dirty was set on this object and never stored: the object is new.
    """
    meta = model._meta
    if meta.primary_key is False:
        return True
    names = meta.primary_key.field_names if meta.composite_key else (meta.primary_key.name,)
    return any(name in model._dirty for name in names)


def link_lost(database: Any) -> bool:
    """Return whether a failure left this thread without a usable connection: none
    opened, or the driver's connection closed."""
    if database.is_closed():
        return True
    connection = database.connection()
    return bool(getattr(connection, "closed", False)) or getattr(connection, "open", True) is False


class Backref:
    """Where instances of a model read their rows of another, through ``link``'s
    back-reference (``backref='roles'``): a query of one's own can be set there on one
    instance, which then reads it instead of building Peewee's query each time."""

    def __init__(self, link: Any) -> None:
        name = link.backref
        self.name = name if isinstance(name, str) and name.isidentifier() else None

    def set(self, instance: Any, query: Any) -> None:
        # Peewee's BackrefAccessor defines no __set__: the instance attribute shadows it.
        if self.name is not None:
            setattr(instance, self.name, query)

    def is_set(self, instance: Any) -> bool:
        return self.name is not None and self.name in vars(instance)


class PreciseDateTimeField(peewee.DateTimeField):
    """A date and time kept to the microsecond on every database.

    MariaDB's ``DATETIME`` drops fractions of a second unless declared ``DATETIME(6)``;
    PostgreSQL (``TIMESTAMP(6)``) and SQLite accept the same modifier unchanged.
    """

    def get_modifiers(self) -> list[int]:
        return [6]


class SessionDataField(peewee.TextField):
    """Text, as ``MEDIUMTEXT`` on MySQL and MariaDB, whose ``TEXT`` stops at 64 KB."""

    def ddl_datatype(self, ctx: Any) -> Any:
        if isinstance(resolved(self.model._meta.database), peewee.MySQLDatabase):
            return peewee.SQL("MEDIUMTEXT")
        return super().ddl_datatype(ctx)
