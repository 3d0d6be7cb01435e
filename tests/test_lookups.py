"""Typed, exact lookups (S33) and outside identities never read as keys: what a
database's conversions and collations would otherwise let match, on every ORM and
database. Findings 5 and 7 of the security review."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask_login import current_user

from flask_sessionstore import SessionStore, SessionStoreError, auth_required

from .backends import Backend


def _seed(ds: Any) -> Any:
    admin = ds.create_user(email="admin@example.com", password="pw")
    ds.create_user(email="bob@example.com", password="pw")
    return admin


@pytest.mark.parametrize(
    "criteria",
    [
        {"password": 0},  # MariaDB compares text with a number as numbers: "$argon…" is 0
        {"password": "0"},
        {"email": "admín@example.com"},  # MariaDB's accent-insensitive collations
        {"email": "ADMIN@example.com"},  # and its case-insensitive ones
        {"email": "admin@example.com\t!"},
    ],
    ids=["number-for-text", "zero-text", "accent", "case", "suffix"],
)
def test_s33_find_user_matches_exactly_never_by_conversion_or_collation(
    ds: Any, criteria: dict[str, Any]
) -> None:
    _seed(ds)
    assert ds.find_user(**criteria) is None


def test_s33_a_key_criterion_of_another_type_matches_nothing(ds: Any) -> None:
    admin = _seed(ds)
    key = ds.user_pk(admin)
    for value in (f"{key} OR 1=1", f"{key}abc", f" {key}", [key], {"$ne": None}):
        found = ds.find_user(id=value)  # every seed names its key "id"
        assert found is None, value


def test_s33_a_name_that_is_not_a_column_is_refused(ds: Any) -> None:
    _seed(ds)
    for name in ("is_active", "get_id", "has_role", "nothing_like_it"):
        with pytest.raises(SessionStoreError):
            ds.find_user(**{name: True})


def test_s33_case_insensitive_lookups_are_still_exact_but_for_case(ds: Any) -> None:
    admin = _seed(ds)
    assert ds.find_user(case_insensitive=True, email="ADMIN@Example.COM") == admin
    assert ds.find_user(case_insensitive=True, email="admín@example.com") is None


def test_s32_surrounding_spaces_are_no_part_of_an_identity(ds: Any) -> None:
    """One spelling on every database: MariaDB ignores trailing spaces when comparing,
    Pony strips them when storing; the library strips them on create and lookup alike,
    so " ann@example.com " can be neither a second account nor another one's."""
    admin = ds.create_user(email="  admin@example.com ", password="pw")
    assert admin.email == "admin@example.com"
    for spelling in ("admin@example.com ", " admin@example.com", "admin@example.com"):
        assert ds.find_user(email=spelling) == admin, spelling
        assert ds.get_user(spelling) == admin, spelling


def test_s33_a_trusted_header_is_never_read_as_a_key(backend: Backend) -> None:
    app: Flask = backend.app
    app.config.update(
        SESSIONSTORE_AUTH_METHODS=("session", "header"),
        SESSIONSTORE_TRUSTED_HEADER="X-Remote-User",
        SESSIONSTORE_TRUSTED_PROXIES=["127.0.0.0/8"],
    )
    SessionStore(app, datastore=backend.datastore)

    @app.get("/who")
    @auth_required("header")
    def who() -> str:
        return str(current_user.email)

    with backend.unit(app):
        admin = _seed(backend.datastore)
        key = str(backend.datastore.user_pk(admin))
    client = app.test_client()
    assert client.get("/who", headers={"X-Remote-User": "admin@example.com"}).status_code == 200
    assert client.get("/who", headers={"X-Remote-User": key}).status_code == 401
