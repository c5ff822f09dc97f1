"""HTTP to the providers' endpoints: no redirects, bounded answers, timeouts.

The endpoints are operator settings, not customer input, but an answer is still read
with care: redirects are never followed (a token request re-sent elsewhere would carry
a refresh token or a client secret with it), an answer larger than
:data:`MAX_RESPONSE_BYTES` is cut off with an error, every request has a timeout, and a
URL must be ``https://`` unless its host is a loopback address (the test provider).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from .config import OAuthConfigError

__all__ = [
    "MAX_RESPONSE_BYTES",
    "TIMEOUT",
    "ResponseTooLarge",
    "check_url",
    "client_kwargs",
]

#: Largest answer read from a provider's endpoint (a token answer is a few KB).
MAX_RESPONSE_BYTES = 256 * 1024
#: Seconds to connect, and between two reads.
TIMEOUT = httpx.Timeout(20.0, connect=10.0)


class ResponseTooLarge(httpx.TransportError):
    """The provider's answer exceeded :data:`MAX_RESPONSE_BYTES`."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """``url`` if it is ``https://`` (or ``http://`` to a loopback host), else
    :class:`~yippiemove.oauth.config.OAuthConfigError`."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return url
    raise OAuthConfigError(f"{what} {url!r} must be an https:// URL")


class _Bounded(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(f"the provider's answer is larger than {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _BoundedTransport(httpx.AsyncBaseTransport):
    """Answers longer than ``limit`` bytes fail (whatever Content-Length says)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._limit:
            await response.aclose()
            raise ResponseTooLarge(f"the provider's answer is larger than {self._limit} bytes")
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _Bounded(stream, self._limit)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def client_kwargs(verify: ssl.SSLContext | bool = True) -> dict[str, Any]:
    """Keyword arguments of an ``httpx.AsyncClient`` (or authlib's clients built on
    it) that talks to a provider: no redirects, bounded answers, timeouts, no
    proxy settings from the environment."""
    return {
        "transport": _BoundedTransport(
            httpx.AsyncHTTPTransport(verify=verify, retries=0), MAX_RESPONSE_BYTES
        ),
        "follow_redirects": False,
        "timeout": TIMEOUT,
        "trust_env": False,
    }
