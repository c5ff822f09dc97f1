"""Accounts -> engine endpoints, for every front door.

- Addresses as people type them (the CLI): ``imap://USER@HOST:PORT``, ``imaps://...``
  or a bare e-mail address of a known provider (:func:`resolve_account`,
  :meth:`AccountURL.endpoint`);
- accounts as the service stores them (host, port, security, username, password, or
  an OAuth2 grant under ``"oauth"``): :func:`make_endpoint`, used by the job process and
  by the service's account check.

Passwords never come from a URL or argv.  Layering: below the front doors, the service
and jobs (they import this); above oauth, transfer and policy (this imports
``oauth.GrantTokenSource``, ``transfer.model.Endpoint`` and the provider presets, never
anything above).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .imap.connection import is_loopback
from .imap.errors import HostUnreachable
from .policy import providers
from .policy.egress import EgressPolicy, EgressRefused
from .policy.providers import Provider
from .transfer.model import Endpoint

if TYPE_CHECKING:  # imported when used: authlib and httpx cost start-up (docs/performance.md 12)
    from .oauth import GrantTokenSource, OAuthConfig
    from .oauth.tokens import Rotate

__all__ = [
    "AccountURL",
    "AccountURLError",
    "Security",
    "endpoint_security",
    "make_endpoint",
    "parse_account_url",
    "pin_endpoint",
    "resolve_account",
    "resolve_host",
    "ssl_context",
]


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


def resolve_account(
    text: str, *, what: str = "account", preset: str | None = None
) -> tuple[AccountURL, Provider]:
    """An account as typed: an ``imap[s]://`` URL or a bare e-mail address, and its
    provider preset (:mod:`yippiemove.policy.providers`).

    A bare address takes server, port and security from the preset of its domain (or
    ``preset``); an unknown domain is an error that asks for a URL.  A URL keeps its
    own server; its preset is ``preset``, else the one serving that host, else generic.
    """
    forced = None
    if preset is not None:
        forced = providers.by_key(preset)
        if forced is None:
            raise AccountURLError(
                f"{what}: unknown preset {preset!r} (known: {', '.join(providers.keys())})"
            )
    text = text.strip()
    if "://" in text or "@" not in text:
        url = parse_account_url(text, what=what)
        return url, forced or providers.for_host(url.host, url.user) or providers.GENERIC
    local, _, domain = text.rpartition("@")
    if not local or not domain or any(c.isspace() or c in "/:?#" for c in text):
        raise AccountURLError(f"{what} {text!r} is neither an e-mail address nor an imap URL")
    prov = forced or providers.for_address(text)
    if prov is None:
        raise AccountURLError(
            f"no preset for {domain.lower()}; give an imaps://USER@HOST URL "
            f"(or --{what.lstrip('-')}-preset KEY)"
        )
    if prov.host is None:
        raise AccountURLError(
            f"{what}: the {prov.key!r} preset has no server; give an imaps://USER@HOST URL"
        )
    user = local if prov.username == "localpart" else text
    scheme = "imaps" if prov.security == "tls" else "imap"
    return AccountURL(scheme, user, prov.host, prov.port), prov


def ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying TLS context (system CAs, or ``ca_file`` when given)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Security(StrEnum):
    """How an account of the service is reached (the web form's and the API's choices).

    The connection layer has its own, finer vocabulary (imap/connection.py: ``tls``,
    ``starttls``, ``require-starttls``, ``none``); :func:`endpoint_security` is the one
    place that maps one to the other.
    """

    TLS = "tls"
    STARTTLS = "starttls"
    NONE = "none"

    @property
    def default_port(self) -> int:
        """993 for TLS from the first byte (IMAPS), else 143."""
        return 993 if self is Security.TLS else 143


def endpoint_security(security: str, host: str) -> str:
    """The connection's security mode for an account's ``security`` on ``host``.

    ``starttls`` *requires* STARTTLS except on loopback (so a password never goes out in
    the clear because a server or a man in the middle left STARTTLS out); ``none`` is
    plain text, which validation only lets through for loopback hosts unless the operator
    allowed insecure hosts.
    """
    mode = Security(security)
    if mode is Security.STARTTLS:
        return "starttls" if is_loopback(host) else "require-starttls"
    return str(mode)


def make_endpoint(
    account: Mapping[str, Any],
    ssl_context: ssl.SSLContext | None,
    allow_insecure_hosts: bool,
    *,
    oauth_config: OAuthConfig | None = None,
    on_rotate: Rotate | None = None,
) -> Endpoint:
    """An engine Endpoint from a service account (host, port, security, username,
    password); the TLS mode as :func:`endpoint_security` says.

    An account with ``"oauth": GRANT`` (yippiemove.oauth, a grant dict) signs in with
    OAuth2: the Endpoint gets a :class:`~yippiemove.oauth.GrantTokenSource` (given
    ``oauth_config``, the operator's providers, and ``on_rotate``, called with the new
    grant when the provider rotates the refresh token) and no password."""
    host = str(account["host"])
    security = Security(account["security"])
    grant = account.get("oauth")
    oauth: GrantTokenSource | None = None
    if grant is not None:
        from .oauth import GrantTokenSource

        oauth = GrantTokenSource(grant, oauth_config, on_rotate=on_rotate)
    return Endpoint(
        host=host,
        port=int(account["port"]),
        user=str(account["username"]),
        security=endpoint_security(security, host),
        password="" if oauth is not None else str(account.get("password", "")),
        ssl_context=ssl_context,
        allow_insecure_auth=is_loopback(host)
        or (security is Security.NONE and allow_insecure_hosts),
        oauth=oauth,
    )


#: (host, port) -> the addresses it resolves to, in the resolver's order.
Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (one DNS lookup; numeric spellings such as
    ``2130706433`` or ``0x7f.1`` come back as the address they mean).
    :class:`~yippiemove.imap.errors.HostUnreachable` when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or "no such host"
        raise HostUnreachable(f"unknown host {host!r}: {reason}") from None
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    if not out:
        raise HostUnreachable(f"unknown host {host!r}: no address")
    return out


def pin_endpoint(ep: Endpoint, policy: EgressPolicy, resolve: Resolver | None = None) -> Endpoint:
    """``ep`` with its address resolved once, checked by ``policy`` and pinned
    (``Endpoint.address``): the connection goes to the address that was checked, never
    to what a second lookup might say.  The first allowed address is taken; none
    allowed: :class:`~yippiemove.policy.egress.EgressRefused` saying why (the service's
    egress policy, policy/egress.py)."""
    if policy.open:
        return ep
    found = (resolve or resolve_host)(ep.host, ep.port)
    reasons: list[tuple[str, str]] = []
    for addr in found:
        why = policy.refusal(addr)
        if why is None:
            return dataclasses.replace(ep, address=addr.split("%", 1)[0])
        reasons.append((addr, why))
    addr, why = reasons[0] if reasons else ("", "no address")
    host = ep.host.strip("[]")
    try:
        literal = ipaddress.ip_address(host) == ipaddress.ip_address(addr)
    except ValueError:
        literal = False
    shown = f"{host}" if literal else f"{host} (= {addr})"
    raise EgressRefused(
        f"{shown} is {why}; this service does not connect there "
        "(only to public addresses, unless the operator allows a network)"
    )


_OWN: tuple[str, ...] | None = None


def own_addresses() -> tuple[str, ...]:
    """This machine's addresses as its host name resolves (the egress policy refuses
    them: policy/egress.py); looked up once per process."""
    global _OWN
    if _OWN is None:
        found: list[str] = []
        try:
            for info in socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM):
                if str(info[4][0]) not in found:
                    found.append(str(info[4][0]))
        except (OSError, UnicodeError):
            pass
        _OWN = tuple(found)
    return _OWN
