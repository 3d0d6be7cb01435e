"""Purge N expired sessions among M live ones with ``flask sessions cleanup``.

    python -m bench.purge [--url postgresql+psycopg2://postgres@127.0.0.1/sessionstore_bench]
                          [--expired 100000] [--live 100000] [--batch-size 5000]

Seeds the rows with bulk inserts, runs the one command in a child process, and reports
its wall time and peak memory (the child's maximum resident set), then checks that every
expired row is gone and every live row kept.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import subprocess
import sys
import time
from datetime import timedelta

import sqlalchemy as sa

from flask_sessionstore.datastore import utcnow

from .apps import create_app

DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/sessionstore_bench"


def ensure_database(url: str) -> None:
    """Create the benchmark's PostgreSQL database if it is missing."""
    parsed = sa.engine.make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        return
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database}
        ).scalar()
        if not exists:
            connection.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def seed(url: str, expired: int, live: int) -> None:
    os.environ["BENCH_DATABASE_URL"] = url
    app = create_app()
    db = app.extensions["bench_db"]
    table = app.extensions["sessionstore"].datastore.session_model.__table__
    now = utcnow()
    with app.app_context():
        db.drop_all()
        db.create_all()
        with db.engine.begin() as connection:
            for count, expires_at in ((expired, now - timedelta(minutes=1)),
                                      (live, now + timedelta(hours=1))):
                for start in range(0, count, 10_000):
                    rows = [
                        {
                            "key": secrets.token_hex(32), "user_id": None, "data": "{}",
                            "created_at": now - timedelta(hours=2), "last_seen_at": now,
                            "expires_at": expires_at, "user_agent": "bench", "ip_address": None,
                        }
                        for _ in range(min(10_000, count - start))
                    ]
                    connection.execute(sa.insert(table), rows)
        db.engine.dispose()


def count_rows(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    now = utcnow()
    with engine.connect() as connection:
        dead = connection.execute(sa.text(
            "SELECT count(*) FROM sessionstore_session WHERE expires_at <= :now"), {"now": now}
        ).scalar_one()
        alive = connection.execute(sa.text(
            "SELECT count(*) FROM sessionstore_session WHERE expires_at > :now"), {"now": now}
        ).scalar_one()
    engine.dispose()
    return int(dead), int(alive)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--expired", type=int, default=100_000)
    parser.add_argument("--live", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    args = parser.parse_args()

    ensure_database(args.url)
    started = time.perf_counter()
    seed(args.url, args.expired, args.live)
    print(f"seeded {args.expired} expired and {args.live} live sessions "
          f"in {time.perf_counter() - started:.1f} s")

    env = {**os.environ, "BENCH_DATABASE_URL": args.url}
    command = [sys.executable, "-m", "flask", "--app", "bench.apps", "sessions", "cleanup",
               "--batch-size", str(args.batch_size)]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return 1

    dead, alive = count_rows(args.url)
    print(f"purge: {elapsed:.2f} s wall (the whole command, interpreter start included), "
          f"peak memory {peak_kib / 1024:.0f} MiB, batch size {args.batch_size}")
    print(f"after: {dead} expired rows left, {alive} live rows kept (of {args.live})")
    return 0 if dead == 0 and alive == args.live else 1


if __name__ == "__main__":
    raise SystemExit(main())
