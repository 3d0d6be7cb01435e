"""Arbitrary cookie values, on every ORM: never a 500, never a row, always anonymous."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .backends import Backend

_ID_ALPHABET = string.ascii_letters + string.digits + "-_"

cookie_values = st.one_of(
    # anything a header can carry (latin-1), including NUL and control characters; CR and
    # LF cannot be inside a header value in HTTP (they end the header), so no request
    # can bring them
    st.text(
        alphabet=st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"),
        max_size=200,
    ),
    # ids of the right form that the server never issued
    st.text(alphabet=_ID_ALPHABET, min_size=43, max_size=43),
    # near misses: one character short or long, signed-looking, padded
    st.text(alphabet=_ID_ALPHABET, min_size=42, max_size=44).map(lambda s: s + "="),
    st.text(alphabet=_ID_ALPHABET, min_size=43, max_size=43).map(lambda s: s + ".sig"),
    # SQL and NoSQL fragments
    st.sampled_from(
        [
            "' OR '1'='1",
            "'; DROP TABLE sessionstore_session; --",
            '{"$gt": ""}',
            "\\x00" * 43,
            "%00" * 20,
            "A" * 10_000,
        ]
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=cookie_values)
def test_arbitrary_cookies_are_harmless(app: Any, ds: Any, backend: Backend, value: str) -> None:
    client = app.test_client()
    for method, path in (("GET", "/cart"), ("GET", "/me"), ("GET", "/admin")):
        response = client.open(path, method=method, headers={"Cookie": f"session={value}"})
        assert response.status_code in (200, 401), (value, response.status_code)
        if path == "/cart":
            assert response.get_json() == {"cart": 0}
    assert backend.session_rows() == []
    # A write with such a cookie starts a fresh session under a new id.
    response = client.open("/cart", method="POST", headers={"Cookie": f"session={value}"})
    assert response.status_code == 200 and response.get_json() == {"cart": 1}
    name, _, new_id = response.headers["Set-Cookie"].split(";")[0].partition("=")
    assert name == "session" and len(new_id) == 43 and new_id != value
    rows = backend.session_rows()
    assert len(rows) == 1 and rows[0]["user_id"] is None
    ds.sessions.delete_all()
