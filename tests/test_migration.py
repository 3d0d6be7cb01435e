"""The migration guide's code (docs/migration.rst includes it from here)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from passlib.hash import bcrypt

from flask_sessionstore import PasswordHasher


class FlaskSecurityPasswords(PasswordHasher):
    """Verifies Flask-Security's hashes too, and replaces each with a plain argon2 hash
    at its user's next login.

    Flask-Security (unless ``SECURITY_PASSWORD_SINGLE_HASH`` was set) hashed
    ``base64(HMAC-SHA512(SECURITY_PASSWORD_SALT, password))``, not the password.
    """

    def __init__(self, salt: str, **options: Any) -> None:
        super().__init__(("argon2", "bcrypt", "pbkdf2_sha512", "sha512_crypt"), **options)
        self.salt = salt.encode("utf-8")

    def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        matched, new_hash = super().verify(password, password_hash)
        if matched or not isinstance(password, str):
            return matched, new_hash
        signed = hmac.new(self.salt, password.encode("utf-8"), hashlib.sha512).digest()
        # 88 characters, of which bcrypt (as Flask-Security called it) kept 72.
        legacy = base64.b64encode(signed).decode("ascii")[:72]
        if super().verify(legacy, password_hash)[0]:
            return True, self.hash(password)  # upgraded: no pre-hash any more
        return False, None


def _flask_security_hash(password: str, salt: str) -> str:
    # What Flask-Security stored: bcrypt over the salted HMAC of the password.
    signed = base64.b64encode(hmac.new(salt.encode(), password.encode(), hashlib.sha512).digest())
    return str(bcrypt.hash(signed[:72]))  # the bcrypt of that time kept 72 bytes


def test_flask_security_hashes_verify_and_are_upgraded(ds: Any) -> None:
    ds.password_hasher = FlaskSecurityPasswords("old-salt")
    ds.create_user(email="ann@example.com")
    user = ds.find_user(email="ann@example.com")
    user.password = _flask_security_hash("old password", "old-salt")
    ds.put(user)
    ds.commit()
    assert ds.authenticate("ann@example.com", "wrong") is None
    assert ds.authenticate("ann@example.com", "old password") is not None
    upgraded = ds.find_user(email="ann@example.com").password
    assert upgraded.startswith("$argon2")
    assert PasswordHasher().verify("old password", upgraded)[0]
