"""flask-sessionstore: users, roles and revocable server-side sessions for Flask.

The ORM datastores are imported on first use, so importing this package imports no ORM.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .admin import SessionAdmin
from .auth import AuthMethod, BearerToken, SessionCookie, TrustedHeader
from .contract import ModelStore, SessionRows
from .datastore import UserDatastore
from .decorators import (
    auth_required,
    permissions_accepted,
    permissions_required,
    roles_accepted,
    roles_required,
)
from .exceptions import (
    ConstraintError,
    DatastoreUnavailableError,
    DuplicateError,
    InvalidValueError,
    PasswordError,
    SessionStoreError,
    UnknownRoleError,
    UnknownUserError,
    UserExistsError,
)
from .extension import SessionStore
from .lifecycle import SessionLifecycle, SessionPolicy
from .login import login_user, logout_user
from .mixins import RoleMixin, UserMixin
from .passwords import PasswordHasher
from .records import KeyKind, SessionRecord
from .sessions import ServerSession, ServerSessionInterface
from .state import SessionStoreState, current_datastore, get_state

if TYPE_CHECKING:
    from .orm.mongoengine import MongoEngineUserDatastore
    from .orm.peewee import PeeweeUserDatastore
    from .orm.pony import PonyUserDatastore
    from .orm.sqlalchemy import SQLAlchemyUserDatastore

__all__ = [
    "AuthMethod",
    "BearerToken",
    "ConstraintError",
    "DatastoreUnavailableError",
    "DuplicateError",
    "InvalidValueError",
    "KeyKind",
    "ModelStore",
    "MongoEngineUserDatastore",
    "PasswordError",
    "PasswordHasher",
    "PeeweeUserDatastore",
    "PonyUserDatastore",
    "RoleMixin",
    "SQLAlchemyUserDatastore",
    "ServerSession",
    "ServerSessionInterface",
    "SessionAdmin",
    "SessionCookie",
    "SessionLifecycle",
    "SessionPolicy",
    "SessionRecord",
    "SessionRows",
    "SessionStore",
    "SessionStoreError",
    "SessionStoreState",
    "TrustedHeader",
    "UnknownRoleError",
    "UnknownUserError",
    "UserDatastore",
    "UserExistsError",
    "UserMixin",
    "auth_required",
    "current_datastore",
    "get_state",
    "login_user",
    "logout_user",
    "permissions_accepted",
    "permissions_required",
    "roles_accepted",
    "roles_required",
]

#: Each lazily imported datastore: its module, and the extra that installs its ORM.
_DATASTORES = {
    "SQLAlchemyUserDatastore": ("sqlalchemy", "sqlalchemy"),
    "MongoEngineUserDatastore": ("mongoengine", "mongoengine"),
    "PeeweeUserDatastore": ("peewee", "peewee"),
    "PonyUserDatastore": ("pony", "pony"),
}


def __getattr__(name: str) -> Any:
    if name not in _DATASTORES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, extra = _DATASTORES[name]
    try:
        loaded = import_module(f".orm.{module}", __name__)
    except ImportError as exc:
        raise ImportError(
            f"{name} needs the {extra!r} extra: pip install 'flask-sessionstore[{extra}]'"
        ) from exc
    return getattr(loaded, name)
