"""OAuth2 on the client side: operator settings, grants -> access tokens, sign-in flows.

A layer between ``accounts`` (which turns an account with an ``"oauth"`` grant into an
Endpoint signing in with :class:`GrantTokenSource`) and ``transfer`` (whose
``TokenSource`` protocol this implements).  The protocol work is authlib's, over httpx
(docs/design.md, "OAuth2: the client").

- :mod:`.config`: :class:`OAuthProvider`, :class:`OAuthConfig` (``from_env``,
  ``to_dict``/``from_dict`` for the job process's stdin);
- :mod:`.tokens`: grants (:func:`check_grant`, :func:`redact_grant`) and
  :class:`GrantTokenSource`;
- :mod:`.flows`: ``begin``/``finish`` (authorization code + PKCE), ``device_flow``,
  ``loopback_flow``;
- :mod:`.cache`: the command line's refresh-token cache (0600 file, 0700 directory).
"""

from __future__ import annotations

from .config import GOOGLE, MICROSOFT, OAuthConfig, OAuthConfigError, OAuthProvider, microsoft
from .tokens import (
    GRANT_KINDS,
    GrantError,
    GrantTokenSource,
    TokenEndpointUnavailable,
    check_grant,
    redact_grant,
)

__all__ = [
    "GOOGLE",
    "GRANT_KINDS",
    "MICROSOFT",
    "GrantError",
    "GrantTokenSource",
    "OAuthConfig",
    "OAuthConfigError",
    "OAuthProvider",
    "TokenEndpointUnavailable",
    "check_grant",
    "microsoft",
    "redact_grant",
]
