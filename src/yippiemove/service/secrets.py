"""Secrets: mail credentials encrypted at rest, customer passwords and API tokens hashed.

- Mail passwords are needed again (to run the job, and for re-runs), so they are
  encrypted with Fernet (AES-128-CBC + HMAC-SHA256).  The key is never in the database:
  it comes from ``YIPPIEMOVE_CREDENTIALS_KEY`` or a 0600 key file, so a copy of the
  database alone reveals nothing.
- Customer passwords are only ever compared, so they are hashed with argon2id.
- API tokens are 32 random bytes: a plain SHA-256 is enough to store them (no
  dictionary to attack), and lets a request's token be looked up by its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.fernet import Fernet, InvalidToken

from ..jobs import ports as jobs_ports
from .config import read_or_create_secret

__all__ = [
    "CredentialBox",
    "CredentialsUnreadable",
    "hash_password",
    "hash_token",
    "new_token",
    "password_needs_rehash",
    "verify_password",
]

KEY_ENV = "YIPPIEMOVE_CREDENTIALS_KEY"
TOKEN_PREFIX = "ym_"

_hasher = PasswordHasher()


class CredentialsUnreadable(jobs_ports.CredentialsUnreadable):
    """The blob cannot be decrypted (another key, or tampered with)."""


class CredentialBox:
    """Encrypts and decrypts a job's credentials (a small JSON object)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, key_file: Path) -> CredentialBox:
        """Key from ``YIPPIEMOVE_CREDENTIALS_KEY``, else ``key_file`` (created 0600)."""
        env = os.environ.get(KEY_ENV)
        if env:
            try:
                return cls(env.strip().encode())
            except ValueError:
                raise ValueError(
                    f"{KEY_ENV} is not a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        key = read_or_create_secret(key_file, Fernet.generate_key).strip()
        try:
            return cls(key)
        except ValueError:
            raise ValueError(f"{key_file} does not hold a Fernet key") from None

    def encrypt(self, data: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(data).encode())

    def decrypt(self, blob: bytes) -> dict[str, Any]:
        try:
            out = json.loads(self._fernet.decrypt(blob))
        except (InvalidToken, ValueError):
            raise CredentialsUnreadable(
                "the stored credentials cannot be decrypted (was the key changed?)"
            ) from None
        if not isinstance(out, dict):
            raise CredentialsUnreadable("the stored credentials are malformed")
        return out


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


def new_token() -> str:
    """A new API token: ``ym_`` and 32 random bytes, url-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)
