"""Check one install extra alone: ``python -m tests.extras_check <orm>``.

``.ci/run`` runs this in a fresh venv holding only ``flask-sessionstore[<orm>]`` (plus
mongomock for MongoEngine, which needs a database to talk to). It fails when another
ORM is installed or imported, and otherwise runs the seed's flow on that ORM: roles,
users, a login through a view, and a role-guarded view answering 200 and 403.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: Each ORM: its distributions, its modules, and the suite's backend class and database.
ORMS = {
    "sqlalchemy": (("SQLAlchemy", "Flask-SQLAlchemy"), ("sqlalchemy", "flask_sqlalchemy"),
                   "SQLAlchemyBackend", "sqlite"),
    "peewee": (("peewee",), ("peewee", "playhouse"), "PeeweeBackend", "sqlite"),
    "pony": (("pony",), ("pony",), "PonyBackend", "sqlite"),
    "mongoengine": (("mongoengine",), ("mongoengine",), "MongoEngineBackend", "mongomock"),
}


def fail(message: str) -> None:
    print(f"extras_check: {message}", file=sys.stderr)
    raise SystemExit(1)


def main(orm: str) -> None:
    if orm not in ORMS:
        fail(f"unknown ORM {orm!r}; choose one of {sorted(ORMS)}")
    for other, (distributions, _, _, _) in ORMS.items():
        for distribution in distributions:
            try:
                found = version(distribution)
            except PackageNotFoundError:
                if other == orm:
                    fail(f"{distribution} is missing: the [{orm}] extra should install it")
                continue
            if other != orm:
                fail(f"{distribution} {found} is installed, but only the [{orm}] extra was asked")

    import flask_sessionstore

    from .app import make_app

    _, _, class_name, database = ORMS[orm]
    with tempfile.TemporaryDirectory() as folder:
        url = (f"sqlite:///{Path(folder) / 'extra.sqlite3'}" if database == "sqlite"
               else "mongomock://localhost/sessionstore_extra")
        backend = getattr(importlib.import_module(f"tests.backends.{orm}"), class_name)(
            url, database)
        app = make_app()
        backend.setup(app)
        flask_sessionstore.SessionStore(app, datastore=backend.datastore)
        with backend.unit(app):
            store = backend.datastore
            store.create_role(name="admin")
            store.create_user(email="ann@example.com", password="pw", roles=["admin"])
            store.create_user(email="bob@example.com", password="pw")
        ann, bob = app.test_client(), app.test_client()
        for client, email in ((ann, "ann@example.com"), (bob, "bob@example.com")):
            response = client.post("/login", data={"email": email, "password": "pw"})
            if response.status_code != 200:
                fail(f"login of {email} answered {response.status_code}")
        statuses = (ann.get("/admin").status_code, bob.get("/admin").status_code)
        if statuses != (200, 403):
            fail(f"the role-guarded view answered {statuses}, not (200, 403)")
        backend.teardown()

    others = {module for name, (_, modules, _, _) in ORMS.items() if name != orm
              for module in modules if module in sys.modules}
    if others:
        fail(f"importing the [{orm}] datastore imported {sorted(others)}")
    print(f"extras_check: [{orm}] works alone (admin 200, member 403; no other ORM)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
