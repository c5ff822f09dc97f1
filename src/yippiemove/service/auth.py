"""Account protection kept in the control database: log-in/sign-up throttling, web
sessions, pending sign-ups (docs/security.md, "Issue 14: Accounts").

Everything is in the control database (plain types; SQLite or PostgreSQL), so a restart
forgets nothing and every web process sees the same counters and sessions.

Throttling (:meth:`AuthStore.login_wait`) never locks the owner out:

* per **source address** (an IPv6 address counts as its /64): after
  :data:`IP_FREE` failures the address waits a delay that doubles with every further
  failure (30 s, 1 min, 2 min ... at most :data:`MAX_DELAY`), whatever account it tries;
  an attacker slows down only his own address;
* per **account**: after :data:`ACCOUNT_FREE` failures the account is "under attack"
  with the same growing delay, which applies only to addresses that themselves
  failed on this account recently.  An address with no recent failure on the account
  (the owner's, usually) has its password checked as always: the right one logs in.

A key with no failure for :data:`FORGET` seconds is forgotten (and pruned).
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from .db import AuthThrottle, Database, PendingSignup, WebSession

__all__ = ["AuthStore", "client_key"]

IP_FREE = 10
ACCOUNT_FREE = 10
SIGNUP_FREE = 5
SIGNUP_MAILS_FREE = 3
BASE_DELAY = 30.0
MAX_DELAY = 900.0
FORGET = 3600.0
#: A session nobody logged into lives a day; a logged-in one SESSION_TTL (sliding).
ANON_TTL = 24 * 3600.0
SESSION_TTL = 14 * 24 * 3600.0
SIGNUP_TTL = 24 * 3600.0


def client_key(host: str | None) -> str:
    """The throttling key of a client address: IPv4 as is, IPv6 by its /64."""
    if not host:
        return "?"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def delay(failures: int, free: int) -> float:
    """Seconds to wait after ``failures`` failures of which ``free`` cost nothing."""
    if failures < free:
        return 0.0
    return min(MAX_DELAY, BASE_DELAY * 2.0 ** min(failures - free, 30))


class AuthStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    # ------------------------------------------------------------------ throttling

    def _counts(self, keys: list[str], now: float) -> dict[str, tuple[int, float]]:
        with self.db.read() as s:
            rows = s.scalars(select(AuthThrottle).where(AuthThrottle.key.in_(keys))).all()
            return {r.key: (r.failures, r.last) for r in rows if now - r.last < FORGET}

    def _bump(self, keys: list[str], now: float) -> None:
        for attempt in range(3):
            try:
                with self.db.session() as s:
                    for key in keys:
                        row = s.get(AuthThrottle, key, with_for_update=True)
                        if row is None:
                            s.add(AuthThrottle(key=key, failures=1, last=now))
                            s.flush()
                        else:
                            fresh = now - row.last >= FORGET
                            row.failures = 1 if fresh else row.failures + 1
                            row.last = now
                return
            except IntegrityError:  # another process inserted the same key first
                if attempt == 2:
                    raise

    def _clear(self, keys: list[str]) -> None:
        with self.db.session() as s:
            s.execute(delete(AuthThrottle).where(AuthThrottle.key.in_(keys)))

    @staticmethod
    def _login_keys(client: str, email: str) -> tuple[str, str, str]:
        email = email.strip().lower()[:320]
        return f"ip:{client}", f"acct:{email}", f"pair:{client}|{email}"

    def login_wait(self, client: str, email: str) -> float:
        """Seconds before ``client`` may have a password for ``email`` checked; 0: now."""
        now = self.clock()
        ip, acct, pair = self._login_keys(client, email)
        counts = self._counts([ip, acct, pair], now)
        wait = 0.0
        if ip in counts:
            n, last = counts[ip]
            wait = max(wait, last + delay(n, IP_FREE) - now)
        if acct in counts and pair in counts:  # only addresses that failed on it wait
            n, last = counts[acct]
            wait = max(wait, last + delay(n, ACCOUNT_FREE) - now)
        return max(0.0, wait)

    def login_failed(self, client: str, email: str) -> None:
        self._bump(list(self._login_keys(client, email)), self.clock())

    def login_succeeded(self, client: str, email: str) -> None:
        """The account and this address's record on it are cleared (not the address's
        own count: logging into one's own account does not buy more guesses elsewhere)."""
        _ip, acct, pair = self._login_keys(client, email)
        self._clear([acct, pair])

    def signup_wait(self, client: str) -> float:
        """Seconds before ``client`` may sign up again (every attempt counts)."""
        now = self.clock()
        key = f"signup:{client}"
        counts = self._counts([key], now)
        if key not in counts:
            return 0.0
        n, last = counts[key]
        return max(0.0, last + delay(n, SIGNUP_FREE) - now)

    def signup_attempted(self, client: str) -> None:
        self._bump([f"signup:{client}"], self.clock())

    def signup_mail_allowed(self, email: str) -> bool:
        """Whether a sign-up mail may go to ``email`` now (counted when it may): many
        sign-ups for one address, from anywhere, do not flood its inbox."""
        now = self.clock()
        key = f"signupmail:{email.strip().lower()[:320]}"
        counts = self._counts([key], now)
        if key in counts:
            n, last = counts[key]
            if last + delay(n, SIGNUP_MAILS_FREE) > now:
                return False
        self._bump([key], now)
        return True

    # ------------------------------------------------------------------ sessions

    def session_load(self, sid: str) -> tuple[int | None, dict[str, Any]] | None:
        """(user id, data) of a live session, None when unknown, revoked or expired."""
        if not sid or len(sid) > 200:
            return None
        with self.db.read() as s:
            row = s.get(WebSession, _hash(sid))
            if row is None or row.expires <= self.clock():
                return None
            return row.user_id, dict(row.data or {})

    def session_save(self, sid: str, user_id: int | None, data: dict[str, Any]) -> None:
        now = self.clock()
        expires = now + (SESSION_TTL if user_id is not None else ANON_TTL)
        with self.db.session() as s:
            row = s.get(WebSession, _hash(sid))
            if row is None:
                s.add(
                    WebSession(
                        id_hash=_hash(sid), user_id=user_id, data=data, created=now, expires=expires
                    )
                )
            else:
                row.user_id, row.data, row.expires = user_id, data, expires

    def session_delete(self, sid: str) -> None:
        with self.db.session() as s:
            s.execute(delete(WebSession).where(WebSession.id_hash == _hash(sid)))

    def revoke_sessions(self, user_id: int, keep: str | None = None) -> int:
        """Delete every session of ``user_id`` (but ``keep``'s); returns how many."""
        stmt = delete(WebSession).where(WebSession.user_id == user_id)
        if keep:
            stmt = stmt.where(WebSession.id_hash != _hash(keep))
        with self.db.session() as s:
            return int(s.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ sign-ups

    def signup_start(self, email: str, password_hash: str) -> str:
        """Store a pending sign-up; returns the token to mail."""
        token = secrets.token_urlsafe(32)
        with self.db.session() as s:
            s.add(
                PendingSignup(
                    token_hash=_hash(token),
                    email=email,
                    password_hash=password_hash,
                    expires=self.clock() + SIGNUP_TTL,
                )
            )
        return token

    def signup_take(self, token: str) -> tuple[str, str] | None:
        """(email, password hash) of a pending sign-up, removed; None if unknown/expired."""
        if not token or len(token) > 200:
            return None
        with self.db.session() as s:
            row = s.get(PendingSignup, _hash(token))
            if row is None:
                return None
            s.delete(row)
            if row.expires <= self.clock():
                return None
            return row.email, row.password_hash

    def signup_peek(self, token: str) -> bool:
        if not token or len(token) > 200:
            return False
        with self.db.read() as s:
            row = s.get(PendingSignup, _hash(token))
            return row is not None and row.expires > self.clock()

    # ------------------------------------------------------------------ upkeep

    def prune(self) -> None:
        now = self.clock()
        with self.db.session() as s:
            s.execute(delete(WebSession).where(WebSession.expires <= now))
            s.execute(delete(AuthThrottle).where(AuthThrottle.last <= now - FORGET))
            s.execute(delete(PendingSignup).where(PendingSignup.expires <= now))
