"""Errors of the IMAP layer; each knows whether trying again later may help."""

from __future__ import annotations

from .protocol import ProtocolError, Tagged, Untagged

__all__ = [
    "AuthenticationError",
    "CommandError",
    "ConnectError",
    "ConnectionLost",
    "ConsentRevoked",
    "HostUnreachable",
    "ImapError",
    "InsecureAuthError",
    "ProtocolError",
    "ReadOnlyViolation",
    "ResponseTooLarge",
    "TlsError",
    "TokenRefused",
]


class ImapError(Exception):
    """Base of the IMAP layer's errors.  ``transient``: a retry may succeed."""

    transient = False


class ConnectError(ImapError):
    """No usable connection: the TCP connection failed, no greeting came in time, or the
    greeting was ``* BYE`` (``response`` holds it then)."""

    transient = True

    def __init__(self, message: str, response: Untagged | None = None) -> None:
        super().__init__(message)
        self.response = response


class HostUnreachable(ConnectError):
    """The TCP connection could not be made (unknown host, refused, unreachable)."""


class TlsError(ImapError):
    """TLS could not be established (bad certificate, no STARTTLS, handshake failure)."""


class InsecureAuthError(ImapError):
    """Refusing to send a password over a connection without TLS."""


class AuthenticationError(ImapError):
    """The server refused the user name or password.  ``response``: its answer, if any
    (never the command: that held the password)."""

    def __init__(self, message: str, response: Tagged | None = None) -> None:
        super().__init__(message)
        self.response = response


class TokenRefused(AuthenticationError):
    """The server refused an OAuth2 access token (AUTHENTICATE XOAUTH2 / OAUTHBEARER).

    ``status``: the ``status`` of the server's JSON error challenge (RFC 7628 3.2.2:
    ``"invalid_token"``, Google's ``"400"``/``"401"``...), None when it sent none.  Neither
    the message nor any attribute holds the token.  A fresh token may succeed: the
    transfer layer asks its token source for one and logs in again, once
    (transfer/store.py ``connect_store``)."""

    def __init__(
        self, message: str, response: Tagged | None = None, *, status: str | None = None
    ) -> None:
        super().__init__(message, response)
        self.status = status


class ConsentRevoked(AuthenticationError):
    """No access token can be had: the provider refused the refresh or the grant
    (``invalid_grant``: consent revoked, password changed, the user gone).  Permanent
    until the account's owner signs in again; the message says so."""

    def __init__(
        self,
        message: str = "the provider refused to give an access token (the consent was "
        "revoked or the account is gone)",
        response: Tagged | None = None,
    ) -> None:
        if "sign in again" not in message:
            message = f"{message}: sign in again"
        super().__init__(message, response)


class ReadOnlyViolation(ImapError):
    """A command that could change a mailbox was asked of a read-only connection (the
    source of a transfer: imap/commands.py ``READ_ONLY_VERBS``); refused before any byte
    of it was written.  ``verb``: the command's name."""

    def __init__(self, verb: str, why: str = "") -> None:
        self.verb = verb
        super().__init__(
            f"{verb} refused: the connection is read-only (the source of a transfer is "
            f"never written){': ' + why if why else ''}"
        )


class ConnectionLost(ImapError):
    """The connection dropped, timed out, or the server said BYE (``response``)."""

    transient = True

    def __init__(self, message: str, response: Untagged | None = None) -> None:
        super().__init__(message)
        self.response = response


class ResponseTooLarge(ConnectionLost):
    """The server announced a literal beyond what its context may hold (a greeting, a
    LIST answer...): dropped at once, nothing allocated.  The text is ours only."""


class CommandError(ImapError):
    """A command completed with NO or BAD.  ``response`` holds the server's words."""

    def __init__(self, command: str, response: Tagged) -> None:
        self.command = command
        self.response = response
        code = f"[{response.code.name}] " if response.code else ""
        text = response.text.decode("utf-8", "replace")
        super().__init__(f"{command} failed: {response.status} {code}{text}".rstrip())

    @property
    def server_text(self) -> str:
        code = f"[{self.response.code.name}] " if self.response.code else ""
        return (
            self.response.status + " " + code + self.response.text.decode("utf-8", "replace")
        ).strip()

    @property
    def transient(self) -> bool:  # type: ignore[override]
        code = self.response.code.name if self.response.code else ""
        # RFC 5530: temporary conditions.  ([LIMIT] is an implementation limit: trying
        # again does not help.)  The transfer's retry policy (policy/retry.py) also reads
        # the text, for providers' throttling answers.
        return code in ("UNAVAILABLE", "INUSE", "SERVERBUG")
