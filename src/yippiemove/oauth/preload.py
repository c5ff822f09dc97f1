"""What fetching a token loads lazily, loaded ahead (:func:`preload`).

A service job process drops its privileges before it connects to anything
(jobs/privilege.py); after the drop the interpreter's own files may be unreadable (an
interpreter under /root), so a module first imported then fails (``No module named
'importlib.resources'`` from certifi, imported by httpcore when httpx builds its first
transport).  :func:`preload` imports those modules and builds once what a token request
builds (an httpx transport with its TLS context, a signed JWT), while the files can
still be read.  It connects to nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import time

__all__ = ["preload"]

#: Modules imported lazily on the way of a token request (httpx -> httpcore -> certifi;
#: anyio's asyncio backend at the first request; authlib's and joserfc's algorithms).
LAZY_MODULES = (
    "importlib.resources",
    "certifi",
    "httpcore",
    "h11",
    "anyio._backends._asyncio",
    "sniffio",
    "email.utils",
    "authlib.oauth2.rfc7523",
    "joserfc.jwk",
    "joserfc.jwt",
    "cryptography.hazmat.primitives.asymmetric.padding",
)

_done = False


def preload() -> None:
    """Import and build once what a token request needs (see the module); idempotent."""
    global _done
    if _done:
        return
    for name in LAZY_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from .http import client_kwargs

    with contextlib.suppress(Exception):
        client_kwargs(True)  # an httpx transport: httpcore, the default TLS context
    with contextlib.suppress(Exception):
        _sign_once()
    _done = True


def _sign_once() -> None:
    """Sign a throwaway JWT bearer assertion (RS256) as a service-account grant does."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from . import _authlib  # noqa: F401 - authlib's httpx clients

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    now = int(time.time())
    from authlib.oauth2.rfc7523 import JWTBearerGrant
    from joserfc.jwk import RSAKey

    JWTBearerGrant.sign(
        RSAKey.import_key(pem),
        issuer="preload@example.invalid",
        audience="https://example.invalid/token",
        subject="preload@example.invalid",
        issued_at=now,
        expires_at=now + 60,
        header={"alg": "RS256"},
    )
