"""Where the service may connect on a customer's behalf (the egress policy; pure).

A customer names the servers the service connects to, so without a rule they could make
it reach inside its own network: loopback, the private ranges, the cloud's metadata
address (``169.254.169.254``)...  This module decides, for one *resolved* address,
whether the service may connect there; resolving and pinning the address is the
caller's (accounts.py :func:`~yippiemove.accounts.pin_endpoint`), so the address that
was checked is the one connected to, whatever a name says later.

Refused by default (:func:`classify`): unspecified, loopback, private (RFC 1918 and
the other non-global special ranges), carrier-grade NAT (100.64.0.0/10), link-local
(169.254.0.0/16, fe80::/10), unique-local (fc00::/7), multicast, reserved; an IPv6
address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
``::a.b.c.d``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``, Teredo's client) is judged
by the IPv4 address too; and the service's own addresses.

The operator's lists (:class:`EgressPolicy`): ``deny`` networks are refused whatever
else holds; ``allow`` networks are allowed (self-hosters and tests allow
``127.0.0.0/8``); then the default rules.  ``ipaddress`` does the arithmetic (the
standard library's; no third-party list of ranges needed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "EgressPolicy",
    "EgressRefused",
    "classify",
    "embedded_ipv4",
    "parse_networks",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressRefused(ValueError):
    """The service may not connect there; ``str()`` says why (no peer bytes in it)."""


_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_COMPAT = ipaddress.ip_network("::/96")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, 6to4, NAT64, Teredo's
    client), or None."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _COMPAT:
        if ip in _COMPAT and int(ip) <= 1:
            return None  # :: and ::1 are themselves (unspecified, loopback)
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _classify_one(ip: IPAddress) -> str | None:
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "an unspecified address (this machine)"
    if ip.is_loopback:
        return "a loopback address (this machine)"
    if ip.is_link_local:
        return "a link-local address (e.g. the cloud's metadata service)"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _UNIQUE_LOCAL:
        return "a unique-local address (fc00::/7)"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64_LOCAL:
        return "a local-use NAT64 address (64:ff9b:1::/48)"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved (not public) address"
    return None


def classify(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (a phrase: "a loopback address..."), or None."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        why = _classify_one(inner)
        if why is not None:
            return f"{why}, written as IPv6"
        if ip.ipv4_mapped is not None or ip in _NAT64 or ip in _COMPAT or ip.sixtofour:
            return None  # a public IPv4 address in IPv6 clothes
    return _classify_one(ip)


def parse_networks(text: str | Iterable[str], what: str = "network") -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs (``"127.0.0.0/8, fd00::/8"``) or several of them; a bare
    address is its own /32 or /128.  :class:`ValueError` names a bad one."""
    parts: list[str] = []
    for item in [text] if isinstance(text, str) else list(text):
        parts.extend(p.strip() for p in item.split(","))
    nets = []
    for p in parts:
        if not p:
            continue
        try:
            nets.append(ipaddress.ip_network(p.strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"{what}: {p!r} is not an address or a CIDR network") from None
    return tuple(nets)


def _forms(ip: IPAddress) -> tuple[IPAddress, ...]:
    inner = embedded_ipv4(ip)
    return (ip,) if inner is None else (ip, inner)


@dataclass(frozen=True)
class EgressPolicy:
    """The operator's lists and the service's own addresses.  ``open=True``: no rule at
    all (the CLI: a person's own tool connects where it is told)."""

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    own: frozenset[IPAddress] = field(default_factory=frozenset)
    open: bool = False

    @classmethod
    def from_settings(
        cls,
        allow: str | Iterable[str] = "",
        deny: str | Iterable[str] = "",
        own: Iterable[str] = (),
    ) -> EgressPolicy:
        owned: set[IPAddress] = set()
        for a in own:
            try:
                owned.add(ipaddress.ip_address(a.split("%", 1)[0]))
            except ValueError:
                continue
        return cls(
            allow=parse_networks(allow, "egress allow"),
            deny=parse_networks(deny, "egress deny"),
            own=frozenset(owned),
        )

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why the service may not connect to ``address`` (resolved), or None."""
        if self.open:
            return None
        ip = address if not isinstance(address, str) else _parse(address)
        if ip is None:
            return "not an IP address"
        forms = _forms(ip)
        if any(f in n for f in forms for n in self.deny if f.version == n.version):
            return "a network the operator denied"
        if any(f in n for f in forms for n in self.allow if f.version == n.version):
            return None
        why = classify(ip)
        if why is None and any(f in self.own for f in forms):
            return "this service's own address"
        return why

    def describe(self) -> str:
        """For ``serve``'s start-up line."""
        if self.open:
            return "egress: open"
        allow = ",".join(str(n) for n in self.allow) or "-"
        deny = ",".join(str(n) for n in self.deny) or "-"
        return f"egress: public addresses only; allow {allow}; deny {deny}"


def _parse(address: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None
