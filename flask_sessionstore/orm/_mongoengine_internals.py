"""The private parts of MongoEngine that the MongoEngine translator reads, in one place.

Why this module exists: MongoEngine has no public API for what the translator needs to
stay within its budgets and guarantees:

- a document class's fields, key field, database alias and pymongo collection
  (``_fields``, ``_meta``, ``_get_collection``), to write single-document atomic updates
  (``$addToSet``, ``$pull``) and to join a session to its user in one ``aggregate``;
- whether a document was never stored (``_created``), so that a new one is inserted,
  never upserted over a stored one;
- a document built from what an ``aggregate`` returned (``_from_son``), with its list of
  role references marked as already loaded (``_data``, ``BaseList._dereferenced``), so
  that reading ``user.roles`` after the one-round-trip load sends no query.

Nothing here patches MongoEngine; it only reads and sets these attributes. Their meaning
was checked on the versions in :data:`TESTED`; another version is refused at import,
since a silent change of any of them would cost a query per request or lose a write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mongoengine
from mongoengine.base import BaseList
from mongoengine.connection import DEFAULT_CONNECTION_NAME

__all__ = [
    "TESTED",
    "alias",
    "collection",
    "collection_name",
    "fields",
    "from_son",
    "from_son_with_list",
    "is_new",
    "key_field",
]

#: The MongoEngine versions these internals were checked on: >=0.29,<0.30.
TESTED = ((0, 29), (0, 30))

_installed = tuple(mongoengine.VERSION[:2])
if not TESTED[0] <= _installed < TESTED[1]:
    raise ImportError(
        f"flask-sessionstore supports MongoEngine >=0.29,<0.30; "
        f"{mongoengine.get_version()} is installed."
    )


def fields(document: type[Any]) -> dict[str, Any]:
    """Return the fields of ``document`` by attribute name."""
    return dict(document._fields)


def key_field(document: type[Any]) -> str:
    """Return the attribute name of ``document``'s primary key."""
    return str(document._meta["id_field"])


def alias(document: type[Any]) -> str:
    """Return the connection alias ``document`` is stored under."""
    return str(document._meta.get("db_alias") or DEFAULT_CONNECTION_NAME)


def collection(document: type[Any]) -> Any:
    """Return ``document``'s pymongo collection (its indexes are made on first use)."""
    return document._get_collection()


def collection_name(document: type[Any]) -> str:
    """Return the name of ``document``'s collection, without connecting."""
    return str(document._get_collection_name())


def is_new(instance: Any) -> bool:
    """Return whether ``instance`` was made in Python and never stored."""
    return bool(instance._created)


def from_son(document: type[Any], son: dict[str, Any]) -> Any:
    """Return a ``document`` built from a stored BSON document, as a query would."""
    return document._from_son(son)


def from_son_with_list(document: type[Any], son: dict[str, Any], field: Any,
                       target: type[Any], joined: Iterable[dict[str, Any]]) -> Any:
    """Return a ``document`` built from ``son``, its list of references ``field`` holding
    the ``target`` documents ``joined`` brought (in any order), in the list's order and
    marked as loaded, so that reading it sends no query. A reference to a document that
    is gone, or repeated, is dropped."""
    instance = document._from_son(son)
    by_id = {item["_id"]: item for item in joined}
    references = dict.fromkeys(son.get(field.db_field) or ())
    loaded = BaseList([target._from_son(by_id[reference]) for reference in references
                       if reference in by_id], instance, field.name)
    loaded._dereferenced = True
    instance._data[field.name] = loaded
    return instance
