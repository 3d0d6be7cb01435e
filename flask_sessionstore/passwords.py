"""Password hashing and verification over a libpass ``CryptContext``.

argon2 is the default scheme; bcrypt (through ``bcrypt_sha256``, which has no 72-byte
truncation) and pbkdf2_sha256 can be chosen. Hashes made with a scheme that is no longer
the default are reported as needing an upgrade, so the datastore can re-hash them on the
next successful login.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from passlib.context import CryptContext

from .exceptions import PasswordError

__all__ = ["DEFAULT_SCHEMES", "PasswordHasher"]

#: The schemes understood by default, the preferred one first.
DEFAULT_SCHEMES: tuple[str, ...] = ("argon2", "bcrypt_sha256", "pbkdf2_sha256")


class PasswordHasher:
    """Hashes and verifies passwords.

    :param schemes: libpass scheme names; the first one hashes new passwords, the others
        are still verified and marked for upgrade.
    :param max_length: the longest password accepted, in characters. Longer passwords
        raise :class:`~flask_sessionstore.exceptions.PasswordError` instead of being
        truncated, so no two different passwords ever share a hash.
    :param settings: extra ``CryptContext`` settings, such as
        ``{"argon2__memory_cost": 19456}``.
    :param max_concurrent: how many hashes or verifications may run at once in this
        process; more wait their turn (S34). Each argon2 call holds its memory cost
        (64 MiB by default) while it runs, so this bounds what a burst of login attempts
        can take; by default, one per CPU.
    """

    def __init__(
        self,
        schemes: Sequence[str] = DEFAULT_SCHEMES,
        *,
        max_length: int = 1024,
        settings: Mapping[str, Any] | None = None,
        max_concurrent: int | None = None,
    ):
        if not schemes:
            raise ValueError("PasswordHasher needs at least one scheme, such as 'argon2'.")
        self.schemes = tuple(schemes)
        self.max_length = max_length
        self.max_concurrent = max_concurrent or os.cpu_count() or 1
        self._slots = threading.BoundedSemaphore(self.max_concurrent)
        self._context = CryptContext(
            schemes=list(self.schemes), deprecated="auto", **dict(settings or {})
        )
        # A hash of a random value, verified whenever there is no real hash to check, so
        # that an unknown user costs the same work as a wrong password (no enumeration).
        self._dummy_hash = self._context.hash("no user has this password \x00 dummy")

    def normalize(self, password: str) -> str:
        """Return the form of ``password`` that is hashed.

        Passwords are NFKC-normalized (as NIST SP 800-63B recommends) so that the same
        password typed on two keyboards verifies.

        :raises PasswordError: if ``password`` is not a non-empty string within
            :attr:`max_length` characters.
        """
        if not isinstance(password, str):
            raise PasswordError(f"A password must be a str, not {type(password).__name__}.")
        # The length first: normalizing costs time in the length, and may lengthen.
        _check_length(password, self.max_length)
        normalized = unicodedata.normalize("NFKC", password)
        try:
            normalized.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate: a Python str, but not text; no hash scheme takes it.
            raise PasswordError("A password must not contain a lone surrogate.") from None
        if not normalized:
            raise PasswordError("A password must not be empty.")
        _check_length(normalized, self.max_length)
        return normalized

    def hash(self, password: str) -> str:
        """Hash ``password`` with the preferred scheme.

        :raises PasswordError: see :meth:`normalize`.
        """
        normalized = self.normalize(password)
        with self._slots:
            return str(self._context.hash(normalized))

    def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        """Check ``password`` against ``password_hash``.

        The work done is the same whether or not there is a hash to check.

        :returns: ``(matches, new_hash)``; ``new_hash`` is set when the password matched
            and the stored hash should be replaced (an older scheme or weaker settings).
        """
        try:
            candidate = self.normalize(password)
        except PasswordError:
            candidate = None
        if candidate is None or not password_hash or not self._context.identify(password_hash):
            self.dummy_verify()
            return False, None
        with self._slots:
            matched, new_hash = self._context.verify_and_update(candidate, password_hash)
        return bool(matched), new_hash

    def dummy_verify(self) -> None:
        """Spend the work of one verification, for a login whose user does not exist."""
        with self._slots:
            self._context.verify("wrong", self._dummy_hash)


def _check_length(password: str, max_length: int) -> None:
    if len(password) > max_length:
        raise PasswordError(
            f"A password must be at most {max_length} characters long; "
            f"this one has {len(password)}."
        )
