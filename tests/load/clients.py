"""Clients of the load app: each logged in as its own user, each checking every answer.

A client sends one request at a time (a browser tab that waits for each answer), so it
always knows what its session must hold: the counter it has seen acknowledged. Every
answer that shows an email or a counter is checked against the client's own:

* another user's email is a *leak*;
* a counter below the acknowledged one is a *lost write*;
* a counter above anything the client wrote is a *phantom*.

A request the server could not answer for sure (a 503, or a dropped connection) may
still have been stored: a commit can succeed on the server while its acknowledgement
is lost. The client then widens what it accepts until its next clear answer, and counts
what it finds (``ghost_writes``, ``ghost_password_changes``) instead of calling it a bug.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

__all__ = ["Account", "Client", "ClientStats", "Gate", "Reply", "send", "session_cookie",
           "session_key_of"]

#: The longest a client waits for one answer.
REQUEST_TIMEOUT = 15.0
#: The pause after a 503 or a dropped connection, before the next request. Short, so
#: that recovery is measured to a tenth of a second (a browser would honour Retry-After).
BACKOFF = 0.1
#: What every 503 of the library says.
UNAVAILABLE_TEXT = "database is unavailable"
COOKIE_NAME = "session"
#: At most this many problem descriptions are kept per client.
SAMPLES = 5


@dataclass(frozen=True)
class Account:
    """A user of the load database and the two passwords it alternates between."""

    user_id: int
    email: str
    passwords: tuple[str, str]


@dataclass(frozen=True)
class Reply:
    """One answer. ``status`` 0 means none came (refused, reset or timed out)."""

    status: int
    body: bytes
    started: float
    ended: float
    retry_after: str | None = None
    content_type: str | None = None
    set_cookies: tuple[str, ...] = ()

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ClientStats:
    """What one client saw. Every field but the last two should stay 0 on a correct
    library; ``ghost_*`` and ``sessions_ended_by_failure`` are explained by a failed
    request and counted to be shown, not blamed."""

    lost_writes: int = 0
    leaks: int = 0
    phantoms: int = 0
    zombies: int = 0
    sessions_lost: int = 0
    logins_refused: int = 0
    bad_unavailable: int = 0
    unexpected: int = 0
    ghost_writes: int = 0
    ghost_password_changes: int = 0
    sessions_ended_by_failure: int = 0
    #: Requests without a clear answer that may have stored a session row the client
    #: never got the cookie of (such rows are orphans until they expire).
    ambiguous_row_requests: int = 0
    samples: list[str] = field(default_factory=list)
    #: (started, ended, status) of every request, for the outage windows.
    replies: list[tuple[float, float, int]] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.samples) < SAMPLES:
            self.samples.append(text)


class Gate:
    """Lets the scenario stop every client between two requests and start them again.

    Clients :meth:`enter` before each request and :meth:`leave` after it; :meth:`pause`
    returns once no request is in flight, so the database can be read while nothing
    writes to it.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._paused = False
        self._busy = 0

    def enter(self, deadline: float) -> bool:
        """Wait while paused; False if ``deadline`` passed meanwhile."""
        with self._condition:
            while self._paused:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(min(left, 0.5))
            self._busy += 1
            return True

    def leave(self) -> None:
        with self._condition:
            self._busy -= 1
            self._condition.notify_all()

    def pause(self, timeout: float) -> None:
        """Hold every client before its next request and wait for those in flight.

        :raises TimeoutError: when requests are still in flight after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            self._paused = True
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self._busy} requests still in flight")
                self._condition.wait(left)

    def resume(self) -> None:
        with self._condition:
            self._paused = False
            self._condition.notify_all()


def send(port: int, method: str, path: str, form: dict[str, str] | None = None, *,
         cookie: str | None = None, accept: str = "application/json") -> Reply:
    """Send one request to the load app on 127.0.0.1:``port``; never raises for a
    failed connection (the reply's status is then 0)."""
    # A new connection per request, so that a client's requests spread over every
    # worker, as many browsers' would.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    headers = {"Accept": accept, "Connection": "close"}
    if cookie is not None:
        headers["Cookie"] = f"{COOKIE_NAME}={cookie}"
    body = None
    if form is not None:
        body = urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    started = time.monotonic()
    try:
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException):
        return Reply(0, b"", started, time.monotonic())
    finally:
        connection.close()
    return Reply(
        response.status, data, started, time.monotonic(),
        retry_after=response.headers.get("Retry-After"),
        content_type=response.headers.get("Content-Type"),
        set_cookies=tuple(response.headers.get_all("Set-Cookie") or ()),
    )


def session_cookie(reply: Reply, current: str | None) -> str | None:
    """The session id a client holds after ``reply``, which may set or delete it."""
    for header in reply.set_cookies:
        first, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        if name != COOKIE_NAME:
            continue
        max_age = {attribute.partition("=")[0].lower(): attribute.partition("=")[2]
                   for attribute in attributes}.get("max-age")
        current = None if not value or max_age == "0" else value
    return current


def session_key_of(session_id: str) -> str:
    """The key the store files a session id under (the library's own rule, restated
    here so the check does not trust the code it checks)."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


class Client:
    """One user's browser: logs in, reads, writes its counter, logs out, changes its
    password, for as long as the run lasts. Run :meth:`run` in a thread."""

    def __init__(self, account: Account, port: int, gate: Gate, *, deadline: float,
                 seed: int, max_requests: int, think: float = 0.0) -> None:
        self.account = account
        self.port = port
        self.gate = gate
        self.deadline = deadline
        self.max_requests = max_requests
        self.think = think
        self.random = random.Random(seed)
        self.stats = ClientStats()
        self.cookie: str | None = None
        self.logged_in = False
        #: The counter this client knows is stored...
        self.expected = 0
        #: ...plus this many unanswered increments that may have been stored too.
        self.unsure = 0
        #: A failed login, logout or password change may have ended the session.
        self.session_unsure = False
        self.password = 0
        #: A failed password change may have been stored: the other password may apply.
        self.password_unsure = False
        #: A session id this client saw end (logout, rotation): it must never work again.
        self.ended_cookie: str | None = None
        self.finished = False

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        try:
            for _ in range(self.max_requests):
                if time.monotonic() >= self.deadline or not self.gate.enter(self.deadline):
                    break
                try:
                    failed = self._step()
                finally:
                    self.gate.leave()
                if failed:
                    time.sleep(BACKOFF)
                elif self.think:
                    time.sleep(self.think)
        finally:
            self.finished = True

    def _step(self) -> bool:
        """Send one request; True if it got no clear answer (503 or none)."""
        if not self.logged_in:
            if self.ended_cookie is not None and self.random.random() < 0.3:
                return self._replay_ended()
            return self._login()
        if self.password_unsure:
            # Settle which password holds before changing it again: log out, log in.
            return self._logout()
        draw = self.random.random()
        if draw < 0.45:
            return self._read()
        if draw < 0.80:
            return self._write()
        if draw < 0.85:
            return self._login()
        if draw < 0.90:
            return self._change_password()
        if draw < 0.93 and self.ended_cookie is not None:
            return self._replay_ended()
        return self._logout()

    # -- actions -------------------------------------------------------------------

    def _read(self) -> bool:
        reply = self._send("GET", "/me")
        if reply.status == 200:
            self._observe(reply, wrote=False)
        elif reply.status == 401:
            self._session_gone(reply, "GET /me")
        else:
            return self._failed(reply)
        return False

    def _write(self) -> bool:
        reply = self._send("POST", "/counter")
        if reply.status == 200:
            self._observe(reply, wrote=True)
        elif reply.status == 401:
            self._session_gone(reply, "POST /counter")
        else:
            self.unsure += 1
            return self._failed(reply)
        return False

    def _login(self) -> bool:
        was_logged_in = self.logged_in
        old = self.cookie
        for attempt in (self.password, 1 - self.password):
            reply = self._send("POST", "/login", {
                "email": self.account.email, "password": self.account.passwords[attempt],
            })
            if reply.status == 200:
                if attempt != self.password:
                    self.stats.ghost_password_changes += 1
                    self.password = attempt
                self.password_unsure = False
                if not was_logged_in:
                    self.expected, self.unsure = 0, 0
                self.logged_in, self.session_unsure = True, False
                self._observe(reply, wrote=False)
                self._check_rotated(old, "login")
                return False
            if reply.status != 401:
                if was_logged_in:
                    # The old row may be deleted and the new one not stored.
                    self.session_unsure = True
                self.stats.ambiguous_row_requests += 1
                return self._failed(reply)
            if not self.password_unsure:
                break
        self.stats.logins_refused += 1
        self.stats.note(f"login refused for {self.account.email}")
        return False

    def _change_password(self) -> bool:
        new = 1 - self.password
        old = self.cookie
        reply = self._send("POST", "/password",
                           {"new_password": self.account.passwords[new]})
        if reply.status == 200:
            self.password = new
            self._observe(reply, wrote=False)
            self._check_rotated(old, "password change")
        elif reply.status == 401:
            self._session_gone(reply, "POST /password")
        else:
            # The new password may be committed while the session's rotation failed.
            self.password_unsure = self.session_unsure = True
            self.stats.ambiguous_row_requests += 1
            return self._failed(reply)
        return False

    def _logout(self) -> bool:
        old = self.cookie
        reply = self._send("POST", "/logout")
        if reply.status == 200:
            if self.cookie is not None:
                self.stats.unexpected += 1
                self.stats.note("logout answered 200 but kept the session cookie")
                self.cookie = None
            self._logged_out(old)
            return False
        self.session_unsure = True
        return self._failed(reply)

    def _replay_ended(self) -> bool:
        """Send a session id that ended (by logout or rotation): it must open nothing."""
        assert self.ended_cookie is not None
        reply = self._send("GET", "/me", cookie=self.ended_cookie, keep_cookies=False)
        if reply.status == 200:
            self.stats.zombies += 1
            self.stats.note(f"an ended session id still opened {reply.body[:80]!r}")
            self._check_email(reply)
        elif reply.status == 401:
            self.ended_cookie = None
        else:
            return self._failed(reply)
        return False

    # -- checks --------------------------------------------------------------------

    def _observe(self, reply: Reply, *, wrote: bool) -> None:
        """Check an answer showing this client's email and counter; adopt the counter."""
        payload = self._check_email(reply)
        if payload is None:
            return
        shown = payload.get("n")
        if not isinstance(shown, int):
            self.stats.unexpected += 1
            self.stats.note(f"no counter in {reply.body[:80]!r}")
            return
        low = self.expected + (1 if wrote else 0)
        high = low + self.unsure
        if shown < low:
            self.stats.lost_writes += low - shown
            self.stats.note(f"{self.account.email}: counter {shown}, expected at least {low}")
        elif shown > high:
            self.stats.phantoms += 1
            self.stats.note(f"{self.account.email}: counter {shown}, expected at most {high}")
        else:
            self.stats.ghost_writes += shown - low
        self.expected, self.unsure = shown, 0
        self.session_unsure = False

    def _check_email(self, reply: Reply) -> dict[str, Any] | None:
        try:
            payload = reply.json()
        except ValueError:
            self.stats.unexpected += 1
            self.stats.note(f"not JSON: {reply.body[:80]!r}")
            return None
        if payload.get("email") != self.account.email:
            self.stats.leaks += 1
            self.stats.note(f"{self.account.email} was shown {payload.get('email')!r}")
            return None
        return dict(payload)

    def _check_rotated(self, old: str | None, what: str) -> None:
        if old is None:
            return
        if self.cookie == old:
            self.stats.unexpected += 1
            self.stats.note(f"{what} kept the session id")
        else:
            self.ended_cookie = old

    def _session_gone(self, reply: Reply, what: str) -> None:
        """A 401 where the client thought it was logged in."""
        if self.session_unsure:
            self.stats.sessions_ended_by_failure += 1
        else:
            self.stats.sessions_lost += 1
            self.stats.note(f"{self.account.email}: {what} answered 401 to a live session")
        self.cookie = None
        self._logged_out(None)

    def _logged_out(self, old: str | None) -> None:
        self.logged_in = self.session_unsure = False
        self.expected = self.unsure = 0
        if old is not None:
            self.ended_cookie = old

    def _failed(self, reply: Reply) -> bool:
        """Check a 5xx (or no answer) and return True (the request failed)."""
        if reply.status == 503:
            text = reply.body.decode("utf-8", "replace")
            if UNAVAILABLE_TEXT not in text or "Traceback" in text or not reply.retry_after:
                self.stats.bad_unavailable += 1
                self.stats.note(f"503 without the message: {text[:120]!r}")
        elif reply.status >= 500:
            self.stats.note(f"{reply.status}: {reply.body[:200]!r}")
        elif reply.status != 0:
            self.stats.unexpected += 1
            self.stats.note(f"unexpected {reply.status}: {reply.body[:120]!r}")
        return True

    # -- HTTP ----------------------------------------------------------------------

    def _send(self, method: str, path: str, form: dict[str, str] | None = None, *,
              cookie: str | None = None, keep_cookies: bool = True) -> Reply:
        reply = send(self.port, method, path, form,
                     cookie=cookie if cookie is not None else self.cookie)
        self.stats.replies.append((reply.started, reply.ended, reply.status))
        if keep_cookies:
            # As a browser does, whatever the status.
            self.cookie = session_cookie(reply, self.cookie)
        return reply
