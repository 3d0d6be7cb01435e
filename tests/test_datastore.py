"""The UserDatastore API, on every ORM and database."""

from __future__ import annotations

from typing import Any

import pytest

from flask_sessionstore import (
    ConstraintError,
    DuplicateError,
    PasswordError,
    PasswordHasher,
    SessionStoreError,
    UnknownRoleError,
    UserExistsError,
)

from .backends import Backend


def _count_users(ds: Any) -> int:
    return sum(1 for email in ("ann@example.com", "bob@example.com") if ds.find_user(email=email))


# -- users ---------------------------------------------------------------------------


def test_create_user_hashes_password_and_defaults_active(ds: Any) -> None:
    user = ds.create_user(email="ann@example.com", password="correct horse")
    assert user.password != "correct horse"
    assert user.password.startswith("$argon2")
    assert user.active is True
    assert ds.verify_password("correct horse", user)
    assert not ds.verify_password("wrong", user)


def test_create_user_takes_roles_by_name_or_object_and_keeps_callers_list(ds: Any) -> None:
    admin = ds.create_role(name="admin")
    ds.create_role(name="editor")
    roles = ["editor", admin]
    user = ds.create_user(email="ann@example.com", password="pw", roles=roles)
    assert roles == ["editor", admin]
    fresh = ds.find_user(email="ann@example.com")
    assert sorted(r.name for r in ds.models.roles_of(fresh)) == ["admin", "editor"]
    assert user.has_role("admin") and user.has_role(admin) and not user.has_role("other")


def test_create_user_with_unknown_role_raises_and_writes_nothing(ds: Any) -> None:
    with pytest.raises(UnknownRoleError, match="nosuchrole"):
        ds.create_user(email="ann@example.com", password="pw", roles=["nosuchrole"])
    assert ds.find_user(email="ann@example.com") is None


def test_duplicate_user_raises_and_rolls_back(ds: Any) -> None:
    ds.create_user(email="ann@example.com", password="pw")
    with pytest.raises(UserExistsError):
        ds.create_user(email="ann@example.com", password="other")
    with pytest.raises(UserExistsError):
        ds.create_user(email="ANN@Example.com", password="other")
    # The datastore is still usable and nothing was half-written.
    ds.create_user(email="bob@example.com", password="pw")
    assert _count_users(ds) == 2
    assert ds.authenticate("ann@example.com", "pw") is not None


def test_user_exists_error_is_a_library_error() -> None:
    assert issubclass(UserExistsError, ConstraintError)
    assert issubclass(ConstraintError, SessionStoreError)


def test_get_user_by_pk_email_and_garbage(ds: Any) -> None:
    user = ds.create_user(email="Ann@Example.com", password="pw")
    pk = ds.user_pk(user)
    assert ds.get_user(pk) == user
    assert ds.get_user(str(pk)) == user
    assert ds.get_user("ann@example.com") == user
    assert ds.get_user("ANN@EXAMPLE.COM") == user
    # Values that are not a primary key never reach the database as one.
    for garbage in (
        "nobody@example.com",
        "abc",
        "99999999999999999999999",
        "-1",
        "",
        None,
        "1; DROP TABLE user",
        "\x00",
        "\u00b2",  # superscript two: str.isdigit() says yes, int() says no
        "\u0663",  # Arabic-Indic three: int() takes it, no key is written so
        "1_000",
        "0" * 10_000,  # int() refuses strings of more than 4,300 digits
        3.5,
        True,
    ):
        assert ds.get_user(garbage) is None, garbage


@pytest.mark.parametrize("email", ["\u00dcnal@Example.com", "\u00e7elik@\u00d6rnek.com"])
def test_case_insensitive_lookup_folds_non_ascii_letters(ds: Any, email: str) -> None:
    user = ds.create_user(email=email, password="pw")
    assert ds.authenticate(email, "pw") == user
    assert ds.authenticate(email.lower(), "pw") == user
    assert ds.authenticate(email.upper(), "pw") == user


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        # Each translator reports a uniqueness violation as DuplicateError, whatever
        # the database's wording (tests/test_contract.py checks that on every ORM).
        (DuplicateError("UNIQUE constraint failed: user.email"), UserExistsError),
        (DuplicateError("(1062, \"Duplicate entry 'ann@example.com' for key 'email'\")"),
         UserExistsError),
        (ConstraintError("NOT NULL constraint failed: user.password"), ConstraintError),
        # Words alone mean nothing: a constraint failure that merely says "unique".
        (ConstraintError("CHECK constraint failed: unique_looking_name"), ConstraintError),
    ],
)
def test_only_uniqueness_failures_mean_the_user_exists(
    ds: Any, monkeypatch: pytest.MonkeyPatch, raised: Exception, error: type[Exception]
) -> None:
    def failing_put(model: Any) -> Any:
        raise raised

    monkeypatch.setattr(ds.models, "put", failing_put)
    with pytest.raises(ConstraintError) as caught:
        ds.create_user(email="ann@example.com", password="pw")
    assert type(caught.value) is error


def test_find_user_ands_its_arguments_and_can_ignore_case(backend: Backend, ds: Any) -> None:
    ds.create_user(email="ann@example.com", password="pw")
    ds.create_user(email="bob@example.com", password="pw", active=False)
    assert ds.find_user(email="ann@example.com", active=True).email == "ann@example.com"
    assert ds.find_user(email="bob@example.com", active=True) is None
    # An exact lookup is exact on every database, whatever its collation (S33): on
    # MariaDB, whose default collation ignores case, too.
    assert ds.find_user(email="ANN@example.com") is None
    assert ds.find_user(email="ANN@example.com", case_insensitive=True).email == "ann@example.com"


def test_delete_user_removes_role_links_and_sessions(backend: Backend, app: Any, ds: Any) -> None:
    ds.create_role(name="admin")
    ds.create_user(email="ann@example.com", password="pw", roles=["admin"])
    client = app.test_client()
    assert (
        client.post("/login", data={"email": "ann@example.com", "password": "pw"}).status_code
        == 200
    )
    assert len(backend.session_rows()) == 1
    ds.delete_user(ds.find_user(email="ann@example.com"))
    assert ds.find_user(email="ann@example.com") is None
    assert backend.session_rows() == []
    assert client.get("/me").status_code == 401
    # The role is still there, and no link points at a missing user.
    role = ds.find_role("admin")
    assert role is not None
    ds.create_user(email="bob@example.com", password="pw", roles=["admin"])


def test_list_users_and_roles(ds: Any) -> None:
    ds.create_role(name="admin")
    ds.create_role(name="editor")
    for name in ("ann", "bob", "cat"):
        ds.create_user(email=f"{name}@example.com", password="pw", roles=["admin"])
    assert [u.email for u in ds.list_users()] == [
        "ann@example.com",
        "bob@example.com",
        "cat@example.com",
    ]
    assert [u.email for u in ds.list_users(offset=1, limit=1)] == ["bob@example.com"]
    assert ds.list_users(offset=3) == []
    assert all(u.has_role("admin") for u in ds.list_users())
    assert sorted(r.name for r in ds.list_roles()) == ["admin", "editor"]
    with pytest.raises(ValueError):
        ds.list_users(offset=-1)


def test_activate_deactivate_toggle_report_changes(ds: Any) -> None:
    user = ds.create_user(email="ann@example.com", password="pw")
    assert ds.activate_user(user) is False
    assert ds.deactivate_user(user) is True
    assert ds.deactivate_user(user) is False
    assert ds.find_user(email="ann@example.com").active is False
    assert ds.toggle_active(user) is True
    assert ds.find_user(email="ann@example.com").active is True
    assert ds.toggle_active(user) is False


def test_deactivation_ends_sessions(backend: Backend, app: Any, ds: Any) -> None:
    ds.create_user(email="ann@example.com", password="pw")
    client = app.test_client()
    client.post("/login", data={"email": "ann@example.com", "password": "pw"})
    assert client.get("/me").status_code == 200
    ds.deactivate_user(ds.find_user(email="ann@example.com"))
    assert backend.session_rows() == []
    assert client.get("/me").status_code == 401
    assert (
        client.post("/login", data={"email": "ann@example.com", "password": "pw"}).status_code
        == 401
    )


# -- roles and permissions -----------------------------------------------------------


def test_roles_create_find_and_duplicates(ds: Any) -> None:
    role = ds.create_role(name="admin", description="Administrators")
    assert ds.find_role("admin") == role
    assert ds.find_role("nobody") is None
    assert ds.find_or_create_role("admin") == role
    assert ds.find_or_create_role("editor").name == "editor"
    with pytest.raises(ConstraintError):
        ds.create_role(name="admin")
    with pytest.raises(SessionStoreError):
        ds.create_role(name="")


def test_add_and_remove_role_report_changes(ds: Any) -> None:
    ds.create_role(name="admin")
    user = ds.create_user(email="ann@example.com", password="pw")
    assert ds.add_role_to_user(user, "admin") is True
    assert ds.add_role_to_user(user, "admin") is False
    assert ds.find_user(email="ann@example.com").has_role("admin")
    assert ds.remove_role_from_user(user, ds.find_role("admin")) is True
    assert ds.remove_role_from_user(user, "admin") is False
    assert not ds.find_user(email="ann@example.com").has_role("admin")
    with pytest.raises(UnknownRoleError):
        ds.add_role_to_user(user, "nosuchrole")
    with pytest.raises(UnknownRoleError):
        ds.remove_role_from_user(user, "nosuchrole")


def test_permissions_on_roles_reach_users(ds: Any) -> None:
    ds.create_role(name="analyst", permissions=["reports.read"])
    user = ds.create_user(email="ann@example.com", password="pw", roles=["analyst"])
    assert user.has_permission("reports.read")
    assert ds.add_permissions_to_role("analyst", ["reports.write", "reports.read"]) is True
    assert ds.add_permissions_to_role("analyst", "reports.write") is False
    assert ds.find_role("analyst").get_permissions() == {"reports.read", "reports.write"}
    assert ds.remove_permissions_from_role("analyst", ["reports.read"]) is True
    assert ds.remove_permissions_from_role("analyst", ["reports.read"]) is False
    fresh = ds.find_user(email="ann@example.com")
    assert fresh.get_permissions() == {"reports.write"}
    assert not fresh.has_permission("reports.read")
    with pytest.raises(UnknownRoleError):
        ds.add_permissions_to_role("nosuchrole", ["x"])


# -- passwords -----------------------------------------------------------------------


def test_authenticate(ds: Any) -> None:
    user = ds.create_user(email="ann@example.com", password="pw")
    ds.create_user(email="bob@example.com", password="pw", active=False)
    assert ds.authenticate("ann@example.com", "pw") == user
    assert ds.authenticate("ANN@example.com", "pw") == user
    assert ds.authenticate(ds.user_pk(user), "pw") == user
    assert ds.authenticate("ann@example.com", "wrong") is None
    assert ds.authenticate("nobody@example.com", "pw") is None
    assert ds.authenticate("bob@example.com", "pw") is None
    assert ds.authenticate("ann@example.com", "") is None


def test_user_without_password_never_authenticates(ds: Any) -> None:
    ds.create_user(email="ann@example.com")
    assert ds.authenticate("ann@example.com", "") is None
    assert ds.authenticate("ann@example.com", "None") is None


@pytest.mark.parametrize("password", ["p" * 1024, "pässwörd ✓ 密码", "x" * 100 + "y"])
def test_long_and_unicode_passwords_are_exact(ds: Any, password: str) -> None:
    ds.create_user(email="ann@example.com", password=password)
    assert ds.authenticate("ann@example.com", password) is not None
    # No truncation: a password differing past byte 72 (bcrypt's limit) is wrong.
    assert ds.authenticate("ann@example.com", password[:-1] + "!") is None


@pytest.mark.parametrize("password", ["", "p" * 1025, b"bytes", 12345])
def test_unusable_passwords_raise_and_write_nothing(ds: Any, password: Any) -> None:
    with pytest.raises(PasswordError):
        ds.create_user(email="ann@example.com", password=password)
    assert ds.find_user(email="ann@example.com") is None


def test_outdated_hash_is_upgraded_on_login(ds: Any) -> None:
    old = PasswordHasher(["pbkdf2_sha256"])
    ds.create_user(email="ann@example.com")
    user = ds.find_user(email="ann@example.com")
    user.password = old.hash("pw")
    ds.put(user)
    ds.commit()
    assert ds.authenticate("ann@example.com", "pw") is not None
    assert ds.find_user(email="ann@example.com").password.startswith("$argon2")


def test_change_password_with_and_without_old(ds: Any) -> None:
    user = ds.create_user(email="ann@example.com", password="old")
    ds.change_password(user, "new")
    assert ds.authenticate("ann@example.com", "new") is not None
    with pytest.raises(PasswordError):
        ds.change_password(user, "wrong", "newer")
    assert ds.authenticate("ann@example.com", "new") is not None
    ds.change_password(user, "new", "newer")
    assert ds.authenticate("ann@example.com", "newer") is not None


def test_generate_password_returns_the_new_password(ds: Any) -> None:
    user = ds.create_user(email="ann@example.com", password="old")
    new = ds.generate_password(user)
    assert len(new) >= 16 and new != "old"
    assert ds.authenticate("ann@example.com", new) is not None
    assert ds.authenticate("ann@example.com", "old") is None


# -- transactions --------------------------------------------------------------------


def test_transaction_commits_together(ds: Any) -> None:
    with ds.transaction():
        ds.create_role(name="admin")
        ds.create_user(email="ann@example.com", password="pw", roles=["admin"])
    assert ds.find_user(email="ann@example.com").has_role("admin")


def test_transaction_rolls_back_on_any_error(backend: Backend, ds: Any) -> None:
    if not backend.transactional:
        pytest.skip(
            f"{backend.orm} has no multi-document transactions here; what transaction() "
            f"guarantees instead is pinned by tests/test_orm_{backend.orm}.py"
        )
    with pytest.raises(RuntimeError), ds.transaction():
        ds.create_user(email="ann@example.com", password="pw")
        ds.create_user(email="bob@example.com", password="pw")
        raise RuntimeError("boom")
    assert _count_users(ds) == 0
    with pytest.raises(UserExistsError), ds.transaction():
        ds.create_user(email="ann@example.com", password="pw")
        ds.create_user(email="ann@example.com", password="pw")
    assert _count_users(ds) == 0
