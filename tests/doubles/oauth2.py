"""A local OAuth2 authorization server for the tests (issue 16): real HTTP on 127.0.0.1.

It plays Google's and Microsoft's identity platforms closely enough for the mover's
OAuth2 client (authlib), the web order's "Sign in with ..." in Chromium, Dovecot's
``oauth2`` passdb and the Gmail double to talk to it as they would to the real ones::

    with OAuthServer(access_lifetime=2) as provider:
        provider.add_client("cli", None, ["http://127.0.0.1/"])   # a public client
        key = provider.add_service_account(domains=["example.test"])
        Path("providers.json").write_text(provider.providers_json())

Endpoints (any path *ending* in these names, so ``/common/oauth2/v2.0/token`` is the
token endpoint too, as Microsoft spells it; the part before is the "tenant", ignored):

``/authorize``      GET: a real HTML page "Sign in as [email] [Allow] [Deny]"; POST: its
                    form.  ``response_type=code``; PKCE with ``code_challenge_method=S256``
                    is required; ``state`` is echoed; the ``redirect_uri`` must be one the
                    client registered (a bad client or redirect_uri gets an error page,
                    never a redirect, RFC 6749 4.1.2.1).
``/token``          grants ``authorization_code`` (+PKCE), ``refresh_token``,
                    ``urn:ietf:params:oauth:grant-type:jwt-bearer`` (RS256 assertion of a
                    registered service account, RFC 7523, Google's claims: iss, scope, aud
                    = the token URL, exp, iat, sub = the user), ``client_credentials``
                    (a client registered with ``app_domain``), and
                    ``urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628).  Errors are
                    RFC 6749 5.2 JSON bodies: 400 ``invalid_grant``/``invalid_request``/...,
                    401 ``invalid_client``.  Client authentication: HTTP Basic or
                    ``client_secret`` in the form; a client registered without a secret is
                    public (PKCE only).
``/device/code``    RFC 8628 device authorization (``/devicecode`` as Microsoft spells it).
``/device``         the verification page: user code + email + Allow.
``/introspect``     RFC 7662; the caller authenticates with HTTP Basic as the resource
                    server (:attr:`OAuthServer.resource_credentials`, what Dovecot puts in
                    its ``introspection_url``).
``/revoke``         RFC 7009 (always 200; a refresh token takes its access tokens along).
``/userinfo``       OpenID Connect userinfo for a Bearer access token.
``/jwks``           the public key that signs id_tokens.

Tokens: access and refresh tokens are opaque random strings; access tokens live
``access_lifetime`` seconds (``expires_in``), refresh tokens until revoked; authorization
codes are single-use and live ``code_lifetime`` seconds (a second use is ``invalid_grant``
and revokes what the first use issued, RFC 6749 4.1.2).  ``rotate_refresh=True`` issues a
new refresh token on every refresh and keeps the old one valid ``rotate_grace`` seconds,
as Microsoft does.  Code exchanges return an ``id_token`` (RS256 JWT, claims iss, aud, sub,
email, email_verified, iat, exp, nonce).

Knobs for tests: :meth:`revoke` (every token of a user dies: refresh grants then fail with
``invalid_grant``), :meth:`expire_access_tokens`, :meth:`fail_token_requests` (503s),
:meth:`approve_device`, :meth:`sign_in`
(the Allow button without a browser), counters :attr:`issued`, :attr:`refreshed`,
:attr:`introspected`.  The server never sleeps; all state is under one lock.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "DEVICE_GRANT",
    "JWT_BEARER_GRANT",
    "OAuthServer",
    "b64url",
    "jwt_decode",
    "jwt_encode",
]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

#: The IMAP scopes of the two providers (what providers_json() lists).
GOOGLE_SCOPES = ("https://mail.google.com/", "openid", "email")
MICROSOFT_SCOPES = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "offline_access",
    "openid",
    "email",
)
#: The loopback redirect URIs a client gets by default in providers_json(): any port
#: (RFC 8252 7.3) and, for the tests' convenience, any path under "/".
LOOPBACK_ANY = ("http://127.0.0.1/*", "http://localhost/*")


# --------------------------------------------------------------------------- JWT


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_encode(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str | None = None) -> str:
    """An RS256 JWS in compact form."""
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(signature)


def jwt_decode(token: str, key: rsa.RSAPublicKey | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of an RS256 JWS; the signature is checked when ``key`` is given.

    Raises ValueError for anything malformed, another algorithm or a bad signature."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("malformed JWT") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("malformed JWT")
    if header.get("alg") != "RS256":
        raise ValueError(f"algorithm {header.get('alg')!r} is not RS256")
    if key is not None:
        try:
            key.verify(
                signature, (parts[0] + "." + parts[1]).encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature as exc:
            raise ValueError("bad signature") from exc
    return header, claims


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --------------------------------------------------------------------------- state


class _OAuthError(Exception):
    """An RFC 6749 5.2 error answer."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass
class _Client:
    client_id: str
    secret: str | None
    redirect_uris: tuple[str, ...]
    app_domain: str | None = None
    offline: str = "always"  # when a refresh token is issued: see add_client()

    def wants_refresh(self, scope: str, params: dict[str, str]) -> bool:
        if self.offline == "google":
            return params.get("access_type") == "offline"
        if self.offline == "microsoft":
            return "offline_access" in scope.split()
        return True


@dataclass
class _ServiceAccount:
    client_email: str
    key_id: str
    public_key: rsa.RSAPublicKey
    domains: tuple[str, ...] | None
    disabled: bool = False


@dataclass
class _Grant:
    """One consent (a code exchange, a device approval): what its tokens belong to."""

    grant_id: int
    address: str | None  # None: an application token (client_credentials)
    client_id: str
    scope: str
    app_domain: str | None = None
    revoked: bool = False


@dataclass
class _Access:
    grant: _Grant
    expires_at: float


@dataclass
class _Refresh:
    grant: _Grant
    dies_at: float | None = None  # set when rotated away (the grace period's end)


@dataclass
class _Code:
    grant: _Grant
    redirect_uri: str
    challenge: str
    expires_at: float
    nonce: str | None
    refresh: bool = True  # a refresh token comes with the exchange
    used: bool = False
    issued: list[str] = field(default_factory=list)  # tokens issued for it


@dataclass
class _AuthRequest:
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    challenge: str
    nonce: str | None
    login_hint: str
    refresh: bool


@dataclass
class _Device:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    address: str | None = None
    denied: bool = False
    done: bool = False
    last_poll: float = 0.0


def _sub_of(address: str) -> str:
    """A stable numeric subject id per address, like Google's."""
    return str(int.from_bytes(hashlib.sha256(address.encode()).digest()[:8], "big"))


def _redirect_ok(registered: Iterable[str], uri: str) -> bool:
    """Exact match, or a loopback registration whose port may vary (RFC 8252 7.3);
    a registration ending in ``*`` matches any path starting with what precedes it."""
    try:
        got = urllib.parse.urlsplit(uri)
        got_port = got.port
    except ValueError:
        return False
    for reg in registered:
        if reg == uri:
            return True
        wildcard = reg.endswith("*")
        r = urllib.parse.urlsplit(reg.rstrip("*"))
        if r.scheme != got.scheme or r.hostname != got.hostname or got.query or got.fragment:
            continue
        loopback = r.hostname in ("127.0.0.1", "localhost", "::1") and r.port is None
        if r.port != got_port and not loopback:
            continue
        if got.path == r.path or (wildcard and got.path.startswith(r.path or "/")):
            return True
    return False


# --------------------------------------------------------------------------- server


class OAuthServer:
    """The test provider; see the module docstring.  ``with OAuthServer() as s:`` starts
    and stops it; :attr:`url` is its base URL."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        access_lifetime: float = 3600.0,
        code_lifetime: float = 60.0,
        rotate_refresh: bool = False,
        rotate_grace: float = 60.0,
        device_lifetime: float = 600.0,
        device_interval: int = 1,
    ) -> None:
        self.access_lifetime = access_lifetime
        self.code_lifetime = code_lifetime
        self.rotate_refresh = rotate_refresh
        self.rotate_grace = rotate_grace
        self.device_lifetime = device_lifetime
        self.device_interval = device_interval
        #: access tokens issued (every grant), refresh grants answered, introspections
        self.issued = 0
        self.refreshed = 0
        self.introspected = 0
        self._outage = 0
        self._outage_status = 503
        self._lock = threading.RLock()
        self._clients: dict[str, _Client] = {}
        self._service_accounts: dict[str, _ServiceAccount] = {}
        self._grants: list[_Grant] = []
        self._access: dict[str, _Access] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._codes: dict[str, _Code] = {}
        self._requests: dict[str, _AuthRequest] = {}
        self._devices: dict[str, _Device] = {}  # by device_code
        self._seen_jti: set[str] = set()
        self._signing_key = _new_rsa_key()
        self._signing_kid = secrets.token_hex(8)
        #: HTTP Basic credentials of the resource server (Dovecot, the Gmail double) at
        #: /introspect: (id, secret)
        self.resource_credentials = ("imap-server", secrets.token_urlsafe(16))
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Listen on a free port of 127.0.0.1 in a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("OAuthServer is already running")
        handler = type("Handler", (_Handler,), {"provider": self})
        httpd = ThreadingHTTPServer((self.host, 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"oauth2-{self.port}",
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every open connection; idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns, self._conns = set(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("OAuthServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``; also the ``iss`` of its id_tokens."""
        return f"http://{self.host}:{self.port}"

    @property
    def authorize_url(self) -> str:
        return self.url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def device_url(self) -> str:
        """The device authorization endpoint (RFC 8628 3.1)."""
        return self.url + "/device/code"

    @property
    def verification_url(self) -> str:
        """The page where a user types the device flow's user code."""
        return self.url + "/device"

    @property
    def revoke_url(self) -> str:
        return self.url + "/revoke"

    @property
    def userinfo_url(self) -> str:
        return self.url + "/userinfo"

    @property
    def introspection_url(self) -> str:
        return self.url + "/introspect"

    @property
    def jwks_url(self) -> str:
        return self.url + "/jwks"

    @property
    def introspection_url_with_credentials(self) -> str:
        """``http://ID:SECRET@127.0.0.1:PORT/introspect``: what a resource server (the
        Gmail double) is given."""
        rid, secret = self.resource_credentials
        return f"http://{rid}:{secret}@{self.host}:{self.port}/introspect"

    @property
    def dovecot_introspection_url(self) -> str:
        """``http://ID:SECRET@127.0.0.1:PORT/dovecot/introspect``: the introspection for
        Dovecot's oauth2 passdb, which matches exactly one username attribute per passdb.
        Its answers add ``app_user`` (``CLIENT@DOMAIN`` of an application token) and fill
        the attribute a token does not have with ``"-@-"``, a name no user has, so that
        every mismatch is a refusal (a missing attribute would be Dovecot's "No username
        returned", a *temporary* failure).  See ``DovecotServer(oauth2_app_tokens=)``."""
        rid, secret = self.resource_credentials
        return f"http://{rid}:{secret}@{self.host}:{self.port}/dovecot/introspect"

    # ----------------------------------------------------------------- registration

    def add_client(
        self,
        client_id: str,
        secret: str | None = None,
        redirect_uris: Iterable[str] = (),
        *,
        app_domain: str | None = None,
        offline: str = "always",
    ) -> None:
        """Register a client.  ``secret`` None: a public client (PKCE alone).
        ``redirect_uris``: exact URIs; a loopback one without a port matches any port,
        one ending in ``*`` any path below.  ``app_domain``: the client may use the
        client-credentials grant and its tokens open any mailbox of that domain (like a
        Microsoft 365 application granted IMAP access to a tenant).  ``offline``: when
        the code and device grants give a refresh token: ``"always"``, ``"google"`` (only
        if the authorization request had ``access_type=offline``; device flow: always) or
        ``"microsoft"`` (only with the ``offline_access`` scope)."""
        if isinstance(redirect_uris, str):
            raise TypeError("redirect_uris must be an iterable of str")
        if offline not in ("always", "google", "microsoft"):
            raise ValueError(f"offline must be always, google or microsoft, not {offline!r}")
        with self._lock:
            self._clients[client_id] = _Client(
                client_id,
                secret,
                tuple(redirect_uris),
                app_domain.lower() if app_domain else None,
                offline,
            )

    def add_service_account(
        self,
        client_email: str | None = None,
        *,
        domains: Iterable[str] | None = None,
        project: str = "yippiemove-test",
    ) -> dict[str, str]:
        """Register a service account and return its key as Google's JSON key file has
        it (``type``, ``client_email``, ``private_key`` PEM, ``private_key_id``,
        ``token_uri``...).  ``domains``: the Workspace domains it may impersonate users of
        (domain-wide delegation); None: any."""
        key = _new_rsa_key()
        with self._lock:
            n = len(self._service_accounts) + 1
            email = (client_email or f"mover-{n}@{project}.iam.gserviceaccount.com").lower()
            kid = secrets.token_hex(20)
            self._service_accounts[email] = _ServiceAccount(
                email,
                kid,
                key.public_key(),
                tuple(d.lower() for d in domains) if domains is not None else None,
            )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": kid,
            "private_key": pem,
            "client_email": email,
            "client_id": _sub_of(email),
            "auth_uri": self.authorize_url,
            "token_uri": self.token_url,
        }

    def providers_json(
        self,
        keys: Iterable[str] = ("google", "microsoft"),
        *,
        path: Path | str | None = None,
        secret: bool = True,
        redirect_uris: Iterable[str] = LOOPBACK_ANY,
    ) -> str:
        """The JSON for ``YIPPIEMOVE_OAUTH_PROVIDERS_FILE`` pointing these provider keys
        at this server: ``{KEY: {key, name, authorize_url, token_url, device_url,
        revoke_url, userinfo_url, scopes, client_id, client_secret}}`` (+
        ``tenant_token_url`` for Microsoft).  Registers one client per key
        (``test-KEY-client``, with a secret unless ``secret=False``, and
        ``redirect_uris``); writes the file too when ``path`` is given.

        As the real providers: "google" has no device flow for the mail scope
        (``device_url`` null) and gives a refresh token only to ``access_type=offline``;
        "microsoft" spells its endpoints ``/{tenant}/oauth2/v2.0/...``, has no revocation
        (RFC 7009) and no userinfo endpoint for the IMAP scope (null) and gives a refresh
        token only with the ``offline_access`` scope.  Other keys get every endpoint."""
        if isinstance(keys, str):
            raise TypeError("keys must be an iterable of str")
        out: dict[str, dict[str, Any]] = {}
        for key in keys:
            client_id = f"test-{key}-client"
            client_secret = f"test-{key}-secret" if secret else None
            offline = key if key in ("google", "microsoft") else "always"
            self.add_client(client_id, client_secret, redirect_uris, offline=offline)
            entry: dict[str, Any] = {
                "key": key,
                "name": {"google": "Google", "microsoft": "Microsoft"}.get(key, key.title()),
            }
            if key == "microsoft":
                base = self.url + "/common/oauth2/v2.0"
                entry |= {
                    "authorize_url": base + "/authorize",
                    "token_url": base + "/token",
                    "device_url": base + "/devicecode",
                    "revoke_url": None,
                    "userinfo_url": None,
                    "tenant_token_url": self.url + "/{tenant}/oauth2/v2.0/token",
                    "scopes": list(MICROSOFT_SCOPES),
                }
            else:
                entry |= {
                    "authorize_url": self.authorize_url,
                    "token_url": self.token_url,
                    "device_url": None if key == "google" else self.device_url,
                    "revoke_url": self.revoke_url,
                    "userinfo_url": self.userinfo_url,
                    "scopes": list(GOOGLE_SCOPES),
                }
            out[key] = entry | {"client_id": client_id, "client_secret": client_secret}
        text = json.dumps(out, indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    # ----------------------------------------------------------------- knobs

    def revoke(self, address: str) -> None:
        """Every refresh and access token of ``address`` dies (consent revoked; a refresh
        is then ``invalid_grant``).  A client id or a service account's address revokes every
        token issued to that client (an application's consent withdrawn); a service
        account is disabled too: its assertions get ``invalid_grant`` from now on."""
        address = address.lower()
        with self._lock:
            for grant in self._grants:
                if grant.address == address or grant.client_id == address:
                    grant.revoked = True
            sa = self._service_accounts.get(address)
            if sa is not None:
                sa.disabled = True

    def expire_access_tokens(self, address: str | None = None) -> int:
        """Make the live access tokens (of ``address``; all when None) expired now, as if
        their lifetime had passed; returns how many."""
        now = time.time()
        n = 0
        with self._lock:
            for token in self._access.values():
                if token.expires_at > now and (address is None or token.grant.address == address):
                    token.expires_at = now - 0.001
                    n += 1
        return n

    def approve_device(self, user_code: str, address: str) -> None:
        """What a user does at /device: approve the device flow with this user code."""
        with self._lock:
            device = self._device_by_user_code(user_code)
            if device is None:
                raise KeyError(f"no pending device authorization with user code {user_code!r}")
            device.address = address.strip().lower()

    def deny_device(self, user_code: str) -> None:
        with self._lock:
            device = self._device_by_user_code(user_code)
            if device is None:
                raise KeyError(f"no pending device authorization with user code {user_code!r}")
            device.denied = True

    def sign_in(self, authorize_url: str, address: str, *, allow: bool = True) -> str:
        """The authorization page without a browser: open ``authorize_url`` (what the
        client sent the user to), sign in as ``address`` and press Allow (or Deny);
        returns the URL the browser would be redirected to (``redirect_uri?code=&state=``).
        Raises ValueError with the error page's text when the request is refused."""
        query = urllib.parse.urlsplit(authorize_url).query
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        status, body, location = self._begin_authorize(params)
        if location is not None:
            return location
        if status != 200:
            raise ValueError(body)
        request_id = body
        return self._decide(request_id, address, allow)

    def fail_token_requests(self, count: int, status: int = 503) -> None:
        """The next ``count`` token requests fail with ``status`` and
        ``{"error": "temporarily_unavailable"}`` (a provider's bad minute)."""
        with self._lock:
            self._outage = count
            self._outage_status = status

    def live_tokens(self, address: str) -> int:
        """How many access tokens of ``address`` are live now."""
        now = time.time()
        with self._lock:
            return sum(
                1
                for t in self._access.values()
                if t.grant.address == address.lower() and t.expires_at > now and not t.grant.revoked
            )

    # ----------------------------------------------------------------- token logic

    def _new_grant(
        self, address: str | None, client_id: str, scope: str, app_domain: str | None = None
    ) -> _Grant:
        grant = _Grant(len(self._grants) + 1, address, client_id, scope, app_domain)
        self._grants.append(grant)
        return grant

    def _issue(
        self,
        grant: _Grant,
        *,
        refresh: bool,
        id_token_for: str | None = None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        now = time.time()
        access = secrets.token_urlsafe(32)
        self._access[access] = _Access(grant, now + self.access_lifetime)
        self.issued += 1
        lifetime = self.access_lifetime
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(lifetime) if float(lifetime).is_integer() else lifetime,
            "scope": grant.scope,
        }
        if refresh:
            token = secrets.token_urlsafe(32)
            self._refresh[token] = _Refresh(grant)
            body["refresh_token"] = token
        if id_token_for is not None and grant.address is not None:
            claims = {
                "iss": self.url,
                "aud": id_token_for,
                "azp": id_token_for,
                "sub": _sub_of(grant.address),
                "email": grant.address,
                "email_verified": True,
                "preferred_username": grant.address,  # Microsoft's name for the account
                "iat": int(now),
                "exp": int(now) + 3600,
            }
            if nonce:
                claims["nonce"] = nonce
            body["id_token"] = jwt_encode(claims, self._signing_key, self._signing_kid)
        return body

    def _client(self, form: dict[str, str], auth: tuple[str, str] | None) -> _Client:
        """The authenticated client of a token/revoke request (RFC 6749 2.3)."""
        if auth is not None:
            client_id, secret = auth
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
        client = self._clients.get(client_id)
        if client is None:
            raise _OAuthError("invalid_client", "The OAuth client was not found.", 401)
        if client.secret is not None and not (
            secret is not None and secrets.compare_digest(secret, client.secret)
        ):
            raise _OAuthError("invalid_client", "Client authentication failed.", 401)
        return client

    def token(self, form: dict[str, str], auth: tuple[str, str] | None) -> dict[str, Any]:
        """The token endpoint (raises _OAuthError)."""
        grant_type = form.get("grant_type", "")
        with self._lock:
            if self._outage:
                self._outage -= 1
                raise _OAuthError(
                    "temporarily_unavailable", "The service is unavailable.", self._outage_status
                )
            if grant_type == JWT_BEARER_GRANT:
                return self._jwt_bearer(form)
            client = self._client(form, auth)
            if grant_type == "authorization_code":
                return self._code_grant(client, form)
            if grant_type == "refresh_token":
                return self._refresh_grant(client, form)
            if grant_type == "client_credentials":
                if client.app_domain is None or client.secret is None:
                    raise _OAuthError(
                        "unauthorized_client",
                        "The client is not authorized to use this grant type.",
                    )
                grant = self._new_grant(
                    None, client.client_id, form.get("scope", ""), client.app_domain
                )
                return self._issue(grant, refresh=False)
            if grant_type == DEVICE_GRANT:
                return self._device_grant(client, form)
            if not grant_type:
                raise _OAuthError("invalid_request", "Missing grant_type.")
            raise _OAuthError("unsupported_grant_type", f"Unsupported grant_type {grant_type}.")

    def _code_grant(self, client: _Client, form: dict[str, str]) -> dict[str, Any]:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.grant.client_id != client.client_id:
            raise _OAuthError("invalid_grant", "Malformed or unknown auth code.")
        if code.used:
            # RFC 6749 4.1.2: a code used twice: revoke what it gave
            code.grant.revoked = True
            raise _OAuthError("invalid_grant", "The authorization code was already redeemed.")
        if time.time() > code.expires_at:
            raise _OAuthError("invalid_grant", "The authorization code has expired.")
        if form.get("redirect_uri") != code.redirect_uri:
            raise _OAuthError("invalid_grant", "redirect_uri does not match the authorization.")
        verifier = form.get("code_verifier")
        if not verifier:
            raise _OAuthError("invalid_request", "Missing code_verifier (PKCE).")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != code.challenge:
            raise _OAuthError("invalid_grant", "PKCE verification failed.")
        code.used = True
        return self._issue(
            code.grant, refresh=code.refresh, id_token_for=client.client_id, nonce=code.nonce
        )

    def _refresh_grant(self, client: _Client, form: dict[str, str]) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        entry = self._refresh.get(token)
        now = time.time()
        if (
            entry is None
            or entry.grant.revoked
            or entry.grant.client_id != client.client_id
            or (entry.dies_at is not None and now > entry.dies_at)
        ):
            raise _OAuthError("invalid_grant", "Token has been expired or revoked.")
        self.refreshed += 1
        body = self._issue(entry.grant, refresh=self.rotate_refresh)
        if self.rotate_refresh and entry.dies_at is None:
            entry.dies_at = now + self.rotate_grace
        return body

    def _jwt_bearer(self, form: dict[str, str]) -> dict[str, Any]:
        assertion = form.get("assertion", "")
        try:
            _, claims = jwt_decode(assertion, None)
        except ValueError as exc:
            raise _OAuthError("invalid_grant", f"Invalid JWT: {exc}.") from None
        iss = str(claims.get("iss", "")).lower()
        sa = self._service_accounts.get(iss)
        if sa is None or sa.disabled:
            raise _OAuthError("invalid_grant", "Invalid JWT Signature.")
        try:
            jwt_decode(assertion, sa.public_key)
        except ValueError:
            raise _OAuthError("invalid_grant", "Invalid JWT Signature.") from None
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise _OAuthError("invalid_grant", "Invalid JWT: exp and iat are required.")
        if exp < now - 5 or iat > now + 60 or exp - iat > 3600:
            raise _OAuthError(
                "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)."
            )
        if claims.get("aud") != self._token_url_of(form):
            raise _OAuthError("invalid_grant", "Invalid JWT: audience is not the token URL.")
        jti = claims.get("jti")
        if isinstance(jti, str):
            if jti in self._seen_jti:
                raise _OAuthError("invalid_grant", "Invalid JWT: jti was used before.")
            self._seen_jti.add(jti)
        subject = str(claims.get("sub") or iss).lower()
        if subject != iss and sa.domains is not None:
            if subject.rpartition("@")[2] not in sa.domains:
                raise _OAuthError(
                    "unauthorized_client",
                    "Client is unauthorized to retrieve access tokens using this method, or "
                    "client not authorized for any of the scopes requested.",
                )
        grant = self._new_grant(subject, iss, str(claims.get("scope", "")))
        return self._issue(grant, refresh=False)

    def _token_url_of(self, form: dict[str, str]) -> str:
        return form.get("_url", self.token_url)

    def _device_grant(self, client: _Client, form: dict[str, str]) -> dict[str, Any]:
        device = self._devices.get(form.get("device_code", ""))
        if device is None or device.client_id != client.client_id or device.done:
            raise _OAuthError("invalid_grant", "Unknown or used device code.")
        now = time.time()
        if now > device.expires_at:
            raise _OAuthError("expired_token", "The device code has expired.")
        if device.denied:
            raise _OAuthError("access_denied", "The user denied the request.")
        if device.address is None:
            too_soon = now - device.last_poll < self.device_interval
            device.last_poll = now
            if too_soon:
                raise _OAuthError("slow_down", "Polling too fast.")
            raise _OAuthError("authorization_pending", "The user has not yet approved.")
        device.done = True
        grant = self._new_grant(device.address, client.client_id, device.scope)
        refresh = client.offline != "microsoft" or client.wants_refresh(device.scope, {})
        return self._issue(grant, refresh=refresh, id_token_for=client.client_id)

    def device_code(self, form: dict[str, str], auth: tuple[str, str] | None) -> dict[str, Any]:
        with self._lock:
            client_id = auth[0] if auth else form.get("client_id", "")
            client = self._clients.get(client_id)
            if client is None:
                raise _OAuthError("invalid_client", "The OAuth client was not found.", 401)
            device = _Device(
                device_code=secrets.token_urlsafe(24),
                user_code="-".join(
                    "".join(secrets.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(4))
                    for _ in range(2)
                ),
                client_id=client_id,
                scope=form.get("scope", ""),
                expires_at=time.time() + self.device_lifetime,
            )
            self._devices[device.device_code] = device
        return {
            "device_code": device.device_code,
            "user_code": device.user_code,
            "verification_uri": self.verification_url,
            "verification_uri_complete": self.verification_url
            + "?user_code="
            + urllib.parse.quote(device.user_code),
            "expires_in": int(self.device_lifetime),
            "interval": self.device_interval,
        }

    def _device_by_user_code(self, user_code: str) -> _Device | None:
        want = user_code.strip().upper().replace(" ", "")
        now = time.time()
        for device in self._devices.values():
            if device.user_code == want and not device.done and now <= device.expires_at:
                return device
        return None

    def introspect(self, token: str, *, dovecot: bool = False) -> dict[str, Any]:
        """RFC 7662 answer for ``token`` (counted in :attr:`introspected`); ``dovecot``:
        with the fields of :attr:`dovecot_introspection_url`."""
        with self._lock:
            self.introspected += 1
            info = self._token_info(token)
        if dovecot and info.get("active"):
            if "email" in info:
                info["app_user"] = "-@-"
            else:
                info["email"] = "-@-"
                info["app_user"] = f"{info['client_id']}@{info['app_domain']}"
        return info

    def _token_info(self, token: str) -> dict[str, Any]:
        with self._lock:
            entry = self._access.get(token)
            if entry is None or entry.grant.revoked or time.time() >= entry.expires_at:
                return {"active": False}
            grant = entry.grant
            out: dict[str, Any] = {
                "active": True,
                "scope": grant.scope,
                "client_id": grant.client_id,
                "token_type": "Bearer",
                # a NumericDate may have a fraction (RFC 7519 2): sub-second lifetimes
                # end exactly (Dovecot 2.3 ignores exp and trusts "active")
                "exp": entry.expires_at,
                "iss": self.url,
            }
            if grant.address is not None:
                out |= {"sub": _sub_of(grant.address), "email": grant.address,
                        "username": grant.address}  # fmt: skip
            else:
                out |= {"sub": grant.client_id, "app_domain": grant.app_domain}
            return out

    def userinfo(self, token: str) -> dict[str, Any] | None:
        info = self._token_info(token)
        if not info.get("active") or "email" not in info:
            return None
        return {"sub": info["sub"], "email": info["email"], "email_verified": True}

    def revoke_token(self, form: dict[str, str], auth: tuple[str, str] | None) -> None:
        """RFC 7009: the client authenticates; unknown tokens are fine (200)."""
        with self._lock:
            token = form.get("token", "")
            if not token:
                raise _OAuthError("invalid_request", "Missing token.")
            client_id = auth[0] if auth else form.get("client_id", "")
            client = self._clients.get(client_id)
            if client is not None and client.secret is not None:
                self._client(form, auth)
            refresh = self._refresh.get(token)
            if refresh is not None and refresh.grant.client_id == client_id:
                refresh.grant.revoked = True
                return
            access = self._access.get(token)
            if access is not None and access.grant.client_id == client_id:
                access.expires_at = 0.0

    # ----------------------------------------------------------------- authorize

    def _begin_authorize(self, params: dict[str, str]) -> tuple[int, str, str | None]:
        """(status, request id or error text, redirect location or None)."""
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                return 400, "Error 401: invalid_client. The OAuth client was not found.", None
            if not _redirect_ok(client.redirect_uris, redirect_uri):
                return 400, "Error 400: redirect_uri_mismatch.", None

            def fail(error: str, description: str) -> tuple[int, str, str]:
                q = {"error": error, "error_description": description}
                if params.get("state") is not None:
                    q["state"] = params["state"]
                return 302, "", _with_query(redirect_uri, q)

            if params.get("response_type") != "code":
                return fail("unsupported_response_type", "response_type must be code")
            challenge = params.get("code_challenge", "")
            if not challenge or params.get("code_challenge_method") != "S256":
                return fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
            request_id = secrets.token_urlsafe(16)
            self._requests[request_id] = _AuthRequest(
                client_id=client_id,
                redirect_uri=redirect_uri,
                scope=params.get("scope", ""),
                state=params.get("state"),
                challenge=challenge,
                nonce=params.get("nonce"),
                login_hint=params.get("login_hint", ""),
                refresh=client.wants_refresh(params.get("scope", ""), params),
            )
            return 200, request_id, None

    def _decide(self, request_id: str, address: str, allow: bool) -> str:
        """The Allow/Deny button: the redirect location."""
        with self._lock:
            req = self._requests.pop(request_id, None)
            if req is None:
                raise ValueError("this sign-in page has expired; start again")
            q: dict[str, str] = {}
            address = address.strip().lower()
            if not allow:
                q = {"error": "access_denied", "error_description": "The user denied access"}
            elif "@" not in address:
                raise ValueError("enter an e-mail address")
            else:
                code = secrets.token_urlsafe(24)
                grant = self._new_grant(address, req.client_id, req.scope)
                self._codes[code] = _Code(
                    grant, req.redirect_uri, req.challenge, time.time() + self.code_lifetime,
                    req.nonce, req.refresh,
                )  # fmt: skip
                q = {"code": code}
            if req.state is not None:
                q["state"] = req.state
            return _with_query(req.redirect_uri, q)

    def _login_hint(self, request_id: str) -> str:
        with self._lock:
            req = self._requests.get(request_id)
            return req.login_hint if req else ""

    def jwks(self) -> dict[str, Any]:
        numbers = self._signing_key.public_key().public_numbers()

        def n2b(n: int) -> str:
            return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))

        return {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig",
                          "kid": self._signing_kid, "n": n2b(numbers.n), "e": n2b(numbers.e)}]}  # fmt: skip

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<OAuthServer {where} access_lifetime={self.access_lifetime}>"


def _with_query(uri: str, params: dict[str, str]) -> str:
    parts = urllib.parse.urlsplit(uri)
    query = (parts.query + "&" if parts.query else "") + urllib.parse.urlencode(params)
    return urllib.parse.urlunsplit(parts._replace(query=query))


# --------------------------------------------------------------------------- HTTP

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{body}</body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    provider: OAuthServer
    protocol_version = "HTTP/1.1"
    server_version = "yippiemove-test-oauth2/1"

    def setup(self) -> None:
        super().setup()
        with self.provider._lock:
            self.provider._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.provider._lock:
                self.provider._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # never log: requests carry tokens

    # ----------------------------------------------------------------- plumbing

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _error(self, exc: _OAuthError) -> None:
        headers = {"WWW-Authenticate": 'Basic realm="oauth2"'} if exc.status == 401 else None
        self._json(exc.status, {"error": exc.error, "error_description": exc.description}, headers)

    def _html(self, status: int, title: str, body: str) -> None:
        page = _PAGE.format(title=html.escape(title), body=body)
        self._send(status, page.encode(), "text/html; charset=utf-8")

    def _redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", {"Location": location})

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw and ctype != "application/x-www-form-urlencoded":
            raise _OAuthError("invalid_request", "Expected application/x-www-form-urlencoded.")
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return dict(pairs)

    def _basic(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)

    def _bearer(self) -> str:
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""

    def _route(self) -> tuple[str, dict[str, str]]:
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        path = parts.path.rstrip("/")
        for name in ("device/code", "devicecode", "authorize", "token", "introspect",
                     "revoke", "userinfo", "device", "jwks"):  # fmt: skip
            if path == "/" + name or path.endswith("/" + name):
                return name, query
        return "", query

    # ----------------------------------------------------------------- verbs

    def do_GET(self) -> None:
        name, query = self._route()
        p = self.provider
        if name == "authorize":
            status, text, location = p._begin_authorize(query)
            if location is not None:
                self._redirect(location)
            elif status != 200:
                self._html(status, "Sign-in error", f"<p id=error>{html.escape(text)}</p>")
            else:
                self._sign_in_page(text, p._login_hint(text))
        elif name == "device":
            self._device_page(query.get("user_code", ""), "")
        elif name == "userinfo":
            info = p.userinfo(self._bearer())
            if info is None:
                self._json(401, {"error": "invalid_token"},
                           {"WWW-Authenticate": 'Bearer error="invalid_token"'})  # fmt: skip
            else:
                self._json(200, info)
        elif name == "jwks":
            self._json(200, p.jwks())
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        name, _ = self._route()
        p = self.provider
        try:
            form = self._form()
        except _OAuthError as exc:
            self._error(exc)
            return
        try:
            if name == "token":
                form["_url"] = p.url + urllib.parse.urlsplit(self.path).path
                self._json(200, p.token(form, self._basic()))
            elif name in ("device/code", "devicecode"):
                self._json(200, p.device_code(form, self._basic()))
            elif name == "introspect":
                self._introspect(form)
            elif name == "revoke":
                p.revoke_token(form, self._basic())
                self._json(200, {})
            elif name == "authorize":
                self._authorize_post(form)
            elif name == "device":
                self._device_post(form)
            elif name == "userinfo":
                info = p.userinfo(self._bearer())
                if info is None:
                    self._json(401, {"error": "invalid_token"})
                else:
                    self._json(200, info)
            else:
                self._json(404, {"error": "not_found"})
        except _OAuthError as exc:
            self._error(exc)

    def _introspect(self, form: dict[str, str]) -> None:
        p = self.provider
        auth = self._basic()
        rid, secret = p.resource_credentials
        if auth is None or auth[0] != rid or not secrets.compare_digest(auth[1], secret):
            self._error(
                _OAuthError("invalid_client", "Resource server authentication failed.", 401)
            )
            return
        dovecot = urllib.parse.urlsplit(self.path).path.rstrip("/").endswith("/dovecot/introspect")
        self._json(200, p.introspect(form.get("token", ""), dovecot=dovecot))

    def _sign_in_page(self, request_id: str, hint: str, error: str = "") -> None:
        body = (
            (f"<p id=error>{html.escape(error)}</p>" if error else "")
            + '<form method="post" id="signin">'
            + f'<input type="hidden" name="request" value="{html.escape(request_id)}">'
            + '<label>Sign in as <input type="email" name="email" id="email" '
            + f'value="{html.escape(hint)}" autofocus></label> '
            + '<button type="submit" name="decision" value="allow" id="allow">Allow</button> '
            + '<button type="submit" name="decision" value="deny" id="deny">Deny</button>'
            + "</form>"
        )
        self._html(200, "Sign in - yippiemove test provider", body)

    def _authorize_post(self, form: dict[str, str]) -> None:
        allow = form.get("decision", "allow") == "allow"
        request_id = form.get("request", "")
        try:
            location = self.provider._decide(request_id, form.get("email", ""), allow)
        except ValueError as exc:
            self._html(400, "Sign-in error", f"<p id=error>{html.escape(str(exc))}</p>")
            return
        self._redirect(location)

    def _device_page(self, user_code: str, message: str) -> None:
        body = (
            (f"<p id=message>{html.escape(message)}</p>" if message else "")
            + '<form method="post" id="device">'
            + '<label>Code <input name="user_code" id="user_code" '
            + f'value="{html.escape(user_code)}"></label> '
            + '<label>Sign in as <input type="email" name="email" id="email"></label> '
            + '<button type="submit" name="decision" value="allow" id="allow">Allow</button> '
            + '<button type="submit" name="decision" value="deny" id="deny">Deny</button>'
            + "</form>"
        )
        self._html(200, "Connect a device - yippiemove test provider", body)

    def _device_post(self, form: dict[str, str]) -> None:
        code = form.get("user_code", "")
        try:
            if form.get("decision", "allow") == "allow":
                email = form.get("email", "").strip()
                if "@" not in email:
                    self._device_page(code, "Enter an e-mail address.")
                    return
                self.provider.approve_device(code, email)
                message = "Done: you can go back to your device."
            else:
                self.provider.deny_device(code)
                message = "Denied."
        except KeyError:
            self._device_page(code, "That code is not valid.")
            return
        self._html(200, "Connect a device - yippiemove test provider",
                   f"<p id=message>{html.escape(message)}</p>")  # fmt: skip
