"""Common mail providers, so that a customer picks a name instead of typing a host.

A small table for the web pages only; provider presets with special-use mapping and Gmail
labels belong to the mover (a later issue).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    host: str
    port: int
    security: str
    hint: str


PRESETS: tuple[Preset, ...] = (
    Preset(
        "gmail",
        "Gmail / Google Workspace",
        "imap.gmail.com",
        993,
        "tls",
        "Use an app password (Google Account → Security → 2-Step Verification → App "
        "passwords) and make sure IMAP is enabled in Gmail's settings.",
    ),
    Preset(
        "outlook",
        "Outlook.com / Hotmail",
        "outlook.office365.com",
        993,
        "tls",
        "With two-step verification on, create an app password in your Microsoft account's "
        "security settings.",
    ),
    Preset(
        "yahoo",
        "Yahoo Mail",
        "imap.mail.yahoo.com",
        993,
        "tls",
        "Yahoo needs an app password: Account Info → Account security → Generate app password.",
    ),
    Preset(
        "icloud",
        "iCloud Mail",
        "imap.mail.me.com",
        993,
        "tls",
        "Use an app-specific password from appleid.apple.com; the username is your iCloud "
        "e-mail address.",
    ),
    Preset(
        "fastmail",
        "Fastmail",
        "imap.fastmail.com",
        993,
        "tls",
        "Create an app password with IMAP access under Settings → Privacy & Security.",
    ),
)

BY_KEY: dict[str, Preset] = {p.key: p for p in PRESETS}
OTHER = "other"

SECURITY_CHOICES: tuple[tuple[str, str], ...] = (
    ("tls", "TLS (IMAPS, usually port 993)"),
    ("starttls", "STARTTLS (usually port 143)"),
    ("none", "None — plain text, for trusted local servers only"),
)
DEFAULT_PORTS = {"tls": 993, "starttls": 143, "none": 143}


def preset_for(host: str, port: int, security: str) -> str:
    """The preset key matching an account, or ``"other"``."""
    for p in PRESETS:
        if (p.host, p.port, p.security) == (host.lower(), port, security):
            return p.key
    return OTHER
