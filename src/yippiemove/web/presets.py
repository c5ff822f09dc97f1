"""Common mail providers, so that a customer picks a name instead of typing a host.

The cards of the order form.  Host, port, security and the sign-in hint come from the
provider presets of the mover (:mod:`yippiemove.policy.providers`, the one table with
sources for every figure); this module only chooses which providers get a card.
"""

from __future__ import annotations

from dataclasses import dataclass

from yippiemove.jobs.vocab import Security
from yippiemove.policy import providers


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    host: str
    port: int
    security: str
    hint: str


#: (provider key, card label when it differs from the provider's label)
_CARDS: tuple[tuple[str, str | None], ...] = (
    ("gmail", "Gmail / Google Workspace"),
    ("outlook", None),
    ("yahoo", None),
    ("icloud", None),
    ("fastmail", None),
)


def _card(key: str, label: str | None) -> Preset:
    p = providers.by_key(key)
    assert p is not None and p.host is not None, key
    return Preset(p.key, label or p.label, p.host, p.port, p.security, p.hint)


PRESETS: tuple[Preset, ...] = tuple(_card(k, label) for k, label in _CARDS)

BY_KEY: dict[str, Preset] = {p.key: p for p in PRESETS}
OTHER = "other"

SECURITY_CHOICES: tuple[tuple[str, str], ...] = (
    (Security.TLS, "TLS (IMAPS, usually port 993)"),
    (Security.STARTTLS, "STARTTLS (usually port 143)"),
    (Security.NONE, "None — plain text, for trusted local servers only"),
)
DEFAULT_PORTS: dict[str, int] = {s: s.default_port for s in Security}


def preset_for(host: str, port: int, security: str) -> str:
    """The preset key matching an account, or ``"other"``."""
    for p in PRESETS:
        if (p.host, p.port, p.security) == (host.lower(), port, security):
            return p.key
    return OTHER
