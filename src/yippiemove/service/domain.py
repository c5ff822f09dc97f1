"""Domain-wide moves (issue 16): a customer's admin credentials and the per-user grants
made from them.

Two kinds of credential, both the customer's, both stored like passwords (the secret part
a Fernet token of :class:`~yippiemove.service.secrets.CredentialBox`, never shown back):

- ``service_account``: a Google Workspace service account key (its JSON file:
  ``client_email``, ``private_key``, ``token_uri``) with domain-wide delegation of the
  IMAP scope.  The grant for one mailbox is the key with ``subject`` = the mailbox's
  address (the JWT bearer grant, RFC 7523: the token is the user's own).
- ``client_credentials``: a Microsoft 365 application (tenant, client id, client secret)
  with the ``IMAP.AccessAsApp`` permission; its token is the application's, and IMAP
  logs in as the mailbox's address with it.

The grants are contract 3's (docs/design.md "OAuth2"); this module only checks what the
customer gives and makes them.  Nothing here talks to a server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..policy import providers

__all__ = [
    "DOMAIN_KINDS",
    "GOOGLE_TOKEN_URL",
    "DomainError",
    "DomainSecret",
    "grant_for",
    "imap_server",
    "in_domain",
    "parse_credential",
]

#: The credential kinds and the OAuth2 provider key (OAuthConfig) of each.
DOMAIN_KINDS = {"service_account": "google", "client_credentials": "microsoft"}
#: Google's token endpoint, as its service account keys name it.
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
#: The IMAP server of each provider key (the presets of policy/providers.py).
_PRESET = {"google": "google-workspace", "microsoft": "microsoft365"}

_DOMAIN = re.compile(
    r"\A(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+\Z"
)
#: A tenant: its GUID or one of its domain names (or Microsoft's "organizations").
_TENANT = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,199}\Z")
_CLIENT_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
_EMAIL = re.compile(r"\A[^@\s]{1,64}@[^@\s]{1,253}\Z")


class DomainError(ValueError):
    """A credential or address that cannot be used; the message names the field and
    never holds a secret."""


@dataclass(frozen=True)
class DomainSecret:
    """A checked credential: what may be shown (``public``) and what is encrypted."""

    kind: str
    provider: str
    label: str
    principal: str
    tenant: str | None
    domain: str
    secret: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "provider": self.provider,
            "label": self.label,
            "principal": self.principal,
            "tenant": self.tenant,
            "domain": self.domain,
        }


def _text(data: Mapping[str, Any], name: str, limit: int = 200) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DomainError(f"{name}: is required")
    value = value.strip()
    if len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise DomainError(f"{name}: is too long or holds control characters")
    return value


def _domain(data: Mapping[str, Any]) -> str:
    domain = _text(data, "domain", 253).lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise DomainError(f"domain: {domain!r} is not a domain name")
    return domain


def parse_credential(data: Any, *, token_urls: Mapping[str, str] | None = None) -> DomainSecret:
    """Check a credential as the customer gives it (the API's JSON, the web form):

    ``{"kind": "service_account", "domain", "label"?, "key": {...} | "<the key's JSON>"}``
    or ``{"kind": "client_credentials", "domain", "label"?, "tenant", "client_id",
    "client_secret"}``.

    ``token_urls``: the token endpoint of each provider key as the operator configured
    it (OAuthConfig); a service account key naming another token endpoint is refused
    (the service posts its assertion only where the operator said)."""
    import json

    if not isinstance(data, Mapping):
        raise DomainError("credential: must be an object")
    kind = data.get("kind")
    if kind not in DOMAIN_KINDS:
        raise DomainError(f"kind: must be one of {', '.join(DOMAIN_KINDS)}")
    provider = DOMAIN_KINDS[str(kind)]
    unknown = sorted(
        set(data)
        - {"kind", "domain", "label"}
        - ({"key"} if kind == "service_account" else {"tenant", "client_id", "client_secret"})
    )
    if unknown:
        raise DomainError(f"{unknown[0]}: unknown field for a {kind} credential")
    domain = _domain(data)
    label = data.get("label") or ""
    if not isinstance(label, str) or len(label) > 200:
        raise DomainError("label: must be text of at most 200 characters")
    label = " ".join(label.split())
    if kind == "service_account":
        key: Any = data.get("key")
        if isinstance(key, str | bytes):
            if len(key) > 64 * 1024:
                raise DomainError("key: is too large for a service account key")
            try:
                key = json.loads(key)
            except ValueError:
                raise DomainError("key: is not the JSON of a service account key") from None
        if not isinstance(key, Mapping):
            raise DomainError("key: must be the service account key (its JSON file)")
        if key.get("type", "service_account") != "service_account":
            raise DomainError("key: is not a service account key (its type is not service_account)")
        email = _text(key, "client_email", 320)
        if not _EMAIL.match(email):
            raise DomainError("key.client_email: is not an address")
        pem = key.get("private_key")
        if not isinstance(pem, str) or "PRIVATE KEY-----" not in pem or len(pem) > 16 * 1024:
            raise DomainError("key.private_key: is not a PEM private key")
        _check_private_key(pem)
        token_uri = _text(key, "token_uri", 500)
        wanted = (token_urls or {}).get(provider) or GOOGLE_TOKEN_URL
        if token_uri != wanted:
            raise DomainError(
                f"key.token_uri: {token_uri!r} is not the token endpoint this service uses "
                f"for Google ({wanted})"
            )
        secret: dict[str, Any] = {
            "type": "service_account",
            "client_email": email,
            "private_key": pem,
            "token_uri": token_uri,
        }
        for extra in ("private_key_id", "client_id", "project_id"):
            if isinstance(key.get(extra), str) and len(key[extra]) <= 200:
                secret[extra] = key[extra]
        return DomainSecret(
            str(kind), provider, label or email, email, None, domain, {"key": secret}
        )
    tenant = _text(data, "tenant")
    if not _TENANT.match(tenant):
        raise DomainError("tenant: must be the tenant's id or one of its domain names")
    client_id = _text(data, "client_id")
    if not _CLIENT_ID.match(client_id):
        raise DomainError("client_id: is not an application (client) id")
    client_secret = data.get("client_secret")
    if not isinstance(client_secret, str) or not client_secret:
        raise DomainError("client_secret: is required")
    if len(client_secret) > 1024 or any(ord(c) < 32 or ord(c) == 127 for c in client_secret):
        raise DomainError("client_secret: must not contain line breaks or control characters")
    return DomainSecret(
        str(kind),
        provider,
        label or client_id,
        client_id,
        tenant,
        domain,
        {"client_secret": client_secret},
    )


def _check_private_key(pem: str) -> None:
    """The key must load as an RSA private key (RS256); never says what it holds."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise DomainError("key.private_key: cannot be read as an unencrypted PEM key") from None
    if not isinstance(key, RSAPrivateKey):
        raise DomainError("key.private_key: is not an RSA key (Google's keys are RSA)")


def in_domain(address: str, domain: str) -> str:
    """``address`` normalised (the domain part lower-cased) when it is a mailbox of
    ``domain``; DomainError otherwise."""
    if not isinstance(address, str):
        raise DomainError("address: is required")
    address = address.strip()
    local, at, dom = address.rpartition("@")
    if not at or not local or not _EMAIL.match(address) or any(c in address for c in ",;<>"):
        raise DomainError(f"{address!r} is not an e-mail address")
    dom = dom.lower().rstrip(".")
    if dom != domain:
        raise DomainError(
            f"{address} is not in {domain}, the domain of this credential "
            "(its administrator cannot sign in for other domains)"
        )
    return f"{local}@{dom}"


def grant_for(
    kind: str,
    provider: str,
    secret: Mapping[str, Any],
    tenant: str | None,
    principal: str,
    address: str,
) -> dict[str, Any]:
    """The per-user grant (contract 3) for the mailbox ``address``: the service account
    acting for it (``subject``), or the application's own token (IMAP logs in as
    ``address`` with it)."""
    if kind == "service_account":
        return {
            "kind": "service_account",
            "provider": provider,
            "key": dict(secret["key"]),
            "subject": address,
        }
    if kind == "client_credentials":
        return {
            "kind": "client_credentials",
            "provider": provider,
            "tenant": tenant,
            "client_id": principal,
            "client_secret": secret["client_secret"],
        }
    raise DomainError(f"kind: unknown credential kind {kind!r}")


def imap_server(provider: str) -> dict[str, Any]:
    """The IMAP server of a provider key: host, port, security (its preset)."""
    preset = providers.by_key(_PRESET.get(provider, ""))
    if preset is None or preset.host is None:
        raise DomainError(f"no IMAP server known for {provider!r}; give host and port")
    return {"host": preset.host, "port": preset.port, "security": preset.security}
