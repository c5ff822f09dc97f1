"""The account form of the "New transfer" steps, and the folder list carried between steps."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData

from yippiemove.service.core import Account

from .presets import BY_KEY, DEFAULT_PORTS, OTHER, SECURITY_CHOICES, preset_for

ROLES = {"source": "source", "dest": "destination"}
_FIELDS = ("preset", "host", "port", "security", "username", "password", "oauth", "oauth_name")
#: A sign-in's id (service/signin.py): 32 hex digits.
_SIGN_IN_ID = re.compile(r"\A[0-9a-f]{32}\Z")


def _text(form: FormData, name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


@dataclass
class AccountForm:
    """What the customer typed for one account (strings, as in the form)."""

    preset: str = ""
    host: str = ""
    port: str = ""
    security: str = "tls"
    username: str = ""
    password: str = ""
    #: "Sign in with Google / Microsoft" (issue 16): the sign-in's id (its grant stays
    #: on the server, service/signin.py) and the provider's name to show.
    oauth: str = ""
    oauth_name: str = ""

    @classmethod
    def from_form(cls, form: FormData | dict[str, Any], role: str) -> AccountForm:
        values = {f: _text(form, f"{role}_{f}") for f in _FIELDS}  # type: ignore[arg-type]
        for f in ("preset", "host", "port", "security", "username", "oauth", "oauth_name"):
            values[f] = values[f].strip()
        if not _SIGN_IN_ID.match(values["oauth"]):
            values["oauth"] = values["oauth_name"] = ""
        return cls(**values)

    @classmethod
    def signed_in(cls, acc: Account, sign_in_id: str, provider_name: str) -> AccountForm:
        """The form of an account signed in with OAuth2: no password, the sign-in's id."""
        return cls(
            preset=OTHER,
            host=acc.host,
            port=str(acc.port),
            security=acc.security,
            username=acc.username,
            password="",
            oauth=sign_in_id,
            oauth_name=provider_name,
        )

    @classmethod
    def from_account(cls, acc: Account) -> AccountForm:
        return cls(
            preset=preset_for(acc.host, acc.port, acc.security),
            host=acc.host,
            port=str(acc.port),
            security=acc.security,
            username=acc.username,
            password=acc.password,
        )

    @property
    def empty(self) -> bool:
        return not (self.preset or self.host or self.username)

    @property
    def provider(self) -> str:
        if self.oauth:
            return f"Signed in with {self.oauth_name or 'OAuth2'}"
        p = BY_KEY.get(self.preset)
        return p.label if p else "IMAP server"

    @property
    def hint(self) -> str:
        p = BY_KEY.get(self.preset)
        return p.hint if p else ""

    def hidden(self, role: str) -> list[tuple[str, str]]:
        """(name, value) pairs that carry this account through the next steps."""
        return [(f"{role}_{f}", getattr(self, f)) for f in _FIELDS]

    def validate(self, role: str) -> tuple[Account | None, dict[str, str]]:
        """The Account, or messages per field name (``host``, ``port``, ...)."""
        errors: dict[str, str] = {}
        who = ROLES[role]
        if self.oauth:
            # The account comes from the sign-in on the server (the page resolves it);
            # these fields are only what it shows.
            port = int(self.port) if self.port.isascii() and self.port.isdigit() else 993
            return Account(
                host=self.host or "localhost",
                port=port,
                security=self.security or "tls",
                username=self.username or "-",
                password="",
            ), {}
        preset = BY_KEY.get(self.preset)
        if preset is not None:
            host, port, security = preset.host, preset.port, preset.security
        elif self.preset == OTHER:
            host, security = self.host, self.security
            port = 0
            if not host:
                errors["host"] = f"Enter the {who} server's host name, like imap.example.org."
            elif any(c.isspace() or c in "/@?#" for c in host) or len(host) > 253:
                errors["host"] = (
                    f"“{host}” is not a host name; enter just the server's name, like "
                    "imap.example.org (no imap:// and no port)."
                )
            if security not in dict(SECURITY_CHOICES):
                errors["security"] = "Choose how to connect: TLS, STARTTLS or none."
                security = "tls"
            port_text = self.port or str(DEFAULT_PORTS.get(security, 993))
            if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
                errors["port"] = "The port must be a number from 1 to 65535 (usually 993)."
            else:
                port = int(port_text)
        else:
            errors["preset"] = f"Choose the {who} mailbox's provider, or “Other IMAP server”."
            host, port, security = "", 0, "tls"
        if not self.username:
            errors["username"] = "Enter the username (usually the full e-mail address)."
        elif len(self.username) > 320:
            errors["username"] = "The username is too long."
        if not self.password:
            errors["password"] = "Enter the password (or app password)."
        if errors:
            return None, errors
        return Account(
            host=host, port=port, security=security, username=self.username, password=self.password
        ), {}


def folders_to_plan(folders: list[Any]) -> list[dict[str, Any]]:
    """FolderInfo list -> plain dicts (the folder step's table, carried as JSON), INBOX
    first, then by name."""
    from .fmt import folder_key

    folders = sorted(folders, key=lambda f: folder_key(f.name))
    return [
        {
            "name": f.name,
            "messages": int(f.messages),
            "bytes": int(f.bytes),
            "dest_name": f.dest_name,
            "selected": bool(f.selected_by_default),
            "reasons": [str(r) for r in getattr(f, "reasons", ())],
        }
        for f in folders
    ]


def parse_plan(raw: object) -> list[dict[str, Any]] | None:
    """The folder list carried in the form, or None when missing or mangled."""
    if not isinstance(raw, str) or not raw or len(raw) > 2_000_000:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, list):
        return None
    plan = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        try:
            plan.append(
                {
                    "name": item["name"],
                    "messages": int(item.get("messages", 0)),
                    "bytes": int(item.get("bytes", 0)),
                    "dest_name": str(item.get("dest_name", item["name"])),
                    "selected": bool(item.get("selected", True)),
                    "reasons": [str(r) for r in item.get("reasons") or []][:20],
                }
            )
        except (TypeError, ValueError):
            return None
    return plan


def plan_json(plan: list[dict[str, Any]]) -> str:
    return json.dumps(plan, separators=(",", ":"), ensure_ascii=False)


def with_depth(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each folder with ``depth``: how many of the listed folders are its parents (at
    most 6).  A parent ``p`` of ``name`` is a listed name that ``name`` starts with,
    followed by "/" or ".": looked up by each such prefix of ``name`` (a dict), not by
    trying every listed name (issue 14: 16,000 entries took over a minute)."""
    listed = Counter(f["name"] for f in plan)
    lengths = {len(n) for n in listed}
    out = []
    for f in plan:
        name = f["name"]
        depth = 0
        for i, ch in enumerate(name):
            if ch in "/." and depth < 6 and i in lengths:
                depth += listed.get(name[:i], 0)
        out.append({**f, "depth": min(depth, 6)})
    return out


def same_account(a: Account, b: Account) -> bool:
    return (a.host.lower(), a.port, a.username.lower()) == (
        b.host.lower(),
        b.port,
        b.username.lower(),
    )
