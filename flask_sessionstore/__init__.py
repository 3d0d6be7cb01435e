"""flask-sessionstore: users, roles and revocable server-side sessions for Flask.

The ORM datastores are imported on first use, so importing this package imports no ORM.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .auth import AuthMethod, BearerToken, SessionCookie, TrustedHeader
from .datastore import SessionAdmin, SessionRecord, UserDatastore
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
    InvalidValueError,
    PasswordError,
    SessionStoreError,
    UnknownRoleError,
    UnknownUserError,
    UserExistsError,
)
from .extension import SessionStore, current_datastore
from .login import login_user, logout_user
from .mixins import RoleMixin, UserMixin
from .passwords import PasswordHasher
from .sessions import ServerSession, ServerSessionInterface

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
    "InvalidValueError",
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
    "SessionRecord",
    "SessionStore",
    "SessionStoreError",
    "TrustedHeader",
    "UnknownRoleError",
    "UnknownUserError",
    "UserDatastore",
    "UserExistsError",
    "UserMixin",
    "auth_required",
    "current_datastore",
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
