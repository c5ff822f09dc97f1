"""Why a transfer stopped, in the customer's words (issue 17: plain failure messages).

A failure has a *kind* (wrong password, server unreachable, ...).  The job process names
it from the exception that ended the run (:func:`kind_of`, exact: by exception class and
the server's response code); a stop known only by its text (an older job, a supervisor's
own sentence) is named by :func:`kind_of_text`.  :data:`MESSAGES` says, per kind, what
happened and what to do next; :func:`describe` puts that together with the raw text,
which is shown only under "details" (web) or as ``detail`` (REST).

Pure: no I/O.  The raw texts come from our own exceptions and the servers' NO/BAD/BYE
answers, which never hold a password (imap/errors.py: never the command that held it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..imap.errors import (
    AuthenticationError,
    CommandError,
    ConnectError,
    ConnectionLost,
    ConsentRevoked,
    InsecureAuthError,
    TlsError,
)

__all__ = ["KINDS", "MESSAGES", "Message", "describe", "kind_of", "kind_of_text", "side_of"]


@dataclass(frozen=True)
class Message:
    """What the customer reads: ``title`` (what happened) and ``next_step``."""

    title: str
    next_step: str


#: kind -> what happened, what to do.  ``{side}`` is "the source" / "the destination" /
#: "one of the two accounts".
MESSAGES: dict[str, Message] = {
    "auth": Message(
        "{Side} refused the user name or password.",
        "Enter the password again (or an app password, if the provider asks "
        "for one): it is checked at once, and the transfer continues where it stopped.",
    ),
    "consent_revoked": Message(
        "The provider no longer lets us into {side}: the sign-in was revoked or expired.",
        "Sign in again with the same account: the transfer continues where it stopped.",
    ),
    "unreachable": Message(
        "We could not reach {side}'s server.",
        "Check that the server is up and that its name and port are right, then run the "
        "transfer again: it continues where it stopped.",
    ),
    "tls": Message(
        "{Side}'s server did not offer a secure connection we could trust (a TLS "
        "certificate problem).",
        "Check the server name (it must match the certificate), the port and the security "
        "setting (TLS is usually port 993, STARTTLS port 143), or ask the provider to renew "
        "its certificate; then run the transfer again.",
    ),
    "quota": Message(
        "{Side} is full: the server refused more mail because of its storage quota.",
        "Free some space or raise the quota at the destination's provider, then run the "
        "transfer again: what was copied stays, only the rest is copied.",
    ),
    "too_large": Message(
        "A message or the mailbox is larger than {side}'s server accepts.",
        "Raise the server's size limit if you can, or leave those messages out; run the "
        "transfer again to copy the rest.",
    ),
    "rate_limited": Message(
        "{Side}'s server slowed us down (too many requests or too much data for now).",
        "Wait a while (an hour is usually enough) and run the transfer again: it "
        "continues where it stopped.",
    ),
    "folder_gone": Message(
        "A folder disappeared or was renamed on {side} while the transfer ran.",
        "Run the transfer again: it takes the folders as they are now.",
    ),
    "messages_failed": Message(
        "Some messages could not be copied; everything else is there and verified.",
        "The report lists them and why; run the transfer again to retry them.",
    ),
    "internal": Message(
        "Something went wrong on our side.",
        "Run the transfer again: it continues where it stopped. If it happens again, "
        "contact us with the transfer's id.",
    ),
    "other": Message(
        "The transfer stopped before it was complete.",
        "Run the transfer again: it continues where it stopped; nothing is copied twice. "
        "The details below say what the server answered.",
    ),
}

KINDS = tuple(MESSAGES)

#: Response codes (RFC 5530 and providers' own) -> kind.
_CODES = {
    "AUTHENTICATIONFAILED": "auth",
    "AUTHORIZATIONFAILED": "auth",
    "EXPIRED": "auth",
    "OVERQUOTA": "quota",
    "LIMIT": "too_large",
    "TOOBIG": "too_large",
    "THROTTLED": "rate_limited",
    "INUSE": "rate_limited",
    "NONEXISTENT": "folder_gone",
    "TRYCREATE": "folder_gone",
}

#: Patterns of raw texts (ours and servers'), first match wins (order matters: a revoked
#: consent is also an authentication failure; a quota text may say "limit").
_TEXTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("consent_revoked", r"sign in again|consent|invalid_grant"),
        (
            "auth",
            r"AUTHENTICATIONFAILED|AUTHORIZATIONFAILED|authentication failed|"
            r"invalid credentials|login failed|LOGIN refused|incorrect password|"
            r"wrong password|does not allow logging in|LOGINDISABLED|app password",
        ),
        ("quota", r"OVERQUOTA|quota|mailbox (is )?full|storage full"),
        (
            "too_large",
            r"TOOBIG|too (large|big)|size limit|larger than|message size|"
            r"\[LIMIT\]|maximum size",
        ),
        (
            "rate_limited",
            r"THROTTLED|rate limit|too many (connections|requests|simultaneous)|"
            r"try (again )?later|bandwidth limit|temporarily unavailable",
        ),
        (
            "tls",
            r"certificate|\bSSL\b|TLS handshake|handshake fail|does not offer STARTTLS|"
            r"offers no TLS",
        ),
        (
            "internal",
            r"internal error|job process|supervisor|out of memory|more memory|"
            r"job state|\blease\b",
        ),
        (
            "unreachable",
            r"connect call failed|connection refused|unknown host|not found; check the "
            r"server|name or service not known|network is unreachable|no route to host|"
            r"timed out|did not answer|no greeting|could not connect|unreachable|"
            r"connection (was )?(reset|lost|closed)",
        ),
        (
            "folder_gone",
            r"NONEXISTENT|TRYCREATE|no such (mailbox|folder)|(mailbox|folder) .*"
            r"(does not|doesn't) exist|UIDVALIDITY changed|folder (was )?(deleted|renamed)",
        ),
        ("messages_failed", r"messages? could not be copied"),
    )
)


def kind_of(exc: BaseException) -> str:
    """The kind of the exception that ended a run (the job process calls this)."""
    if isinstance(exc, ConsentRevoked):
        return "consent_revoked"
    response = getattr(exc, "response", None)
    code = getattr(getattr(response, "code", None), "name", None)
    if isinstance(code, str) and code.upper() in _CODES:
        return _CODES[code.upper()]
    if isinstance(exc, AuthenticationError):
        return "auth"
    if isinstance(exc, TlsError | InsecureAuthError):
        return "tls"
    if isinstance(exc, ConnectError):
        return "unreachable"
    if isinstance(exc, CommandError | ConnectionLost):
        return kind_of_text(str(exc), default="other")
    if isinstance(exc, MemoryError):
        return "internal"
    if type(exc).__module__.startswith("yippiemove.") or isinstance(exc, OSError):
        return kind_of_text(str(exc), default="other")
    return "internal"  # an exception nobody expected: a bug


def kind_of_text(text: str | None, default: str = "other") -> str:
    """The kind of a stop known only by its raw text."""
    if not text:
        return default
    for kind, pattern in _TEXTS:
        if pattern.search(text):
            return kind
    return default


def side_of(exc: BaseException) -> str | None:
    """``"source"``/``"dest"`` when the exception says which account it came from
    (transfer/pairs.py marks connection failures), else None."""
    side = getattr(exc, "yippiemove_side", None)
    return side if side in ("source", "dest") else None


def describe(
    error: str | None, kind: str | None = None, side: str | None = None
) -> dict[str, Any] | None:
    """What a failure page or API answer shows: ``kind``, ``side`` (or None),
    ``message`` (what happened, plain), ``next_step`` and ``detail`` (the raw text).
    None when there is no error."""
    if not error and not kind:
        return None
    if kind not in MESSAGES:
        kind = kind_of_text(error)
    if side not in ("source", "dest"):
        side = None
    who = {"source": "the source mailbox", "dest": "the destination mailbox"}.get(
        side or "", "one of the two mailboxes"
    )
    msg = MESSAGES[kind]
    title = msg.title.replace("{Side}", who[0].upper() + who[1:]).replace("{side}", who)
    return {
        "kind": kind,
        "side": side,
        "message": title,
        "next_step": msg.next_step,
        "detail": error or "",
    }
