"""The Pony session rows: plain SQL on the ``db_session``'s connection (the
``SessionRows`` half of the Pony translator; :mod:`flask_sessionstore.orm.pony` has the
rest). Rows are never cached as entity objects, so no row another request changed is
served stale; the user and its roles come in the same SELECT as the row."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..contract import SessionRows
from ..exceptions import SessionStoreError
from ..records import ANY_USER, SessionRecord
from . import _pony_internals as internals

__all__ = ["SESSION_FIELDS", "PonyRows", "SessionTable"]

#: The session entity's attributes, in the order of :class:`SessionRecord`.
SESSION_FIELDS = ("key", "user", "data", "created_at", "last_seen_at", "expires_at",
                  "user_agent", "ip_address", "stamp")
#: SQLite and MariaDB take no OFFSET without a LIMIT: the LIMIT of "no limit".
_NO_LIMIT = 2**62


@dataclass(frozen=True)
class SessionTable:
    """The session entity's table as Pony maps it, for plain SQL: its quoted names, the
    converters with which Pony writes and reads each attribute, and the SELECTs that
    bring a user with its roles."""

    #: ``table`` and each attribute's column, quoted; ``all`` every column in the order
    #: of the attributes, ``values`` their ``$name`` parameters.
    names: dict[str, str]
    converters: dict[str, Any]
    mysql: bool
    #: The live row under ``$key`` (before ``$now``), its user and the user's roles.
    session_load: internals.UserLoad
    #: The user whose primary key is ``$pk``, with its roles.
    user_load: internals.UserLoad

    @classmethod
    def build(cls, db: Any, session: Any, user_entity: Any, fields: Sequence[str]) -> SessionTable:
        """Read ``session``'s mapping (generated already); ``fields`` are its attributes
        in the order rows are read, ``user`` among them.

        :raises SessionStoreError: when ``session.user`` does not reference
            ``user_entity``, or its reverse does not cascade on delete.
        """
        user, name = session.user, session.__name__
        if not (isinstance(user.py_type, type) and issubclass(user_entity, user.py_type)):
            raise SessionStoreError(f"{name}.user must reference {user_entity.__name__}.")
        if not (user.reverse and user.reverse.cascade_delete):
            raise SessionStoreError(
                f"The reverse of {name}.user must be a Set with cascade_delete=True, so "
                "that deleting a user deletes its sessions.")
        quote = db.provider.quote_name
        c = {name: quote(getattr(session, name).columns[0]) for name in fields}
        table = quote(internals.table_name(session))
        user_table = quote(internals.table_name(user_entity))
        user_pk = f"u.{quote(internals.key_column(user_entity))}"
        return cls(
            names={"table": table, **c, "all": ", ".join(c.values()),
                   "values": ", ".join("$" + name for name in fields)},
            converters={name: getattr(session, name).converters[0] for name in fields},
            mysql=db.provider.dialect == "MySQL",
            session_load=internals.UserLoad.build(
                quote, user_entity, [f"s.{c[name]}" for name in fields],
                [table, "s", "LEFT JOIN", user_table, "u ON", user_pk, "=", f"s.{c['user']}"],
                f"s.{c['key']} = $key AND s.{c['expires_at']} > $now"),
            user_load=internals.UserLoad.build(quote, user_entity, [], [user_table, "u"],
                                     f"{user_pk} = $pk"),
        )

    def value(self, name: str, value: Any) -> Any:
        """Return ``value`` as Pony would send it for the attribute ``name`` (as it is
        for a name that is no attribute)."""
        converter = self.converters.get(name)
        return value if value is None or converter is None else converter.py2sql(value)

    def row(self, row: Sequence[Any]) -> list[Any]:
        """Return a row's values (read in the order of the attributes) as Pony reads them."""
        return [None if value is None else converter.sql2py(value)
                for converter, value in zip(self.converters.values(), row, strict=False)]

    def run(self, db: Any, template: str, params: dict[str, Any], *, write: bool,
            join: bool, **parts: str) -> Any:
        """Run ``template`` in the ``db_session``: its ``{name}``s (and those of
        ``parts``, fragments put in its own ``{name}``s) are quoted names; values are
        ``$name`` parameters, sent as Pony sends the attribute of that name (``$now``
        as a time like ``expires_at``). A read returns its rows, a write its row count.

        A write is durable on return unless it ``join``s the transaction open (see
        ``_pony_internals.execute``).
        """
        params = {name: self.value("expires_at" if name == "now" else name, value)
                  for name, value in params.items()}
        names = self.names
        sql = template.format(**names, **{key: part.format(**names) for key, part in parts.items()})
        if not write:
            return db.select(sql, {}, params)
        return internals.execute(db, sql, params, join=join)


class PonyRows(SessionRows):
    """The session rows, in plain SQL on the ``db_session``'s connection. In statements,
    ``{name}`` is a name Pony quoted at mapping time; values are $parameters."""

    def __init__(self, models: Any) -> None:
        self._models = models

    def _run(self, template: str, params: dict[str, Any], *, write: bool = True,
             **parts: str) -> Any:
        # A write joins the unit open, else it is durable on return.
        models = self._models
        with models._work():
            return models._table.run(models.db, template, params, write=write,
                                     join=models._in_unit.get(), **parts)

    def insert(self, record: SessionRecord) -> None:
        self._run("INSERT INTO {table} ({all}) VALUES ({values})",
                  {name: getattr(record, "user_pk" if name == "user" else name)
                   for name in SESSION_FIELDS})

    def load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        table = self._models._table
        with self._models._work():
            rows = self._run(table.session_load.sql, {"key": key, "now": now}, write=False)
            return (SessionRecord(*table.row(rows[0])), table.session_load.user(rows)) \
                if rows else None

    def update(self, key: str, now: datetime, *, data: str | None,
               expires_at: datetime) -> bool:
        return bool(self._run(
            "UPDATE {table} SET {expires_at} = $expires_at, {last_seen_at} = $now{data_part}"
            " WHERE {key} = $key AND {expires_at} > $now",
            {"key": key, "now": now, "data": data, "expires_at": expires_at},
            data_part="" if data is None else ", {data} = $data") == 1)

    def delete(self, keys: Iterable[str]) -> int:
        params = {f"k{i}": key for i, key in enumerate(dict.fromkeys(keys))}
        return int(self._run("DELETE FROM {table} WHERE {key} IN ({keys})", params,
                             keys=", ".join("$" + name for name in params))) if params else 0

    def delete_owned(self, owner: Any, *, keep: str | None = None) -> int:
        return int(self._run("DELETE FROM {table} WHERE {user} = $user{keep_part}",
                             {"user": owner, "keep": keep},
                             keep_part="" if keep is None else " AND {key} <> $keep"))

    def clear(self) -> int:
        return int(self._run("DELETE FROM {table}", {}))

    def find(self, now: datetime, *, owner: Any = ANY_USER, offset: int = 0,
             limit: int | None = None) -> list[SessionRecord]:
        owned, params = _owned(owner)
        rows = self._run(
            "SELECT {all} FROM {table} WHERE {expires_at} > $now{owned} "
            "ORDER BY {last_seen_at} DESC, {key}{page}",
            {"now": now, **params, "offset": offset,
             "limit": _NO_LIMIT if limit is None else limit},
            write=False, owned=owned,
            page="" if limit is None and not offset else " LIMIT $limit OFFSET $offset")
        return [SessionRecord(*self._models._table.row(row)) for row in rows]

    def count(self, now: datetime, *, owner: Any = ANY_USER, expired: bool = False) -> int:
        owned, params = _owned(owner)
        [count] = self._run("SELECT COUNT(*) FROM {table} WHERE {expires_at} {op} $now{owned}",
                            {"now": now, **params}, write=False,
                            op="<=" if expired else ">", owned=owned)
        return int(count)

    def purge(self, now: datetime, limit: int) -> int:
        # One statement per batch, locking only its rows. MariaDB takes a LIMIT on
        # DELETE but none inside an IN subquery; the others take the subquery.
        return int(self._run(
            "DELETE FROM {table} WHERE {dead} LIMIT $limit" if self._models._table.mysql
            else "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {dead}"
                 " LIMIT $limit)",
            {"now": now, "limit": limit}, dead="{expires_at} <= $now"))


def _owned(owner: Any) -> tuple[str, dict[str, Any]]:
    """The condition on a row's owner that ``owner`` selects, and its parameter."""
    if owner is ANY_USER or owner is None:
        return ("" if owner is ANY_USER else " AND {user} IS NULL"), {}
    return " AND {user} = $user", {"user": owner}
