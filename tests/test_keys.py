"""User keys: :func:`flask_sessionstore.records.parse_key` is total for every
:class:`~flask_sessionstore.records.KeyKind`, and ``get_user`` of any text never raises,
on every ORM and database.

A key arrives as text from URLs, forms, tokens and the cache (``/admin/users/--5``), so
no text may turn into a driver's error, a 500 or a query comparing across types.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_sessionstore.records import INT64_MAX, INT64_MIN, KeyKind, parse_key

from .backends import Backend

# -- parse_key, one kind at a time ---------------------------------------------------------

INT32 = KeyKind.integer(-(2**31), 2**31 - 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5),
        ("5", 5),
        (" 5 ", 5),
        ("-5", -5),
        ("0", 0),
        ("-0", 0),
        (INT64_MAX, INT64_MAX),
        (INT64_MIN, INT64_MIN),
        (str(INT64_MAX), INT64_MAX),
        (str(INT64_MIN), INT64_MIN),
        (INT64_MAX + 1, None),
        (INT64_MIN - 1, None),
        (str(INT64_MAX + 1), None),
        ("9" * 20, None),  # 20 digits, beyond 64 bits
        ("1" * 30, None),
        ("-" + "9" * 30, None),
        ("0" * 10_000, None),  # int() refuses strings of more than 4,300 digits
        ("--5", None),
        ("-", None),
        ("+5", None),
        ("", None),
        (" ", None),
        ("\u0663", None),  # Arabic-Indic three: int() takes it
        ("1_000", None),  # int() takes it
        ("\u00b2", None),  # superscript two: str.isdigit() says yes
        ("1e3", None),
        ("0x10", None),
        ("5\x00", None),
        ("\ud800", None),
        ("ann@example.com", None),
        (True, None),
        (False, None),
        (None, None),
        (5.0, None),
        (b"5", None),
        ([5], None),
    ],
)
def test_parse_key_of_an_integer_key_takes_plain_digits_in_range_only(
    value: Any, expected: Any
) -> None:
    found = parse_key(KeyKind.integer(), value)
    assert found == expected and type(found) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2**31 - 1, 2**31 - 1), (2**31, None), ("2147483648", None), (-(2**31), -(2**31)),
     (-(2**31) - 1, None), ("-2147483649", None)],
)
def test_parse_key_of_an_integer_key_keeps_to_the_declared_range(
    value: Any, expected: Any
) -> None:
    assert parse_key(INT32, value) == expected


def test_parse_key_of_a_uuid_key_takes_a_uuid_or_its_text_forms() -> None:
    kind = KeyKind.uuid()
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    forms: tuple[object, ...] = (key, str(key), key.hex, str(key).upper(), f"{{{key}}}", key.urn)
    for value in forms:
        assert parse_key(kind, value) == key, value
    others: tuple[object, ...] = ("", "not-a-uuid", str(key)[:-1], str(key) + "0",
                                  "\ud800" * 32, "\x00" * 32, key.int, str(key.int),
                                  key.bytes, True, None, 5, 5.0)
    for value in others:
        assert parse_key(kind, value) is None, value


def test_parse_key_of_a_text_key_takes_storable_text_up_to_the_max_length() -> None:
    kind = KeyKind.text(10)
    for value in ("a", "abcdefghij", "\u00fcnal", "\U0001f600", " ", "--5"):
        assert parse_key(kind, value) == value
    refused: tuple[object, ...] = ("abcdefghijk", "a\x00b", "\x00", "\ud800", "a\udfffb", 5,
                                   b"abc", True, None, ["a"])
    for refused_value in refused:
        assert parse_key(kind, refused_value) is None, refused_value
    unbounded = KeyKind.text()
    assert parse_key(unbounded, "x" * 10_000) == "x" * 10_000
    assert parse_key(unbounded, "x\x00") is None


@dataclass(frozen=True)
class Ticket:
    """A key type of an ORM's own, as MongoDB's ObjectId is."""

    code: str


TICKET = KeyKind.other(Ticket, r"T-[0-9]{4}", Ticket)


def test_parse_key_of_another_key_type_takes_an_instance_or_text_of_its_form() -> None:
    ticket = Ticket("T-0042")
    assert parse_key(TICKET, ticket) is ticket
    assert parse_key(TICKET, "T-0042") == ticket
    for value in ("T-004", "T-00420", " T-0042", "T-0042\n", "t-0042", "T-\u0664\u0662\u0660\u0660",
                  "", "\ud800", "\x00", 42, True, None, b"T-0042"):
        assert parse_key(TICKET, value) is None, value


ODD_VALUES = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(exclude_categories=())),  # lone surrogates too
    st.from_regex(r"\A\s*[-+]?[0-9_\u0660-\u0669]{0,45}\s*\Z"),
    st.integers(),
    st.integers(min_value=INT64_MAX - 2, max_value=INT64_MAX + 2),
    st.floats(),
    st.booleans(),
    st.none(),
    st.binary(max_size=40),
    st.uuids(),
    st.datetimes(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
KINDS = {
    "integer": KeyKind.integer(),
    "int32": INT32,
    "uuid": KeyKind.uuid(),
    "text": KeyKind.text(16),
    "other": TICKET,
}


@pytest.mark.parametrize("name", KINDS)
@settings(max_examples=300, deadline=None)
@given(value=ODD_VALUES)
def test_parse_key_is_total_and_returns_a_key_of_the_kind_or_none(name: str, value: Any) -> None:
    kind = KINDS[name]
    found: Any = parse_key(kind, value)
    if found is None:
        return
    found_type = type(found)
    assert found_type is kind.python_type, (value, found)
    if kind.python_type is int:
        assert kind.min_value <= found <= kind.max_value
    if kind.python_type is str:
        assert kind.max_length is None or len(found) <= kind.max_length
        assert "\x00" not in found
        found.encode("utf-8")


# -- get_user of any text, on every ORM and database ----------------------------------------

#: Texts that have broken, or could break, a key parser or a lookup by key.
TRICKY_TEXTS = [
    "", " ", "--5", "-", "+1", " 1 ", "1", "-1", "0", "-0", "٣", "1_000", "²", "1e3", "0x10",
    "NaN", "1" * 30, "-" + "9" * 30, str(INT64_MAX), str(INT64_MAX + 1), str(INT64_MIN),
    str(INT64_MIN - 1), str(2**31), str(2**31 - 1), "0" * 10_000, "\x00", "1\x00",
    "\ud800", "a\udfffb", "0123456789abcdef01234567", "0123456789ABCDEF01234567",
    "ffffffffffffffffffffffff", "0" * 24, "12345678-1234-5678-1234-567812345678",
    "12345678123456781234567812345678", "ann@example.com", "ANN@EXAMPLE.COM", "\u0130",
    "%", "_", "' OR '1'='1", '{"$gt": ""}', "$where", "\U0001f600", "x" * 300,
]

ANY_TEXT = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(exclude_categories=())),
    st.from_regex(r"\A\s*-?[0-9]{1,40}\s*\Z"),
    st.from_regex(r"\A[0-9a-fA-F]{24}\Z"),
    st.sampled_from(TRICKY_TEXTS),
)


@pytest.fixture
def ann_key(backend: Backend, ds: Any) -> Any:
    """One stored user, so that lookups can find someone: her key."""
    with ds.models.unit():
        user = ds.models.put(backend.User(email="ann@example.com", active=True))
    return ds.models.key_of(user)


def _check_lookup(backend: Backend, ds: Any, text: str) -> None:
    found = ds.get_user(text)
    assert found is None or isinstance(found, backend.User), (text, found)


def test_get_user_of_tricky_text_never_raises(backend: Backend, ds: Any, ann_key: Any) -> None:
    for text in TRICKY_TEXTS:
        _check_lookup(backend, ds, text)
    # The lookups that should find the user still do, after all that.
    assert ds.get_user(str(ann_key)).email == "ann@example.com"
    assert ds.get_user("ANN@example.com").email == "ann@example.com"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=ANY_TEXT)
def test_get_user_of_any_text_never_raises(
    backend: Backend, ds: Any, ann_key: Any, text: str
) -> None:
    _check_lookup(backend, ds, text)
