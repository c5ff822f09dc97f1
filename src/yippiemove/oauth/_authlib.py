"""authlib's httpx clients, imported once.

authlib 1.9 prefers the ``httpx2`` package and warns (a deprecation) when it falls back
to ``httpx``; yippiemove uses ``httpx`` (already a dependency, and the one the rest of
the code and the tests use), so that warning is silenced here and only here.
"""

from __future__ import annotations

import warnings

from authlib.deprecate import AuthlibDeprecationWarning  # sets its own "always" filter

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.base_client.errors import OAuthError
    from authlib.integrations.httpx_client import AsyncAssertionClient, AsyncOAuth2Client

__all__ = ["AsyncAssertionClient", "AsyncOAuth2Client", "OAuthError"]
