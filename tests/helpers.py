"""Small helpers the session tests share: a seeded datastore, a logged-in client."""

from __future__ import annotations

import socket
from typing import Any


def seed(ds: Any) -> None:
    """Roles admin and analyst (reports.read); Ann holds admin, Bob nothing. Password pw."""
    ds.create_role(name="admin")
    ds.create_role(name="analyst", permissions=["reports.read"])
    ds.create_user(email="ann@example.com", password="pw", roles=["admin"])
    ds.create_user(email="bob@example.com", password="pw")


def login(client: Any, email: str = "ann@example.com", **extra: str) -> Any:
    """Log ``client`` in through the test app's view; fail the test if that fails."""
    response = client.post("/login", data={"email": email, "password": "pw", **extra})
    assert response.status_code == 200, response.data
    return response


def cookie(client: Any) -> str | None:
    """The session id ``client`` holds, if any."""
    found = client.get_cookie("session")
    return found.value if found is not None else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
