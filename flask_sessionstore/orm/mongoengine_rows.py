"""MongoEngine session documents: the ``SessionRows`` half of the MongoEngine translator.

Each write is one atomic operation, sent at once whatever unit of work is open; a read
brings the session, its user and the user's roles in one ``aggregate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from pymongo import ASCENDING, DESCENDING

from .. import exceptions
from ..contract import SessionRows
from ..records import ANY_USER, SessionRecord
from . import _mongoengine_internals as internals
from .mongoengine_models import MongoEngineModels, translated

__all__ = ["SESSION_FIELDS", "MongoEngineRows"]

#: The fields a session document must have; their ``db_field`` names may differ.
SESSION_FIELDS = ("key", "user", "data", "created_at", "last_seen_at", "expires_at",
                  "user_agent", "ip_address", "stamp")
TIMES = ("created_at", "last_seen_at", "expires_at")


class MongoEngineRows(SessionRows):
    """The session documents: each write one atomic operation, sent at once, whatever
    unit of work is open."""

    def __init__(self, models: MongoEngineModels[Any, Any], document: type[Any]) -> None:
        self.models, self.document = models, document
        fields = internals.fields(document)
        missing = [name for name in SESSION_FIELDS if name not in fields]
        if missing or getattr(fields["user"], "dbref", False):
            raise exceptions.SessionStoreError(
                f"{document.__name__} needs the session fields (it lacks {missing}), its "
                "user field storing the plain key (ReferenceField(..., dbref=False)).")
        #: Each session field's name in the stored documents.
        self.db_fields = {name: str(fields[name].db_field) for name in SESSION_FIELDS}
        # The user (with its roles) is joined when it lives in the same database.
        self._join_user = internals.alias(document) == internals.alias(models.user_model)

    def _run(self, method: str, *args: Any) -> Any:
        with translated():  # The first use makes the indexes, on the server.
            return getattr(internals.collection(self.document), method)(*args)

    def insert(self, record: SessionRecord) -> None:
        self._run("insert_one", {stored: getattr(record, "user_pk" if name == "user" else name)
                                 for name, stored in self.db_fields.items()})

    def _session_pipeline(self, key: str, now: datetime) -> list[dict[str, Any]]:
        """The aggregate that reads a live session with its user and the user's roles."""
        db, models = self.db_fields, self.models
        pipeline: list[dict[str, Any]] = [
            {"$match": {db["key"]: key, db["expires_at"]: {"$gt": now}}}]
        if self._join_user:
            pipeline += [
                {"$lookup": {"from": internals.collection_name(models.user_model),
                             "localField": db["user"], "foreignField": "_id",
                             "as": "_sessionstore_user"}},
                {"$unwind": {"path": "$_sessionstore_user", "preserveNullAndEmptyArrays": True}},
            ]
            if models.roles_joinable:
                pipeline.append(models.roles_lookup("_sessionstore_user."))
        return pipeline

    def load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        with translated():
            found = next(iter(self._run("aggregate", self._session_pipeline(key, now))), None)
        if found is None:
            return None
        record, son = self._record(found), found.get("_sessionstore_user")
        if not self._join_user and record.user_pk is not None:
            return record, self.models.get_user(record.user_pk)
        return record, None if son is None else self.models.user_with_roles(son, found)

    def update(self, key: str, now: datetime, *, data: str | None,
               expires_at: datetime) -> bool:
        db = self.db_fields
        values: dict[str, Any] = {db["expires_at"]: expires_at, db["last_seen_at"]: now}
        if data is not None:
            values[db["data"]] = data
        # The filter repeats the read's liveness check: a session deleted or expired
        # meanwhile matches nothing and is not brought back (never an upsert).
        live = {db["key"]: key, db["expires_at"]: {"$gt": now}}
        return bool(self._run("update_one", live, {"$set": values}).matched_count == 1)

    def _delete(self, query: dict[str, Any]) -> int:
        return int(self._run("delete_many", query).deleted_count)

    def delete(self, keys: Iterable[str]) -> int:
        wanted = [*keys]
        return self._delete({self.db_fields["key"]: {"$in": wanted}}) if wanted else 0

    def delete_owned(self, owner: Any, *, keep: str | None = None) -> int:
        query: dict[str, Any] = {self.db_fields["user"]: owner}
        if keep is not None:
            query[self.db_fields["key"]] = {"$ne": keep}
        return self._delete(query)

    def clear(self) -> int:
        return self._delete({})

    def _selected(self, now: datetime, owner: Any, *, live: bool = True) -> dict[str, Any]:
        query: dict[str, Any] = {self.db_fields["expires_at"]: {"$gt" if live else "$lte": now}}
        if owner is not ANY_USER:  # None matches a null field: the anonymous sessions.
            query[self.db_fields["user"]] = owner
        return query

    def find(self, now: datetime, *, owner: Any = ANY_USER, offset: int = 0,
             limit: int | None = None) -> list[SessionRecord]:
        order = [(self.db_fields["last_seen_at"], DESCENDING), (self.db_fields["key"], ASCENDING)]
        if limit == 0:
            return []  # MongoDB reads a limit of 0 as no limit.
        with translated():
            found = self._run("find", self._selected(now, owner)).sort(order).skip(offset)
            return [self._record(son) for son in found.limit(limit or 0)]  # None: 0

    def count(self, now: datetime, *, owner: Any = ANY_USER, expired: bool = False) -> int:
        return int(self._run("count_documents", self._selected(now, owner, live=not expired)))

    def purge(self, now: datetime, limit: int) -> int:
        # delete_many takes no limit: pick a batch of keys, then delete those still dead.
        dead, key = self._selected(now, ANY_USER, live=False), self.db_fields["key"]
        with translated():
            keys = [son[key] for son in self._run("find", dead, {key: True}).limit(limit)]
        return self._delete({key: {"$in": keys}, **dead}) if keys else 0

    def _record(self, son: dict[str, Any]) -> SessionRecord:
        values: dict[str, Any] = {name: son.get(stored) for name, stored in self.db_fields.items()}
        # A client made with tz_aware=True returns aware datetimes; records are naive UTC.
        times: dict[str, Any] = {name: values.pop(name) for name in TIMES}
        for name, moment in times.items():
            if moment.tzinfo is not None:
                times[name] = moment.astimezone(timezone.utc).replace(tzinfo=None)
        return SessionRecord(user_pk=values.pop("user"), **values, **times)
