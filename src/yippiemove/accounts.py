"""Account addresses as people type them: ``imap://USER@HOST:PORT`` and ``imaps://...``.

Shared by the front doors (CLI, service).  Passwords never come from a URL or argv.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from urllib.parse import unquote

from .imap.connection import is_loopback
from .transfer.model import Endpoint

__all__ = ["AccountURL", "AccountURLError", "parse_account_url", "ssl_context"]


class AccountURLError(ValueError):
    """A malformed account URL; the message names what is wrong."""


@dataclass(frozen=True)
class AccountURL:
    scheme: str
    user: str
    host: str
    port: int

    @property
    def security(self) -> str:
        return "tls" if self.scheme == "imaps" else "starttls"

    def endpoint(
        self,
        password: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        allow_insecure_auth: bool = False,
        starttls: bool = True,
    ) -> Endpoint:
        """``starttls=False`` keeps an ``imap://`` connection in plain text (trusted links)."""
        security = self.security if starttls or self.scheme == "imaps" else "none"
        return Endpoint(
            host=self.host,
            port=self.port,
            user=self.user,
            security=security,
            password=password,
            ssl_context=ssl_context,
            allow_insecure_auth=allow_insecure_auth or is_loopback(self.host),
        )


_HOST = re.compile(r"\A(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)\Z")


def parse_account_url(url: str, *, what: str = "account") -> AccountURL:
    """Parse ``imap[s]://USER@HOST[:PORT]``; the user may be an e-mail address.

    ``@`` inside the user name may be written as is (the last ``@`` separates the host)
    or as ``%40``.  A password in the URL is refused: it would show in process listings.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise AccountURLError(f"{what} URL {url!r} must look like imap://USER@HOST:PORT")
    scheme = scheme.lower()
    if scheme not in ("imap", "imaps"):
        raise AccountURLError(
            f"{what} URL {url!r}: unknown scheme {scheme!r} (use imap:// or imaps://)"
        )
    rest = rest.rstrip("/")
    if "/" in rest or "?" in rest or "#" in rest:
        raise AccountURLError(f"{what} URL {url!r}: a path, query or fragment is not allowed")
    userinfo, at, hostport = rest.rpartition("@")
    if not at or not userinfo:
        raise AccountURLError(f"{what} URL {url!r} has no user name (imap://USER@HOST:PORT)")
    if ":" in userinfo:
        raise AccountURLError(
            f"{what} URL: do not put the password in the URL; use a password file, "
            "the environment variable, or the prompt"
        )
    user = unquote(userinfo)
    default_port = 993 if scheme == "imaps" else 143
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise AccountURLError(f"{what} URL {url!r}: unterminated IPv6 address")
        host = hostport[: end + 1]
        port_s = hostport[end + 1 :].removeprefix(":") if hostport[end + 1 :] else ""
        if hostport[end + 1 :] and not hostport[end + 1 :].startswith(":"):
            raise AccountURLError(f"{what} URL {url!r}: junk after the IPv6 address")
    else:
        host, _, port_s = hostport.partition(":")
    if not host or not _HOST.match(host):
        raise AccountURLError(f"{what} URL {url!r}: {host!r} is not a valid host name")
    port = default_port
    if port_s:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise AccountURLError(f"{what} URL {url!r}: port {port_s!r} is not a number 1-65535")
        port = int(port_s)
    return AccountURL(scheme, user, host.strip("[]"), port)


def ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying TLS context (system CAs, or ``ca_file`` when given)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
