"""Password hashes in the schemes Dovecot and the policy know: made for a new
password, and checked against a candidate (the audit). Dovecot reads the hash with
its scheme in front (render/dovecot.py adds it); the secrets file keeps it bare."""

from __future__ import annotations

import warnings
from typing import Literal

Scheme = Literal["argon2id", "bcrypt", "sha512-crypt"]

ARGON2_TIME_COST = 3
ARGON2_MEMORY_KIB = 65536
ARGON2_PARALLELISM = 1
"""Dovecot checks argon2 hashes with libsodium, which only knows one lane."""
BCRYPT_ROUNDS = 12
SHA512_ROUNDS = 100_000


class SchemeUnavailable(Exception):
    """This Python cannot make or check hashes of that scheme."""


def _argon2() -> object:
    from argon2 import PasswordHasher

    return PasswordHasher(
        time_cost=ARGON2_TIME_COST,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
    )


def _crypt() -> object:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
    except ImportError:
        raise SchemeUnavailable(
            "sha512-crypt hashes need Python's crypt module, which this Python lacks",
        ) from None
    return crypt


def hash_password(password: str, scheme: Scheme) -> str:
    if scheme == "argon2id":
        from argon2 import PasswordHasher

        hasher = _argon2()
        assert isinstance(hasher, PasswordHasher)
        return hasher.hash(password)
    if scheme == "bcrypt":
        import bcrypt

        # bcrypt reads at most 72 bytes: a longer password would be cut without a word
        if len(password.encode()) > 72:
            raise ValueError("bcrypt cannot hash more than 72 bytes; use argon2id")
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
    crypt = _crypt()
    salt = crypt.mksalt(crypt.METHOD_SHA512, rounds=SHA512_ROUNDS)  # type: ignore[attr-defined]
    made: str = crypt.crypt(password, salt)  # type: ignore[attr-defined]
    return made


def matches(password: str, password_hash: str, scheme: str) -> bool:
    """Is ``password_hash`` (bare or with Dovecot's {SCHEME} in front) a hash of
    ``password``? Costs what the hash was made to cost."""
    bare = password_hash.split("}", 1)[1] if password_hash.startswith("{") else password_hash
    if scheme == "argon2id":
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        hasher = _argon2()
        assert isinstance(hasher, PasswordHasher)
        try:
            return bool(hasher.verify(bare, password))
        except (VerificationError, InvalidHashError):
            return False
    if scheme == "bcrypt":
        import bcrypt

        try:
            return bool(bcrypt.checkpw(password.encode()[:72], bare.encode()))
        except ValueError:
            return False
    if scheme == "sha512-crypt":
        crypt = _crypt()
        return bool(crypt.crypt(password, bare) == bare)  # type: ignore[attr-defined]
    return False
