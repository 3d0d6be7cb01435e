"""One load run: clients against gunicorn, the database restarted twice under them, and
the figures that tell whether anything was lost, leaked or failed outside the outages.

The timeline of a run (``LoadPlan`` gives the times):

1. load;
2. **restart under load**: the database is stopped while requests are in flight (its
   fast shutdown ends every connection, open transactions included), left down for
   ``outage`` seconds, started again; the clients never stop;
3. load;
4. **restart with a row check**: the clients are held between two requests, every
   session row is read, the database is stopped, the clients are let go against it for
   ``outage`` seconds (they meet only 503s), held again, the database is started and
   the rows are read again: they must be exactly those read before. Then the clients
   go on;
5. load until the end; the rows are compared with what the clients hold.

Recovery is measured for each restart and each client, from the moment the database
answered again (the clients let go, for the second) to the end of the client's first
200.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.pool import NullPool

from .app import COUNTER, database_url
from .clients import REQUEST_TIMEOUT, Account, Client, Gate, session_key_of
from .servers import Outage, PrivateServer
from .webserver import Gunicorn

__all__ = ["FULL_ENV", "Figures", "LoadPlan", "RowCheck", "SessionRows", "make_accounts",
           "run_scenario"]

#: Set to 1 for the full run (200 clients, 60 s per database).
FULL_ENV = "SESSIONSTORE_LOAD_FULL"
#: The most requests one client sends in a run, whatever its length (a bound, not a
#: target: a client sends what the time allows).
MAX_REQUESTS_PER_CLIENT = 100_000


@dataclass(frozen=True)
class LoadPlan:
    """How many clients, for how long, and when the database is restarted (seconds
    from the start)."""

    name: str
    clients: int
    duration: float
    outage: float
    hard_restart_at: float
    quiet_restart_at: float

    @classmethod
    def short(cls) -> LoadPlan:
        """The run of every ``python -m pytest``: about 25 seconds per database."""
        return cls("short", clients=50, duration=20.0, outage=2.0,
                   hard_restart_at=5.0, quiet_restart_at=11.0)

    @classmethod
    def full(cls) -> LoadPlan:
        """``SESSIONSTORE_LOAD_FULL=1``: 200 clients for 60 seconds per database."""
        return cls("full", clients=200, duration=60.0, outage=5.0,
                   hard_restart_at=15.0, quiet_restart_at=35.0)

    @classmethod
    def from_env(cls) -> LoadPlan:
        return cls.full() if os.environ.get(FULL_ENV) == "1" else cls.short()


@dataclass(frozen=True)
class SessionRow:
    key: str
    user_id: int | None
    data: str
    expires_at: Any
    last_seen_at: Any


class SessionRows:
    """Reads the session table directly, on connections of its own (none is kept, so
    a restart of the server leaves nothing stale here)."""

    def __init__(self, server: PrivateServer) -> None:
        self.engine = sa.create_engine(database_url(server.url), poolclass=NullPool)

    def read(self) -> list[SessionRow]:
        query = sa.text("SELECT `key`, user_id, data, expires_at, last_seen_at "
                        "FROM sessionstore_session")
        if self.engine.dialect.name == "postgresql":
            query = sa.text(str(query).replace("`", '"'))
        with self.engine.connect() as connection:
            return [SessionRow(*row) for row in connection.execute(query)]

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass
class RowCheck:
    """Stored rows compared with the sessions the clients hold."""

    rows: int = 0
    live_sessions: int = 0
    matched: int = 0
    #: A client logged in with no row for its cookie, and no failed request to explain it.
    missing: int = 0
    #: ...the same, explained by a failed request (the session may have ended).
    missing_explained: int = 0
    #: A row with another user, or a counter the client cannot have.
    mismatched: int = 0
    #: Rows no client holds a cookie for.
    orphans: int = 0
    #: Requests without a clear answer that may have left such a row.
    orphans_allowed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return (not self.missing and not self.mismatched
                and self.orphans <= self.orphans_allowed)


def check_rows(rows: Sequence[SessionRow], clients: Sequence[Client]) -> RowCheck:
    """Compare the rows with the clients, which must all be between two requests."""
    check = RowCheck(rows=len(rows))
    by_key = {row.key: row for row in rows}
    for client in clients:
        check.orphans_allowed += client.stats.ambiguous_row_requests
        if not client.logged_in or client.cookie is None:
            continue
        check.live_sessions += 1
        row = by_key.pop(session_key_of(client.cookie), None)
        if row is None:
            if client.session_unsure:
                check.missing_explained += 1
            else:
                check.missing += 1
                check.problems.append(f"{client.account.email}: no row for its session")
            continue
        data = json.loads(row.data)
        counter = data.get(COUNTER, 0)
        owner = client.account.user_id
        if (row.user_id != owner or data.get("_user_id") != str(owner)
                or not client.expected <= counter <= client.expected + client.unsure):
            check.mismatched += 1
            check.problems.append(
                f"{client.account.email}: row of user {row.user_id} with counter {counter}, "
                f"expected user {owner} and {client.expected}+{client.unsure}"
            )
        else:
            check.matched += 1
    check.orphans = len(by_key)
    return check


@dataclass
class Recovery:
    """How long the clients took to get a 200 after one restart."""

    target: str
    #: From the stop asked for to the server exited (its shutdown under load)...
    stop_seconds: float
    #: ...and to the server answering again.
    down_seconds: float
    clients: int
    #: Clients that got a 200 after the database came back, and how long after it:
    recovered: int
    #: the first client,
    first_seconds: float | None
    #: half of the clients,
    median_seconds: float | None
    #: every client.
    max_seconds: float | None


@dataclass
class Figures:
    """Everything one run measured; see ``docs/reliability.rst`` for each figure."""

    database: str
    plan: str
    clients: int
    seconds: float
    requests: int
    requests_per_second: float
    #: Requests answered (not 5xx) per second, outside the outage windows.
    answered_per_second_outside: float
    statuses: dict[str, int]
    latency_p50_ms: float
    latency_p95_ms: float
    latency_max_ms: float
    unavailable_in_outages: int
    unavailable_outside: int
    other_5xx: int
    other_5xx_outside: int
    no_answer_in_outages: int
    no_answer_outside: int
    bad_unavailable: int
    lost_writes: int
    leaks: int
    phantoms: int
    zombies: int
    sessions_lost: int
    logins_refused: int
    unexpected: int
    ghost_writes: int
    ghost_password_changes: int
    sessions_ended_by_failure: int
    clients_hung: int
    rows_unchanged_by_outage: bool
    rows_during_outage: int
    rows_at_pause: RowCheck
    rows_at_end: RowCheck
    recoveries: list[Recovery]
    worker_boots: int
    samples: list[str]
    #: The first errors the app logged with a traceback (the causes of any 500).
    app_errors: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_accounts(app: Flask, count: int) -> list[Account]:
    """Make fresh tables in the load database and ``count`` users (with two roles)."""
    models = app.extensions["load"]
    with app.app_context():
        models.db.drop_all()
        models.db.create_all()
        datastore = models.datastore
        datastore.create_role(name="member")
        accounts = []
        for index in range(count):
            email = f"client{index}@load.example"
            passwords = (f"first password {index}", f"second password {index}")
            user = datastore.create_user(email=email, password=passwords[0],
                                         roles=["member"])
            accounts.append(Account(user.id, email, passwords))
        models.db.session.remove()
        models.db.engine.dispose()
    return accounts


def run_scenario(server: PrivateServer, web: Gunicorn, accounts: Sequence[Account],
                 plan: LoadPlan, *, seed: int = 1) -> Figures:
    """Run ``plan`` against ``web`` (serving ``server``'s database) and measure it."""
    rows = SessionRows(server)
    gate = Gate()
    start = time.monotonic()
    deadline = start + plan.duration
    clients = [
        Client(account, web.port, gate, deadline=deadline, seed=seed * 100_003 + index,
               max_requests=MAX_REQUESTS_PER_CLIENT)
        for index, account in enumerate(accounts[: plan.clients])
    ]
    threads = [threading.Thread(target=client.run, name=f"load-client-{index}", daemon=True)
               for index, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    outages: list[Outage] = []
    # Times after which the clients were let go again, per outage (for recovery).
    resumed: list[float] = []
    before: list[SessionRow] = []
    after: list[SessionRow] = []
    try:
        _sleep_until(start + plan.hard_restart_at)
        outage = server.restart(plan.outage)
        outages.append(outage)
        resumed.append(outage.ready)

        _sleep_until(start + plan.quiet_restart_at)
        gate.pause(REQUEST_TIMEOUT + 5)
        before = rows.read()
        at_pause = check_rows(before, clients)
        began = time.monotonic()
        server.stop()
        stopped = time.monotonic()
        gate.resume()
        time.sleep(plan.outage)
        gate.pause(REQUEST_TIMEOUT + 5)
        server.start()
        ready = time.monotonic()
        after = rows.read()
        resumed.append(time.monotonic())
        gate.resume()
        outages.append(Outage(server.kind, began, stopped, ready))
    finally:
        gate.resume()
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()) + REQUEST_TIMEOUT + 5)
    seconds = time.monotonic() - start
    hung = sum(thread.is_alive() for thread in threads)
    at_end = check_rows(rows.read(), clients) if not hung else RowCheck()
    rows.dispose()
    return _figures(server.kind, plan, clients, seconds, outages, resumed, hung,
                    before, after, at_pause, at_end, web)


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _in(windows: Sequence[tuple[float, float]], started: float, ended: float) -> bool:
    return any(started <= end and ended >= begin for begin, end in windows)


def _figures(database: str, plan: LoadPlan, clients: Sequence[Client], seconds: float,
             outages: Sequence[Outage], resumed: Sequence[float], hung: int,
             before: list[SessionRow], after: list[SessionRow], at_pause: RowCheck,
             at_end: RowCheck, web: Gunicorn) -> Figures:
    replies = [reply for client in clients for reply in client.stats.replies]
    statuses: Counter[str] = Counter(str(status) for _, _, status in replies)
    # An outage window runs from the stop asked for to the clients able to reach the
    # database again; a request counts as in it if the two overlap at all.
    windows = [(outage.began, max(outage.ready, ready))
               for outage, ready in zip(outages, resumed, strict=True)]
    inside = Counter[str]()
    outside = Counter[str]()
    for started, ended, status in replies:
        kind = "503" if status == 503 else "5xx" if status >= 500 else "none" if not status \
            else "ok"
        (inside if _in(windows, started, ended) else outside)[kind] += 1
    seconds_outside = seconds - sum(end - begin for begin, end in windows)
    latencies = sorted(ended - started for started, ended, status in replies
                       if 200 <= status < 300 and not _in(windows, started, ended))
    total: Counter[str] = Counter()
    samples: list[str] = []
    for client in clients:
        for name, value in asdict(client.stats).items():
            if isinstance(value, int):
                total[name] += value
        samples.extend(client.stats.samples[: max(0, 20 - len(samples))])
    return Figures(
        database=database,
        plan=plan.name,
        clients=len(clients),
        seconds=round(seconds, 1),
        requests=len(replies),
        requests_per_second=round(len(replies) / seconds, 1),
        answered_per_second_outside=round(outside["ok"] / seconds_outside, 1),
        statuses=dict(sorted(statuses.items())),
        latency_p50_ms=_ms(_quantile(latencies, 0.50)),
        latency_p95_ms=_ms(_quantile(latencies, 0.95)),
        latency_max_ms=_ms(latencies[-1] if latencies else 0.0),
        unavailable_in_outages=inside["503"],
        unavailable_outside=outside["503"],
        other_5xx=inside["5xx"] + outside["5xx"],
        other_5xx_outside=outside["5xx"],
        no_answer_in_outages=inside["none"],
        no_answer_outside=outside["none"],
        bad_unavailable=total["bad_unavailable"],
        lost_writes=total["lost_writes"],
        leaks=total["leaks"],
        phantoms=total["phantoms"],
        zombies=total["zombies"],
        sessions_lost=total["sessions_lost"],
        logins_refused=total["logins_refused"],
        unexpected=total["unexpected"],
        ghost_writes=total["ghost_writes"],
        ghost_password_changes=total["ghost_password_changes"],
        sessions_ended_by_failure=total["sessions_ended_by_failure"],
        clients_hung=hung,
        rows_unchanged_by_outage=sorted(before, key=_by_key) == sorted(after, key=_by_key),
        rows_during_outage=len(before),
        rows_at_pause=at_pause,
        rows_at_end=at_end,
        recoveries=[_recovery(outage, ready, clients)
                    for outage, ready in zip(outages, resumed, strict=True)],
        worker_boots=web.worker_boots(),
        samples=samples,
        app_errors=web.errors(),
    )


def _by_key(row: SessionRow) -> str:
    return row.key


def _recovery(outage: Outage, ready: float, clients: Sequence[Client]) -> Recovery:
    times = []
    for client in clients:
        first = next((ended for _, ended, status in client.stats.replies
                      if status == 200 and ended > ready), None)
        if first is not None:
            times.append(first - ready)
    return Recovery(
        target=outage.target,
        stop_seconds=round(outage.stopped - outage.began, 2),
        down_seconds=round(outage.seconds, 2),
        clients=len(clients),
        recovered=len(times),
        first_seconds=round(min(times), 3) if times else None,
        median_seconds=round(statistics.median(times), 3) if times else None,
        max_seconds=round(max(times), 3) if times else None,
    )


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)

