"""An optional Redis cache in front of the session rows: :class:`CachedSessionRows`.

It is a layer, not a part of any ORM: :class:`CachedSessionRows` wraps whatever
:class:`~flask_sessionstore.contract.SessionRows` an ORM provides, as Django's
``cached_db`` wraps ``db``. The database stays the truth; the cache only saves reads:

* a read that misses goes to the database and then *adds* the row to the cache, never
  overwriting an entry (so a slow reader cannot put back older data);
* a write goes to the database first, then replaces the entry, unless the entry says
  the session ended; a renewal that did not change the data drops the entry instead,
  so it never writes older data over a newer write;
* every entry carries a MAC under the app's secret over the session's key and all its
  fields (S36): an entry someone wrote straight into Redis is not trusted, so write
  access to Redis is not a login;
* every end of a session (logout, revoke, rotation, expiry found on update) writes a
  short-lived tombstone after the database delete, so no reader can bring the entry
  back (S19);
* when Redis cannot be reached, requests use the database alone, the outage is logged
  once, and a process that could not write a tombstone empties the cache's keys before
  it trusts the cache again.

Every command touches one key, so the cache works on Redis Cluster.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from .contract import SessionRows
from .records import ANY_USER, SessionRecord, utcnow

if TYPE_CHECKING:
    import redis

__all__ = ["CachedSessionRows", "RedisSessionCache"]

log = logging.getLogger("flask_sessionstore.cache")

T = TypeVar("T")

_TOMBSTONE = "ended"

# Replace the entry unless it is a tombstone. KEYS[1]: the entry; ARGV: value, ttl in ms.
_REPLACE_UNLESS_ENDED = """
if redis.call('GET', KEYS[1]) == '%s' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
""" % _TOMBSTONE  # noqa: UP031 (a Lua literal)

# Drop the entry unless it is a tombstone (which must outlive any reader that loaded the
# row before it ended). KEYS[1]: the entry.
_FORGET_UNLESS_ENDED = """
if redis.call('GET', KEYS[1]) == '%s' then return 0 end
return redis.call('DEL', KEYS[1])
""" % _TOMBSTONE  # noqa: UP031 (a Lua literal)

#: How many sessions' fixed fields (owner, creation, client) a process remembers, to
#: write a whole entry after a data change without reading it back.
_REMEMBERED = 4096


class RedisSessionCache:
    """Session rows cached in Redis.

    :param client: a ``redis.Redis`` (or ``redis.RedisCluster``) client. Give it short
        socket timeouts: a Redis that hangs would otherwise hang requests.
    :param prefix: prepended to every key.
    :param ttl: the longest an entry (or a tombstone) lives; an entry never outlives its
        session.
    :param retry_after: how long to leave Redis alone after a failure.
    :param secret: the key entries are authenticated with (S36); ``SessionStore`` sets
        the app's ``SECRET_KEY`` when none is given. An entry whose MAC does not verify
        (written by someone who can write to Redis but does not know the key) is ignored
        and the database answers: write access to Redis is not a login.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "sessionstore:",
                 ttl: timedelta = timedelta(hours=1),
                 retry_after: timedelta = timedelta(seconds=5),
                 secret: str | bytes | None = None) -> None:
        self.client = client
        self.secret = secret
        self.prefix = prefix
        self.ttl = ttl
        self.retry_after = retry_after.total_seconds()
        self._replace = client.register_script(_REPLACE_UNLESS_ENDED)
        self._forget = client.register_script(_FORGET_UNLESS_ENDED)
        self._down_until = 0.0
        self._outage_logged = False
        self._dirty = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisSessionCache:
        """Make a cache on the Redis at ``url``, with 250 ms socket timeouts."""
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        return cls(client, **options)

    # -- the operations CachedSessionRows uses --------------------------------------

    def get(self, key: str) -> SessionRecord | bool | None:
        """Return the cached record, False when the session is known to have ended, or
        None when the cache cannot say (a miss, or Redis is unavailable)."""
        raw = self._call(lambda: self.client.get(self.prefix + key), None)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        if text == _TOMBSTONE:
            return False
        record = _decode(key, text, self._mac_key())
        if record is None:
            log.warning("session cache entry %s failed its check; not trusted", key[:12])
        return record

    def add(self, record: SessionRecord, now: datetime) -> None:
        """Cache ``record`` if nothing (no entry, no tombstone) is cached for it."""
        ttl_ms = self._ttl_ms(record, now)
        if ttl_ms > 0:
            self._call(lambda: self.client.set(
                self.prefix + record.key, _encode(record, self._mac_key()), px=ttl_ms,
                nx=True), None)

    def replace(self, record: SessionRecord, now: datetime) -> None:
        """Cache ``record`` after a write, unless its session has ended meanwhile."""
        ttl_ms = self._ttl_ms(record, now)
        if ttl_ms > 0:
            self._call(lambda: self._replace(
                keys=[self.prefix + record.key],
                args=[_encode(record, self._mac_key()), ttl_ms]), None)

    def forget(self, key: str) -> None:
        """Drop the entry of ``key`` (not a tombstone): the next read reloads it."""
        self._call(lambda: self._forget(keys=[self.prefix + key]), None)

    def _mac_key(self) -> bytes:
        if not self.secret:
            raise RuntimeError(
                "RedisSessionCache needs a secret to authenticate its entries: set the "
                "app's SECRET_KEY, or pass secret= to the cache."
            )
        secret = self.secret.encode() if isinstance(self.secret, str) else self.secret
        # A key of its own, so that no MAC here is a valid cookie signature, or the reverse.
        return hashlib.sha256(b"flask-sessionstore.cache\x00" + secret).digest()

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


def _encode(record: SessionRecord, mac_key: bytes) -> str:
    payload = json.dumps([
        None if record.user_pk is None else str(record.user_pk),
        record.data,
        record.created_at.isoformat(),
        record.last_seen_at.isoformat(),
        record.expires_at.isoformat(),
        record.user_agent,
        record.ip_address,
        record.stamp,
    ])
    return f"{payload}|{_mac(mac_key, record.key, payload)}"


def _decode(key: str, text: str, mac_key: bytes) -> SessionRecord | None:
    payload, _, mac = text.rpartition("|")
    # The MAC covers the session's key too: an entry copied under another key (a
    # session id the copier knows) does not verify.
    if not hmac.compare_digest(mac, _mac(mac_key, key, payload)):
        return None
    try:
        user_pk, data, created, seen, expires, agent, address, stamp = json.loads(payload)
        return SessionRecord(
            key=key, user_pk=user_pk, data=data,
            created_at=datetime.fromisoformat(created),
            last_seen_at=datetime.fromisoformat(seen),
            expires_at=datetime.fromisoformat(expires),
            user_agent=agent, ip_address=address, stamp=stamp,
        )
    except (ValueError, TypeError):
        return None  # Not ours, or from another version: the database answers.


def _mac(mac_key: bytes, key: str, payload: str) -> str:
    return hmac.new(mac_key, f"{key}\n{payload}".encode(), hashlib.sha256).hexdigest()


class CachedSessionRows(SessionRows):
    """Any ORM's session rows with a :class:`RedisSessionCache` in front.

    :param rows: the ORM's rows, the truth.
    :param cache: the Redis cache.
    :param load_user: returns the user (with its roles) whose key, as text, a cached
        entry names, or None; a cache hit then costs no session query.
    """

    def __init__(self, rows: SessionRows, cache: RedisSessionCache,
                 load_user: Callable[[str], Any]) -> None:
        self.inner = rows
        self.cache = cache
        self.load_user = load_user
        # The fields of a row that never change while its key lives; remembered from
        # the reads of this process, so a data change can write a whole entry.
        self._fixed: OrderedDict[str, SessionRecord] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def purge_batch(self) -> int:  # type: ignore[override]
        """The inner rows' batch, asked when needed (it may depend on the app's engine)."""
        return self.inner.purge_batch

    def _remember(self, record: SessionRecord) -> None:
        with self._lock:
            self._fixed[record.key] = record
            self._fixed.move_to_end(record.key)
            while len(self._fixed) > _REMEMBERED:
                self._fixed.popitem(last=False)

    def _forget(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._fixed.pop(key, None)

    def insert(self, record: SessionRecord) -> None:
        self.inner.insert(record)
        self._remember(record)

    def load(self, key: str, now: datetime) -> tuple[SessionRecord, Any] | None:
        cached = self.cache.get(key)
        if cached is False:
            return None
        if isinstance(cached, SessionRecord) and cached.expires_at > now:
            if cached.user_pk is None:
                self._remember(cached)
                return cached, None
            user = self.load_user(str(cached.user_pk))
            if user is not None:
                self._remember(cached)
                return cached, user
        found = self.inner.load(key, now)
        if found is not None:
            self._remember(found[0])
            self.cache.add(found[0], now)
        return found

    def update(self, key: str, now: datetime, *, data: str | None,
               expires_at: datetime) -> bool:
        updated = self.inner.update(key, now, data=data, expires_at=expires_at)
        if not updated:
            self._forget([key])
            self.cache.end([key])
            return False
        with self._lock:
            fixed = self._fixed.get(key)
        if data is not None and fixed is not None:
            self.cache.replace(SessionRecord(
                key=key, user_pk=fixed.user_pk, data=data, created_at=fixed.created_at,
                last_seen_at=now, expires_at=expires_at, user_agent=fixed.user_agent,
                ip_address=fixed.ip_address, stamp=fixed.stamp,
            ), now)
        else:
            # A renewal alone never writes data: this request's copy may be older than
            # another tab's write. The entry is dropped instead (the next read reloads
            # it from the database, one read per renewal interval), since an entry is
            # only ever written whole, under its MAC.
            self.cache.forget(key)
        return True

    def delete(self, keys: Iterable[str]) -> int:
        keys = list(keys)
        count = self.inner.delete(keys)
        self._forget(keys)
        self.cache.end(keys)
        return count

    def delete_owned(self, owner: Any, *, keep: str | None = None) -> int:
        # The keys are read first: the rows are gone afterwards, their tombstones not.
        keys = [r.key for r in self.inner.find(utcnow(), owner=owner) if r.key != keep]
        count = self.inner.delete_owned(owner, keep=keep)
        self._forget(keys)
        self.cache.end(keys)
        return count

    def clear(self) -> int:
        count = self.inner.clear()
        with self._lock:
            self._fixed.clear()
        self.cache.clear()
        return count

    def find(self, now: datetime, *, owner: Any = ANY_USER, offset: int = 0,
             limit: int | None = None) -> list[SessionRecord]:
        return self.inner.find(now, owner=owner, offset=offset, limit=limit)

    def count(self, now: datetime, *, owner: Any = ANY_USER, expired: bool = False) -> int:
        return self.inner.count(now, owner=owner, expired=expired)

    def purge(self, now: datetime, limit: int) -> int:
        return self.inner.purge(now, limit)
