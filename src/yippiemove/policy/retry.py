"""What to do when the network or a server fails: retry, wait, report, or stop.

Pure code (no I/O, no clock): the engine asks :func:`classify` about an error and an
:class:`Effort` how long to wait before the next attempt, or whether to give up.

Classification (first match wins)
---------------------------------
========================================================  ============  ======================
What happened                                             Verdict       What the mover does
========================================================  ============  ======================
Microsoft's ``Request is throttled. Suggested Backoff     ``throttled`` waits (the suggested
Time: N milliseconds``, Gmail's ``Too many simultaneous                 time when given, capped),
connections`` and ``Account exceeded command or                         reconnects, runs the
bandwidth limits``, ``[THROTTLED]``                                     folder pass again
dropped connection, timeout, ``* BYE``, ``NO              ``retry``     backoff, reconnect, pass
[UNAVAILABLE]``, ``[INUSE]``, ``[SERVERBUG]``, Exchange's                again
``Server Unavailable``, cannot connect (after a first
contact)
``[OVERQUOTA]`` (other than Gmail's bandwidth text)       ``stop``      stops the job with a
authentication refused, TLS failure, no TLS for a                       clear message (exit 2)
password, LOGINDISABLED, an OAuth2 access token
refused twice (``TokenRefused``: the store already
tried a fresh token), the provider refusing any
token (``ConsentRevoked``: "sign in again")
``[LIMIT]``, ``[TOOBIG]``, ``[TRYCREATE]``, ``[NOPERM]``, ``message``   that message is reported
any other NO/BAD to one message's APPEND or FETCH                       as failed, the rest
                                                                        goes on
========================================================  ============  ======================

Effort
------
A folder pass is retried at most ``Options.retries`` times in a row *without progress*
(a pass that got further into the folder than every pass before it counts as progress
and starts the count again, so a long transfer over a flaky link is not given up while
it advances).  Waits grow exponentially (``base * 2**(n-1)``), are capped at
``Options.max_backoff`` seconds and jittered (equal jitter: between half and all of the
step) so that several workers do not come back at the same instant.  A server's
suggested wait is honoured (never retried earlier) up to the same cap.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from enum import StrEnum

from ..imap.errors import (
    AuthenticationError,
    CommandError,
    ConnectError,
    ConnectionLost,
    ConsentRevoked,
    ImapError,
    InsecureAuthError,
    TlsError,
)

__all__ = [
    "MESSAGE",
    "RETRY",
    "STOP",
    "THROTTLED",
    "Backoff",
    "Effort",
    "GaveUp",
    "Stopped",
    "Verdict",
    "VerdictKind",
    "classify",
    "classify_answer",
    "retryable",
    "suggested_delay",
]


class VerdictKind(StrEnum):
    """What kind of error it is, for the transfer (:class:`Verdict`)."""

    RETRY = "retry"
    THROTTLED = "throttled"
    STOP = "stop"
    MESSAGE = "message"


RETRY = VerdictKind.RETRY
THROTTLED = VerdictKind.THROTTLED
STOP = VerdictKind.STOP
MESSAGE = VerdictKind.MESSAGE


@dataclass(frozen=True)
class Verdict:
    """What an error means for the transfer.

    ``kind``: :data:`RETRY`, :data:`THROTTLED` (retry, but the server asked us to slow
    down), :data:`STOP` (permanent: stop the job) or :data:`MESSAGE` (permanent for one
    message: report it, go on).  ``why`` is a short phrase for people; ``delay`` the
    wait in seconds the server suggested, if it did.
    """

    kind: VerdictKind
    why: str
    delay: float | None = None

    @property
    def retry(self) -> bool:
        return self.kind in (RETRY, THROTTLED)


class GaveUp(ImapError):
    """Retried as often as allowed without getting further; the last error is the cause.

    Still ``transient``: a later run (or the service's restart of the job) may succeed.
    """

    transient = True

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


class Stopped(ImapError):
    """A permanent error that ends the whole transfer (e.g. the destination is full)."""

    transient = False


# ---------------------------------------------------------------------- texts

#: Exchange Online / Microsoft 365: "Request is throttled. Suggested Backoff Time: 201317
#: milliseconds" (answers NO or BAD, or BYE).
_MS_THROTTLED = re.compile(r"request is throttled", re.I)
_BACKOFF = re.compile(
    r"suggested\s+backoff\s+time\s*:?\s*(\d+(?:\.\d+)?)\s*"
    r"(milliseconds?|millisecs?|msecs?|ms|seconds?|secs?|s)?\b",
    re.I,
)
#: Gmail: "NO [ALERT] Too many simultaneous connections. (Failure)" at login.
_TOO_MANY = re.compile(r"too many (simultaneous |concurrent )?connections", re.I)
#: Gmail: "NO [OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)" -- the
#: daily IMAP bandwidth, not the mailbox size.
_BANDWIDTH = re.compile(r"exceeded command or bandwidth limits|bandwidth limit", re.I)
#: Exchange: "NO Server Unavailable. 15", "BYE Server Unavailable".
_UNAVAILABLE_TEXT = re.compile(r"server unavailable|temporar(il)?y unavailable", re.I)

_RETRY_CODES = frozenset(("UNAVAILABLE", "INUSE", "SERVERBUG"))
_AUTH_CODES = frozenset(
    ("AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED", "CONTACTADMIN")
)


def suggested_delay(text: str) -> float | None:
    """Seconds a server asked us to wait, from a "Suggested Backoff Time: N milliseconds"
    text (Microsoft); a bare number there is taken as milliseconds, as Microsoft writes it."""
    m = _BACKOFF.search(text)
    if m is None:
        return None
    value = float(m.group(1))
    unit = (m.group(2) or "ms").lower()
    if unit.startswith(("ms", "msec", "milli")):
        return value / 1000.0
    return value


def _throttle(text: str, code: str, *, command: str = "") -> Verdict | None:
    if _MS_THROTTLED.search(text) or _BACKOFF.search(text):
        delay = suggested_delay(text)
        hint = f" (it suggested waiting {delay:g} s)" if delay is not None else ""
        return Verdict(THROTTLED, f"the server is throttling us{hint}", delay)
    if _TOO_MANY.search(text):
        return Verdict(THROTTLED, "the server refused another simultaneous connection")
    if _BANDWIDTH.search(text):
        return Verdict(
            THROTTLED,
            "the account's IMAP bandwidth or command limit is used up (Gmail resets it "
            "after up to a day)",
        )
    if code == "THROTTLED":
        return Verdict(THROTTLED, "the server is throttling us")
    return None


def classify_answer(status: str, code: str | None, text: str, *, command: str = "") -> Verdict:
    """The verdict on a tagged NO/BAD answer (or a BYE) with response ``code`` and ``text``.

    ``command`` (e.g. ``"APPEND"``) only sharpens the words of the verdict.
    """
    code = (code or "").upper()
    said = " ".join(p for p in (status.upper(), f"[{code}]" if code else "", text) if p)
    throttled = _throttle(text, code, command=command)
    if throttled is not None:
        return throttled
    if code in _RETRY_CODES or _UNAVAILABLE_TEXT.search(text):
        return Verdict(RETRY, f"the server is temporarily unable to answer ({said})")
    if code == "OVERQUOTA":
        whose = "the destination mailbox is" if command == "APPEND" else "the account is"
        return Verdict(STOP, f"{whose} over its quota (the server said: {said})")
    if code in _AUTH_CODES:
        return Verdict(STOP, f"the server refused the account ({said})")
    if status.upper() == "BYE":
        return Verdict(RETRY, f"the server closed the connection ({said})")
    # [LIMIT], [TOOBIG], [TRYCREATE], [NOPERM]... and any other NO/BAD: about this
    # command (one message's APPEND or FETCH), not the connection.
    return Verdict(MESSAGE, f"the server refused it ({said})")


def classify(exc: BaseException) -> Verdict:
    """The verdict on an error raised by the IMAP layer (or by the engine)."""
    if isinstance(exc, GaveUp):
        return Verdict(STOP, str(exc))
    if isinstance(exc, Stopped):
        return Verdict(STOP, str(exc))
    if isinstance(exc, CommandError):
        r = exc.response
        return classify_answer(
            r.status,
            r.code.name if r.code else None,
            r.text.decode("utf-8", "replace"),
            command=exc.command,
        )
    if isinstance(exc, ConsentRevoked):
        # Only the account's owner can mend it (a new sign-in); never retried.
        return Verdict(STOP, str(exc))
    if isinstance(exc, AuthenticationError):
        # TokenRefused included: transfer/store.py tried a fresh token once already.
        r = exc.response
        if r is not None:
            code = r.code.name if r.code else None
            v = classify_answer(r.status, code, r.text.decode("utf-8", "replace"))
            if v.retry:
                return v
        return Verdict(STOP, str(exc))
    if isinstance(exc, ConnectionLost | ConnectError):
        bye = exc.response
        if bye is not None:
            code = bye.code.name if bye.code else None
            v = classify_answer("BYE", code, bye.text.decode("utf-8", "replace"))
            if v.kind != MESSAGE:
                return v if v.kind != STOP else Verdict(STOP, f"{exc}")
        return Verdict(RETRY, str(exc))
    if isinstance(exc, TlsError | InsecureAuthError):
        return Verdict(STOP, str(exc))
    if isinstance(exc, ImapError):
        return Verdict(RETRY if exc.transient else STOP, str(exc))
    return Verdict(STOP, str(exc))


def retryable(exc: BaseException) -> bool:
    """True when running the folder pass again (after a wait) may succeed."""
    return classify(exc).retry


# ---------------------------------------------------------------------- waiting


@dataclass
class Backoff:
    """Capped exponential backoff with equal jitter; a suggested delay is honoured.

    ``delay(n)`` for the n-th retry (1-based) lies in ``[s/2, s]`` where
    ``s = min(cap, base * 2**(n-1))``.  With a server's suggestion ``d``, the wait is
    ``d`` plus up to ``jitter_suggested`` of it (never earlier than asked), capped at ``cap``.
    """

    base: float = 1.0
    cap: float = 300.0
    jitter_suggested: float = 0.1
    rng: random.Random | None = None

    def step(self, attempt: int) -> float:
        """The un-jittered wait before retry ``attempt`` (1-based)."""
        n = max(1, attempt)
        # 2**n overflows a float for absurd attempt counts: stop doubling at the cap.
        if n > 64:
            return self.cap
        return min(self.cap, self.base * 2 ** (n - 1))

    def delay(self, attempt: int, suggested: float | None = None) -> float:
        rng = self.rng or random
        if suggested is not None and suggested > 0:
            return min(self.cap, suggested * (1.0 + self.jitter_suggested * rng.random()))
        s = self.step(attempt)
        return s / 2 + (s / 2) * rng.random()


@dataclass
class Effort:
    """The bounded effort spent on one thing (a folder pass, the planning).

    ``next_wait(verdict, reached)`` returns the seconds to wait before the next attempt,
    or None to give up: after ``attempts`` retries in a row in which ``reached`` (how far
    a pass got, e.g. messages handled) did not exceed the best so far.
    """

    attempts: int
    backoff: Backoff
    failures: int = 0  # retries in a row without progress
    total: int = 0  # retries in all
    best: int = -1
    waited: float = 0.0

    def next_wait(self, verdict: Verdict, reached: int = 0) -> float | None:
        if not verdict.retry:
            return None
        if reached > self.best:
            if self.best >= 0:
                self.failures = 0  # got further than ever: a fresh allowance
            self.best = reached
        if self.failures >= self.attempts:
            return None
        self.failures += 1
        self.total += 1
        wait = self.backoff.delay(self.failures, verdict.delay)
        self.waited += wait
        return wait

    def give_up(self, what: str, exc: BaseException, verdict: Verdict) -> BaseException:
        """The error that ends the transfer, in words a person can act on."""
        if not verdict.retry:
            if verdict.kind == STOP and isinstance(exc, CommandError):
                return Stopped(_stop_message(verdict))
            return exc
        tries = self.failures + 1
        return GaveUp(
            f"{what}: gave up after {tries} attempt{'s' if tries != 1 else ''} in a row "
            f"without progress ({self.total} retries in all, {self.waited:.0f} s waited); "
            f"last error: {exc}. Run the same command again later to resume",
            exc,
        )


def _stop_message(verdict: Verdict) -> str:
    why = verdict.why
    if "over its quota" in why:
        return (
            f"{why}. Nothing more can be copied: make room or raise the quota, then run "
            "the same command again to resume"
        )
    return why
