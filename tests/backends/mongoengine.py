"""The MongoEngine backend: the seed's documents, on mongomock or on a real MongoDB.

A real server is used when ``MONGODB_URI`` is set; the suite's database on it is
``sessionstore_mongoengine``, whatever database the URI names.

What a block costs is counted in round trips to the server. On a real server a pymongo
``CommandListener`` sees every command. mongomock talks to no server and has no command
monitoring, so the collection, database and client methods that a real driver would turn
into a command are wrapped for the time of the block: each call from outside mongomock
counts once, whatever mongomock does inside it. A ``find`` counts when it is called, where
a server would see it when the cursor is first read: an unread cursor counts one more
than on a server, never one less. Writes are recorded as ``INSERT``, ``UPDATE`` and
``DELETE`` followed by the collection, like SQL statements. MongoDB has no commit here:
``commits`` is always 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import mongoengine
from flask import Flask
from mongoengine import (
    BooleanField,
    DateTimeField,
    Document,
    ListField,
    ReferenceField,
    StringField,
)
from pymongo import monitoring

from flask_sessionstore import MongoEngineUserDatastore, RoleMixin, UserMixin
from flask_sessionstore.orm.mongoengine import SESSION_FIELDS

from . import Backend, Counter, fast_hasher

#: The database the suite uses on a real server.
SERVER_DATABASE = "sessionstore_mongoengine"


def seed_models() -> tuple[Any, Any]:
    """The seed's documents, exactly as its documentation shows them."""

    class Role(Document, RoleMixin):
        name = StringField(max_length=80, unique=True)
        description = StringField(max_length=255)
        # Not in the seed: a field for the permission tests.
        permissions = ListField(StringField())

    class User(Document, UserMixin):
        email = StringField(max_length=255)
        password = StringField(max_length=255)
        active = BooleanField(default=True)
        confirmed_at = DateTimeField()
        roles = ListField(ReferenceField(Role), default=[])

    return User, Role


def connect(url: str, database: str, **client_options: Any) -> tuple[Any, str]:
    """Connect MongoEngine's default alias for the suite; return the client and the
    database name. ``database`` is ``mongomock`` or ``mongodb``."""
    parts = urlsplit(url)
    if database == "mongomock":
        import mongomock

        name = parts.path.strip("/") or "sessionstore_test"
        client = mongoengine.connect(
            name, host=f"mongodb://{parts.netloc or 'localhost'}",
            mongo_client_class=mongomock.MongoClient, uuidRepresentation="standard",
            **client_options,
        )
        return client, name
    # The suite's own database on the server, as own_database() gives SQL servers one.
    # A URI's database wins over MongoEngine's ``db`` argument, so the path is replaced;
    # it is also where credentials are checked unless authSource says otherwise, so
    # that is kept.
    name = SERVER_DATABASE
    query = parse_qs(parts.query)
    if parts.username and "authSource" not in query:
        query["authSource"] = [parts.path.strip("/") or "admin"]
    host = urlunsplit(parts._replace(path=f"/{name}", query=urlencode(query, doseq=True)))
    client = mongoengine.connect(name, host=host, serverSelectionTimeoutMS=5000,
                                 uuidRepresentation="standard", **client_options)
    return client, name


class _Commands(monitoring.CommandListener):
    """Records the commands a real server is sent while :attr:`sink` is set."""

    def __init__(self) -> None:
        self.sink: Callable[[str], None] | None = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.sink is not None:
            name = event.command_name
            target = event.command.get("collection") if name == "getMore" else (
                event.command.get(name)
            )
            self.sink(f"{_SERVER_VERBS.get(name, name.upper())} {target}")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


#: Server commands that write, named as the SQL statements Counter.writes looks for.
_SERVER_VERBS = {"insert": "INSERT", "update": "UPDATE", "delete": "DELETE",
                 "findAndModify": "UPDATE"}

#: The mongomock methods that a driver turns into one command each, and how they count.
_MOCK_COLLECTION = {
    "find": "FIND", "find_one": "FIND", "find_raw_batches": "FIND",
    "aggregate": "AGGREGATE", "aggregate_raw_batches": "AGGREGATE",
    "count_documents": "AGGREGATE", "estimated_document_count": "COUNT",
    "count": "COUNT", "distinct": "DISTINCT", "watch": "AGGREGATE",
    "insert_one": "INSERT", "insert_many": "INSERT", "insert": "INSERT",
    "update_one": "UPDATE", "update_many": "UPDATE", "replace_one": "UPDATE",
    "update": "UPDATE", "save": "UPDATE", "bulk_write": "UPDATE",
    "find_one_and_update": "UPDATE", "find_one_and_replace": "UPDATE",
    "find_and_modify": "UPDATE",
    "delete_one": "DELETE", "delete_many": "DELETE", "remove": "DELETE",
    "find_one_and_delete": "DELETE",
    "create_index": "CREATEINDEXES", "create_indexes": "CREATEINDEXES",
    "ensure_index": "CREATEINDEXES", "drop_index": "DROPINDEXES",
    "drop_indexes": "DROPINDEXES", "index_information": "LISTINDEXES",
    "list_indexes": "LISTINDEXES", "options": "LISTCOLLECTIONS", "drop": "DROP",
    "rename": "RENAMECOLLECTION", "map_reduce": "MAPREDUCE",
}
_MOCK_DATABASE = {
    "list_collection_names": "LISTCOLLECTIONS", "list_collections": "LISTCOLLECTIONS",
    "collection_names": "LISTCOLLECTIONS", "command": "COMMAND",
    "create_collection": "CREATE", "drop_collection": "DROP", "dereference": "FIND",
}
_MOCK_CLIENT = {
    "drop_database": "DROPDATABASE", "list_database_names": "LISTDATABASES",
    "database_names": "LISTDATABASES", "server_info": "BUILDINFO",
}


@contextmanager
def _mongomock_calls(sink: Callable[[str], None]) -> Iterator[None]:
    """Record, inside the block, each call of a mongomock method that a real driver
    would send to the server as a command; calls mongomock makes inside it are not."""
    import mongomock.collection
    import mongomock.database
    import mongomock.mongo_client

    depth = [0]
    originals: list[tuple[type, str, Any]] = []

    def wrap(cls: type, name: str, verb: str, target: Callable[[Any], str]) -> None:
        original = cls.__dict__.get(name)
        if original is None:
            return

        @functools.wraps(original)
        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:
                sink(f"{verb} {target(self)}")
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        originals.append((cls, name, original))
        setattr(cls, name, counted)

    for name, verb in _MOCK_COLLECTION.items():
        wrap(mongomock.collection.Collection, name, verb, lambda c: str(c.name))
    for name, verb in _MOCK_DATABASE.items():
        wrap(mongomock.database.Database, name, verb, lambda d: str(d.name))
    for name, verb in _MOCK_CLIENT.items():
        wrap(mongomock.mongo_client.MongoClient, name, verb, lambda _: "admin")
    try:
        yield
    finally:
        for cls, name, original in reversed(originals):
            setattr(cls, name, original)


class MongoEngineBackend(Backend):
    orm = "mongoengine"
    datastore: MongoEngineUserDatastore
    # One aggregate reads the session, its user and the user's roles; a session write
    # adds one update. No commit exists.
    budgets: ClassVar[dict[str, int]] = {"role_check": 1, "session_write": 2}
    # No multi-document transactions without a replica set (and MongoEngine 0.29 cannot
    # run its operations in a pymongo transaction): see test_unit_of_work_* in
    # tests/test_orm_mongoengine.py for what transaction() guarantees here.
    transactional: ClassVar[bool] = False

    def __init__(self, url: str, database: str) -> None:
        super().__init__(url)
        self.database = database
        self._commands = _Commands()

    def setup(self, app: Flask) -> MongoEngineUserDatastore:
        self.app = app
        mongoengine.disconnect()
        options: dict[str, Any] = {}
        if self.database != "mongomock":
            options["event_listeners"] = [self._commands]
        self.client, self.database_name = connect(self.url, self.database, **options)
        self.client.drop_database(self.database_name)
        self.User, self.Role = seed_models()
        self.datastore = MongoEngineUserDatastore(
            self.client, self.User, self.Role, password_hasher=fast_hasher()
        )
        # Create the collections and their indexes now, as a running app would have
        # them, so that counts never include MongoEngine's first-use index creation.
        for document in (self.User, self.Role, self.datastore.session_document):
            document._get_collection()
        return self.datastore

    def teardown(self) -> None:
        try:
            self.client.drop_database(self.database_name)
        finally:
            mongoengine.disconnect()

    @contextmanager
    def count(self) -> Iterator[Counter]:
        counter = Counter()
        if self.database == "mongomock":
            with _mongomock_calls(counter.statements.append):
                yield counter
            return
        self._commands.sink = counter.statements.append
        try:
            yield counter
        finally:
            self._commands.sink = None

    def sessions(self) -> Any:
        """The session collection, read and written past the library."""
        return self.datastore.session_document._get_collection()

    def session_rows(self) -> list[dict[str, Any]]:
        # The session fields, under the SQL backends' column names (``user_id``).
        fields = self.datastore.session_document._fields
        names = {"user_id" if name == "user" else name: fields[name].db_field
                 for name in SESSION_FIELDS}
        return [{name: son.get(stored) for name, stored in names.items()}
                for son in self.sessions().find()]
