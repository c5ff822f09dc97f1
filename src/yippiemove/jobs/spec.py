"""One transfer job, typed: the accounts, the folder selection, rules and filters, options.

Built and checked once in the service (``Service.make_spec``), stored in the control
database as its parts (the accounts without passwords, ``folders`` as JSON, the passwords
in the encrypted credential box), and handed to the job process as one JSON line on its
stdin (:meth:`JobSpec.to_json` / :meth:`JobSpec.from_json`, the one function pair of the
wire format; only there do the passwords travel, as they always did).

Every check names the field it is about (``"source.port: must be 1-65535"``) and never
holds a password: :class:`SpecError`, which the service shows as its ServiceError.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..imap.connection import is_loopback
from ..policy.rules import RULE_KEYS, FolderRules, MessageFilter, RuleError, from_options
from .vocab import Security

__all__ = [
    "MAX_FOLDER_NAMES",
    "Account",
    "FolderSelection",
    "JobSpec",
    "SpecError",
    "check_account",
    "check_folders",
]

#: At most this many names in ``folders.include`` (and in ``exclude``).  The service
#: allowed 10,000 and the REST schema 5,000; the stricter (the API's documented limit)
#: is the one limit now.  The web form writes the smaller side of the ticks.
MAX_FOLDER_NAMES = 5000
#: Longest folder name or pattern in a selection.
MAX_FOLDER_NAME = 1000

_HOSTNAME = re.compile(
    r"\A(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)
_ACCOUNT_FIELDS = ("host", "port", "security", "username", "password", "oauth")
#: Longest serialised OAuth2 grant (a service account's key is a few KiB).
MAX_GRANT = 16 * 1024


#: A service job's ``Options.retries`` unless its spec gives one: 3, as the service has
#: always run, below the default (5, the CLI's): the supervisor also restarts a job that
#: ended on a transient error (docs/service.md, "Restarts"; docs/design.md).
JOB_RETRIES = 3


class SpecError(ValueError):
    """A job spec that cannot be run; the message names the field, never a password."""


@dataclass(frozen=True)
class Account:
    """One IMAP account of a job.  The password never shows in ``repr``.

    ``oauth``: an OAuth2 *grant* (yippiemove.oauth, issue 16: ``{"kind": "refresh",
    "provider": ..., "refresh_token": ...}``...) instead of a password: a secret like
    the password (never in ``repr``, stored encrypted in the job's credentials blob as
    ``source_oauth``/``dest_oauth``, in the job process's stdin only)."""

    host: str
    port: int
    security: str  # a Security value
    username: str
    password: str = field(repr=False)
    oauth: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def oauth_provider(self) -> str | None:
        """The grant's provider key (``google``, ``microsoft``...), None without one."""
        if self.oauth is None:
            return None
        return str(self.oauth.get("provider") or self.oauth.get("kind") or "oauth")

    def public(self) -> dict[str, Any]:
        """What may be stored in clear and shown: everything but the password and the
        grant (of which only the provider's name: ``oauth_provider``)."""
        out: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "username": self.username,
        }
        if self.oauth is not None:
            out["oauth_provider"] = self.oauth_provider
        return out

    def as_dict(self) -> dict[str, Any]:
        """With the password (and the grant): only for the job process's stdin."""
        out = dict(self.public(), password=self.password)
        out.pop("oauth_provider", None)
        if self.oauth is not None:
            out["oauth"] = self.oauth
        return out

    @classmethod
    def from_dict(cls, data: Any, role: str = "account") -> Account:
        """From JSON/form data; a missing or mistyped field is a SpecError naming it.

        ``port`` may be omitted (993 for tls, else 143) or a string of digits;
        ``security`` defaults to ``tls``.
        """
        if not isinstance(data, dict):
            raise SpecError(
                f"{role}: must be an object with host, port, security, username, password"
            )
        unknown = sorted(set(data) - set(_ACCOUNT_FIELDS))
        if unknown:
            raise SpecError(f"{role}.{unknown[0]}: unknown field")
        grant = data.get("oauth")
        if grant is not None and (not isinstance(grant, dict) or not grant):
            raise SpecError(f"{role}.oauth: must be an OAuth2 grant (an object)")
        for name in ("host", "username") if grant is not None else ("host", "username", "password"):
            if not isinstance(data.get(name), str) or not data.get(name):
                raise SpecError(f"{role}.{name}: is required")
        password = data.get("password", "") if grant is not None else data["password"]
        if not isinstance(password, str):
            raise SpecError(f"{role}.password: must be a string")
        security = data.get("security", Security.TLS)
        if not isinstance(security, str):
            raise SpecError(f"{role}.security: must be one of {', '.join(Security)}")
        security = security.strip().lower() or Security.TLS
        port: Any = data.get("port")
        if port is None or port == "":
            port = 993 if security == Security.TLS else 143
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port.strip())
        if not isinstance(port, int) or isinstance(port, bool):
            raise SpecError(f"{role}.port: must be 1-65535")
        return cls(
            data["host"].strip(), port, security, data["username"].strip(), password, grant
        )


def check_account(account: Account, role: str, *, allow_insecure_hosts: bool) -> Account:
    """Check every field; returns the account with a normalised host and username."""
    if not isinstance(account, Account):
        raise SpecError(f"{role}: must be an account")
    host = account.host.strip() if isinstance(account.host, str) else ""
    if not host:
        raise SpecError(f"{role}.host: is required")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if not _HOSTNAME.match(bare):
            raise SpecError(f"{role}.host: {host!r} is not a valid host name") from None
    port = account.port
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise SpecError(f"{role}.port: must be 1-65535")
    if account.security not in tuple(Security):
        raise SpecError(f"{role}.security: must be one of {', '.join(Security)}")
    if account.security == Security.NONE and not is_loopback(bare) and not allow_insecure_hosts:
        raise SpecError(f"{role}.security: 'none' is only allowed for loopback hosts")
    user = account.username
    if not isinstance(user, str) or not user.strip():
        raise SpecError(f"{role}.username: is required")
    if len(user) > 320 or any(ord(c) < 32 or ord(c) == 127 for c in user):
        raise SpecError(f"{role}.username: must not contain control characters")
    pw = account.password
    grant = account.oauth
    if grant is not None:
        if not isinstance(grant, dict) or not isinstance(grant.get("kind"), str):
            raise SpecError(f"{role}.oauth: must be an OAuth2 grant with a kind")
        try:
            size = len(json.dumps(grant))
        except (TypeError, ValueError):
            raise SpecError(f"{role}.oauth: must be JSON") from None
        if size > MAX_GRANT:
            raise SpecError(f"{role}.oauth: is too large")
        if pw:
            raise SpecError(f"{role}.password: not with an OAuth2 sign-in")
    elif not isinstance(pw, str) or not pw:
        raise SpecError(f"{role}.password: is required")
    if any(c in pw for c in "\0\r\n") or len(pw) > 1024:
        raise SpecError(f"{role}.password: must not contain line breaks or NUL")
    return dataclasses.replace(account, host=bare, username=user.strip())


def _parse_folders(folders: Any) -> tuple[dict[str, Any], FolderRules, MessageFilter] | None:
    """The ``folders`` object: ``include``/``exclude`` (folder names or patterns, as
    transfer/engine.py ``select_folders`` matches them) and the folder rules and message
    filters of policy/rules.py (``rename``, ``since``... as ``yippiemove move`` has them).

    Returns it normalised (include and exclude always, a rule only when set), as the
    control database stores it and the job process reads it, with the parsed rules and
    filters.
    """
    if folders is None:
        return None
    if not isinstance(folders, dict):
        raise SpecError('folders: must be {"include": [...], "exclude": [...]}')
    unknown = sorted(set(folders) - {"include", "exclude", *RULE_KEYS})
    if unknown:
        raise SpecError(
            f"folders.{unknown[0]}: unknown key (use include, exclude, "
            + ", ".join(RULE_KEYS)
            + ")"
        )
    try:
        rules, filters = from_options(folders)
    except RuleError as exc:
        raise SpecError(f"folders.{exc}") from None
    out: dict[str, Any] = {k: folders[k] for k in RULE_KEYS if folders.get(k) is not None}
    for key in ("include", "exclude"):
        names = folders.get(key) or []
        if not isinstance(names, list) or not all(
            isinstance(n, str) and n and len(n) <= MAX_FOLDER_NAME for n in names
        ):
            raise SpecError(f"folders.{key}: must be a list of folder names")
        if len(names) > MAX_FOLDER_NAMES:
            raise SpecError(f"folders.{key}: too many folders")
        out[key] = list(names)
    return out, rules, filters


def check_folders(folders: Any) -> dict[str, Any] | None:
    """The ``folders`` object checked and normalised (see :class:`FolderSelection`), as
    the control database stores it; None for all folders."""
    parsed = _parse_folders(folders)
    return None if parsed is None else parsed[0]


@dataclass(frozen=True)
class FolderSelection:
    """The checked ``folders`` object, parsed once: the folder names or patterns to
    include and exclude, the folder rules and the message filters (policy/rules.py)."""

    include: tuple[str, ...]
    exclude: tuple[str, ...]
    rules: FolderRules
    filters: MessageFilter
    #: The normalised JSON shape (the control database, the job process's stdin).
    data: Mapping[str, Any]

    @classmethod
    def of(cls, folders: Any) -> FolderSelection | None:
        """From the JSON shape; None for all folders; SpecError naming the field."""
        parsed = _parse_folders(folders)
        if parsed is None:
            return None
        data, rules, filters = parsed
        return cls(tuple(data["include"]), tuple(data["exclude"]), rules, filters, data)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, list) else v for k, v in self.data.items()}


@dataclass(frozen=True)
class JobSpec:
    """Everything one job process needs to run a transfer.

    ``folders`` is the checked ``folders`` object (:func:`check_folders`), None for all.
    The run's settings come from the operator (the supervisor's config): CA file,
    insecure hosts, folder workers (None: automatic), progress interval.
    """

    source: Account
    dest: Account
    #: The folder selection; built from its JSON shape (a dict) when given one.
    folders: FolderSelection | None = None
    job_id: str = ""
    ca_file: str | None = None
    allow_insecure_hosts: bool = False
    connections: int | None = None
    retries: int = JOB_RETRIES
    idle_timeout: float = 120.0
    connect_timeout: float = 30.0
    progress_interval: float = 0.5
    #: The egress policy (policy/egress.py) the job process enforces itself: it
    #: resolves, checks and pins both servers' addresses at run time (DNS may have
    #: changed since the order).  Comma-separated CIDRs, and the service's own addresses.
    egress_allow: str = ""
    egress_deny: str = ""
    egress_own: tuple[str, ...] = ()
    #: Fencing (jobs/fence.py): the supervisor keeps stdin open after the spec and sends
    #: lease lines; the job writes to the destination only within the last lease it was
    #: told about, waiting up to ``lease_wait`` seconds past it for a renewal.
    fenced: bool = False
    lease_wait: float = 5.0
    #: The operator's OAuth2 settings (``yippiemove.oauth.OAuthConfig.to_dict()``: the
    #: providers' endpoints, client ids and secrets) for an account with a grant: the job
    #: process refreshes its access tokens itself.  Holds client secrets: stdin only.
    oauth_config: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.folders is not None and not isinstance(self.folders, FolderSelection):
            object.__setattr__(self, "folders", FolderSelection.of(self.folders))

    def without_passwords(self) -> JobSpec:
        return dataclasses.replace(
            self,
            source=dataclasses.replace(self.source, password="", oauth=None),
            dest=dataclasses.replace(self.dest, password="", oauth=None),
            oauth_config=None,
        )

    # -- the wire format (the job process's stdin) -----------------------------------

    def to_dict(self) -> dict[str, Any]:
        options: dict[str, Any] = (
            {} if self.connections is None else {"connections": self.connections}
        )
        for name, default in (("retries", 3), ("idle_timeout", 120.0), ("connect_timeout", 30.0)):
            if getattr(self, name) != default:
                options[name] = getattr(self, name)
        return {
            "job_id": self.job_id,
            "source": self.source.as_dict(),
            "dest": self.dest.as_dict(),
            "folders": self.folders.as_dict() if self.folders is not None else None,
            "ca_file": self.ca_file,
            "allow_insecure_hosts": self.allow_insecure_hosts,
            "options": options,
            "progress_interval": self.progress_interval,
            "egress": {
                "allow": self.egress_allow,
                "deny": self.egress_deny,
                "own": list(self.egress_own),
            },
            "fence": {"wait": self.lease_wait} if self.fenced else None,
            **({"oauth_config": self.oauth_config} if self.oauth_config is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        """From :meth:`to_dict`'s shape; omitted keys take their defaults."""
        if not isinstance(data, Mapping):
            raise SpecError("spec: must be an object")
        opts = data.get("options") or {}
        if not isinstance(opts, Mapping):
            raise SpecError("options: must be an object")
        egress = data.get("egress") or {}
        if not isinstance(egress, Mapping):
            raise SpecError("egress: must be an object")
        fence = data.get("fence")
        if fence is not None and not isinstance(fence, Mapping):
            raise SpecError("fence: must be an object")
        oauth_config = data.get("oauth_config")
        if oauth_config is not None and not isinstance(oauth_config, dict):
            raise SpecError("oauth_config: must be an object")
        try:
            return cls(
                egress_allow=str(egress.get("allow") or ""),
                egress_deny=str(egress.get("deny") or ""),
                egress_own=tuple(str(a) for a in egress.get("own") or ()),
                source=Account.from_dict(data.get("source"), "source"),
                dest=Account.from_dict(data.get("dest"), "dest"),
                folders=FolderSelection.of(data.get("folders")),
                job_id=str(data.get("job_id") or ""),
                ca_file=data.get("ca_file"),
                allow_insecure_hosts=bool(data.get("allow_insecure_hosts")),
                connections=None if opts.get("connections") is None else int(opts["connections"]),
                retries=int(opts.get("retries", 3)),
                idle_timeout=float(opts.get("idle_timeout", 120.0)),
                connect_timeout=float(opts.get("connect_timeout", 30.0)),
                progress_interval=float(data.get("progress_interval", 0.5)),
                fenced=fence is not None,
                lease_wait=float((fence or {}).get("wait", 5.0)),
                oauth_config=oauth_config,
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"options: {exc}") from None

    def to_json(self) -> str:
        """One line of JSON (the job process's stdin), passwords and grants included."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> JobSpec:
        try:
            data = json.loads(text)
        except ValueError:
            raise SpecError("spec: is not valid JSON") from None
        return cls.from_dict(data)
