"""MongoEngine users and roles: the ``ModelStore`` half of the MongoEngine translator.

MongoDB has no multi-document transaction outside a replica set, so a unit of work is
emulated as far as it honestly can be: writes are held back and sent in order when it
ends, or before the next read (which reads its own writes); an error drops those not yet
sent. Each write is atomic on its own: ``create_user`` is one insert with the role
references, a grant one ``$addToSet``, a removal one ``$pull``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import mongoengine as me
from bson import ObjectId
from mongoengine.errors import NotUniqueError, ValidationError
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from .. import exceptions
from ..contract import ModelStore
from ..records import KeyKind
from . import _mongoengine_internals as internals

__all__ = ["MongoEngineModels", "translated"]

U = TypeVar("U")
R = TypeVar("R")
T = TypeVar("T")

#: The library's error for what MongoEngine and pymongo raise. A ValidationError is the
#: document's schema refusing a value before anything was sent.
_ERRORS: dict[type[Exception], type[exceptions.SessionStoreError]] = {
    NotUniqueError: exceptions.DuplicateError, DuplicateKeyError: exceptions.DuplicateError,
    ValidationError: exceptions.InvalidValueError,
    ConnectionFailure: exceptions.DatastoreUnavailableError,
}


@contextmanager
def translated(discard: Callable[[], None] | None = None) -> Iterator[None]:
    """Raise the library's error for what MongoDB or a schema refused, after ``discard``
    (the unit of work's rollback; session rows, never part of a unit, pass none)."""
    try:
        yield
    except tuple(_ERRORS) as exc:
        if discard is not None:
            discard()
        kind = next(error for cls, error in _ERRORS.items() if isinstance(exc, cls))
        raise kind(str(exc)) from exc



class MongoEngineModels(ModelStore[U, R]):
    """Users and roles: the application's documents, in the emulated unit of work."""

    def __init__(self, user_model: type[U], role_model: type[R]) -> None:
        self.user_model, self.role_model = user_model, role_model
        # The same classes, for MongoEngine's untyped query manager (``objects``).
        self._users: Any = user_model
        self._roles: Any = role_model
        self._fields = internals.fields(user_model)
        self._key_name = internals.key_field(user_model)
        self.key_kind = _key_kind(self._fields[self._key_name])
        #: The user's ``roles`` field when it is a list of references to roles.
        self.roles_field = _reference_list(self._fields, role_model)
        #: Whether an aggregate can join a user's roles (plain references, one database).
        self.roles_joinable = (self.roles_field is not None and not self.roles_field.field.dbref
                               and internals.alias(role_model) == internals.alias(user_model))
        #: The writes of the open unit of work not sent yet, in order, each with the
        #: identity of what it writes (None: a write never merged with another).
        self._held: ContextVar[list[tuple[tuple[str, int] | None, Callable[[], object]]]] = (
            ContextVar(f"sessionstore_mongoengine_{id(self)}"))

    @contextmanager
    def unit(self) -> Iterator[None]:
        """Hold writes back until the block ends, then send them in order. A unit
        joined (``commit()`` inside ``transaction()``) sends what is held at its end."""
        token = self._held.set([]) if self._held.get(None) is None else None
        try:
            yield
            self._flush()
        finally:
            if token is not None:
                self._held.reset(token)  # After an error, what was held back is dropped.

    def rollback(self) -> None:
        """Drop the writes held back (those already sent stay)."""
        self._held.get([]).clear()

    def _write(self, action: Callable[[], object],
               identity: tuple[str, int] | None = None) -> None:
        """Run ``action`` now, or in a unit of work when it ends or before a read. A write
        with an ``identity`` (a save: it collects the changes when it runs) is held once."""
        held = self._held.get(None)
        if held is None:
            with translated():
                action()
        elif identity is None or all(other != identity for other, _ in held):
            held.append((identity, action))

    def _flush(self) -> None:
        held = self._held.get([])
        writes, held[:] = held[:], []
        with translated(self.rollback):
            for _, action in writes:
                action()

    def _read(self, query: Callable[[], T]) -> T:
        self._flush()  # The unit of work reads its own writes.
        with translated(self.rollback):
            return query()

    def put(self, model: Any) -> Any:
        # A new document is inserted (never upserted over a stored one with its key).
        self._write(lambda: model.save(force_insert=internals.is_new(model)),
                    ("put", id(model)))
        return model

    def delete(self, model: Any) -> None:
        roles = self.roles_field

        def delete() -> None:
            if (roles is not None and model.pk is not None
                    and issubclass(type(model), self.role_model)):
                # A role's links live in the users' documents: unlink it everywhere
                # first, so that no user is ever left holding a role that is gone.
                reference = {roles.db_field: roles.field.to_mongo(model)}
                internals.collection(self.user_model).update_many(reference, {"$pull": reference})
            model.delete()

        self._write(delete, ("delete", id(model)))

    def find_user(self, criteria: dict[str, Any], *, case_insensitive: bool = False) -> Any:
        exact: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        for name, value in criteria.items():
            field = self._fields.get(self._key_name if name == "pk" else name)
            if field is None:
                raise exceptions.SessionStoreError(
                    f"{self.user_model.__name__} has no attribute {name!r}.")
            if isinstance(value, Mapping):
                # A mapping would reach MongoDB as a query operator ({"$ne": None}
                # matches everyone): no stored value equals one, so nothing matches.
                return None
            if case_insensitive and isinstance(value, str) and isinstance(field, me.StringField):
                raw[field.db_field] = {"$regex": _whole_value(value), "$options": "i"}
            else:
                exact[field.name] = value
        return self._read(lambda: self._users.objects(**exact).filter(__raw__=raw).first())

    def get_user(self, key: Any) -> Any:
        if not self.roles_joinable:
            return self._read(lambda: self._users.objects(pk=key).first())
        # With its roles in one aggregate, as with a session (a cache hit reads this way).
        pipeline = [{"$match": {"_id": key}}, self.roles_lookup("")]
        found = self._read(
            lambda: next(iter(internals.collection(self.user_model).aggregate(pipeline)), None))
        return None if found is None else self.user_with_roles(found, found)

    def find_role(self, name: str) -> Any:
        return self._read(lambda: self._roles.objects(name=name).first())

    def list(self, model: type[Any], offset: int, limit: int | None) -> list[Any]:
        if limit == 0:
            return []  # MongoDB reads a limit of 0 as no limit.
        return self._read(lambda: [*model.objects.order_by("pk").skip(offset).limit(limit)])

    def key_of(self, user: Any) -> Any:
        if internals.is_new(user):
            self.put(user)  # Stored now, or sent with what the unit of work holds back.
            self._flush()
        return user.pk

    def roles_of(self, user: Any) -> Iterable[Any]:
        with translated(self.rollback):  # Reading references may query the roles.
            return [*(getattr(user, "roles", None) or ())]

    def link(self, user: Any, role: Any) -> None:
        self._change_roles(user, role, add=True)

    def unlink(self, user: Any, role: Any) -> None:
        self._change_roles(user, role, add=False)

    def _change_roles(self, user: Any, role: Any, *, add: bool) -> None:
        roles = self.roles_field
        with translated(self.rollback):  # Reading references may query the roles.
            held = user.roles
        if roles is None or internals.is_new(user):
            # A new user gets its roles in its own insert (one atomic write); roles that
            # are not a list of references are saved as MongoEngine saves them.
            (held.append if add else held.remove)(role)
            self.put(user)
            return
        if internals.is_new(role):
            self._flush()  # A role held back in this unit of work gets its key now.
        change = {"$addToSet" if add else "$pull": {roles.db_field: roles.field.to_mongo(role)}}
        pk = user.pk
        # One atomic update: a concurrent grant of another role is never lost, as it
        # could be if the whole list were written back. The copy in memory follows,
        # unmarked as changed (list's own methods), so a later save does not write it.
        (list.append if add else list.remove)(held, role)
        self._write(
            lambda: internals.collection(self.user_model).update_one({"_id": pk}, change))

    def roles_lookup(self, path: str) -> dict[str, Any]:
        """Return the ``$lookup`` stage joining, as ``_sessionstore_roles``, the roles of
        the user at ``path`` (``""``: the documents themselves)."""
        assert self.roles_field is not None
        return {"$lookup": {"from": internals.collection_name(self.role_model),
                            "localField": f"{path}{self.roles_field.db_field}",
                            "foreignField": "_id", "as": "_sessionstore_roles"}}

    def user_with_roles(self, son: dict[str, Any], found: dict[str, Any]) -> Any:
        """Return the user stored as ``son``, its roles loaded from those
        :meth:`roles_lookup` joined into ``found`` (reading them sends no query)."""
        if not self.roles_joinable:
            return internals.from_son(self.user_model, son)
        return internals.from_son_with_list(self.user_model, son, self.roles_field,
                                            self.role_model, found.pop("_sessionstore_roles"))


def _key_kind(key_field: Any) -> KeyKind:
    if isinstance(key_field, me.StringField):
        return KeyKind.text(key_field.max_length)
    kinds = [(me.IntField, KeyKind.integer()), (me.SequenceField, KeyKind.integer()),
             (me.UUIDField, KeyKind.uuid()),
             # Only the 24-digit hex form: ObjectId() would also take any 12 bytes.
             (me.ObjectIdField, KeyKind.other(ObjectId, r"[0-9a-fA-F]{24}", ObjectId))]
    # Any other key is never parsed from a request (nothing is of type NoneType).
    return next((kind for cls, kind in kinds if isinstance(key_field, cls)), KeyKind(type(None)))


def _reference_list(fields: dict[str, Any], role_model: type[Any]) -> Any:
    """Return the user model's ``roles`` field if it is a list of references to roles."""
    roles = fields.get("roles")
    if (isinstance(roles, me.ListField) and isinstance(roles.field, me.ReferenceField)
            and (issubclass(role_model, roles.field.document_type)
                 or issubclass(roles.field.document_type, role_model))):
        return roles
    return None


def _whole_value(value: str) -> str:
    """Return a regular expression matching exactly ``value``, the same in MongoDB's PCRE
    and Python's ``re`` (mongomock): every ASCII character but letters and digits is
    escaped (a backslash makes it literal in both), and the end is "nothing follows",
    since ``$`` would also match before a final newline."""
    escaped = "".join("\\" + c if c.isascii() and not c.isalnum() else c for c in value)
    return f"^{escaped}(?![\\s\\S])"
