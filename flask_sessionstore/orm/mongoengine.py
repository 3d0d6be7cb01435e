"""The datastore for MongoEngine: a translator of the ORM contract, in three modules
(this one, :mod:`~flask_sessionstore.orm.mongoengine_models` and
:mod:`~flask_sessionstore.orm.mongoengine_rows`).

Sessions are documents of the library (:func:`session_document_for`), each written by
one atomic operation at once, and read with the user and its roles in one ``aggregate``.
MongoDB has no multi-document transaction outside a replica set, so a unit of work is
emulated as far as it honestly can be: writes are held back and sent in order when it
ends, or before the next read (which reads its own writes); an error drops those not yet
sent. Each write is atomic on its own: ``create_user`` is one insert with the role
references, a grant one ``$addToSet``, a removal one ``$pull``.
"""

from __future__ import annotations

from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import mongoengine as me

from ..datastore import UserDatastore
from . import _mongoengine_internals as internals
from .mongoengine_models import MongoEngineModels
from .mongoengine_rows import SESSION_FIELDS, TIMES, MongoEngineRows

__all__ = ["SESSION_FIELDS", "MongoEngineModels", "MongoEngineRows", "MongoEngineUserDatastore",
           "session_document_for"]

U = TypeVar("U")
R = TypeVar("R")

#: Session documents made, per user model and collection, for a second datastore to reuse.
_documents: WeakKeyDictionary[type[Any], dict[str, type[Any]]] = WeakKeyDictionary()


def session_document_for(user_model: type[Any], *,
                         collection: str = "sessionstore_session") -> type[Any]:
    """Return the session document for ``user_model``, made on first use, stored in
    ``collection`` of the user model's database (so that one ``aggregate`` joins a
    session to its user). Its fields and indexes are described in :doc:`/orms/mongoengine`.
    """
    made = _documents.setdefault(user_model, {})
    if collection not in made:
        made[collection] = type(f"SessionStoreSession_{collection}", (me.Document,), {
            "__doc__": "A server-side session: one document per live session id (hashed).",
            "__module__": __name__,
            "key": me.StringField(primary_key=True, max_length=64),
            # Deleting a user through MongoEngine deletes its sessions too.
            "user": me.ReferenceField(user_model, db_field="user_id", null=True,
                                      reverse_delete_rule=me.CASCADE),
            "data": me.StringField(required=True),
            **{name: me.DateTimeField(required=True) for name in TIMES},
            "user_agent": me.StringField(max_length=512),
            "ip_address": me.StringField(max_length=45),
            "stamp": me.StringField(max_length=64),
            "meta": {"collection": collection, "db_alias": internals.alias(user_model),
                     "auto_create_index": True,
                     "indexes": ["user", {"fields": ["expires_at"], "expireAfterSeconds": 0}]},
        })
    return made[collection]


class MongoEngineUserDatastore(UserDatastore[U, R]):
    """The datastore over MongoEngine: ``MongoEngineUserDatastore(db, User, Role)``.

    :param db: what :func:`mongoengine.connect` returned; the documents use their own
        connection (their ``db_alias``), so it is kept only for the application's use.
    :param session_document: a document for the sessions, with the fields of
        :func:`session_document_for` (its ``user`` field a plain reference, not a DBRef);
        by default that function makes one.

    Other keyword arguments are those of :class:`~flask_sessionstore.UserDatastore`.
    """

    user_model: type[U]
    role_model: type[R]

    def __init__(self, db: Any, user_model: type[U], role_model: type[R], *,
                 session_document: type[Any] | None = None, **options: Any) -> None:
        self.db = db
        self.session_document = session_document or session_document_for(user_model)
        models = MongoEngineModels(user_model, role_model)
        super().__init__(models, MongoEngineRows(models, self.session_document), **options)
