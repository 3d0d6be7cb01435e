"""What a DB-API driver's error means, told once for every SQL translator.

PEP 249 names the same exception classes in every driver (``IntegrityError``,
``DataError``, ``OperationalError``...), and the ORMs copy those names in their own
wrappers, so errors are classified by class name along the MRO, then refined by the
driver's codes (PostgreSQL's SQLSTATE, MySQL's error number, SQLite's extended code).
No driver is imported here.
"""

from __future__ import annotations

from ..exceptions import (
    ConstraintError,
    DatastoreUnavailableError,
    DuplicateError,
    InvalidValueError,
    SessionStoreError,
)

__all__ = ["SQLITE_LOWER", "classify", "driver_error", "python_lower", "translate"]

#: The SQL function under which the SQL translators register :func:`python_lower` on
#: SQLite connections: SQLite's own ``lower()`` folds ASCII letters only ("Ünal" would
#: never match "ünal"), and the values compared were folded by Python.
SQLITE_LOWER = "sessionstore_lower"


def python_lower(value: object) -> object:
    """Lower-case ``value`` as Python does (the SQL function :data:`SQLITE_LOWER`)."""
    return value.lower() if isinstance(value, str) else value

#: PostgreSQL SQLSTATEs: 23505 unique_violation; 42804 datatype_mismatch (a value whose
#: type the column does not take); class 22 is "data exception" (too long, out of range).
_PG_UNIQUE = "23505"
_PG_DATATYPE_MISMATCH = "42804"
#: 42883 undefined_function: no operator for these types ("text = integer").
_PG_NO_OPERATOR = "42883"
#: MySQL and MariaDB error numbers. Duplicates: 1062 ER_DUP_ENTRY, 1586 (with a key
#: name). Values refused, which the drivers report as OperationalError like a lost
#: connection: 1241 a row where one value belongs, 1267, 1270 and 1271 an illegal mix of
#: collations, 1292 a value malformed for its type, 4078 operand types that cannot be
#: compared.
_MYSQL_DUPLICATE = frozenset({1062, 1586})
_MYSQL_REFUSED_VALUE = frozenset({1241, 1267, 1270, 1271, 1292, 4078})
#: SQLite's extended result codes: 2067 SQLITE_CONSTRAINT_UNIQUE, 1555 ..._PRIMARYKEY.
_SQLITE_DUPLICATE = frozenset({2067, 1555})
#: Where each ORM keeps the driver's error it wraps: SQLAlchemy ``orig``, Pony
#: ``original_exc``; Peewee raises its own class from the driver's (the cause).
_WRAPPED = ("orig", "original_exc")
_DBAPI_NAMES = frozenset({"DatabaseError", "InterfaceError"})


def driver_error(error: BaseException) -> BaseException:
    """Return the driver's own error inside an ORM's wrapper (or ``error`` itself)."""
    for _ in range(4):  # wrappers nest a few levels at most
        inner = next((getattr(error, name) for name in _WRAPPED
                      if isinstance(getattr(error, name, None), BaseException)), None)
        if inner is None:
            inner = error.__cause__ or error.__context__
            # Only a driver's error: an ORM may raise while handling something unrelated.
            if inner is not None and not _class_names(inner) & _DBAPI_NAMES:
                inner = None
        if inner is None or inner is error:
            break
        error = inner
    return error


def classify(error: BaseException) -> type[SessionStoreError] | None:
    """Return the library error that ``error`` (an ORM's or a driver's) stands for, or
    None when it is not the database's answer to a value or a connection (a malformed
    statement: a bug, to be raised as it is)."""
    inner = driver_error(error)
    names = _class_names(error) | _class_names(inner)
    if isinstance(inner, OverflowError):
        # sqlite3 refuses an int beyond 64 bits itself, outside the DB-API errors.
        return InvalidValueError
    if "IntegrityError" in names:
        return DuplicateError if _duplicate(inner) else ConstraintError
    if "DataError" in names or _refused_value(inner):
        return InvalidValueError
    if "ProgrammingError" in names:
        return InvalidValueError if _unsendable(inner) else None
    if names & {"OperationalError", "InterfaceError"}:
        # A lost or refused connection, a lock timeout, a deadlock: the database cannot
        # serve now.
        return DatastoreUnavailableError
    return None


def translate(error: BaseException) -> SessionStoreError | None:
    """Return the library error for ``error`` (see :func:`classify`), or None."""
    kind = classify(error)
    return None if kind is None else kind(str(driver_error(error)))


def _class_names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def _codes(error: BaseException) -> tuple[object, object]:
    sqlstate = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
    errno = error.args[0] if error.args else None
    return sqlstate, errno


def _duplicate(error: BaseException) -> bool:
    sqlstate, errno = _codes(error)
    if sqlstate == _PG_UNIQUE or (isinstance(errno, int) and errno in _MYSQL_DUPLICATE):
        return True
    if getattr(error, "sqlite_errorcode", None) in _SQLITE_DUPLICATE:
        return True
    # sqlite3 before Python 3.11 has no error codes; its wording is fixed by SQLite.
    return str(error).startswith("UNIQUE constraint failed")


def _refused_value(error: BaseException) -> bool:
    sqlstate, errno = _codes(error)
    if sqlstate in (_PG_DATATYPE_MISMATCH, _PG_NO_OPERATOR):
        return True
    if isinstance(sqlstate, str) and sqlstate.startswith("22"):
        return True
    return isinstance(errno, int) and errno in _MYSQL_REFUSED_VALUE


def _unsendable(error: BaseException) -> bool:
    """Return whether the driver refused, before sending anything, a value it cannot
    send: sqlite3 and psycopg2 a list or a dict, PyMySQL an infinite float. Each raises
    the ProgrammingError of a bad statement, told apart only by its words."""
    message = str(error)
    return message.startswith(("Error binding parameter", "can't adapt type")) or (
        message.endswith("can not be used with MySQL")
    )
