"""SASL for OAuth2 access tokens, sans I/O: OAUTHBEARER (RFC 7628) and XOAUTH2.

Theory of operation
-------------------
An OAuth2 login is ``AUTHENTICATE <mechanism>`` with one client message carrying the
user name and the bearer token: as the command's initial response when the server
offers SASL-IR (RFC 4959), else in answer to the server's first, empty ``+``.  The
server then either completes the command (``OK``), or -- the token was refused -- sends
an *error challenge*: ``+ base64({"status": ..., "schemes": ..., "scope": ...})``, to
which the client must answer a dummy message (OAUTHBEARER: ``\\x01``, RFC 7628 3.2.3;
XOAUTH2: an empty line, as Google and Microsoft document it) before the server sends
its tagged ``NO``.

:class:`OAuth2Exchange` is that conversation without the connection: the I/O layer
(:meth:`.connection.ImapConnection.login_oauth2`) hands it each continuation's text and
writes what it returns.  It answers at most two challenges (the empty one when SASL-IR
is not used, then the error challenge); a server that sends more is broken
(:class:`SaslError`).  The continuation line itself is bounded by the parser
(:data:`.protocol.MAX_CONTINUATION`), so a huge challenge costs at most that.

Secrets: the client message holds the token; nothing here puts it into an exception,
a ``repr`` or a log (``OAuth2Exchange`` keeps it in a ``__slots__`` attribute no
``repr`` shows).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

__all__ = [
    "MECHANISMS",
    "OAuth2Challenge",
    "OAuth2Exchange",
    "SaslError",
    "choose_mechanism",
    "oauthbearer_message",
    "parse_challenge",
    "xoauth2_message",
]

#: OAuth2 mechanisms we speak, in order of preference: the standard one first.
MECHANISMS = ("OAUTHBEARER", "XOAUTH2")

#: RFC 6750 2.1 b64token: what a bearer token may consist of.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*\Z")
#: A status we repeat in our own messages: short and plain (the server's words).
_STATUS = re.compile(r"[A-Za-z0-9_.\-]{1,40}\Z")
#: Most challenges we answer in one AUTHENTICATE (the empty one, the error one).
MAX_ROUNDS = 2


class SaslError(Exception):
    """The server broke the SASL exchange (too many challenges).  Our words only."""


def choose_mechanism(capabilities: frozenset[str] | set[str]) -> str | None:
    """OAUTHBEARER when the server offers it, else XOAUTH2, else None."""
    for mech in MECHANISMS:
        if f"AUTH={mech}" in capabilities:
            return mech
    return None


def _check(user: str, token: str) -> None:
    # The messages below are ours: never the token itself.
    if not user or any(c in user for c in "\x00\x01\r\n"):
        raise ValueError("the user name is empty or holds a control character")
    if not _B64TOKEN.match(token):
        raise ValueError(
            "the access token is not a bearer token (RFC 6750: letters, digits and -._~+/)"
        )


def _saslname(user: str) -> str:
    # RFC 5801 (GS2) saslname: "," and "=" are escaped.
    return user.replace("=", "=3D").replace(",", "=2C")


def oauthbearer_message(user: str, token: str, host: str, port: int | None) -> bytes:
    """The OAUTHBEARER client message (RFC 7628 3.1): the GS2 header ``n,a=USER,``, then
    ``host=``, ``port=`` and ``auth=Bearer TOKEN``, each ended by ``\\x01``, and ``\\x01``."""
    _check(user, token)
    fields = [f"n,a={_saslname(user)},"]
    if host:
        fields.append(f"host={host}")
    if port is not None:
        fields.append(f"port={port}")
    fields.append(f"auth=Bearer {token}")
    return ("\x01".join(fields) + "\x01\x01").encode("utf-8")


def xoauth2_message(user: str, token: str) -> bytes:
    """The XOAUTH2 client message (Google's and Microsoft's documentation):
    ``user=USER\\x01auth=Bearer TOKEN\\x01\\x01``."""
    _check(user, token)
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


@dataclass(frozen=True, slots=True)
class OAuth2Challenge:
    """What an error challenge said (RFC 7628 3.2.2); fields the server left out, or
    could not be read, are None."""

    status: str | None = None
    scope: str | None = None
    schemes: str | None = None


def _plain(value: object, limit: int = 200) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = "".join(c for c in value[:limit] if c.isprintable())
    return value or None


def parse_challenge(text: bytes) -> OAuth2Challenge:
    """An error challenge's fields from a continuation's text (base64 of JSON).  Anything
    unreadable -- not base64, not JSON, nested too deep, not an object -- gives empty
    fields: the tagged NO that follows is what counts."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        doc = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return OAuth2Challenge()
    if not isinstance(doc, dict):
        return OAuth2Challenge()
    status = _plain(doc.get("status"))
    if status is not None and not _STATUS.match(status):
        status = None
    return OAuth2Challenge(status, _plain(doc.get("scope")), _plain(doc.get("schemes")))


class OAuth2Exchange:
    """One OAuth2 AUTHENTICATE conversation, sans I/O (module doc).

    ``initial``: the client message to send as the SASL-IR initial response (base64,
    ready for the command line), or None when the server does not offer SASL-IR and the
    message waits for its first ``+``.  :meth:`respond` takes each continuation's text
    and returns the line to send (base64, without CRLF).
    """

    __slots__ = ("_message", "challenge", "mechanism", "rounds", "sent")

    def __init__(
        self,
        mechanism: str,
        user: str,
        token: str,
        *,
        host: str = "",
        port: int | None = None,
        sasl_ir: bool = True,
    ) -> None:
        if mechanism == "OAUTHBEARER":
            message = oauthbearer_message(user, token, host, port)
        elif mechanism == "XOAUTH2":
            message = xoauth2_message(user, token)
        else:
            raise ValueError(f"not an OAuth2 mechanism: {mechanism!r}")
        self.mechanism = mechanism
        self._message = base64.b64encode(message)
        #: Whether the client message went out (with the command, or after the first +).
        self.sent = sasl_ir
        #: Continuations answered so far.
        self.rounds = 0
        #: The server's error challenge, once one came.
        self.challenge: OAuth2Challenge | None = None

    def __repr__(self) -> str:
        return f"OAuth2Exchange({self.mechanism}, rounds={self.rounds})"

    @property
    def initial(self) -> bytes | None:
        return self._message if self.sent else None

    def respond(self, text: bytes) -> bytes:
        """The answer to a continuation with ``text``; :class:`SaslError` when the server
        challenges more than once after our message."""
        self.rounds += 1
        if not self.sent:
            # The server's first, empty "+" (no SASL-IR): our message now.
            self.sent = True
            return self._message
        if self.challenge is not None or self.rounds > MAX_ROUNDS:
            raise SaslError(f"the server sent {self.rounds} SASL challenges ({self.mechanism})")
        self.challenge = parse_challenge(text)
        # RFC 7628 3.2.3: the client answers an error challenge with a dummy message
        # ("\x01") and the server then fails the command; XOAUTH2: an empty line.
        return base64.b64encode(b"\x01") if self.mechanism == "OAUTHBEARER" else b""
