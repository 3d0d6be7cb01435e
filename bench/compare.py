"""flask-sessionstore against the libraries users pick instead, in one run.

    python -m bench.compare [--quick] [--output FILE] [--workdir DIR] [--skip-http]
    python -m bench.compare --profile [--quick]

Builds the same three-route app (see :mod:`bench.contenders`) on every contender, seeds
each stateful one with users and stored sessions, then measures, all in this one run:

1. in-process, with Flask's test client, the contenders interleaved (A B C ... A B C
   ..., the median of the rounds): req/s, SQL statements and commits per request
   (SQLAlchemy engine events), Redis commands per request (redis-py's
   ``execute_command`` and pipelines, wrapped while counting);
2. /me on flask-sessionstore (SQLite) at three table sizes, interleaved;
3. purging expired sessions: flask-sessionstore's ``delete_expired`` against
   Flask-Session's own cleanup, on the same machine, alternated;
4. over HTTP: gunicorn (2 workers) on 127.0.0.1 and a bounded load client.

It prints a markdown report and writes it to ``--output``. ``--profile`` instead runs
cProfile over flask-sessionstore's /me and /cart and prints where the time goes. Every
loop is bounded by a count and a time cap; all traffic goes to 127.0.0.1.

It needs Flask-Session, Flask-Security and gunicorn besides the project's extras: keep
them out of the project's own environment (see docs/performance.rst).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from . import contenders as cs
from .contenders import Contender, Unavailable
from .loadgen import LoadResult, http_login, run_load, start_server, stop_server

ROUTES = (("me", "GET", "/me"), ("cart", "POST", "/cart"), ("public", "GET", "/public"))
BARE = "bare"
FLASK_SESSION = "flask-session-sqla"
COOKIE = "cookie-login"
SESSIONSTORE = "sessionstore-sqlite"


@dataclass(frozen=True)
class Plan:
    """How big each part of the run is."""

    users: int
    sessions: int
    rounds: int
    requests: int
    scale: tuple[int, ...]
    purge_rows: int
    purge_rounds: int
    http_requests: int
    http_rounds: int
    http_cap: float
    http_concurrency: int = 4
    count_requests: int = 50


FULL = Plan(users=10_000, sessions=100_000, rounds=9, requests=200,
            scale=(1_000, 100_000, 1_000_000), purge_rows=100_000, purge_rounds=3,
            http_requests=3_000, http_rounds=3, http_cap=30.0)
QUICK = Plan(users=1_000, sessions=5_000, rounds=3, requests=40,
             scale=(1_000, 5_000, 50_000), purge_rows=10_000, purge_rounds=1,
             http_requests=300, http_rounds=1, http_cap=10.0, count_requests=10)


# ----------------------------------------------------------------------------------
# The contenders of this run
# ----------------------------------------------------------------------------------


def roster(workdir: str) -> list[Contender]:
    """Every contender, in the order they are measured (and reported)."""

    def sqlite(name: str) -> str:
        return f"sqlite:///{os.path.join(workdir, name)}.sqlite3"

    return [
        Contender(BARE, "bare Flask (cookie session, no auth)", "bare", "",
                  server_sessions=False, has_users=False),
        Contender(COOKIE, "Flask cookie session + Flask-Login", "cookie", sqlite("cookie"),
                  server_sessions=False),
        Contender(SESSIONSTORE, "flask-sessionstore, SQLAlchemy on SQLite", "sessionstore",
                  sqlite("sessionstore")),
        Contender("sessionstore-pg", "flask-sessionstore, SQLAlchemy on PostgreSQL",
                  "sessionstore", cs.PG_URL),
        # Slot: the Redis cache in front of the rows (SESSIONSTORE_REDIS_URL), measured
        # whenever the installed flask-sessionstore has it.
        Contender("sessionstore-sqlite-redis", "flask-sessionstore, SQLite + Redis cache",
                  "sessionstore_redis", sqlite("sessionstore_redis")),
        # Slot: the other ORMs, measured whenever their module imports (see orm_contenders).
        *orm_roster(sqlite),
        Contender(FLASK_SESSION, "Flask-Session 0.8 (sqlalchemy) + Flask-Login",
                  "flask_session_sqlalchemy", sqlite("flask_session")),
        Contender("flask-session-sqla-norefresh",
                  "Flask-Session 0.8 (sqlalchemy, SESSION_REFRESH_EACH_REQUEST off)",
                  "flask_session_sqlalchemy_norefresh", sqlite("flask_session_norefresh")),
        Contender("flask-session-redis", "Flask-Session 0.8 (redis) + Flask-Login",
                  "flask_session_redis", sqlite("flask_session_redis")),
        Contender("flask-security", "Flask-Security 5 (cookie session, SQLAlchemy)",
                  "flask_security", sqlite("flask_security"), server_sessions=False),
    ]


def orm_roster(sqlite: Callable[[str], str]) -> list[Contender]:
    from . import orm_contenders

    return orm_contenders.roster(sqlite)


# ----------------------------------------------------------------------------------
# Counting Redis commands
# ----------------------------------------------------------------------------------


@dataclass
class RedisCounter:
    commands: int = 0


@contextmanager
def count_redis() -> Iterator[RedisCounter]:
    """Count the Redis commands any client in this process sends: single commands
    through ``Redis.execute_command``, pipelined ones at ``Pipeline.execute``."""
    counter = RedisCounter()
    try:
        import redis
        from redis.client import Pipeline
    except ImportError:
        yield counter
        return
    plain, piped = redis.Redis.execute_command, Pipeline.execute

    def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        counter.commands += 1
        return plain(self, *args, **options)

    def execute(self: Any, *args: Any, **options: Any) -> Any:
        counter.commands += len(self.command_stack)
        return piped(self, *args, **options)

    redis.Redis.execute_command = execute_command  # type: ignore[method-assign]
    Pipeline.execute = execute  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        redis.Redis.execute_command = plain  # type: ignore[method-assign]
        Pipeline.execute = piped  # type: ignore[method-assign]


# ----------------------------------------------------------------------------------
# In-process measurement
# ----------------------------------------------------------------------------------


@dataclass
class Subject:
    """A built contender with its two clients: one logged in, one anonymous."""

    contender: Contender
    me_client: Any
    anon_client: Any
    rates: dict[str, list[float]] = field(default_factory=dict)
    sql: dict[str, tuple[float, float]] = field(default_factory=dict)
    redis: dict[str, float] = field(default_factory=dict)
    errors: int = 0


def prepare_subject(contender: Contender) -> Subject:
    me_client = contender.app.test_client()
    anon_client = contender.app.test_client()
    response = me_client.post(contender.login_path())
    if response.status_code != 200:
        raise RuntimeError(f"{contender.key}: login answered {response.status_code}")
    # The anonymous client gets its session (a cart) the way a visitor would.
    anon_client.post("/cart")
    subject = Subject(contender, me_client, anon_client)
    expected = b"user1@example.com"
    body = me_client.get("/me").get_data()
    if body != expected:
        raise RuntimeError(f"{contender.key}: /me answered {body[:80]!r}")
    for name, method, path in ROUTES:
        for _ in range(20):  # warm caches, pools and lazy imports
            request(subject, name, method, path)
    return subject


def request(subject: Subject, name: str, method: str, path: str) -> int:
    client = subject.me_client if name == "me" else subject.anon_client
    response = client.open(path, method=method)
    status: int = response.status_code
    response.close()
    return status


def time_route(subject: Subject, name: str, method: str, path: str, count: int) -> float:
    """Return req/s over ``count`` requests; any non-200 answer is counted an error."""
    client = subject.me_client if name == "me" else subject.anon_client
    errors = 0
    started = time.perf_counter()
    for _ in range(count):
        response = client.open(path, method=method)
        if response.status_code != 200:
            errors += 1
        response.close()
    elapsed = time.perf_counter() - started
    subject.errors += errors
    return count / elapsed


def measure_interleaved(subjects: list[Subject], routes: tuple[tuple[str, str, str], ...],
                        rounds: int, count: int, log: Callable[[str], None]) -> None:
    """Round after round, every subject in turn, every route: A B C ... A B C ..."""
    for number in range(rounds):
        for subject in subjects:
            for name, method, path in routes:
                gc.collect()
                rate = time_route(subject, name, method, path, count)
                subject.rates.setdefault(name, []).append(rate)
        log(f"  round {number + 1}/{rounds} done")


def count_per_request(subject: Subject, count: int) -> None:
    for name, method, path in ROUTES:
        with subject.contender.count_sql() as sql, count_redis() as rds:
            for _ in range(count):
                request(subject, name, method, path)
        subject.sql[name] = (sql.statements / count, sql.commits / count)
        subject.redis[name] = rds.commands / count


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ----------------------------------------------------------------------------------
# Purge
# ----------------------------------------------------------------------------------


@dataclass
class PurgeResult:
    label: str
    times: list[float] = field(default_factory=list)
    left: int = 0
    kept: bool = True


def count_rows(contender: Contender, table: str, column: str) -> tuple[int, int]:
    """(expired, live) rows of a session table."""
    now = cs.utcnow()
    with contender.app.app_context():
        engine = contender.db.engine
    with engine.connect() as connection:
        dead = connection.execute(sa.text(
            f"SELECT count(*) FROM {table} WHERE {column} <= :now"), {"now": now}  # noqa: S608
        ).scalar_one()
        live = connection.execute(sa.text(
            f"SELECT count(*) FROM {table} WHERE {column} > :now"), {"now": now}  # noqa: S608
        ).scalar_one()
    return int(dead), int(live)


def purge_sessionstore(contender: Contender, rows: int, users: int,
                       batch_size: int | None) -> tuple[float, int, bool]:
    cs.add_sessionstore_rows(contender, rows, users=users, expired=True)
    _, live_before = count_rows(contender, "sessionstore_session", "expires_at")
    datastore = contender.app.extensions["sessionstore"].datastore
    with contender.app.app_context():
        started = time.perf_counter()
        if batch_size is None:
            deleted = datastore.delete_expired()
        else:
            deleted = datastore.delete_expired(batch_size=batch_size)
        elapsed = time.perf_counter() - started
    dead, live = count_rows(contender, "sessionstore_session", "expires_at")
    return elapsed, dead, deleted == rows and live == live_before


def purge_flask_session(contender: Contender, rows: int, users: int) -> tuple[float, int, bool]:
    cs.add_flask_session_rows(contender, rows, users=users, expired=True)
    _, live_before = count_rows(contender, "sessions", "expiry")
    interface = contender.app.session_interface
    with contender.app.app_context():
        started = time.perf_counter()
        # What ``flask session_cleanup`` runs.
        interface._delete_expired_sessions()  # type: ignore[attr-defined]
        elapsed = time.perf_counter() - started
    dead, live = count_rows(contender, "sessions", "expiry")
    return elapsed, dead, live == live_before


def measure_purge(built: dict[str, Contender], plan: Plan,
                  log: Callable[[str], None]) -> list[PurgeResult]:
    jobs: list[tuple[PurgeResult, Callable[[], tuple[float, int, bool]]]] = []

    def add(key: str, label: str, run: Callable[[Contender], tuple[float, int, bool]]) -> None:
        contender = built.get(key)
        if contender is not None:
            jobs.append((PurgeResult(label), lambda: run(contender)))

    rows, users = plan.purge_rows, plan.users
    add(SESSIONSTORE, "flask-sessionstore `delete_expired()` (the default batch size), "
        "SQLite", lambda c: purge_sessionstore(c, rows, users, None))
    add(SESSIONSTORE, "flask-sessionstore `delete_expired(batch_size=10000)`, SQLite",
        lambda c: purge_sessionstore(c, rows, users, 10_000))
    add(FLASK_SESSION, "Flask-Session `_delete_expired_sessions()` (`flask session_cleanup`), "
        "SQLite", lambda c: purge_flask_session(c, rows, users))
    add("sessionstore-pg", "flask-sessionstore `delete_expired()` (default), PostgreSQL",
        lambda c: purge_sessionstore(c, rows, users, None))
    for number in range(plan.purge_rounds):
        for result, run in jobs:
            elapsed, left, kept = run()
            result.times.append(elapsed)
            result.left += left
            result.kept = result.kept and kept
        log(f"  purge round {number + 1}/{plan.purge_rounds} done")
    return [result for result, _ in jobs]


# ----------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------


def measure_http(built: dict[str, Contender], plan: Plan, log: Callable[[str], None]
                 ) -> dict[str, LoadResult]:
    keys = [key for key in (SESSIONSTORE, FLASK_SESSION, COOKIE) if key in built]
    servers = {}
    results: dict[str, LoadResult] = {}
    try:
        for key in keys:
            contender = built[key]
            servers[key] = start_server(contender.factory, contender.url, workers=2)
        cookies = {key: http_login(server.port, built[key].login_path())
                   for key, server in servers.items()}
        for key, server in servers.items():  # warm the workers
            run_load(server.port, "/me", cookies[key], requests=100, concurrency=2,
                     time_cap=10.0)
        for number in range(plan.http_rounds):
            for key, server in servers.items():
                gc.collect()
                result = run_load(server.port, "/me", cookies[key],
                                  requests=plan.http_requests,
                                  concurrency=plan.http_concurrency, time_cap=plan.http_cap)
                results.setdefault(key, LoadResult()).merge(result)
            log(f"  HTTP round {number + 1}/{plan.http_rounds} done")
    finally:
        for server in servers.values():
            stop_server(server)
    return results


# ----------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------


def ratio(value: float, reference: float | None) -> str:
    if reference is None or reference != reference or reference == 0:
        return "n/a"
    return f"{value / reference:.2f}x"


def fmt_count(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value == value else "n/a"


def git_state() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,  # noqa: S607
            check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True, text=True, check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" + uncommitted changes" if dirty else "")


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ("flask", "werkzeug", "sqlalchemy", "flask-sqlalchemy", "flask-login",
             "flask-sessionstore", "flask-session", "flask-security", "redis", "psycopg2-binary",
             "gunicorn", "peewee", "pony")
    found = []
    for name in names:
        with suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    return ", ".join(found)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


@dataclass
class Report:
    plan: Plan
    quick: bool
    subjects: list[Subject]
    skipped: list[tuple[str, str]]
    scale: list[tuple[int, list[float]]]
    purge: list[PurgeResult]
    http: dict[str, LoadResult]
    labels: dict[str, str]
    started: datetime
    elapsed: float = 0.0
    #: The 1-minute load average at the start and at the end: other work on the machine
    #: lowers every number (interleaving keeps the ratios fair).
    load: tuple[float, float] = (0.0, 0.0)

    def rate(self, key: str, route: str) -> float | None:
        for subject in self.subjects:
            if subject.contender.key == key:
                return median(subject.rates.get(route, []))
        return None

    def targets(self) -> list[tuple[str, str, str]]:
        """(target, measured, verdict) for each of the project's targets."""
        rows = []

        def check(name: str, measured: float | None, goal: float, higher: bool,
                  unit: str = "x") -> None:
            if measured is None or measured != measured:
                rows.append((name, "not measured", "n/a"))
                return
            met = measured >= goal if higher else measured <= goal
            if met:
                verdict = "met"
            elif higher:
                verdict = (f"missed: {measured:.2f}{unit} of {goal:.2f}{unit} "
                           f"({measured / goal - 1:+.0%})")
            else:
                verdict = f"missed: {measured:.2f}{unit}, {measured / goal - 1:+.0%} over"
            rows.append((name, f"{measured:.2f}{unit}", verdict))

        def div(a: float | None, b: float | None) -> float | None:
            return a / b if a is not None and b else None

        ss_me, fs_me = self.rate(SESSIONSTORE, "me"), self.rate(FLASK_SESSION, "me")
        check("/me ≥ 4x Flask-Session (sqlalchemy)", div(ss_me, fs_me), 4.0, True)
        check("/me ≥ 1.0x cookie session + Flask-Login", div(ss_me, self.rate(COOKIE, "me")),
              1.0, True)
        check("/cart ≥ 3x Flask-Session (sqlalchemy)",
              div(self.rate(SESSIONSTORE, "cart"), self.rate(FLASK_SESSION, "cart")), 3.0, True)
        ours = next((p for p in self.purge if p.label.startswith("flask-sessionstore")
                     and "default" in p.label and "SQLite" in p.label), None)
        theirs = next((p for p in self.purge if p.label.startswith("Flask-Session")), None)
        check("purge ≤ 0.5x Flask-Session's cleanup",
              div(median(ours.times), median(theirs.times)) if ours and theirs else None,
              0.5, False)
        if len(self.scale) == 3:
            small, _, big = self.scale
            check(f"/me at {big[0]:,} sessions within 15 % of /me at {small[0]:,}",
                  div(median(big[1]), median(small[1])), 0.85, True)
        return rows

    def markdown(self) -> str:
        plan = self.plan
        out = io.StringIO()
        w = out.write
        mode = " (--quick: small sizes, not for publication)" if self.quick else ""
        w(f"# flask-sessionstore vs the alternatives{mode}\n\n")
        w(f"- run: {self.started:%Y-%m-%d %H:%M} UTC, {self.elapsed:.0f} s, "
          f"`python -m bench.compare{' --quick' if self.quick else ''}`\n")
        w(f"- machine: {machine()}; load average {self.load[0]:.1f} at the start, "
          f"{self.load[1]:.1f} at the end\n")
        w(f"- tree: {git_state()}\n")
        w(f"- versions: {versions()}\n")
        w(f"- data: {plan.users:,} users; {plan.sessions:,} stored sessions per "
          "server-side store (half anonymous, half logged in, spread over the users)\n")
        w(f"- in-process: Flask test client, {plan.rounds} interleaved rounds of "
          f"{plan.requests} requests per route and contender, median req/s; counts over "
          f"{plan.count_requests} requests\n\n")
        reference_fs = {route: self.rate(FLASK_SESSION, route) for route, _, _ in ROUTES}
        reference_bare = {route: self.rate(BARE, route) for route, _, _ in ROUTES}
        for route, method, path in ROUTES:
            w(f"## {method} {path}\n\n")
            w("| contender | req/s | vs bare Flask | vs Flask-Session (sqla) | SQL/req "
              "| commits/req | Redis cmds/req |\n")
            w("|---|---:|---:|---:|---:|---:|---:|\n")
            for subject in self.subjects:
                rate = median(subject.rates.get(route, []))
                statements, commits = subject.sql.get(route, (float("nan"), float("nan")))
                w(f"| {subject.contender.label} | {rate:,.0f} | "
                  f"{ratio(rate, reference_bare[route])} | {ratio(rate, reference_fs[route])} | "
                  f"{fmt_count(statements)} | {fmt_count(commits)} | "
                  f"{fmt_count(subject.redis.get(route, float('nan')))} |\n")
            w("\n")
        errors = [(s.contender.key, s.errors) for s in self.subjects if s.errors]
        if errors:
            w(f"Non-200 answers during timing: {errors}\n\n")
        if self.skipped:
            w("Not measured:\n\n")
            for key, reason in self.skipped:
                w(f"- {key}: {reason}\n")
            w("\n")
        if self.scale:
            w("## GET /me by stored sessions (flask-sessionstore, SQLite)\n\n")
            w("| stored sessions | req/s | vs the smallest |\n|---:|---:|---:|\n")
            base = median(self.scale[0][1])
            for size, rates in self.scale:
                w(f"| {size:,} | {median(rates):,.0f} | {ratio(median(rates), base)} |\n")
            w("\n")
        if self.purge:
            w(f"## Purging {plan.purge_rows:,} expired sessions (among the live ones)\n\n")
            w("| purge | seconds (median of "
              f"{plan.purge_rounds}) | rows/s | expired left | live rows kept |\n"
              "|---|---:|---:|---:|---|\n")
            for result in self.purge:
                seconds = median(result.times)
                w(f"| {result.label} | {seconds:.3f} | {plan.purge_rows / seconds:,.0f} | "
                  f"{result.left} | {'yes' if result.kept else 'NO'} |\n")
            w("\n")
        if self.http:
            w(f"## GET /me over HTTP: gunicorn, 2 sync workers, 127.0.0.1, "
              f"{plan.http_concurrency} client threads, {plan.http_rounds} interleaved "
              f"round(s) of {plan.http_requests:,} requests (cap {plan.http_cap:.0f} s)\n\n")
            w("| contender | req/s (median round) | p50 ms | p99 ms | errors |\n"
              "|---|---:|---:|---:|---:|\n")
            for key, result in self.http.items():
                w(f"| {self.labels[key]} | {median(result.rates):,.0f} | "
                  f"{result.percentile(50):.2f} | {result.percentile(99):.2f} | "
                  f"{result.errors} |\n")
            w("\n")
        w("## Targets (SQLite, in-process, this run)\n\n| target | measured | verdict |\n"
          "|---|---:|---|\n")
        for name, measured, verdict in self.targets():
            w(f"| {name} | {measured} | {verdict} |\n")
        return out.getvalue()


# ----------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------


def build_all(plan: Plan, workdir: str, log: Callable[[str], None]
              ) -> tuple[dict[str, Contender], list[tuple[str, str]]]:
    built: dict[str, Contender] = {}
    skipped: list[tuple[str, str]] = []
    for contender in roster(workdir):
        if contender.note and not contender.factory:
            skipped.append((contender.label, contender.note))
            continue
        started = time.perf_counter()
        try:
            contender.build(users=plan.users if contender.has_users else 0,
                            sessions=plan.sessions if contender.server_sessions else 0)
        except (Unavailable, ImportError) as exc:
            skipped.append((contender.label, str(exc)))
            log(f"  skipped {contender.key}: {exc}")
            continue
        built[contender.key] = contender
        log(f"  built {contender.key} in {time.perf_counter() - started:.1f} s")
    return built, skipped


def scale_phase(built: dict[str, Contender], plan: Plan, workdir: str,
                log: Callable[[str], None]) -> list[tuple[int, list[float]]]:
    main = built.get(SESSIONSTORE)
    if main is None:
        return []
    subjects: list[tuple[int, Subject]] = []
    extra: list[Contender] = []
    for size in plan.scale:
        if size == plan.sessions:
            contender = main
        else:
            contender = Contender(f"sessionstore-{size}", f"flask-sessionstore, {size:,}",
                                  "sessionstore",
                                  f"sqlite:///{os.path.join(workdir, f'scale_{size}')}.sqlite3")
            started = time.perf_counter()
            contender.build(users=plan.users, sessions=size)
            extra.append(contender)
            log(f"  seeded {size:,} sessions in {time.perf_counter() - started:.1f} s")
        subjects.append((size, prepare_subject(contender)))
    measure_interleaved([s for _, s in subjects], (ROUTES[0],), plan.rounds, plan.requests,
                        log)
    for contender in extra:
        contender.close()
    return [(size, subject.rates["me"]) for size, subject in subjects]


def run(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    workdir = args.workdir or tempfile.mkdtemp(prefix="sessionstore-compare-")
    log(f"building contenders in {workdir}")
    built, skipped = build_all(plan, workdir, log)
    subjects = [prepare_subject(contender) for contender in built.values()]
    log(f"in-process: {len(subjects)} contenders, {plan.rounds} rounds")
    measure_interleaved(subjects, ROUTES, plan.rounds, plan.requests, log)
    for subject in subjects:
        count_per_request(subject, plan.count_requests)
    log("scale")
    scale = [] if args.skip_scale else scale_phase(built, plan, workdir, log)
    log("purge")
    purge = measure_purge(built, plan, log)
    http: dict[str, LoadResult] = {}
    if not args.skip_http:
        log("HTTP")
        http = measure_http(built, plan, log)
    report = Report(plan, args.quick, subjects, skipped, scale, purge, http,
                    {key: contender.label for key, contender in built.items()}, started_at)
    report.elapsed = time.perf_counter() - started
    report.load = (load_before, os.getloadavg()[0])
    text = report.markdown()
    for contender in built.values():
        contender.close()
    print(text)
    output = args.output or os.path.join(
        tempfile.gettempdir(), f"sessionstore-compare{'-quick' if args.quick else ''}.md")
    with open(output, "w") as handle:
        handle.write(text)
    log(f"report written to {output}")
    return 0


def profile(args: argparse.Namespace) -> int:
    """cProfile over flask-sessionstore's /me and /cart (SQLite, seeded like the run)."""
    plan = QUICK if args.quick else FULL
    workdir = args.workdir or tempfile.mkdtemp(prefix="sessionstore-profile-")
    contender = Contender(SESSIONSTORE, "flask-sessionstore", "sessionstore",
                          f"sqlite:///{os.path.join(workdir, 'profile')}.sqlite3")
    contender.build(users=plan.users, sessions=plan.sessions)
    subject = prepare_subject(contender)
    for name, method, path in ROUTES[:2]:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(2_000):
            request(subject, name, method, path)
        profiler.disable()
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(25)
        print(f"===== {method} {path}: 2,000 requests =====")
        print(stream.getvalue())
    contender.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run, under 2 minutes")
    parser.add_argument("--output", help="where to write the markdown report")
    parser.add_argument("--workdir", help="where the SQLite files go (default: a temp dir)")
    parser.add_argument("--skip-http", action="store_true", help="leave out the HTTP phase")
    parser.add_argument("--skip-scale", action="store_true", help="leave out the scale phase")
    parser.add_argument("--profile", action="store_true",
                        help="profile flask-sessionstore's /me and /cart instead")
    args = parser.parse_args(argv)
    if args.profile:
        return profile(args)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
