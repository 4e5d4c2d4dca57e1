"""Password hashing with scrypt (a memory-hard, deliberately slow KDF from the standard library)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from ..errors import LoupeError

# n=2**15, r=8 costs ~32 MiB and ~0.1 s per check on one core: slow for guessing, fine for logins.
_N, _R, _P, _LEN = 2**15, 8, 1, 32
_MAXMEM = 64 * 2**20
MIN_LENGTH = 8


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def check_new_password(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise LoupeError(f"passwords need at least {MIN_LENGTH} characters")


@functools.cache
def dummy_hash() -> str:
    """A well-formed hash with today's cost that no password matches (the key is all zeros).

    Checking a password against it costs as much as a real check, so logins for unknown or disabled
    users take as long as for real ones and do not reveal which names exist.
    """
    return f"scrypt${_N}${_R}${_P}${_b64(secrets.token_bytes(16))}${_b64(bytes(_LEN))}"


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("password must not be empty")
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LEN, maxmem=_MAXMEM)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    expected = base64.b64decode(key)
    candidate = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                               p=int(p), dklen=len(expected), maxmem=_MAXMEM)
    return hmac.compare_digest(candidate, expected)
