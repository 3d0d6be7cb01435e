"""The Peewee backend: the seed's models, adapted only from peewee 2's ``related_name``
to ``backref``, on ``FlaskDB`` as the seed shows them or on a plain ``Database``.

Peewee keeps one connection per thread. The suite's tests use the datastore directly
between requests, so each request of the test client runs on a thread of its own, as a
threaded server would run it; and after each one the backend checks, on that thread,
that the request left no connection open.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import peewee
from flask import Flask
from peewee import BooleanField, CharField, DateTimeField, ForeignKeyField, TextField
from playhouse.db_url import connect
from playhouse.flask_utils import FlaskDB

from flask_sessionstore import PeeweeUserDatastore, RoleMixin, UserMixin

from . import Backend, Counter, fast_hasher, own_database

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def seed_models(base: Any, *, contract: bool = True) -> tuple[Any, Any, Any]:
    """The seed's models on ``base`` (FlaskDB's ``db.Model``, or a model bound to a
    database), as its documentation shows them but for ``backref``.

    With ``contract``, two columns differ, each for the contract suite: Role gains
    ``permissions``, and ``password`` may be NULL (the seed's NOT NULL refuses the
    users without a password that the suite creates).
    """

    class Role(RoleMixin, base):
        name = CharField(unique=True)
        description = TextField(null=True)
        if contract:
            permissions = TextField(null=True)

    class User(UserMixin, base):
        email = TextField()
        password = TextField(null=contract)
        active = BooleanField(default=True)
        confirmed_at = DateTimeField(null=True)

    class UserRoles(base):
        # Because peewee does not come with built-in many-to-many
        # relationships, we need this intermediary class to link
        # user to roles.
        user = ForeignKeyField(User, backref='roles')
        role = ForeignKeyField(Role, backref='users')
        name = property(lambda self: self.role.name)
        description = property(lambda self: self.role.description)

    return User, Role, UserRoles


def bound_base(db: peewee.Database) -> Any:
    """A base model bound to ``db``: the plain-Peewee form of the seed."""

    class BaseModel(peewee.Model):
        class Meta:
            database = db

    return BaseModel


def threaded_client(client_class: type[Any], database: Any) -> type[Any]:
    """A test client class whose requests each run on a new thread, then check that the
    request closed the thread's connection."""

    class ThreadedClient(client_class):  # type: ignore[misc, valid-type]
        def open(self, *args: Any, **kwargs: Any) -> Any:
            outcome: dict[str, Any] = {}

            def run() -> None:
                try:
                    outcome["response"] = super(ThreadedClient, self).open(*args, **kwargs)
                    outcome["left_open"] = not database.is_closed()
                except BaseException as exc:
                    outcome["error"] = exc

            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
            if "error" in outcome:
                raise outcome["error"]
            assert not outcome["left_open"], "the request left its database connection open"
            return outcome["response"]

    return ThreadedClient


class PeeweeBackend(Backend):
    """The seed on FlaskDB (``flavor="flaskdb"``) or on a plain database (``"plain"``)."""

    orm = "peewee"
    # The session row and its user in one joined SELECT, the roles in a second.
    budgets = {"role_check": 2, "session_write": 2}  # noqa: RUF012

    def __init__(self, url: str, database: str, flavor: str = "flaskdb") -> None:
        super().__init__(url)
        self.database = database
        self.flavor = flavor

    def setup(self, app: Flask) -> PeeweeUserDatastore:
        url = self.url
        if self.database != "sqlite":
            url = own_database(url, "sessionstore_peewee")
        self.app = app
        if self.flavor == "flaskdb":
            app.config["DATABASE"] = url
            self.db: Any = FlaskDB(app)
            self.peewee_db: peewee.Database = self.db.database
            base = self.db.Model
        else:
            self.db = self.peewee_db = connect(url)
            base = bound_base(self.peewee_db)
        self.User, self.Role, self.UserRoles = seed_models(base)
        self.datastore = PeeweeUserDatastore(
            self.db, self.User, self.Role, self.UserRoles, password_hasher=fast_hasher()
        )
        self.models = [self.User, self.Role, self.UserRoles, self.datastore.session_model]
        with self.peewee_db.connection_context():
            self.peewee_db.drop_tables(self.models)
            self.peewee_db.create_tables(self.models)
        app.test_client_class = threaded_client(app.test_client_class, self.peewee_db)
        return self.datastore

    def teardown(self) -> None:
        self.peewee_db.drop_tables(self.models)
        self.peewee_db.close()

    @contextmanager
    def count(self) -> Iterator[Counter]:
        """Count every statement the database object sends, on any thread: those built
        by queries (``execute_sql``, savepoints included) and the transaction verbs
        Peewee sends on the cursor directly. A write outside a transaction is
        committed by autocommit, so it counts as a commit, like an explicit COMMIT."""
        counter = Counter()
        database = self.peewee_db
        execute_sql, begin = database.execute_sql, database.begin
        commit, rollback = database.commit, database.rollback

        def counted_execute_sql(sql: str, *args: Any, **kwargs: Any) -> Any:
            counter.statements.append(sql)
            if not database.in_transaction() and sql.lstrip().upper().startswith(_WRITES):
                counter.commits += 1
            return execute_sql(sql, *args, **kwargs)

        def counted_begin(*args: Any, **kwargs: Any) -> Any:
            counter.statements.append("BEGIN")
            return begin(*args, **kwargs)

        def counted_commit() -> Any:
            counter.statements.append("COMMIT")
            counter.commits += 1
            return commit()

        def counted_rollback() -> Any:
            counter.statements.append("ROLLBACK")
            return rollback()

        patches = {
            "execute_sql": counted_execute_sql, "begin": counted_begin,
            "commit": counted_commit, "rollback": counted_rollback,
        }
        for name, function in patches.items():
            setattr(database, name, function)
        try:
            yield counter
        finally:
            for name in patches:
                delattr(database, name)

    def session_rows(self) -> list[dict[str, Any]]:
        # Through the model only for its type conversions (SQLite returns datetimes as
        # text): one plain SELECT of the table, keyed by column name.
        model = self.datastore.session_model
        fields = model._meta.sorted_fields
        names = [field.column_name for field in fields]
        return [dict(zip(names, row, strict=True)) for row in model.select(*fields).tuples()]
