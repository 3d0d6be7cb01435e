"""The Redis cache in front of the session rows, on every ORM (S19 and fallback).

Needs ``SESSIONSTORE_TEST_REDIS_URL``; each test uses its own key prefix.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask

from flask_sessionstore import SessionStore
from flask_sessionstore.cache import RedisSessionCache

from .backends import REQUIRE_SERVERS_ENV, SERVER_ENV, Backend, server_url

DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)


@pytest.fixture
def redis_url() -> str:
    url = server_url("redis")
    if url is None:
        message = f"redis not configured: set {SERVER_ENV['redis']} to run the cache tests"
        if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def cache(redis_url: str) -> Iterator[RedisSessionCache]:
    made = RedisSessionCache(
        _client(redis_url),
        prefix=f"sessionstore-test:{secrets.token_hex(4)}:",
        retry_after=timedelta(0),
    )
    yield made
    made.client = _client(redis_url)
    made.clear()


@pytest.fixture
def capp(backend: Backend, cache: RedisSessionCache) -> Flask:
    app: Flask = backend.app
    SessionStore(app, datastore=backend.datastore, cache=cache)
    return app


@pytest.fixture
def cds(backend: Backend, capp: Flask) -> Iterator[Any]:
    with backend.unit(capp):
        yield backend.datastore


@contextmanager
def redis_commands(cache: RedisSessionCache) -> Iterator[list[str]]:
    """Record the commands the cache sends to Redis inside the block."""
    sent: list[str] = []
    real = cache.client.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[0]))
        return real(*args, **kwargs)

    cache.client.execute_command = counting  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        del cache.client.execute_command


def _seed(ds: Any) -> None:
    ds.create_role(name="admin")
    ds.create_user(email="ann@example.com", password="pw", roles=["admin"])


def _login(client: Any) -> None:
    response = client.post("/login", data={"email": "ann@example.com", "password": "pw"})
    assert response.status_code == 200


def _key(session_id: str) -> str:
    from flask_sessionstore.datastore import session_key

    return session_key(session_id)


def _cookie(client: Any) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return str(cookie.value)


def test_s19_the_cache_never_serves_an_ended_session(capp: Flask, cds: Any) -> None:
    _seed(cds)
    ann = cds.find_user(email="ann@example.com")
    client = capp.test_client()
    _login(client)
    assert client.get("/me").status_code == 200  # now cached

    # logout from a copy of the cookie
    copy = capp.test_client()
    copy.set_cookie("session", _cookie(client))
    assert copy.get("/me").status_code == 200
    copy.post("/logout")
    assert client.get("/me").status_code == 401

    # revoke, password change and rotation
    for end in ("revoke", "password", "delete_all"):
        client = capp.test_client()
        _login(client)
        assert client.get("/admin").status_code == 200
        old = _cookie(client)
        if end == "revoke":
            cds.revoke_user_sessions(ann)
        elif end == "password":
            cds.change_password(ann, "pw")
        else:
            cds.sessions.delete_all()
        replay = capp.test_client()
        replay.set_cookie("session", old)
        assert replay.get("/me").status_code == 401, end

    client = capp.test_client()
    client.post("/cart")
    anonymous = _cookie(client)
    assert client.get("/cart").get_json() == {"cart": 1}
    _login(client)  # rotation
    replay = capp.test_client()
    replay.set_cookie("session", anonymous)
    assert replay.get("/cart").get_json() == {"cart": 0}
    assert client.get("/cart").get_json() == {"cart": 1}


def test_a_cache_hit_skips_the_session_query(
    capp: Flask, cds: Any, backend: Backend, cache: RedisSessionCache
) -> None:
    _seed(cds)
    client = capp.test_client()
    _login(client)
    client.post("/cart")
    client.get("/admin")
    with backend.count() as counter, redis_commands(cache) as sent:
        assert client.get("/admin").status_code == 200
    assert sent == ["GET"]
    assert counter.writes == []
    assert counter.count <= backend.budget("role_check")  # the user and roles only

    anonymous = capp.test_client()
    anonymous.post("/cart")
    anonymous.get("/cart")
    with backend.count() as counter, redis_commands(cache) as sent:
        assert anonymous.get("/cart").get_json() == {"cart": 1}
    assert counter.count == 0
    assert sent == ["GET"]

    with backend.count() as counter, redis_commands(cache) as sent:
        assert anonymous.post("/cart").get_json() == {"cart": 2}
    assert sent == ["GET", "EVALSHA"]  # read, then write-through unless ended
    assert len(counter.writes) == 1


def test_a_dead_redis_falls_back_to_the_database(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    app: Flask = backend.app
    dead = RedisSessionCache(_client(DEAD_URL), retry_after=timedelta(seconds=60))
    SessionStore(app, datastore=backend.datastore, cache=dead)
    with backend.unit(app):
        _seed(backend.datastore)
    caplog.set_level(logging.ERROR, logger="flask_sessionstore.cache")
    client = app.test_client()
    _login(client)
    for _ in range(5):
        assert client.get("/admin").status_code == 200
        assert client.post("/cart").status_code == 200
    client.post("/logout")
    assert client.get("/me").status_code == 401
    outage_lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage_lines) == 1  # logged once, not per request


def test_an_end_missed_during_an_outage_is_not_served_after_it(
    capp: Flask, cds: Any, cache: RedisSessionCache, redis_url: str
) -> None:
    _seed(cds)
    ann = cds.find_user(email="ann@example.com")
    client = capp.test_client()
    _login(client)
    assert client.get("/me").status_code == 200  # cached
    old = _cookie(client)
    cache.client = _client(DEAD_URL)  # Redis goes away...
    cds.revoke_user_sessions(ann)  # ...while the session ends: no tombstone written
    assert client.get("/me").status_code == 401  # from the database
    cache.client = _client(redis_url)  # Redis is back, with the stale entry in it
    assert cache.client.get(cache.prefix + _key(old)) is not None
    replay = capp.test_client()
    replay.set_cookie("session", old)
    assert replay.get("/me").status_code == 401
    left = {cache.client.get(name) for name in cache.client.scan_iter(match=cache.prefix + "*")}
    assert left == set(), left


def test_s36_write_access_to_redis_is_not_a_login(
    capp: Flask, cds: Any, cache: RedisSessionCache
) -> None:
    """Finding 10: an entry written straight into Redis, for a session id of the
    attacker's choosing, naming the admin (its fields copied from the admin's own
    entry, which read access shows), opens nothing."""
    _seed(cds)
    admin = capp.test_client()
    _login(admin)
    assert admin.get("/admin").status_code == 200  # the admin's entry is cached now
    real = cache.client.get(cache.prefix + _key(_cookie(admin)))
    assert real is not None
    forged_id = "F" * 43
    cache.client.set(cache.prefix + _key(forged_id), real)
    attacker = capp.test_client()
    attacker.set_cookie("session", forged_id)
    assert attacker.get("/admin").status_code == 401
    assert attacker.get("/me").status_code == 401


def test_s36_a_tampered_entry_is_not_trusted(
    capp: Flask, cds: Any, cache: RedisSessionCache
) -> None:
    _seed(cds)
    client = capp.test_client()
    client.post("/cart")
    client.get("/cart")  # cached
    name = cache.prefix + _key(_cookie(client))
    raw = cache.client.get(name)
    assert raw is not None and b'\\"cart\\":1' in raw
    cache.client.set(name, raw.replace(b'\\"cart\\":1', b'\\"cart\\":99'))
    assert client.get("/cart").get_json() == {"cart": 1}  # the database answers
