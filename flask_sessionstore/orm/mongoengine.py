"""The datastore for MongoEngine.

Users and roles are the application's own documents. Sessions live in a document of the
library (:func:`session_document_for`), one per session, keyed by the hash of the id.

MongoDB has no multi-document transaction outside a replica set, so a unit of work is
emulated, as far as it honestly can be: inside :meth:`~UserDatastore.transaction`, writes
are held back and sent in order when the block ends, or before the datastore's next read
(so that it reads its own writes). An error discards the writes not yet sent; writes
already sent stay. Every write is a single-document operation and atomic on its own:
``create_user`` stores a user with its role references in one insert, and granting or
taking a role is one ``$addToSet`` or ``$pull``.

Session documents are written with single atomic operations that never wait for the
caller's unit of work. A request reads its session, the user and the user's roles in one
``aggregate`` (two ``$lookup`` stages), and writes nothing unless the session changed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from bson import ObjectId
from mongoengine import (
    CASCADE,
    DateTimeField,
    Document,
    IntField,
    ListField,
    ObjectIdField,
    ReferenceField,
    SequenceField,
    StringField,
    UUIDField,
)
from mongoengine.base import BaseList
from mongoengine.connection import DEFAULT_CONNECTION_NAME
from mongoengine.errors import NotUniqueError, ValidationError
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from ..datastore import ANY_USER, SessionRecord, UserDatastore
from ..exceptions import ConstraintError, DatastoreUnavailableError, SessionStoreError

__all__ = ["MongoEngineUserDatastore", "session_document_for"]

#: The fields a session document must have; their ``db_field`` names may differ.
SESSION_FIELDS = (
    "key", "user", "data", "created_at", "last_seen_at", "expires_at", "user_agent",
    "ip_address",
)

#: Session documents already made, per user model and collection: a second datastore
#: over the same models reuses the document instead of defining it twice.
_documents: weakref.WeakKeyDictionary[type[Any], dict[str, type[Any]]] = (
    weakref.WeakKeyDictionary()
)

_INT64_RANGE = range(-(2**63), 2**63)
_OBJECT_ID_LENGTH = 24
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def session_document_for(user_model: type[Any], *,
                         collection: str = "sessionstore_session") -> type[Any]:
    """Return the session document for ``user_model``, made on first use.

    The document is stored in ``collection`` of the user model's database (its
    ``db_alias``), which lets one ``aggregate`` join a session to its user. Its fields:

    - ``key``: the SHA-256 of the session id, stored as ``_id`` (unique by nature);
    - ``user`` (stored as ``user_id``): the user's primary key, indexed, or null for an
      anonymous session; deleting the user with MongoEngine deletes its sessions too
      (``reverse_delete_rule=CASCADE``);
    - ``data``: the session's content as Flask's tagged JSON, never pickle;
    - ``created_at``, ``last_seen_at``, ``expires_at``: naive UTC datetimes. MongoDB
      keeps milliseconds, so they are stored up to a millisecond earlier than given,
      which can only end a session that much sooner. ``expires_at`` has a TTL index
      (``expireAfterSeconds: 0``): MongoDB deletes dead sessions in the background, and
      the datastore checks the expiry on every read, since that monitor runs late;
    - ``user_agent`` and ``ip_address``, for "your devices" pages.

    The indexes are created by MongoEngine when the collection is first used.
    """
    made = _documents.setdefault(user_model, {})
    if collection in made:
        return made[collection]
    attributes: dict[str, Any] = {
        "__doc__": "A server-side session: one document per live session id (stored hashed).",
        "__module__": __name__,
        "key": StringField(primary_key=True, max_length=64),
        "user": ReferenceField(
            user_model, db_field="user_id", null=True, reverse_delete_rule=CASCADE
        ),
        "data": StringField(required=True),
        "created_at": DateTimeField(required=True),
        "last_seen_at": DateTimeField(required=True),
        "expires_at": DateTimeField(required=True),
        "user_agent": StringField(max_length=512),
        "ip_address": StringField(max_length=45),
        "meta": {
            "collection": collection,
            "db_alias": _alias(user_model),
            "auto_create_index": True,
            "indexes": ["user", {"fields": ["expires_at"], "expireAfterSeconds": 0}],
        },
    }
    document = type(f"SessionStoreSession_{collection}", (Document,), attributes)
    made[collection] = document
    return document


@dataclass
class _Pending:
    """Writes held back until the unit of work of ``owner`` ends or the next read."""

    owner: object
    writes: list[tuple[tuple[Any, ...] | None, Callable[[], object]]] = field(
        default_factory=list
    )


class MongoEngineUserDatastore(UserDatastore[Any, Any]):
    """The datastore over MongoEngine: ``MongoEngineUserDatastore(db, User, Role)``.

    :param db: what :func:`mongoengine.connect` returned; the documents use their own
        connection (their ``db_alias``), so it is kept only for the application's use.
    :param session_document: a document for the sessions, with the fields of
        :func:`session_document_for` (its ``user`` field a plain reference, not a DBRef);
        by default that function makes one.

    Other keyword arguments are those of :class:`~flask_sessionstore.UserDatastore`.
    """

    def __init__(self, db: Any, user_model: type[Any], role_model: type[Any], *,
                 session_document: type[Any] | None = None, **options: Any) -> None:
        super().__init__(db, user_model, role_model, **options)
        self.session_document = session_document or session_document_for(user_model)
        fields = self.session_document._fields
        missing = [name for name in SESSION_FIELDS if name not in fields]
        if missing:
            raise SessionStoreError(
                f"{self.session_document.__name__} lacks the session fields {missing}."
            )
        if isinstance(fields["user"], ReferenceField) and fields["user"].dbref:
            raise SessionStoreError(
                "The session document's user field must store the plain primary key "
                "(ReferenceField(..., dbref=False))."
            )
        #: Each session field's name in the stored documents.
        self._db = {name: fields[name].db_field for name in SESSION_FIELDS}
        self._pk_field = user_model._fields[user_model._meta["id_field"]]
        self._roles_field = _reference_list(user_model, role_model)
        self._pending: ContextVar[_Pending | None] = ContextVar(
            f"sessionstore_mongoengine_pending_{id(self)}", default=None
        )
        # The session's aggregate joins the user (and its roles) when they live in the
        # same database; otherwise the user is read separately.
        self._join_user = _alias(self.session_document) == _alias(user_model)
        self._join_roles = (
            self._join_user
            and self._roles_field is not None
            and not self._roles_field.field.dbref
            and _alias(role_model) == _alias(user_model)
        )

    # -- units of work -------------------------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (NotUniqueError, DuplicateKeyError) as exc:
            raise ConstraintError(str(exc)) from exc
        except ValidationError as exc:
            # The document's own schema refused a value (too long, of another type,
            # required but missing) before anything was sent: nothing was written.
            raise ConstraintError(str(exc)) from exc
        except ConnectionFailure as exc:
            raise DatastoreUnavailableError(str(exc)) from exc

    def _write(self, action: Callable[[], object],
               identity: tuple[Any, ...] | None = None) -> None:
        """Run ``action`` now, or inside a unit of work, when it ends or before the
        next read. An ``identity`` names a write that may be asked for more than once
        (saving a document, whose changes are collected when it runs): it is held back
        once, where it was first asked for."""
        owner = self._transaction.get()
        if owner is None:
            with self._translated():
                action()
            return
        pending = self._pending.get()
        if pending is None or pending.owner is not owner:
            pending = _Pending(owner)
            self._pending.set(pending)
        if identity is None or all(held != identity for held, _ in pending.writes):
            pending.writes.append((identity, action))

    def _flush(self) -> None:
        """Send the writes held back, in the order they were made."""
        pending = self._pending.get()
        if pending is None:
            return
        self._pending.set(None)
        with self._translated():
            for _, action in pending.writes:
                action()

    def put(self, model: Any) -> Any:
        # A new document is inserted (never upserted over one with the same key), an
        # existing one updated with only its changed fields.
        self._write(lambda: model.save(force_insert=bool(model._created)),
                    ("put", id(model)))
        return model

    def delete(self, model: Any) -> None:
        roles = self._roles_field
        if roles is not None and isinstance(model, self.role_model) and model.pk is not None:
            # A role's links live in the users' documents: unlink it everywhere first,
            # so that no user is ever left holding a role that is gone.
            reference = roles.field.to_mongo(model)

            def unlink_and_delete() -> None:
                self.user_model._get_collection().update_many(
                    {roles.db_field: reference}, {"$pull": {roles.db_field: reference}}
                )
                model.delete()

            self._write(unlink_and_delete, ("delete", id(model)))
        else:
            self._write(model.delete, ("delete", id(model)))

    def commit(self) -> None:
        self._flush()

    def rollback(self) -> None:
        self._pending.set(None)

    # -- users and roles -----------------------------------------------------------

    def _find_user(self, case_insensitive: bool, criteria: dict[str, Any]) -> Any:
        self._flush()
        exact: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        for name, value in criteria.items():
            if name == "pk":
                name = self.user_model._meta["id_field"]
            model_field = self.user_model._fields.get(name)
            if model_field is None:
                raise SessionStoreError(f"{self.user_model.__name__} has no attribute {name!r}.")
            if isinstance(value, Mapping):
                # A mapping would reach MongoDB as a query operator ({"$ne": None}
                # matches everyone): no stored value equals one, so nothing matches.
                return None
            if case_insensitive and isinstance(value, str) and isinstance(
                model_field, StringField
            ):
                raw[model_field.db_field] = {"$regex": _whole_value(value), "$options": "i"}
            else:
                exact[name] = value
        with self._translated():
            query = self.user_model.objects(**exact)
            if raw:
                query = query.filter(__raw__=raw)
            return query.first()

    def _find_role(self, name: str) -> Any:
        self._flush()
        with self._translated():
            return self.role_model.objects(name=name).first()

    def _list(self, model: type[Any], offset: int, limit: int | None) -> list[Any]:
        self._flush()
        with self._translated():
            found = model.objects.order_by("pk").skip(offset)
            return list(found.limit(limit) if limit is not None else found)

    def _get_user_by_pk(self, pk: Any) -> Any:
        self._flush()
        if not self._join_roles:
            with self._translated():
                return self.user_model.objects(pk=pk).first()
        # The user with its roles in one round trip, as with a session (a cache hit
        # loads the user this way).
        pipeline = [{"$match": {"_id": pk}}, self._roles_lookup("")]
        with self._translated():
            found = next(iter(self.user_model._get_collection().aggregate(pipeline)), None)
        if found is None:
            return None
        return self._user_with_roles(found, found.pop("_sessionstore_roles", ()))

    def _parse_pk(self, value: Any) -> Any:
        if isinstance(value, bool):
            return None
        pk_field = self._pk_field
        if isinstance(pk_field, ObjectIdField):
            if isinstance(value, ObjectId):
                return value
            # Only the 24-digit hex form: ObjectId() would also take any 12 bytes.
            if (isinstance(value, str) and len(value) == _OBJECT_ID_LENGTH
                    and set(value) <= _HEX_DIGITS):
                return ObjectId(value)
            return None
        if isinstance(pk_field, (IntField, SequenceField)):
            if isinstance(value, str):
                digits = value.strip().removeprefix("-")
                # isdigit() takes "²", which int() refuses, as it refuses over 4300 digits.
                if not (digits.isascii() and digits.isdecimal()) or len(digits) > 19:
                    return None
                value = int(value)
            return value if isinstance(value, int) and value in _INT64_RANGE else None
        if isinstance(pk_field, UUIDField):
            try:
                return value if isinstance(value, UUID) else UUID(str(value))
            except ValueError:
                return None
        if isinstance(pk_field, StringField):
            return value if isinstance(value, str) else None
        return None

    def user_pk(self, user: Any) -> Any:
        if user._created:
            self._flush()  # A user held back in this unit of work gets its key now.
        return user.pk

    def _roles_of(self, user: Any) -> Iterable[Any]:
        with self._translated():  # Reading references may query the roles.
            return list(getattr(user, "roles", None) or ())

    def _add_role(self, user: Any, role: Any) -> None:
        self._change_roles(user, role, add=True)

    def _remove_role(self, user: Any, role: Any) -> None:
        self._change_roles(user, role, add=False)

    def _change_roles(self, user: Any, role: Any, *, add: bool) -> None:
        roles_field = self._roles_field
        with self._translated():
            held = user.roles
        if roles_field is None or user._created:
            # A user not stored yet gets its roles in its own insert (one atomic
            # write); a roles attribute that is not a list of references is saved
            # as MongoEngine saves it.
            if add:
                held.append(role)
            else:
                held.remove(role)
            self.put(user)
            return
        if role._created:
            self._flush()  # A role held back in this unit of work gets its key now.
        reference = roles_field.field.to_mongo(role)
        operator = "$addToSet" if add else "$pull"
        pk = user.pk
        # One atomic update of the user's document: a concurrent grant of another role
        # is never lost, as it could be if the whole list were written back. The copy in
        # memory follows without being marked as changed (list's own methods), so a
        # later save of the user does not write the list again.
        if add:
            list.append(held, role)
        else:
            list.remove(held, role)
        self._write(
            lambda: self.user_model._get_collection().update_one(
                {"_id": pk}, {operator: {roles_field.db_field: reference}}
            )
        )

    # -- session documents ---------------------------------------------------------

    def _sessions(self) -> Any:
        # Call inside _translated(): the first call creates the indexes, on the server.
        return self.session_document._get_collection()

    def _session_insert(self, record: SessionRecord) -> None:
        db = self._db
        with self._translated():
            self._sessions().insert_one({
                db["key"]: record.key, db["user"]: record.user_pk, db["data"]: record.data,
                db["created_at"]: record.created_at, db["last_seen_at"]: record.last_seen_at,
                db["expires_at"]: record.expires_at, db["user_agent"]: record.user_agent,
                db["ip_address"]: record.ip_address,
            })

    def _session_pipeline(self, key: str, now: datetime) -> list[dict[str, Any]]:
        """The aggregate that reads a live session with its user and the user's roles."""
        db = self._db
        pipeline: list[dict[str, Any]] = [
            {"$match": {db["key"]: key, db["expires_at"]: {"$gt": now}}},
        ]
        if self._join_user:
            pipeline += [
                {"$lookup": {"from": self.user_model._get_collection_name(),
                             "localField": db["user"], "foreignField": "_id",
                             "as": "_sessionstore_user"}},
                {"$unwind": {"path": "$_sessionstore_user",
                             "preserveNullAndEmptyArrays": True}},
            ]
        if self._join_roles:
            pipeline.append(self._roles_lookup("_sessionstore_user."))
        return pipeline

    def _roles_lookup(self, path: str) -> dict[str, Any]:
        """The ``$lookup`` stage that joins the roles of the user found at ``path``."""
        assert self._roles_field is not None
        return {"$lookup": {"from": self.role_model._get_collection_name(),
                            "localField": f"{path}{self._roles_field.db_field}",
                            "foreignField": "_id", "as": "_sessionstore_roles"}}

    def _session_load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        with self._translated():
            found = next(iter(self._sessions().aggregate(self._session_pipeline(key, now))),
                         None)
        if found is None:
            return None
        record = self._record(found)
        if not self._join_user:
            return record, (self._get_user_by_pk(record.user_pk)
                            if record.user_pk is not None else None)
        return record, self._user_from(found)

    def _user_from(self, found: dict[str, Any]) -> Any:
        son = found.get("_sessionstore_user")
        if son is None:
            return None
        return self._user_with_roles(son, found.get("_sessionstore_roles", ()))

    def _user_with_roles(self, son: dict[str, Any], role_sons: Iterable[dict[str, Any]]) -> Any:
        user = self.user_model._from_son(son)
        if self._join_roles:
            assert self._roles_field is not None
            # The roles came with the aggregate, in any order: put them in the user's
            # order and hand them to MongoEngine as already loaded, so reading
            # ``user.roles`` sends no query. A reference to a deleted role is dropped.
            by_id = {role["_id"]: role for role in role_sons}
            name = self._roles_field.name
            roles, seen = [], set()
            for reference in son.get(self._roles_field.db_field) or ():
                if reference in by_id and reference not in seen:
                    seen.add(reference)
                    roles.append(self.role_model._from_son(by_id[reference]))
            loaded = BaseList(roles, user, name)
            loaded._dereferenced = True
            user._data[name] = loaded
        return user

    def _session_update(self, key: str, now: datetime, *, data: str | None,
                        expires_at: datetime) -> bool:
        db = self._db
        values: dict[str, Any] = {db["expires_at"]: expires_at, db["last_seen_at"]: now}
        if data is not None:
            values[db["data"]] = data
        # The filter repeats the read's liveness check: a session deleted or expired
        # meanwhile matches nothing and is not brought back (never an upsert).
        with self._translated():
            result = self._sessions().update_one(
                {db["key"]: key, db["expires_at"]: {"$gt": now}}, {"$set": values}
            )
        return bool(result.matched_count == 1)

    def _session_delete(self, key: str) -> bool:
        with self._translated():
            result = self._sessions().delete_one({self._db["key"]: key})
        return bool(result.deleted_count)

    def _session_delete_for_user(self, user_pk: Any, *, keep: str | None = None) -> int:
        if user_pk is None:
            return 0  # Anonymous sessions are nobody's: never deleted as a user's.
        query: dict[str, Any] = {self._db["user"]: user_pk}
        if keep is not None:
            query[self._db["key"]] = {"$ne": keep}
        with self._translated():
            return int(self._sessions().delete_many(query).deleted_count)

    def _selected(self, query: dict[str, Any], user_pk: Any) -> dict[str, Any]:
        # None selects the anonymous sessions: in MongoDB it matches a null field.
        if user_pk is not ANY_USER:
            query[self._db["user"]] = user_pk
        return query

    def _session_find(self, now: datetime, *, user_pk: Any = ANY_USER, offset: int = 0,
                      limit: int | None = None) -> list[SessionRecord]:
        db = self._db
        query = self._selected({db["expires_at"]: {"$gt": now}}, user_pk)
        with self._translated():
            found = (
                self._sessions().find(query)
                .sort([(db["last_seen_at"], DESCENDING), (db["key"], ASCENDING)])
                .skip(offset)
                .limit(limit or 0)  # 0: no limit
            )
            return [self._record(son) for son in found]

    def _session_count(self, now: datetime, *, user_pk: Any = ANY_USER,
                       expired: bool = False) -> int:
        db = self._db
        query = self._selected({db["expires_at"]: {"$lte" if expired else "$gt": now}}, user_pk)
        with self._translated():
            return int(self._sessions().count_documents(query))

    def _session_delete_all(self) -> int:
        with self._translated():
            return int(self._sessions().delete_many({}).deleted_count)

    def _session_delete_expired(self, now: datetime, limit: int) -> int:
        db = self._db
        dead = {db["expires_at"]: {"$lte": now}}
        # MongoDB's delete_many takes no limit: pick a batch of keys, then delete them.
        with self._translated():
            keys = [son[db["key"]] for son in
                    self._sessions().find(dead, {db["key"]: True}).limit(limit)]
            if not keys:
                return 0
            result = self._sessions().delete_many({db["key"]: {"$in": keys}, **dead})
        return int(result.deleted_count)

    def _record(self, son: dict[str, Any]) -> SessionRecord:
        db = self._db
        return SessionRecord(
            key=son[db["key"]], user_pk=son.get(db["user"]), data=son[db["data"]],
            created_at=_naive(son[db["created_at"]]),
            last_seen_at=_naive(son[db["last_seen_at"]]),
            expires_at=_naive(son[db["expires_at"]]),
            user_agent=son.get(db["user_agent"]), ip_address=son.get(db["ip_address"]),
        )


def _alias(document: type[Any]) -> str:
    return str(document._meta.get("db_alias") or DEFAULT_CONNECTION_NAME)


def _reference_list(user_model: type[Any], role_model: type[Any]) -> Any:
    """Return the user model's ``roles`` field if it is a list of references to roles."""
    roles = user_model._fields.get("roles")
    if (isinstance(roles, ListField) and isinstance(roles.field, ReferenceField)
            and (issubclass(role_model, roles.field.document_type)
                 or issubclass(roles.field.document_type, role_model))):
        return roles
    return None


def _whole_value(value: str) -> str:
    """Return a regular expression matching exactly ``value`` (with the ``i`` option:
    ignoring case), the same in MongoDB's PCRE and in Python's ``re`` (mongomock).

    Every ASCII character that is not a letter or digit is escaped: a backslash before
    such a character makes it literal in both. The pattern is anchored at the start and
    ends with "nothing follows", since ``$`` would also match before a final newline.
    """
    escaped = "".join(
        "\\" + char if char.isascii() and not char.isalnum() else char for char in value
    )
    return f"^{escaped}(?![\\s\\S])"


def _naive(moment: datetime) -> datetime:
    # A client made with tz_aware=True returns aware datetimes; the core keeps naive UTC.
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)
