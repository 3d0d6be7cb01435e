"""Fixtures of the load and fault scenarios: private database servers, gunicorn, and
the figures printed at the end of the run.

A private server that cannot be made (its programs missing, say) skips these tests
with the reason, unless ``SESSIONSTORE_TEST_REQUIRE_SERVERS=1`` (as in CI), which makes
it a failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

from ..backends import REQUIRE_SERVERS_ENV
from .scenario import FULL_ENV, Figures
from .servers import SERVERS, PrivateServer, ServerError
from .webserver import gunicorn_missing

#: Where the figures of every run are written as JSON, when set.
REPORT_ENV = "SESSIONSTORE_LOAD_REPORT"

#: The figures of this pytest run, printed in the terminal summary.
FIGURES: list[Figures] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"load: a load or fault scenario on private servers (set {FULL_ENV}=1 for the "
        "full run)",
    )


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when servers are required."""
    if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SERVERS_ENV}=1 requires the load scenarios)")
    pytest.skip(reason)


@pytest.fixture(scope="session", params=sorted(SERVERS))
def private_server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    """A database server of this run's own, started; stopped and deleted at the end.

    Tests may stop and restart it, but must leave it running.
    """
    try:
        server = SERVERS[request.param].create()
    except (ServerError, OSError, LookupError) as exc:
        # LookupError: no such system user as the server's owner.
        unavailable(f"no private {request.param} server: {exc}")
    try:
        try:
            server.start()
        except ServerError as exc:
            unavailable(f"the private {request.param} server did not start: {exc}")
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def gunicorn_available() -> None:
    reason = gunicorn_missing()
    if reason is not None:
        unavailable(reason)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("load figures")
    for figures in FIGURES:
        recovery = ", ".join(
            f"{r.recovered}/{r.clients} recovered in {r.max_seconds} s max "
            f"(median {r.median_seconds} s) after {r.down_seconds} s down"
            for r in figures.recoveries
        )
        write(
            f"{figures.database} ({figures.plan}, {figures.clients} clients, "
            f"{figures.seconds} s): {figures.requests} requests "
            f"({figures.answered_per_second_outside}/s answered outside outages, "
            f"p95 {figures.latency_p95_ms} ms); "
            f"503 in outages {figures.unavailable_in_outages}, 5xx outside "
            f"{figures.unavailable_outside + figures.other_5xx_outside}, other 5xx "
            f"{figures.other_5xx}; lost writes {figures.lost_writes}, leaks {figures.leaks}; "
            f"rows {figures.rows_at_end.rows} for {figures.rows_at_end.live_sessions} live "
            f"sessions; {recovery}"
        )
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as report:
            json.dump([figures.as_dict() for figures in FIGURES], report, indent=2)
        write(f"figures written to {path}")
