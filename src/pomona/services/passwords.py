"""Password hashing for local portal sign-in: argon2id with OWASP's recommended parameters.

OWASP's Password Storage Cheat Sheet lists argon2id with m=19 MiB, t=2, p=1 as a minimum configuration.
argon2-cffi's own defaults (64 MiB, t=3, p=4) cost 148 ms per check on the 2-core machine, which alone
broke the portal's 100 ms budget (bench/portal.py); these cost about 17 ms. Hashes made with other
parameters still verify and are upgraded at the next successful sign-in.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8


@cache
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return hasher().hash(password)


@cache
def _dummy_hash() -> str:
    return hasher().hash("pomona: no such user")


def verify_password(stored: str | None, password: str) -> tuple[bool, str | None]:
    """(matches, a new hash to store when the stored one uses older parameters). With no stored hash it
    still spends the time of one check, so a missing account does not answer faster than a wrong password."""
    try:
        if stored is None:
            hasher().verify(_dummy_hash(), password + "\x00")
            return False, None
        hasher().verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False, None
    return True, (hash_password(password) if hasher().check_needs_rehash(stored) else None)
