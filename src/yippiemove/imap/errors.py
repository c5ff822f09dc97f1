"""Errors of the IMAP layer; each knows whether trying again later may help."""

from __future__ import annotations

from .protocol import ProtocolError, Tagged

__all__ = [
    "AuthenticationError",
    "CommandError",
    "ConnectError",
    "ConnectionLost",
    "ImapError",
    "InsecureAuthError",
    "ProtocolError",
    "TlsError",
]


class ImapError(Exception):
    """Base of the IMAP layer's errors.  ``transient``: a retry may succeed."""

    transient = False


class ConnectError(ImapError):
    """The TCP connection could not be made (unknown host, refused, unreachable)."""

    transient = True


class TlsError(ImapError):
    """TLS could not be established (bad certificate, no STARTTLS, handshake failure)."""


class InsecureAuthError(ImapError):
    """Refusing to send a password over a connection without TLS."""


class AuthenticationError(ImapError):
    """The server refused the user name or password."""


class ConnectionLost(ImapError):
    """The connection dropped, timed out, or the server said BYE."""

    transient = True


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
        return code in ("UNAVAILABLE", "INUSE", "SERVERBUG", "LIMIT")
