"""Bounded password work (S34): what an anonymous request can make the server spend.

Finding 8 of the security review: every login attempt costs argon2 at 64 MiB, eight at
once took 345 MiB, and a refused 3 MB password cost seconds of Unicode normalization
before its length was checked. These are properties of the hasher, not of an ORM.
"""

from __future__ import annotations

import threading
import time
import unicodedata
from typing import Any

import pytest

from flask_sessionstore import PasswordError, PasswordHasher


def _fast(**options: Any) -> PasswordHasher:
    return PasswordHasher(
        settings={"argon2__memory_cost": 8, "argon2__time_cost": 1, "argon2__parallelism": 1},
        **options,
    )


@pytest.mark.parametrize("password", ["a" * 3_000_000, "\ufdfa" * 2000])
def test_s34_the_length_is_checked_before_normalization(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    hasher = _fast()
    normalized: list[int] = []
    real = unicodedata.normalize

    def counting(form: str, text: str) -> str:
        normalized.append(len(text))
        return real(form, text)

    monkeypatch.setattr(unicodedata, "normalize", counting)
    with pytest.raises(PasswordError, match="at most 1024"):
        hasher.hash(password)
    assert hasher.verify(password, hasher.hash("pw")) == (False, None)
    # Only the short, real password was ever normalized; the long one never.
    assert all(length <= 1024 for length in normalized), normalized


def test_s34_a_password_that_normalization_lengthens_is_measured_after_too() -> None:
    # U+FDFA is one character that NFKC turns into 18.
    hasher = _fast(max_length=100)
    with pytest.raises(PasswordError, match="at most 100"):
        hasher.hash("\ufdfa" * 10)


def test_s34_concurrent_hashing_is_capped_per_process() -> None:
    """Real threads: eight logins at once, at most two argon2 calls run together."""
    hasher = _fast(max_concurrent=2)
    stored = hasher.hash("pw")
    running, peak, lock = 0, 0, threading.Lock()
    context = hasher._context
    real_verify = context.verify_and_update

    def slow_verify(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)  # long enough for the other threads to pile up
            return real_verify(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    context.verify_and_update = slow_verify
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(hasher.verify("pw", stored)[0]))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [True] * 8
    assert peak == 2


def test_s34_the_default_cap_is_one_call_per_cpu() -> None:
    import os

    assert _fast().max_concurrent == (os.cpu_count() or 1)
