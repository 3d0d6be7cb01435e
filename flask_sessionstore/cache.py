"""An optional Redis cache in front of the session rows.

The database stays the truth; the cache only saves reads of it:

* a read that misses goes to the database and then *adds* the row to the cache, never
  overwriting an entry (so a slow reader cannot put back older data);
* a write goes to the database first, then replaces the entry, unless the entry says
  the session ended;
* every end of a session (logout, revoke, rotation, expiry found on update) writes a
  short-lived tombstone after the database delete, so no reader can bring the entry
  back (S19);
* when Redis cannot be reached, requests use the database alone, the outage is logged
  once, and a process that could not write a tombstone empties the cache's keys before
  it trusts the cache again.

Every command touches one key, so the cache works on Redis Cluster.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from .datastore import SessionRecord

if TYPE_CHECKING:
    import redis

__all__ = ["RedisSessionCache"]

log = logging.getLogger("flask_sessionstore.cache")

T = TypeVar("T")

_TOMBSTONE = "ended"

# Replace the entry unless it is a tombstone. KEYS[1]: the entry; ARGV: value, ttl in ms.
_REPLACE_UNLESS_ENDED = """
if redis.call('GET', KEYS[1]) == '%s' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
""" % _TOMBSTONE  # noqa: UP031 (a Lua literal)


class RedisSessionCache:
    """Session rows cached in Redis.

    :param client: a ``redis.Redis`` (or ``redis.RedisCluster``) client. Give it short
        socket timeouts: a Redis that hangs would otherwise hang requests.
    :param prefix: prepended to every key.
    :param ttl: the longest an entry (or a tombstone) lives; an entry never outlives its
        session.
    :param retry_after: how long to leave Redis alone after a failure.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "sessionstore:",
                 ttl: timedelta = timedelta(hours=1),
                 retry_after: timedelta = timedelta(seconds=5)) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.retry_after = retry_after.total_seconds()
        self._replace = client.register_script(_REPLACE_UNLESS_ENDED)
        self._down_until = 0.0
        self._outage_logged = False
        self._dirty = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisSessionCache:
        """Make a cache on the Redis at ``url``, with 250 ms socket timeouts."""
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        return cls(client, **options)

    # -- the four operations the datastore uses ------------------------------------

    def get(self, key: str) -> SessionRecord | bool | None:
        """Return the cached record, False when the session is known to have ended, or
        None when the cache cannot say (a miss, or Redis is unavailable)."""
        raw = self._call(lambda: self.client.get(self.prefix + key), None)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        if text == _TOMBSTONE:
            return False
        return _decode(key, text)

    def add(self, record: SessionRecord, now: datetime) -> None:
        """Cache ``record`` if nothing (no entry, no tombstone) is cached for it."""
        ttl_ms = self._ttl_ms(record, now)
        if ttl_ms > 0:
            self._call(lambda: self.client.set(
                self.prefix + record.key, _encode(record), px=ttl_ms, nx=True), None)

    def replace(self, record: SessionRecord, now: datetime) -> None:
        """Cache ``record`` after a write, unless its session has ended meanwhile."""
        ttl_ms = self._ttl_ms(record, now)
        if ttl_ms > 0:
            self._call(lambda: self._replace(
                keys=[self.prefix + record.key], args=[_encode(record), ttl_ms]), None)

    def end(self, keys: Iterable[str]) -> None:
        """Mark the sessions stored under ``keys`` as ended (after their rows went)."""
        ttl_ms = int(self.ttl.total_seconds() * 1000)
        for key in keys:
            command = partial(self.client.set, self.prefix + key, _TOMBSTONE, px=ttl_ms)
            ok = self._call(command, None)
            if ok is None:
                # This end may be missing from the cache: do not trust the cache again
                # before it has been emptied.
                self._dirty = True

    def clear(self) -> None:
        """Remove every entry of this cache (one key at a time: cluster-safe)."""
        def wipe() -> bool:
            for name in self.client.scan_iter(match=self.prefix + "*", count=500):
                self.client.delete(name)
            return True

        if self._call(wipe, None) is None:
            self._dirty = True

    # -- failure handling ----------------------------------------------------------

    def _call(self, command: Callable[[], T], failed: T) -> T:
        import redis

        if time.monotonic() < self._down_until:
            return failed
        try:
            if self._dirty:
                for name in self.client.scan_iter(match=self.prefix + "*", count=500):
                    self.client.delete(name)
                self._dirty = False
                log.warning("session cache emptied after an outage")
            result = command()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._down_until = time.monotonic() + self.retry_after
            if not self._outage_logged:
                log.error("session cache unavailable, using the database alone: %s", exc)
                self._outage_logged = True
            return failed
        if self._outage_logged:
            log.warning("session cache available again")
            self._outage_logged = False
        return result

    def _ttl_ms(self, record: SessionRecord, now: datetime) -> int:
        remaining = min(record.expires_at - now, self.ttl)
        return int(remaining.total_seconds() * 1000)


def _encode(record: SessionRecord) -> str:
    return json.dumps([
        None if record.user_pk is None else str(record.user_pk),
        record.data,
        record.created_at.isoformat(),
        record.last_seen_at.isoformat(),
        record.expires_at.isoformat(),
        record.user_agent,
        record.ip_address,
    ])


def _decode(key: str, text: str) -> SessionRecord | None:
    try:
        user_pk, data, created, seen, expires, agent, address = json.loads(text)
        return SessionRecord(
            key=key, user_pk=user_pk, data=data,
            created_at=datetime.fromisoformat(created),
            last_seen_at=datetime.fromisoformat(seen),
            expires_at=datetime.fromisoformat(expires),
            user_agent=agent, ip_address=address,
        )
    except (ValueError, TypeError):
        return None  # Not ours, or from another version: the database answers.
