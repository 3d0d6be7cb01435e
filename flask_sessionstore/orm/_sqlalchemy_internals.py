"""The one place where the SQLAlchemy translator relies on more than documented API.

Why it exists: Flask-SQLAlchemy ends ``db.session`` after each request in a teardown of
its own (the private ``SQLAlchemy._teardown_session``), whose ``remove()`` rolls the
session back on its connection. When that connection was lost after the request's last
query, the rollback raises and turns an answer already made into a 500.
:func:`end_sessions_quietly` registers a teardown that runs first (Flask runs teardowns
in reverse order of registration) and, when the rollback fails, forgets the session
through ``scoped_session.registry``, which SQLAlchemy does not document; Flask-SQLAlchemy
then finds no session and touches nothing.

Both behaviours were checked on the versions in :data:`TESTED`; another version is
refused at import, since a silent change would bring the 500s back.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

from sqlalchemy import exc as sa_exc

__all__ = ["TESTED", "end_sessions_quietly"]

#: Per distribution, the releases this module was checked on: from the first, up to and
#: not including the second.
TESTED = {"sqlalchemy": ((2, 0), (2, 2)), "flask-sqlalchemy": ((3, 1), (3, 2))}


def _release(distribution: str) -> tuple[int, int]:
    numbers = [int(part) for part in re.findall(r"\d+", version(distribution))[:2]]
    return numbers[0], numbers[1] if len(numbers) > 1 else 0


for _name, (_low, _high) in TESTED.items():
    if not _low <= _release(_name) < _high:
        raise ImportError(
            f"flask-sessionstore supports {_name} >={_low[0]}.{_low[1]},<{_high[0]}."
            f"{_high[1]}; {version(_name)} is installed. Install a supported version "
            "(pip install 'flask-sessionstore[sqlalchemy]')."
        )


def end_sessions_quietly(app: Any, db: Any) -> None:
    """After each request of ``app``, remove ``db.session`` before Flask-SQLAlchemy
    does, forgetting it without a rollback when its connection is gone.

    :raises RuntimeError: when ``db`` is not set up on ``app`` yet: its teardown would
        be registered after this one, and so run first.
    """
    if app.extensions.get("sqlalchemy") is not db:
        raise RuntimeError(
            "This app is not set up with the datastore's Flask-SQLAlchemy object: call "
            "db.init_app(app) before SessionStore.init_app(app)."
        )

    def end(exc: BaseException | None) -> None:
        try:
            db.session.remove()
        except sa_exc.SQLAlchemyError:
            db.session.registry.clear()

    app.teardown_appcontext(end)
