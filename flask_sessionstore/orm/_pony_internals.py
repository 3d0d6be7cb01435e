"""The places where the Pony datastore reaches into Pony's private internals.

Pony has no public API for what the datastore needs here:

- adding the reverse attribute of the session entity's ``user`` to the application's
  user entity after its class statement (Pony requires both sides of a relationship,
  and the application's source must not change);
- telling an entity's database, attributes and key; whether an object's ``db_session``
  ended (to read it again); whether a ``db_session`` is open, and entering one by hand
  for a request;
- the one SELECT that brings a user and its roles, turned into entities of the
  ``db_session`` by Pony's own row parser, the roles marked loaded (the reason a logged-in
  request costs one statement on Pony, as on the other ORMs);
- a plain statement run outside a transaction (autocommit) on the ``db_session``'s
  connection, and the mapped names of a table.

Every name used below is private to Pony and may change in any release, so the module
refuses an installed Pony outside the range tested (pony>=0.7.19,<0.8).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import flask
import pony
from pony.orm import core as pony_core

from ..exceptions import SessionStoreError

#: The Pony versions this module was tested with: at least the first, below the second.
TESTED = ((0, 7, 19), (0, 8))


def _check_version(version: str) -> None:
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
    if not TESTED[0] <= found < TESTED[1]:
        raise ImportError(
            f"flask_sessionstore's Pony datastore uses Pony internals tested with "
            f"pony>=0.7.19,<0.8 only, and pony {version} is installed: install a version "
            "in that range (pip install 'flask-sessionstore[pony]')."
        )


_check_version(pony.__version__)

# -- entities ------------------------------------------------------------------------


def add_attribute(entity: Any, name: str, attribute: Any) -> None:
    """Add ``attribute`` to ``entity`` as if its class statement had declared it.

    Until ``generate_mapping()`` the attribute lists below are all Pony keeps (columns,
    bits and SQL are derived at mapping time), so appending to them is what the class
    statement would have done.
    """
    attribute._init_(entity, name)
    setattr(entity, name, attribute)
    entity._new_attrs_.append(attribute)
    entity._attrs_.append(attribute)
    entity._adict_[name] = attribute
    entity._attrnames_cache_.clear()
    for subclass in entity._subclasses_:
        subclass._attrs_.insert(len(subclass._base_attrs_), attribute)
        subclass._base_attrs_.append(attribute)
        subclass._adict_[name] = attribute
        subclass._attrnames_cache_.clear()


def check_entity(db: Any, entity: Any, name: str, *, needs: Sequence[str] = (),
                 single_key: bool = False) -> None:
    """Check that ``entity`` is an entity class of ``db`` with the attributes ``needs``
    (and, with ``single_key``, a primary key of one column).

    :raises SessionStoreError: saying what is wrong, about the argument ``name``.
    """
    if not isinstance(entity, pony_core.EntityMeta) or entity._database_ is not db:
        raise SessionStoreError(f"{name} must be an entity of this Pony Database, not {entity!r}.")
    missing = [attribute for attribute in needs if attribute not in entity._adict_]
    if missing:
        raise SessionStoreError(f"{entity.__name__} lacks the attributes {', '.join(missing)}.")
    if single_key and len(entity._pk_attrs_) != 1:
        raise SessionStoreError(f"{entity.__name__} has a composite primary key; the session "
                                "rows need a single-column one.")


def has_attribute(entity: Any, name: str) -> bool:
    """Return whether ``entity`` (or its class body) has an attribute ``name``."""
    return name in vars(entity) or name in entity._adict_


def is_column(entity: Any, name: str) -> bool:
    """Return whether ``name`` is a stored attribute of ``entity`` (not a property or a
    method of its class)."""
    attribute = entity._adict_.get(name)
    return attribute is not None and bool(attribute.columns or attribute.is_pk)


def primary_key(entity: Any) -> tuple[Any, ...]:
    """Return the attributes of ``entity``'s primary key."""
    return tuple(entity._pk_attrs_)


def attached(value: Any, db: Any) -> Any:
    """Return ``value`` with each entity of ``db`` in it (alone, or in a list or tuple)
    usable in the current ``db_session``: Pony binds an object to the ``db_session`` it
    was loaded in, so one of an ended ``db_session`` (or from before a rollback) is
    read again into this one."""
    if type(value) in (list, tuple):
        return type(value)(attached(item, db) for item in value)
    if not isinstance(value, pony_core.Entity) or value._database_ is not db:
        return value
    cache = value._session_cache_
    return value if cache is not None and cache.is_alive else type(value)[value.get_pk()]


def db_session_per_request(app: Any, db: Any, key: str) -> None:
    """Run each request of ``app`` in a ``db_session``, as ``pony.flask.Pony`` does, but
    from Flask's ``request_started`` signal (before any ``before_request`` function) to
    the request's teardown; one open already (a test's) is joined. ``key`` marks the
    request's environ. A ``db_session`` is a with block and a request is not, so it is
    entered and left by hand, and whether one is open is read from Pony's thread state.
    """

    def started(sender: Any, **_: Any) -> None:
        joined = pony_core.local.db_session is not None
        pony_core.db_session.__enter__()
        flask.request.environ[key] = joined

    def failed(sender: Any, **_: Any) -> None:
        # The request's own db_session is rolled back now, not when it ends, so that
        # saving the session of the error response cannot commit the view's half-done
        # work with it.
        if flask.request.environ.get(key) is False:
            with suppress(pony_core.OrmError, pony_core.DBException):
                db.rollback()

    def finished(exc: BaseException | None) -> None:
        if flask.request.environ.pop(key, None) is not None:  # else it never started
            pony_core.db_session.__exit__(exc and type(exc), exc, exc and exc.__traceback__)

    flask.request_started.connect(started, app, weak=False)
    flask.got_request_exception.connect(failed, app, weak=False)
    app.teardown_request(finished)


# -- the one SELECT of a user and its roles ------------------------------------------


def _loaded_columns(entity: Any, start: int) -> tuple[dict[Any, list[int]], list[str]]:
    # The columns Pony loads for ``entity`` (lazy ones are read on first use, as Pony
    # does), and their offsets in a row where they begin at ``start``.
    chosen = [attr for attr in entity._attrs_with_columns_ if not attr.lazy]
    chosen += [attr for attr in entity._subclass_attrs_
               if attr.columns and not attr.lazy and attr not in chosen]
    offsets: dict[Any, list[int]] = {}
    columns: list[str] = []
    for attr in chosen:
        offsets[attr] = list(range(start + len(columns), start + len(columns) + len(attr.columns)))
        columns.extend(attr.columns)
    return offsets, columns


class _Rows:
    """The little of a DB-API cursor that Pony's row parser reads."""

    def __init__(self, rows: Sequence[Any]) -> None:
        self._rows = list(rows)

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchmany(self, size: int) -> list[Any]:
        return self._rows[:size]


@dataclass(frozen=True)
class UserLoad:
    """A SELECT that brings a user with its roles in the columns Pony loads for them,
    read back with Pony's own row parser: what ``User[pk]`` then ``user.roles`` would
    load in three statements."""

    sql: str
    user_entity: Any
    user_offsets: dict[Any, list[int]]
    user_pk_offset: int
    #: The user's ``roles`` attribute, or None when it is not a collection Pony loads.
    roles: Any
    role_offsets: dict[Any, list[int]]
    role_pk_offset: int

    @classmethod
    def build(cls, quote: Any, user_entity: Any, select: list[str], source: list[str],
              where: str) -> UserLoad:
        """``SELECT select, u.*, r.* FROM source + the roles of u WHERE where``, where
        ``source`` names the user entity's table ``u``."""
        user_offsets, user_columns = _loaded_columns(user_entity, len(select))
        select = select + [f"u.{quote(column)}" for column in user_columns]
        user_pk = f"u.{quote(user_entity._pk_columns_[0])}"
        roles, joins = getattr(user_entity, "roles", None), []
        role_offsets: dict[Any, list[int]] = {}
        role_pk_offset = -1
        if (isinstance(roles, pony_core.Set) and isinstance(roles.py_type, pony_core.EntityMeta)
                and roles.reverse is not None and not roles.is_volatile):
            role_entity = roles.py_type
            role_offsets, role_columns = _loaded_columns(role_entity, len(select))
            role_pk_offset = role_offsets[role_entity._pk_attrs_[0]][0]
            select += [f"r.{quote(column)}" for column in role_columns]
            role_pk = f"r.{quote(role_entity._pk_columns_[0])}"
            role_table = quote(role_entity._table_)
            if roles.reverse.is_collection:  # many-to-many, through Pony's link table
                joins = ["LEFT JOIN", quote(roles.table), "l ON",
                         f"l.{quote(roles.reverse.columns[0])}", "=", user_pk,
                         "LEFT JOIN", role_table, "r ON", role_pk, "=",
                         f"l.{quote(roles.columns[0])}"]
            else:  # one-to-many: the role row names its user
                joins = ["LEFT JOIN", role_table, "r ON",
                         f"r.{quote(roles.reverse.columns[0])}", "=", user_pk]
        else:
            roles = None
        return cls(
            sql=" ".join(["SELECT", ", ".join(select), "FROM", *source, *joins, "WHERE", where]),
            user_entity=user_entity, user_offsets=user_offsets,
            user_pk_offset=user_offsets[user_entity._pk_attrs_[0]][0],
            roles=roles, role_offsets=role_offsets, role_pk_offset=role_pk_offset,
        )

    def user(self, rows: Sequence[Any]) -> Any:
        """Return the user of ``rows`` (None when they name none, or it was deleted in
        this ``db_session``) as an entity of the ``db_session`` whose roles are loaded:
        an object already in the ``db_session`` is refreshed, not duplicated."""
        if not rows or rows[0][self.user_pk_offset] is None:
            return None
        found = self.user_entity._fetch_objects(_Rows(rows[:1]), self.user_offsets)
        if not found:
            return None
        user = found[0]
        if self.roles is not None:
            role_rows = {row[self.role_pk_offset]: row for row in rows
                         if row[self.role_pk_offset] is not None}
            roles = self.roles.py_type._fetch_objects(_Rows(list(role_rows.values())),
                                                      self.role_offsets)
            _mark_loaded(user, self.roles, roles)
        return user


def _mark_loaded(owner: Any, attribute: Any, items: Iterable[Any]) -> None:
    # What Pony's Set.load does once it has read a collection, for a collection this
    # db_session never read: it now holds exactly these items and reads no further.
    # One that was read (or changed) already is left to Pony.
    if owner._vals_.get(attribute) is not None or attribute.is_volatile:
        return
    found = set(items)
    loaded = owner._vals_[attribute] = pony_core.SetData()
    loaded |= found
    if attribute.reverse.is_collection:
        attribute.reverse.db_reverse_add(found, owner)
    loaded.is_fully_loaded = True
    loaded.absent = None
    loaded.count = len(loaded)


# -- the session table's names and plain statements ----------------------------------


def table_name(entity: Any) -> str:
    """Return the table ``entity`` is mapped to (unquoted)."""
    return str(entity._table_)


def key_column(entity: Any) -> str:
    """Return the column of ``entity``'s (single-column) primary key (unquoted)."""
    return str(entity._pk_columns_[0])


def execute(db: Any, sql: str, params: dict[str, Any], *, join: bool) -> int:
    """Run a plain write on the ``db_session``'s connection; return its row count.

    Pony's public ``db.execute()`` always opens a transaction. This one joins the open
    transaction only with ``join``; otherwise it runs in autocommit when the
    ``db_session`` has no transaction open (SQLite and PostgreSQL in Pony's optimistic
    mode), or in the open one, which is then committed: Pony gives a thread one
    connection per database, so that commit takes whatever the ``db_session`` had
    pending.
    """
    count = int(db._exec_raw_sql(sql, {}, params, 0, start_transaction=join).rowcount)
    # db.commit() would also switch the rest of the db_session to transactions, even
    # with none open: call it only when there is something to commit.
    cache = pony_core.local.db2cache.get(db)
    if not join and cache is not None and cache.in_transaction:
        db.commit()
    return count
