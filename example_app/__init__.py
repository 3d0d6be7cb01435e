"""A small real site on flask-sessionstore: accounts, roles, and sessions you can end.

Run it with ``flask --app example_app run``. The first run creates the database in the
instance folder (``example_app/instance/``), the roles ``admin`` and ``analyst``, and an
admin account, and prints the admin's email and password. The password is generated
(and shown only that once) unless ``EXAMPLE_ADMIN_PASSWORD`` is set; a lost one is
replaced with ``flask --app example_app reset-admin-password``.

Settings, from the environment:

``EXAMPLE_ORM``
    ``sqlalchemy`` (the default), ``peewee``, ``pony`` or ``mongoengine``: one module
    each in ``orms/``.
``DATABASE_URL``
    The database; by default an SQLite file in the instance folder.
``EXAMPLE_INSTANCE_PATH``
    Another instance folder (the tests use a temporary one).
``EXAMPLE_ADMIN_EMAIL`` / ``EXAMPLE_ADMIN_PASSWORD``
    The first admin account (``admin@example.com``, generated password).
``FLASK_*``
    Any Flask or library setting, such as ``FLASK_SESSIONSTORE_COOKIE_SECURE=true``
    behind HTTPS (the example serves plain HTTP on your machine, so its cookie is not
    marked Secure unless you say so).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from flask_sessionstore import SessionStore

from . import account, admin, auth, main
from .csrf import init_csrf
from .orms import DEFAULT_URLS, ExampleBackend, load_backend
from .web import get_backend, init_web

__all__ = ["create_app", "get_backend"]

_PACKAGE_DIR = Path(__file__).resolve().parent

#: The roles every fresh database starts with: name, description, permissions.
STARTING_ROLES = (
    ("admin", "Manages users, roles and sessions", ["users.manage"]),
    ("analyst", "Reads the reports", ["reports.read"]),
)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the example app.

    :param config: settings applied last, over the defaults and the environment.
        ``INSTANCE_PATH`` chooses the instance folder.
    """
    settings = dict(config or {})
    instance_path = Path(
        settings.pop("INSTANCE_PATH", None)
        or os.environ.get("EXAMPLE_INSTANCE_PATH")
        or _PACKAGE_DIR / "instance"
    ).resolve()
    instance_path.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__, instance_path=str(instance_path))
    app.config.update(
        EXAMPLE_ORM=os.environ.get("EXAMPLE_ORM") or "sqlalchemy",
        DATABASE_URL=os.environ.get("DATABASE_URL") or None,
        EXAMPLE_ADMIN_EMAIL=os.environ.get("EXAMPLE_ADMIN_EMAIL") or "admin@example.com",
        EXAMPLE_ADMIN_PASSWORD=os.environ.get("EXAMPLE_ADMIN_PASSWORD") or None,
        SESSION_COOKIE_NAME="example_session",
        # Plain HTTP on localhost: a Secure cookie would never come back.
        SESSIONSTORE_COOKIE_SECURE=False,
        # Forged cookie values are then refused without a query.
        SESSIONSTORE_SIGN_COOKIE=True,
        # The CSRF token a page served before the login planted dies with the login
        # (S31): whoever planted the cookie cannot know the next one.
        SESSIONSTORE_DROP_ON_LOGIN=("_csrf_token",),
    )
    app.config.from_prefixed_env()
    app.config.update(settings)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret(instance_path)

    orm = str(app.config["EXAMPLE_ORM"])
    url = app.config["DATABASE_URL"] or DEFAULT_URLS.get(orm, "").format(
        instance=instance_path.as_posix()
    )
    backend = load_backend(orm, app, url)
    app.extensions["example_backend"] = backend

    login_manager = auth.make_login_manager()
    login_manager.init_app(app)
    SessionStore(app, datastore=backend.datastore, login_manager=login_manager)
    init_csrf(app)
    init_web(app)
    for blueprint in (main.bp, auth.bp, account.bp, admin.bp):
        app.register_blueprint(blueprint)
    app.cli.add_command(reset_admin_password)

    with app.app_context():
        _bootstrap(app, backend)
    return app


def _instance_secret(instance_path: Path) -> str:
    # One random key per instance folder, kept across restarts so sessions survive
    # them (with a signed cookie, a new key would end every session).
    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secret)
    return secret


def _bootstrap(app: Flask, backend: ExampleBackend) -> None:
    """Create the tables, the starting roles and the first admin, where missing."""
    datastore = backend.datastore
    backend.create_tables()
    with backend.unit():
        for name, description, permissions in STARTING_ROLES:
            datastore.find_or_create_role(
                name, description=description, permissions=permissions
            )
        email = str(app.config["EXAMPLE_ADMIN_EMAIL"]).lower()
        if datastore.find_user(case_insensitive=True, email=email) is not None:
            return
        given = app.config["EXAMPLE_ADMIN_PASSWORD"]
        password = given or secrets.token_urlsafe(12)
        datastore.create_user(email=email, password=password, roles=["admin"])
    _announce(email, password, generated=not given)


def _announce(email: str, password: str, *, generated: bool) -> None:
    # stderr: unbuffered, and next to the server's own startup lines.
    lines = [
        "example_app: created the admin account",
        f"  email:    {email}",
        f"  password: {password}" if generated else "  password: the one in EXAMPLE_ADMIN_PASSWORD",
    ]
    if generated:
        lines.append("  (generated and shown only now; a new one: "
                     "flask --app example_app reset-admin-password)")
    click.echo("\n".join(" * " + line for line in lines), err=True)
    sys.stderr.flush()


@click.command("reset-admin-password")
@with_appcontext
@click.option("--email", default=None, help="The admin's email; EXAMPLE_ADMIN_EMAIL by default.")
def reset_admin_password(email: str | None) -> None:
    """Give the admin a new random password, end their sessions, and print it."""
    backend = get_backend()
    datastore = backend.datastore
    address = email or str(current_app.config["EXAMPLE_ADMIN_EMAIL"])
    with backend.unit():
        user = datastore.find_user(case_insensitive=True, email=address)
        if user is None:
            raise click.ClickException(f"There is no user {address!r}.")
        password = datastore.generate_password(user)
        click.echo(f"New password for {user.email}: {password}")
