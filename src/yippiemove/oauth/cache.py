"""The command line's cache of refresh grants: one JSON file, mode 0600, in a 0700
directory of the user's data directory, one entry per provider and address.

Only refresh grants are kept, without their access token (short-lived, fetched again
at the next run).  Writes go to a new 0600 file that replaces the old one, so the file
is never readable by others, not even for a moment, and a crash leaves the old one.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from .tokens import GrantError, check_grant

__all__ = ["TokenCache", "TokenCacheError"]


class TokenCacheError(OSError):
    """The cache cannot be read or written safely; the message says why."""


def _key(provider: str, address: str) -> str:
    return f"{provider}:{address.strip().lower()}"


class TokenCache:
    """``path``: the cache file (``<user data dir>/oauth/tokens.json`` for the CLI)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"TokenCache({str(self.path)!r})"

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise TokenCacheError(
                f"cannot read the token cache {self.path}: {exc.strerror}"
            ) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise TokenCacheError(
                    f"the token cache {self.path} is readable by others "
                    f"(mode {stat.S_IMODE(st.st_mode):o}); remove it or chmod 600 it"
                )
            try:
                data = json.loads(f.read())
            except ValueError:
                return {}  # a damaged cache is only a cache: sign in again
        return data if isinstance(data, dict) else {}

    def get(self, provider: str, address: str) -> dict[str, Any] | None:
        """The cached refresh grant of ``address`` at ``provider``, or None."""
        entry = self._load().get(_key(provider, address))
        if not isinstance(entry, dict):
            return None
        try:
            grant = check_grant(entry)
        except GrantError:
            return None
        if grant.get("kind") != "refresh" or grant.get("provider") != provider:
            return None
        return grant

    def put(self, provider: str, address: str, grant: dict[str, Any]) -> None:
        """Keep ``grant`` (its refresh token; the access token is left out)."""
        data = self._load()
        keep = {k: v for k, v in grant.items() if k not in ("access_token", "expires_at")}
        data[_key(provider, address)] = keep
        self._write(data)

    def forget(self, provider: str, address: str) -> bool:
        """Drop the entry; True when there was one."""
        data = self._load()
        if data.pop(_key(provider, address), None) is None:
            return False
        self._write(data)
        return True

    def _write(self, data: dict[str, Any]) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            tmp = folder / f".{self.path.name}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise TokenCacheError(
                f"cannot write the token cache {self.path}: {exc.strerror}"
            ) from None
