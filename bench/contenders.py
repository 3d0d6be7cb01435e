"""The contenders :mod:`bench.compare` measures: one three-route app per library.

Every contender serves the same routes:

* ``GET /me``: login required and a role check (``member``), returns the email;
* ``POST /cart``: increments a counter kept in the session;
* ``GET /public``: anonymous, reads the session;
* ``POST /_bench/login/<id>``: logs the user in, so that a client gets a session
  the way a browser would (the benchmark never times it).

Each contender is built in one of two ways: :meth:`Contender.build` makes its tables
and seeds them, :meth:`Contender.attach` opens what a build left (the gunicorn workers
of the HTTP phase do that, through :func:`wsgi`).

The libraries other than flask-sessionstore are set up the way their documentation
shows, with their defaults: what a user who picks them instead gets.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask, abort, session

from flask_sessionstore.datastore import session_key, utcnow

from .apps import seed_models

#: Rows per executemany while seeding: big enough to amortise the round trips, small
#: enough to keep one batch's parameters in memory comfortably.
BATCH = 20_000
#: The role /me requires; every seeded user holds it, one in ten also holds ``admin``.
ROLE = "member"
FLASK_SESSION_PREFIX = "session:"

PG_URL = os.environ.get(
    "BENCH_POSTGRESQL_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/sessionstore_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
#: The flask-sessionstore Redis cache gets its own database, so that seeding Flask-Session
#: (which empties database 15 first) never empties the cache behind its back.
CACHE_REDIS_URL = os.environ.get("BENCH_CACHE_REDIS_URL", "redis://127.0.0.1:6379/14")


class Unavailable(Exception):
    """The contender cannot run here (a module not importable, a server down)."""


@dataclass
class SQLCounter:
    """Statements and commits seen on a set of engines while it is active."""

    statements: int = 0
    commits: int = 0


@dataclass
class Contender:
    """One library set up one way, with its app and what the benchmark needs of it."""

    key: str
    label: str
    #: The factory's name in :data:`FACTORIES` and its arguments (for gunicorn).
    factory: str
    url: str
    #: Whether it stores sessions server-side (it is then seeded with session rows).
    server_sessions: bool = True
    #: Whether it has users (bare Flask has none).
    has_users: bool = True
    app: Flask = field(init=False, repr=False)
    db: Any = field(init=False, repr=False, default=None)
    note: str = ""

    def _make(self) -> None:
        self.app, self.db = FACTORIES[self.factory](self.url)

    def attach(self) -> Contender:
        """Open the app on the data an earlier :meth:`build` left."""
        self._make()
        return self

    def build(self, *, users: int, sessions: int) -> Contender:
        """Make the app, empty its store and seed ``users`` users and ``sessions`` rows."""
        if self.url:
            prepare_url(self.url)
        self._make()
        seeder = SEEDERS[self.factory]
        seeder(self, users, sessions)
        return self

    # -- what the benchmark measures with ------------------------------------------

    def engines(self) -> list[sa.Engine]:
        if self.db is None:
            return []
        with self.app.app_context():
            return [self.db.engine]

    @contextmanager
    def count_sql(self) -> Iterator[SQLCounter]:
        """Count the SQL statements (and commits) this contender's engines run."""
        counter = SQLCounter()

        def on_execute(*_: Any) -> None:
            counter.statements += 1

        def on_commit(*_: Any) -> None:
            counter.commits += 1

        engines = self.engines()
        for engine in engines:
            sa.event.listen(engine, "before_cursor_execute", on_execute)
            sa.event.listen(engine, "commit", on_commit)
        try:
            yield counter
        finally:
            for engine in engines:
                sa.event.remove(engine, "before_cursor_execute", on_execute)
                sa.event.remove(engine, "commit", on_commit)

    def login_path(self) -> str:
        return "/_bench/login/1"

    def close(self) -> None:
        if self.db is not None:
            with self.app.app_context():
                self.db.session.remove()
                self.db.engine.dispose()


# ----------------------------------------------------------------------------------
# Databases
# ----------------------------------------------------------------------------------


def prepare_url(url: str) -> None:
    """Make the database ``url`` names usable: a fresh SQLite file, or a PostgreSQL
    database created when missing."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with suppress(FileNotFoundError):
                os.remove(parsed.database + suffix)
        os.makedirs(os.path.dirname(parsed.database) or ".", exist_ok=True)
    elif parsed.drivername.startswith("postgresql"):
        admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                exists = connection.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": parsed.database},
                ).scalar()
                if not exists:
                    # The name is ours (a constant or the operator's own setting).
                    connection.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
        except sa.exc.OperationalError as exc:
            raise Unavailable(f"PostgreSQL is not reachable: {exc.orig}") from exc
        finally:
            admin.dispose()


def copy_sqlite(source_url: str, target_url: str) -> None:
    """Copy a seeded SQLite file (the scale phase grows copies of one seed)."""
    source = sa.engine.make_url(source_url).database
    target = sa.engine.make_url(target_url).database
    assert source and target
    shutil.copyfile(source, target)


def insert_rows(connection: sa.Connection, table: sa.Table, rows: Iterator[dict[str, Any]],
                batch: int = BATCH) -> int:
    """Insert ``rows`` with one executemany per ``batch`` rows; return how many."""
    total = 0
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == batch:
            connection.execute(sa.insert(table), chunk)
            total += len(chunk)
            chunk = []
    if chunk:
        connection.execute(sa.insert(table), chunk)
        total += len(chunk)
    return total


# A real argon2 hash, so that user rows have their real size; nobody logs in with it.
_PASSWORD_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$c2VlZHNlZWRzZWVkc2VlZA$"
    "Xc0nHhWcQ0l1p2m0k8Yb2bq8r3Wm7Qk3gW0N4x1q2zI"
)


def _user_rows(users: int, extra: Callable[[int], dict[str, Any]] | None = None
               ) -> Iterator[dict[str, Any]]:
    for number in range(1, users + 1):
        row: dict[str, Any] = {
            "id": number, "email": f"user{number}@example.com", "password": _PASSWORD_HASH,
            "active": True, "confirmed_at": None,
        }
        if extra is not None:
            row.update(extra(number))
        yield row


def _link_rows(users: int) -> Iterator[dict[str, Any]]:
    for number in range(1, users + 1):
        yield {"user_id": number, "role_id": 1}
        if number % 10 == 0:
            yield {"user_id": number, "role_id": 2}


def seed_users(connection: sa.Connection, user_table: sa.Table, role_table: sa.Table,
               link_table: sa.Table, users: int,
               extra: Callable[[int], dict[str, Any]] | None = None) -> None:
    """Two roles, ``users`` users who all hold ``member``, a tenth also ``admin``."""
    connection.execute(sa.insert(role_table), [
        {"id": 1, "name": ROLE, "description": "every user"},
        {"id": 2, "name": "admin", "description": "one in ten"},
    ])
    insert_rows(connection, user_table, _user_rows(users, extra))
    insert_rows(connection, link_table, _link_rows(users))


def _flask_login_data(user_id: int) -> dict[str, Any]:
    # What flask_login.login_user leaves in a session: the id, freshness and the
    # session-protection identifier (a SHA-512 in hex).
    return {"_user_id": str(user_id), "_fresh": True, "_id": "0" * 128}


def sessionstore_rows(count: int, users: int, *, expired: bool = False,
                      now: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Rows for flask-sessionstore's session table, in the form the library writes.

    The key is the SHA-256 of a fresh id (as :func:`session_key` makes it); half the
    rows are anonymous carts, half are logins spread over the users. Live rows expire
    within the idle timeout, expired rows a minute ago.
    """
    from flask.sessions import session_json_serializer

    now = now or utcnow()
    anonymous = session_json_serializer.dumps({"cart": 3})
    # Serialized once with a placeholder id: the tagged JSON of each row would cost more
    # than the insert itself at a million rows.
    logged_in = session_json_serializer.dumps(_flask_login_data(0)).replace(
        '"_user_id":"0"', '"_user_id":"%s"')
    for number in range(count):
        user_id = (number % users) + 1 if users and number % 2 else None
        if expired:
            created, seen, expires = (now - timedelta(hours=3), now - timedelta(hours=2),
                                      now - timedelta(minutes=1))
        else:
            created, seen, expires = now, now, now + timedelta(minutes=30)
        yield {
            "key": session_key(secrets.token_urlsafe(32)),
            "user_id": user_id,
            "data": anonymous if user_id is None else logged_in % user_id,
            "created_at": created, "last_seen_at": seen, "expires_at": expires,
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) bench", "ip_address": "127.0.0.1",
        }


def flask_session_rows(count: int, users: int, *, expired: bool = False,
                       now: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Rows for Flask-Session's SQLAlchemy table: its key prefix, msgpack data, expiry."""
    import msgspec

    now = now or utcnow()
    encoder = msgspec.msgpack.Encoder()
    anonymous = encoder.encode({"_permanent": True, "cart": 3})
    for number in range(count):
        user_id = (number % users) + 1 if users and number % 2 else None
        data = anonymous if user_id is None else encoder.encode(
            {"_permanent": True, **_flask_login_data(user_id)})
        yield {
            "session_id": FLASK_SESSION_PREFIX + secrets.token_urlsafe(32),
            "data": data,
            "expiry": now - timedelta(minutes=1) if expired else now + timedelta(days=31),
        }


# ----------------------------------------------------------------------------------
# The three routes
# ----------------------------------------------------------------------------------


def add_routes(app: Flask, guard: Callable[[Callable[..., Any]], Callable[..., Any]],
               me: Callable[[], str], login: Callable[[int], bool]) -> None:
    @app.get("/me")
    @guard
    def me_view() -> str:
        return me()

    @app.post("/cart")
    def cart() -> dict[str, int]:
        session["cart"] = session.get("cart", 0) + 1
        return {"cart": session["cart"]}

    @app.get("/public")
    def public() -> dict[str, int]:
        return {"cart": session.get("cart", 0)}

    @app.post("/_bench/login/<int:user_id>")
    def bench_login(user_id: int) -> str:
        if not login(user_id):
            abort(403)
        return "ok"


def _base_app(url: str | None) -> Flask:
    app = Flask("bench")
    app.config.update(
        SECRET_KEY="bench-secret-key-bench-secret-key",
        SESSION_COOKIE_SECURE=False,
    )
    if url is not None:
        app.config["SQLALCHEMY_DATABASE_URI"] = url
    return app


def _login_required_with_role(view: Callable[..., Any]) -> Callable[..., Any]:
    """What an app on plain Flask-Login writes: ``login_required`` and a role test."""
    from functools import wraps

    import flask_login

    @wraps(view)
    @flask_login.login_required
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not flask_login.current_user.has_role(ROLE):
            abort(403)
        return view(*args, **kwargs)

    return wrapper


def _current_email() -> str:
    import flask_login

    return str(flask_login.current_user.email)


# ----------------------------------------------------------------------------------
# Factories: url -> (app, Flask-SQLAlchemy db or None)
# ----------------------------------------------------------------------------------


def make_sessionstore(url: str, *, redis_url: str | None = None) -> tuple[Flask, Any]:
    """flask-sessionstore on Flask-SQLAlchemy, with ``roles_required``."""
    from flask_sqlalchemy import SQLAlchemy

    from flask_sessionstore import SessionStore, SQLAlchemyUserDatastore, login_user
    from flask_sessionstore import roles_required as ss_roles_required

    app = _base_app(url)
    app.config["SESSIONSTORE_COOKIE_SECURE"] = False
    if redis_url is not None:
        app.config["SESSIONSTORE_REDIS_URL"] = redis_url
    db = SQLAlchemy(app)
    user_model, role_model = seed_models(db)
    datastore = SQLAlchemyUserDatastore(db, user_model, role_model)
    SessionStore(app, datastore=datastore)

    def login(user_id: int) -> bool:
        user = datastore.get_user(user_id)
        return user is not None and login_user(user)

    add_routes(app, ss_roles_required(ROLE), _current_email, login)
    return app, db


def make_sessionstore_redis(url: str) -> tuple[Flask, Any]:
    """flask-sessionstore on Flask-SQLAlchemy with its Redis cache in front."""
    from flask_sessionstore.config import CONFIG_DEFAULTS

    if "SESSIONSTORE_REDIS_URL" not in CONFIG_DEFAULTS:
        raise Unavailable("this flask-sessionstore has no SESSIONSTORE_REDIS_URL yet")
    return make_sessionstore(url, redis_url=CACHE_REDIS_URL)


def _flask_login_models(app: Flask) -> tuple[Any, Any, Any]:
    import flask_login
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy(app)
    user_model, role_model = seed_models(db)
    # SQLAlchemy's class registry holds models weakly: keep Role alive for User.roles.
    app.extensions["bench_models"] = (user_model, role_model)
    manager = flask_login.LoginManager(app)

    @manager.user_loader
    def load_user(user_id: str) -> Any:
        # The loader every Flask-Login tutorial shows; the role check then loads roles.
        return db.session.get(user_model, int(user_id))

    return db, user_model, manager


def _flask_login_login(db: Any, user_model: Any) -> Callable[[int], bool]:
    import flask_login

    def login(user_id: int) -> bool:
        user = db.session.get(user_model, user_id)
        return user is not None and bool(flask_login.login_user(user))

    return login


def make_flask_session_sqlalchemy(url: str, *, refresh: bool = True) -> tuple[Flask, Any]:
    """Flask-Session 0.8 (SQLAlchemy backend) + Flask-Login + Flask-SQLAlchemy."""
    from flask_session import Session

    app = _base_app(url)
    db, user_model, _ = _flask_login_models(app)
    app.config.update(SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=db)
    if not refresh:
        app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    Session(app)
    add_routes(app, _login_required_with_role, _current_email,
               _flask_login_login(db, user_model))
    return app, db


def make_flask_session_sqlalchemy_norefresh(url: str) -> tuple[Flask, Any]:
    """As :func:`make_flask_session_sqlalchemy` with ``SESSION_REFRESH_EACH_REQUEST``
    off, Flask-Session's documented way to skip the write on unchanged sessions."""
    return make_flask_session_sqlalchemy(url, refresh=False)


def make_flask_session_redis(url: str) -> tuple[Flask, Any]:
    """Flask-Session 0.8 (Redis backend) + Flask-Login; users in Flask-SQLAlchemy."""
    import redis
    from flask_session import Session

    app = _base_app(url)
    db, user_model, _ = _flask_login_models(app)
    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=redis.Redis.from_url(REDIS_URL))
    Session(app)
    add_routes(app, _login_required_with_role, _current_email,
               _flask_login_login(db, user_model))
    return app, db


def make_flask_security(url: str) -> tuple[Flask, Any]:
    """Flask-Security 5 with its own models (fsqla_v3) and its own session handling."""
    from flask_security import (
        Security,
        SQLAlchemyUserDatastore,
        auth_required,
        login_user,
        roles_required,
    )
    from flask_security.models import fsqla_v3 as fsqla
    from flask_sqlalchemy import SQLAlchemy

    app = _base_app(url)
    app.config.update(SECURITY_PASSWORD_SALT="bench-salt")
    db = SQLAlchemy(app)
    fsqla.FsModels.set_db_info(db)

    class Role(db.Model, fsqla.FsRoleMixin):  # type: ignore[name-defined, misc]
        pass

    class User(db.Model, fsqla.FsUserMixin):  # type: ignore[name-defined, misc]
        pass

    datastore = SQLAlchemyUserDatastore(db, User, Role)
    Security(app, datastore)

    def guard(view: Callable[..., Any]) -> Callable[..., Any]:
        return auth_required("session")(roles_required(ROLE)(view))  # type: ignore[no-any-return]

    def login(user_id: int) -> bool:
        user = db.session.get(User, user_id)
        return user is not None and bool(login_user(user))

    add_routes(app, guard, _current_email, login)
    return app, db


def make_cookie(url: str) -> tuple[Flask, Any]:
    """Flask's signed-cookie session + Flask-Login; users in Flask-SQLAlchemy."""
    app = _base_app(url)
    db, user_model, _ = _flask_login_models(app)
    add_routes(app, _login_required_with_role, _current_email,
               _flask_login_login(db, user_model))
    return app, db


def make_bare(url: str) -> tuple[Flask, Any]:
    """Bare Flask: the cookie session, no users; /me returns a constant."""
    app = _base_app(None)
    add_routes(app, lambda view: view, lambda: "user1@example.com", lambda user_id: True)
    return app, None


FACTORIES: dict[str, Callable[[str], tuple[Flask, Any]]] = {
    "sessionstore": make_sessionstore,
    "sessionstore_redis": make_sessionstore_redis,
    "flask_session_sqlalchemy": make_flask_session_sqlalchemy,
    "flask_session_sqlalchemy_norefresh": make_flask_session_sqlalchemy_norefresh,
    "flask_session_redis": make_flask_session_redis,
    "flask_security": make_flask_security,
    "cookie": make_cookie,
    "bare": make_bare,
}


# ----------------------------------------------------------------------------------
# Seeders: empty the store, then bulk-insert users and sessions
# ----------------------------------------------------------------------------------


def _tables(contender: Contender) -> dict[str, sa.Table]:
    return dict(contender.db.metadata.tables)


def _reset(contender: Contender) -> sa.Engine:
    with contender.app.app_context():
        contender.db.drop_all()
        contender.db.create_all()
        return contender.db.engine  # type: ignore[no-any-return]


def seed_sessionstore(contender: Contender, users: int, sessions: int) -> None:
    engine = _reset(contender)
    tables = _tables(contender)
    with engine.begin() as connection:
        seed_users(connection, tables["user"], tables["role"], tables["roles_users"], users)
        insert_rows(connection, tables["sessionstore_session"], sessionstore_rows(sessions, users))
    if "redis" in contender.factory:
        import redis

        redis.Redis.from_url(CACHE_REDIS_URL).flushdb()


def add_sessionstore_rows(contender: Contender, count: int, *, users: int,
                          expired: bool) -> None:
    """Add ``count`` more session rows to a seeded flask-sessionstore contender."""
    with contender.app.app_context():
        engine = contender.db.engine
    table = _tables(contender)["sessionstore_session"]
    with engine.begin() as connection:
        insert_rows(connection, table, sessionstore_rows(count, users, expired=expired))


def seed_flask_session_sqlalchemy(contender: Contender, users: int, sessions: int) -> None:
    engine = _reset(contender)
    tables = _tables(contender)
    with engine.begin() as connection:
        seed_users(connection, tables["user"], tables["role"], tables["roles_users"], users)
        insert_rows(connection, tables["sessions"], flask_session_rows(sessions, users))


def add_flask_session_rows(contender: Contender, count: int, *, users: int,
                           expired: bool) -> None:
    with contender.app.app_context():
        engine = contender.db.engine
    with engine.begin() as connection:
        insert_rows(connection, _tables(contender)["sessions"],
                    flask_session_rows(count, users, expired=expired))


def seed_flask_session_redis(contender: Contender, users: int, sessions: int) -> None:
    import redis

    engine = _reset(contender)
    tables = _tables(contender)
    with engine.begin() as connection:
        seed_users(connection, tables["user"], tables["role"], tables["roles_users"], users)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unavailable(f"Redis is not reachable: {exc}") from exc
    client.flushdb()  # database 15 is the benchmark's own
    ttl = int(timedelta(days=31).total_seconds())
    rows = flask_session_rows(sessions, users)
    pipe = client.pipeline(transaction=False)
    for number, row in enumerate(rows, 1):
        pipe.set(row["session_id"], row["data"], ex=ttl)
        if number % BATCH == 0:
            pipe.execute()
    pipe.execute()


def seed_flask_security(contender: Contender, users: int, sessions: int) -> None:
    import uuid

    engine = _reset(contender)
    tables = _tables(contender)
    now = utcnow()
    with engine.begin() as connection:
        seed_users(
            connection, tables["user"], tables["role"], tables["roles_users"], users,
            extra=lambda number: {
                "fs_uniquifier": uuid.uuid4().hex, "create_datetime": now,
                "update_datetime": now, "username": None,
            },
        )


def seed_users_only(contender: Contender, users: int, sessions: int) -> None:
    engine = _reset(contender)
    tables = _tables(contender)
    with engine.begin() as connection:
        seed_users(connection, tables["user"], tables["role"], tables["roles_users"], users)


def seed_nothing(contender: Contender, users: int, sessions: int) -> None:
    pass


SEEDERS: dict[str, Callable[[Contender, int, int], None]] = {
    "sessionstore": seed_sessionstore,
    "sessionstore_redis": seed_sessionstore,
    "flask_session_sqlalchemy": seed_flask_session_sqlalchemy,
    "flask_session_sqlalchemy_norefresh": seed_flask_session_sqlalchemy,
    "flask_session_redis": seed_flask_session_redis,
    "flask_security": seed_flask_security,
    "cookie": seed_users_only,
    "bare": seed_nothing,
}


def wsgi(factory: str, url: str) -> Flask:
    """The app gunicorn serves: ``bench.contenders:wsgi('sessionstore', 'sqlite:///…')``.

    It opens the data the in-process phase seeded; it seeds nothing.
    """
    return FACTORIES[factory](url)[0]
