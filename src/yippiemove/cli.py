"""The command line: ``yippiemove move ...`` (a one-off transfer in the terminal).

Exit status of ``move``: 0 every selected source message is verified on the destination;
1 some messages failed (listed, and in the report); 2 the run could not start or was cut
short (bad arguments, unreachable host, wrong password, TLS failure, interrupted, the
destination over its quota, or still failing after the retries: docs/faults.md), or
another run holds the job or its destination mailbox (transfer/locks.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import hashlib
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from . import __version__
from .accounts import AccountURL, AccountURLError, resolve_account, ssl_context
from .imap.errors import ImapError
from .policy import providers
from .policy.rules import FolderRules, MessageFilter, RuleError
from .transfer.engine import Mover
from .transfer.identity import SameMailbox, same_address
from .transfer.locks import (
    LockError,
    LockHeld,
    Locks,
    job_lock_path,
    mailbox_keys,
    mailbox_lock_paths,
)
from .transfer.model import Endpoint, FolderResult, Options, Plan, Progress
from .transfer.report import Exit, build_report, exit_code, outcome_of, write_report
from .transfer.run import Transfer, make_options, prepare
from .transfer.state import State, StateError

log = logging.getLogger("yippiemove")


def _die(message: str) -> NoReturn:
    click.echo(f"yippiemove: error: {message}", err=True)
    sys.exit(int(Exit.ABORTED))


def read_password(role: str, url: AccountURL, password_file: str | None) -> str:
    """Password from the file, else the environment, else a terminal prompt; never argv."""
    env = f"YIPPIEMOVE_{role.upper()}_PASSWORD"
    if password_file:
        try:
            text = Path(password_file).read_text(encoding="utf-8")
        except OSError as exc:
            _die(f"cannot read --{role}-password-file {password_file!r}: {exc.strerror}")
        pw = text.rstrip("\r\n")
        if not pw:
            _die(f"--{role}-password-file {password_file!r} is empty")
        return pw
    pw = os.environ.get(env)
    if pw:
        return pw
    if sys.stdin.isatty():
        return getpass.getpass(f"Password for {url.user} on {url.host} ({role}): ")
    _die(
        f"no password for the {role} account: use --{role}-password-file FILE, "
        f"set {env}, or run on a terminal to be asked"
    )


def default_state_path(source: AccountURL, dest: AccountURL) -> Path:
    import platformdirs  # only without --state: start-up (docs/performance.md item 12)

    key = f"{source.scheme}://{source.user}@{source.host}:{source.port}>" + (
        f"{dest.scheme}://{dest.user}@{dest.host}:{dest.port}"
    )
    name = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(platformdirs.user_data_dir("yippiemove")) / "jobs" / f"{name}.sqlite"


def default_lock_dir() -> Path:
    """Where the destination-mailbox locks live: ``<user data dir>/locks``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("yippiemove")) / "locks"


def take_locks(locks: Locks, state_path: Path, dest: Endpoint) -> None:
    """One writer per destination mailbox on this machine (transfer/locks.py): the job's
    lock beside its state file, then the destination mailbox's; exit 2 naming the run
    that holds one."""
    job = job_lock_path(state_path)
    try:
        locks.take([job], state=state_path.resolve(), mailbox=dest.label)
    except LockHeld as held:
        _die(
            f"this job is already running ({held.holder.describe()}; lock {held.path}): "
            "wait for it to end or stop it"
        )
    except LockError as exc:
        _die(str(exc))
    keys = mailbox_keys(dest.host, dest.port, dest.user)
    try:
        locks.take(
            mailbox_lock_paths(default_lock_dir(), keys),
            state=state_path.resolve(),
            mailbox=dest.label,
        )
    except LockHeld as held:
        other = f", state file {held.holder.state}" if held.holder.state else ""
        _die(
            f"another run is already writing into {dest.label} ({held.holder.describe()}"
            f"{other}): one run per destination mailbox; wait for it to end"
        )
    except LockError as exc:
        _die(str(exc))


@click.group()
@click.version_option(__version__, prog_name="yippiemove")
def main() -> None:
    """yippiemove: exact, resumable, fast IMAP-to-IMAP mailbox transfers."""


@main.command()
@click.option(
    "--source",
    "source_url",
    required=True,
    metavar="URL|ADDRESS",
    help="imap[s]://USER@HOST:PORT, or an e-mail address of a known provider.",
)
@click.option(
    "--dest",
    "dest_url",
    required=True,
    metavar="URL|ADDRESS",
    help="imap[s]://USER@HOST:PORT, or an e-mail address of a known provider.",
)
@click.option(
    "--source-preset",
    type=click.Choice(providers.keys()),
    help="Provider preset of the source (server and limits), e.g. for a custom domain.",
)
@click.option(
    "--dest-preset",
    type=click.Choice(providers.keys()),
    help="Provider preset of the destination (server and limits), e.g. google-workspace.",
)
@click.option("--source-password-file", metavar="FILE", help="File holding the source password.")
@click.option("--dest-password-file", metavar="FILE", help="File holding the destination password.")
@click.option(
    "--source-oauth",
    metavar="PROVIDER",
    help="Sign in to the source with OAuth2: google, microsoft, auto (the preset's), or "
    "no (a password). Default: OAuth2 for the Gmail, Google Workspace, Microsoft 365 and "
    "Outlook.com presets unless a password is given.",
)
@click.option(
    "--dest-oauth", metavar="PROVIDER", help="The same for the destination (see --source-oauth)."
)
@click.option(
    "--source-token-file",
    metavar="FILE",
    help="File holding an OAuth2 access token (or a JSON grant) for the source, obtained elsewhere.",
)
@click.option(
    "--dest-token-file",
    metavar="FILE",
    help="File holding an OAuth2 access token (or a JSON grant) for the destination.",
)
@click.option(
    "--source-service-account",
    metavar="KEYFILE",
    help="Google Workspace: sign in to the source as its address through this service "
    "account key (JSON) with domain-wide delegation: no user's password or consent.",
)
@click.option(
    "--dest-service-account",
    metavar="KEYFILE",
    help="The same for the destination (see --source-service-account).",
)
@click.option(
    "--source-ms-app",
    metavar="FILE",
    help="Microsoft 365: sign in to the source as its address with this application's "
    'app-only token (client credentials); FILE is JSON {"tenant", "client_id", '
    '"client_secret"}.',
)
@click.option(
    "--dest-ms-app",
    metavar="FILE",
    help="The same for the destination (see --source-ms-app).",
)
@click.option(
    "--oauth-device",
    is_flag=True,
    help="Sign in with a code typed on another device (Microsoft) instead of a browser "
    "redirect to this machine.",
)
@click.option(
    "--open-browser", is_flag=True, help="Open the OAuth2 sign-in page in a browser here."
)
@click.option(
    "--no-token-cache",
    is_flag=True,
    help="Neither use nor keep OAuth2 refresh tokens in the user's data directory.",
)
@click.option("--state", "state_path", metavar="FILE", help="The job's sqlite3 state database.")
@click.option("--report", "report_path", metavar="FILE", help="Write a JSON report here.")
@click.option(
    "--folder",
    "folders",
    multiple=True,
    metavar="NAME",
    help="Only this folder (and its subfolders); repeatable; globs allowed.",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="NAME",
    help="Skip this folder (and its subfolders); repeatable.",
)
@click.option(
    "--rename",
    "renames",
    multiple=True,
    metavar="OLD=NEW",
    help="Put folder OLD (and its subfolders) at NEW; names use '/' between levels; "
    "two folders renamed to one name are merged; repeatable.",
)
@click.option(
    "--rename-regex",
    "regex_renames",
    multiple=True,
    metavar="REGEX=REPLACEMENT",
    help="Rename folders whose whole path matches REGEX (Python re; \\1 in REPLACEMENT); "
    "the first matching rule wins; repeatable.",
)
@click.option(
    "--under",
    metavar="PREFIX",
    help="Put the folders under PREFIX on the destination (e.g. Imported), except INBOX "
    "and the special folders.",
)
@click.option("--under-inbox", is_flag=True, help="With --under, put INBOX there too.")
@click.option(
    "--no-special",
    is_flag=True,
    help="Keep the names of Sent, Drafts, Trash, Junk, Archive instead of using the "
    "destination's own special folders.",
)
@click.option("--since", metavar="YYYY-MM-DD", help="Only messages received on or after this date.")
@click.option("--before", metavar="YYYY-MM-DD", help="Only messages received before this date.")
@click.option(
    "--larger", metavar="SIZE", help="Only messages larger than SIZE bytes (k, M, G suffixes)."
)
@click.option(
    "--smaller", metavar="SIZE", help="Only messages smaller than SIZE bytes (k, M, G suffixes)."
)
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option(
    "--verify-content",
    is_flag=True,
    help="Read every message back from the destination and compare its SHA-256 with the "
    "source's (a second read of all the mail; catches servers that alter bytes).",
)
@click.option(
    "--ca-file", metavar="FILE", help="Trust this CA bundle (PEM) instead of the system's."
)
@click.option(
    "--no-starttls",
    is_flag=True,
    help="Keep imap:// connections in plain text (trusted links only; a password is still "
    "only sent in the clear to a loopback server or with --allow-insecure-auth).",
)
@click.option(
    "--allow-insecure-auth",
    is_flag=True,
    help="Allow sending passwords without TLS to a non-loopback server.",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 16),
    default=None,
    help="Parallel folder workers (one connection per side each). Default: 2, or 6 when "
    "a round trip to either server takes 10 ms or more (each folder costs a few round trips; "
    "more folders in flight hide them); provider limits apply.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=Options.retries,
    show_default=True,
    help="Attempts in a row without progress after a dropped connection, a timeout or "
    "throttling, per folder, before giving up (waits grow exponentially).",
)
@click.option(
    "--max-backoff",
    type=click.FloatRange(0, 86400),
    default=300.0,
    show_default=True,
    help="Longest wait in seconds between two attempts, also for a wait the server suggests.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=120.0,
    show_default=True,
    help="Seconds without an answer before a connection counts as dead.",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: when on a terminal)."
)
@click.option("-v", "--verbose", is_flag=True, help="Log every step.")
def move(
    source_url: str,
    dest_url: str,
    source_preset: str | None,
    dest_preset: str | None,
    source_password_file: str | None,
    dest_password_file: str | None,
    source_oauth: str | None,
    dest_oauth: str | None,
    source_token_file: str | None,
    dest_token_file: str | None,
    source_service_account: str | None,
    dest_service_account: str | None,
    source_ms_app: str | None,
    dest_ms_app: str | None,
    oauth_device: bool,
    open_browser: bool,
    no_token_cache: bool,
    state_path: str | None,
    report_path: str | None,
    folders: tuple[str, ...],
    excludes: tuple[str, ...],
    renames: tuple[str, ...],
    regex_renames: tuple[str, ...],
    under: str | None,
    under_inbox: bool,
    no_special: bool,
    since: str | None,
    before: str | None,
    larger: str | None,
    smaller: str | None,
    dry_run: bool,
    verify_content: bool,
    ca_file: str | None,
    no_starttls: bool,
    allow_insecure_auth: bool,
    connections: int | None,
    retries: int,
    max_backoff: float,
    timeout: float,
    progress: bool | None,
    verbose: bool,
) -> None:
    """Copy every folder and message from SOURCE to DEST, exactly; safe to re-run."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s.%(msecs)03d %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        rules = FolderRules.parse(
            renames=renames,
            regex_renames=regex_renames,
            under=under,
            under_inbox=under_inbox,
            special=not no_special,
        )
        filters = MessageFilter.parse(since=since, before=before, larger=larger, smaller=smaller)
    except RuleError as exc:
        raise click.UsageError(str(exc)) from None
    accounts = _Accounts.resolve(
        source_url,
        dest_url,
        source_preset,
        dest_preset,
        source_password_file,
        dest_password_file,
        ca_file=ca_file,
        no_starttls=no_starttls,
        allow_insecure_auth=allow_insecure_auth,
        sign_in=SignIn(
            oauth={"source": source_oauth, "dest": dest_oauth},
            token_files={"source": source_token_file, "dest": dest_token_file},
            admin_files={
                "source": ("service_account", source_service_account)
                if source_service_account
                else ("client_credentials", source_ms_app)
                if source_ms_app
                else None,
                "dest": ("service_account", dest_service_account)
                if dest_service_account
                else ("client_credentials", dest_ms_app)
                if dest_ms_app
                else None,
            },
            device=oauth_device,
            open_browser=open_browser,
            cache=not no_token_cache,
        ),
    )
    options = make_options(
        include=folders,
        exclude=excludes,
        rules=rules,
        filters=filters,
        dry_run=dry_run,
        verify_content=verify_content,
        connections=connections,
        retries=retries,
        max_backoff=max_backoff,
        idle_timeout=timeout,
    )
    # Provider presets (policy/providers.py): connection cap, size limit, sign-in rules.
    transfer = prepare(
        accounts.source,
        accounts.dest,
        options,
        source_provider=accounts.src_provider,
        dest_provider=accounts.dst_provider,
    )
    for note in transfer.notes:
        click.echo(f"note: {note}")
    state: State | None = None
    new_state: Path | None = None  # the state file, when this run created it
    locks = Locks()  # one writer per mailbox; the kernel drops them even on kill -9
    with locks:  # released (and their files removed) however the run ends
        if not dry_run:  # a dry run writes nothing: no lock
            path = (
                Path(state_path)
                if state_path
                else default_state_path(accounts.src_url, accounts.dst_url)
            )
            take_locks(locks, path, accounts.dest)
            fresh = not path.exists()
            try:
                state = transfer.open_state(path)
            except StateError as exc:
                _die(str(exc))
            new_state = path if fresh else None
        show_bar = sys.stderr.isatty() if progress is None else progress
        mover = transfer.mover(
            state=state,
            progress=Progress(),
            on_event=log.info if verbose or not show_bar else log.debug,
        )
        started = time.time()
        status, error = _run(mover, state, show_bar)
        if new_state is not None and error is not None and mover.plan is None:
            # Stopped before there was a plan (unreachable, wrong password, no such folder):
            # nothing was changed, and no state file is left behind either.
            for leftover in ("", "-wal", "-shm", "-journal"):
                Path(str(new_state) + leftover).unlink(missing_ok=True)
        _finish(transfer, mover, started, status, error, report_path, dry_run)


@dataclass
class _Accounts:
    """``move``'s two accounts: URLs, provider presets and endpoints (with passwords)."""

    src_url: AccountURL
    dst_url: AccountURL
    src_provider: providers.Provider | None
    dst_provider: providers.Provider | None
    source: Endpoint
    dest: Endpoint

    @classmethod
    def resolve(
        cls,
        source_url: str,
        dest_url: str,
        source_preset: str | None,
        dest_preset: str | None,
        source_password_file: str | None,
        dest_password_file: str | None,
        *,
        ca_file: str | None,
        no_starttls: bool,
        allow_insecure_auth: bool,
        sign_in: SignIn | None = None,
    ) -> _Accounts:
        """Both accounts from the command line, or exit 2 saying what is wrong."""
        sign_in = sign_in or SignIn()
        try:
            src_url, src_provider = resolve_account(
                source_url, what="--source", preset=source_preset
            )
            dst_url, dst_provider = resolve_account(dest_url, what="--dest", preset=dest_preset)
        except AccountURLError as exc:
            _die(str(exc))
        if ca_file and not Path(ca_file).is_file():
            _die(f"--ca-file {ca_file!r} does not exist")
        # The system's CAs only when a connection may use TLS (why: docs/performance.md
        # item 12).
        may_use_tls = not no_starttls or "imaps" in (src_url.scheme, dst_url.scheme)
        ctx = None
        if may_use_tls or ca_file:
            try:
                ctx = ssl_context(ca_file)
            except (OSError, ValueError) as exc:
                _die(f"cannot load --ca-file {ca_file!r}: {exc}")
        how = {"ssl_context": ctx, "allow_insecure_auth": allow_insecure_auth}
        ends: list[Endpoint] = []
        for role, url, prov, pw_file in (
            ("source", src_url, src_provider, source_password_file),
            ("dest", dst_url, dst_provider, dest_password_file),
        ):
            oauth = sign_in.token_source(role, url, prov, pw_file)
            pw = "" if oauth is not None else read_password(role, url, pw_file)
            ep = url.endpoint(pw, **how, starttls=not no_starttls)
            ends.append(dataclasses.replace(ep, oauth=oauth) if oauth is not None else ep)
        source, dest = ends
        if (source.host, source.port, source.user) == (dest.host, dest.port, dest.user):
            _die("--source and --dest are the same account")
        same = same_address(source, dest)  # another name for it (transfer/identity.py)
        if same is not None:
            _die(str(SameMailbox(same)))
        return cls(src_url, dst_url, src_provider, dst_provider, source, dest)


def default_token_cache() -> Path:
    """Where ``move`` keeps OAuth2 refresh grants: ``<user data dir>/oauth/tokens.json``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("yippiemove")) / "oauth" / "tokens.json"


@dataclass
class SignIn:
    """How ``move`` signs in to each side: a password, or OAuth2 (``--*-oauth``, a token
    file, the presets' default), with the refresh-token cache."""

    oauth: dict[str, str | None] = field(default_factory=dict)
    token_files: dict[str, str | None] = field(default_factory=dict)
    #: Domain-wide sign-in (issue 16): role -> (grant kind, file): a Google service
    #: account key or a Microsoft 365 application, acting as the account's address.
    admin_files: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    device: bool = False
    open_browser: bool = False
    cache: bool = True

    def provider_key(
        self, role: str, prov: providers.Provider | None, password_file: str | None
    ) -> str | None:
        """The OAuth2 provider to sign in to ``role`` with, or None for a password."""
        asked = (self.oauth.get(role) or "").strip().lower() or None
        if asked in ("no", "none", "password"):
            return None
        if asked == "auto" or asked is None:
            key = prov.oauth_provider if prov is not None else None
            if asked == "auto" and key is None:
                _die(
                    f"--{role}-oauth auto: the {prov.key if prov else 'generic'!r} preset has "
                    "no OAuth2 provider; name one (google, microsoft)"
                )
            if asked is None:
                given = password_file or os.environ.get(f"YIPPIEMOVE_{role.upper()}_PASSWORD")
                if key is None or prov is None or given:
                    return None
                if not (prov.oauth_only or key == "google"):
                    return None
                why = (
                    f"use --{role}-password-file for an app password"
                    if prov.app_password
                    else f"--{role}-oauth no to use a password"
                )
                click.echo(f"{prov.key}: signing in with OAuth2 ({key.title()}); {why}", err=True)
            return key
        return asked

    def token_source(
        self,
        role: str,
        url: AccountURL,
        prov: providers.Provider | None,
        password_file: str | None,
    ) -> Any:
        """A GrantTokenSource for ``role``, or None: sign in with a password."""
        admin = self.admin_files.get(role)
        if admin is not None:
            if self.token_files.get(role) or self.oauth.get(role) or password_file:
                flag = "service-account" if admin[0] == "service_account" else "ms-app"
                _die(f"--{role}-{flag} goes alone: no --{role}-oauth, token or password file")
            return _admin_source(role, url, *admin)
        token_file = self.token_files.get(role)
        if token_file:
            if self.oauth.get(role) or password_file:
                _die(f"--{role}-token-file goes alone: no --{role}-oauth or password file")
            return _token_file_source(role, token_file)
        key = self.provider_key(role, prov, password_file)
        if key is None:
            return None
        if password_file:
            _die(f"--{role}-oauth and --{role}-password-file: choose one")
        return _oauth_sign_in(role, url, key, self)


def _oauth_config() -> Any:
    from .oauth import OAuthConfig, OAuthConfigError

    try:
        return OAuthConfig.from_env()
    except OAuthConfigError as exc:
        _die(str(exc))


def _admin_source(role: str, url: AccountURL, kind: str, path: str) -> Any:
    """A token source acting as ``url.user`` through an admin credential (issue 16):
    a Google service account key (JWT bearer, subject = the address) or a Microsoft 365
    application (client credentials).  The file is checked as the service checks a
    stored domain credential (service/domain.py); its secrets are never printed."""
    from .oauth import GrantTokenSource, OAuthConfigError
    from .service.domain import DomainError, grant_for, parse_credential

    flag = f"--{role}-service-account" if kind == "service_account" else f"--{role}-ms-app"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        _die(f"cannot read {flag} {path!r}: {exc.strerror}")
    address = url.user
    domain = address.rpartition("@")[2].lower()
    if "@" not in address or not domain:
        _die(f"{flag}: the {role} account must be named by its e-mail address")
    config = _oauth_config()
    provider = "google" if kind == "service_account" else "microsoft"
    token_urls: dict[str, str] = {}
    try:
        token_urls[provider] = config.get(provider).token_url
    except OAuthConfigError as exc:
        _die(f"{flag}: {exc}")
    data: dict[str, Any] = {"kind": kind, "domain": domain}
    if kind == "service_account":
        data["key"] = text
    else:
        try:
            app = json.loads(text)
        except ValueError:
            _die(f'{flag} {path!r}: expected JSON {{"tenant", "client_id", "client_secret"}}')
        if not isinstance(app, dict):
            _die(f'{flag} {path!r}: expected JSON {{"tenant", "client_id", "client_secret"}}')
        data.update({k: app.get(k) for k in ("tenant", "client_id", "client_secret")})
    try:
        cred = parse_credential(data, token_urls=token_urls)
    except DomainError as exc:
        _die(f"{flag} {path!r}: {exc}")
    grant = grant_for(cred.kind, cred.provider, cred.secret, cred.tenant, cred.principal, address)
    try:
        return GrantTokenSource(grant, config)
    except ValueError as exc:
        _die(f"{flag}: {exc}")


def _token_file_source(role: str, path: str) -> Any:
    """A token file: a bare access token, or a JSON grant (yippiemove.oauth)."""
    from .oauth import GrantError, GrantTokenSource, check_grant

    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        _die(f"cannot read --{role}-token-file {path!r}: {exc.strerror}")
    if not text:
        _die(f"--{role}-token-file {path!r} is empty")
    if text.startswith("{"):
        try:
            grant = check_grant(json.loads(text))
        except (ValueError, GrantError) as exc:
            msg = str(exc) if isinstance(exc, GrantError) else "not valid JSON"
            _die(f"--{role}-token-file {path!r}: {msg}")
    elif any(c.isspace() for c in text):
        _die(f"--{role}-token-file {path!r}: expected one access token or a JSON grant")
    else:
        grant = {"kind": "static", "access_token": text}
    config = _oauth_config() if grant["kind"] != "static" else None
    try:
        return GrantTokenSource(grant, config)
    except ValueError as exc:
        _die(f"--{role}-token-file: {exc}")


def _oauth_sign_in(role: str, url: AccountURL, key: str, how: SignIn) -> Any:
    """A token source for ``url.user`` at provider ``key``: from the cache when it still
    works, else a new consent (the browser on a loopback redirect, or the device flow)."""
    from .imap.errors import AuthenticationError, ConsentRevoked
    from .oauth import GrantTokenSource, OAuthConfigError, TokenEndpointUnavailable
    from .oauth.cache import TokenCache, TokenCacheError
    from .oauth.flows import DeviceCode, device_flow, loopback_flow

    config = _oauth_config()
    try:
        prov = config.get(key)
    except OAuthConfigError as exc:
        _die(f"--{role}-oauth: {exc}")
    address = url.user
    cache = TokenCache(default_token_cache()) if how.cache else None

    def keep(grant: dict[str, Any]) -> None:
        if cache is not None:
            try:
                cache.put(key, address, grant)
            except TokenCacheError as exc:
                log.warning("%s", exc)

    if cache is not None:
        try:
            cached = cache.get(key, address)
        except TokenCacheError as exc:
            _die(str(exc))
        if cached is not None:
            src = GrantTokenSource(cached, config, on_rotate=keep)
            try:
                asyncio.run(src.access_token())
                click.echo(f"{role}: signed in to {prov.name} as {address} (cached)", err=True)
                return src
            except ConsentRevoked:
                cache.forget(key, address)
                click.echo(f"{role}: the cached {prov.name} sign-in was refused", err=True)
            except TokenEndpointUnavailable as exc:
                _die(str(exc))
    hint = address if "@" in address else None

    def show_url(link: str) -> None:
        click.echo(
            f"Sign in to {prov.name} as {address} for the {role} account: open\n  {link}\n"
            "(waiting for the sign-in...)",
            err=True,
        )

    def show_code(code: DeviceCode) -> None:
        click.echo(
            f"Sign in to {prov.name} as {address} for the {role} account: on any device, "
            f"open {code.verification_uri} and enter the code {code.user_code}\n"
            "(waiting for the sign-in...)",
            err=True,
        )

    try:
        if how.device:
            grant, who = asyncio.run(device_flow(prov, show_code))
        else:
            grant, who = asyncio.run(
                loopback_flow(prov, show_url, login_hint=hint, open_browser=how.open_browser)
            )
    except (AuthenticationError, OAuthConfigError) as exc:
        _die(f"{role}: {exc}")
    if "@" in address and who.lower() != address.lower():
        _die(
            f"{role}: signed in to {prov.name} as {who}, but the {role} account is {address}; "
            "sign in with that account"
        )
    keep(grant)
    click.echo(f"{role}: signed in to {prov.name} as {who}", err=True)
    return GrantTokenSource(grant, config, on_rotate=keep)


def _run(mover: Mover, state: State | None, show_bar: bool) -> tuple[str, str | None]:
    """Run the transfer; (status, error) as transfer/report.py's ``outcome_of`` says.
    The state file is closed whatever happens (its first error is the one reported)."""
    status = "interrupted"
    error: str | None = None
    try:
        asyncio.run(_run_with_progress(mover, show_bar))
        status = "done"
    except BaseException as exc:
        outcome = outcome_of(exc)
        if outcome is None:  # a bug: the traceback shows
            raise
        status, error = outcome.status, outcome.error
    finally:
        if state is not None:
            try:
                state.close()
            except StateError as exc:
                error = error or str(exc)
    return status, error


def _finish(
    transfer: Transfer,
    mover: Mover,
    started: float,
    status: str,
    error: str | None,
    report_path: str | None,
    dry_run: bool,
) -> NoReturn:
    """Print the plan (dry run) or the summary, write the report, exit with its code."""
    plan = mover.plan
    warnings = transfer.bandwidth_warnings(plan.total_bytes) if plan is not None else []
    presets = transfer.presets()
    if dry_run and plan is not None and error is None:
        print_plan(plan)
        for w in warnings:
            click.echo(w)
        if report_path:
            _write_json(
                report_path,
                {"dry_run": True, "plan": plan.as_dict(), "presets": presets, "warnings": warnings},
            )
        sys.exit(int(Exit.OK))
    report = build_report(mover, transfer.source.label, transfer.dest.label, started, status, error)
    report["presets"] = presets
    report["warnings"] = warnings
    if report_path:
        _write_json(report_path, report)
    if error is not None:
        _die(error)
    print_summary(mover.results)
    for w in warnings:
        click.echo(w)
    sys.exit(int(exit_code(report)))


async def _run_with_progress(mover: Mover, show_bar: bool) -> None:
    task = asyncio.create_task(mover.run())
    if not show_bar:
        last = time.monotonic()
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if time.monotonic() - last >= 10 and mover.progress.phase == "copying":
                last = time.monotonic()
                p = mover.progress
                log.info(
                    "%d/%d messages, %.1f/%.1f MB, %.1f MB/s%s",
                    p.messages_done,
                    p.messages_total,
                    p.bytes_now() / 1e6,
                    p.bytes_total / 1e6,
                    p.rate() / 1e6,
                    throttle_note(p),
                )
        await task
        return
    # Imported here, only when a bar is shown: start-up (docs/performance.md item 12).
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as Bar

    p = mover.progress

    def describe() -> str:
        if p.phase != "copying":
            return p.phase + throttle_note(p)
        return (
            f"{p.messages_done}/{p.messages_total} msgs"
            + (f", {p.failed} failed" if p.failed else "")
            + throttle_note(p)
        )

    with Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    ) as bar:
        tid = bar.add_task("connecting", total=None)
        while not task.done():
            await asyncio.wait({task}, timeout=0.1)
            total = p.bytes_total if p.phase in ("copying", "done") else None
            bar.update(tid, description=describe(), total=total, completed=p.bytes_now())
        bar.update(tid, description=describe(), completed=p.bytes_now())
        await task


def throttle_note(p: Progress, now: float | None = None) -> str:
    """The progress line's ``, throttled until HH:MM`` while a worker waits because the
    server throttles us (HH:MM:SS when that is less than a minute away), else ``""``."""
    until = p.throttled_until
    now = time.time() if now is None else now
    if until is None or until <= now:
        return ""
    fmt = "%H:%M" if until - now >= 60 else "%H:%M:%S"
    return ", throttled until " + time.strftime(fmt, time.localtime(until))


def print_plan(plan: Plan) -> None:
    """Per source folder: destination (existing or [new]), counts after the filters, why
    the name is what it is, merges, and the flags the destination cannot keep."""
    only = f" (only messages {plan.filters.describe()})" if plan.filters.active else ""
    click.echo(
        f"Plan: {len(plan.folders)} folders, {plan.total_messages} messages, "
        f"{plan.total_bytes / 1e6:.1f} MB{only}"
    )
    for f in plan.folders:
        new = "" if f.dest_exists else " [new]"
        if f.create_use and not f.dest_exists:
            new = f" [new, {f.create_use}]"
        only = " (archived messages only)" if f.archived_only else ""
        click.echo(
            f"  {f.source.name!s}{only} -> {f.dest_name}{new}: {f.count} messages, "
            f"{f.size / 1e6:.2f} MB"
        )
        for why in f.reasons:
            click.echo(f"      why: {why}")
        if f.unstorable_flags:
            click.echo("      the destination cannot store: " + ", ".join(f.unstorable_flags))
        if f.untested_keywords:
            click.echo(
                "      not promised by the destination's PERMANENTFLAGS (tried on the first "
                "message, kept if it keeps them): " + ", ".join(f.untested_keywords)
            )
    for name, why in plan.skipped:
        click.echo(f"  skipped {name}: {why}")
    g = plan.gmail
    if g is not None and g.source:
        line = "Gmail source: folders are labels; a message is copied once per label"
        if g.archive is not None:
            line += f", and {g.archived} archived messages (no label) go to {g.archive[1]}"
        click.echo(line)
    if g is not None and g.dest:
        click.echo(
            "Gmail destination: a message in several folders is stored once, with one label "
            "per folder (UID COPY adds the label)"
        )
        if g.labels_instead is not None:
            click.echo(
                f"  {g.in_several_folders} messages are in more than one of those folders "
                f"(same size, date and Message-ID): {g.labels_instead} labels instead of copies"
            )
        if g.appended:
            click.echo(
                "  always appended (on Gmail, Trash and Spam hide a message from every "
                "other folder): " + ", ".join(g.appended)
            )


def print_summary(results: list[FolderResult]) -> None:
    total = sum(r.source_count for r in results)
    copied = sum(r.copied for r in results)
    present = sum(r.present for r in results)
    failed = sum(r.failed for r in results)
    labelled = sum(r.labelled for r in results)
    altered = sum(len(r.stored_altered) for r in results)
    for r in results:
        tagged = f"{r.labelled} labelled, " if r.labelled else ""
        changed = (
            f", {len(r.stored_altered)} stored altered by the server" if r.stored_altered else ""
        )
        click.echo(
            f"  {r.source} -> {r.dest}: {r.source_count} messages, {r.copied} copied, "
            f"{tagged}{r.present} already there, {r.failed} failed{changed}"
        )
        if r.error:
            click.echo(f"      FAILED FOLDER: {r.error}")
        for n in r.notes[:5]:
            click.echo(f"      note: {n}")
        for f in r.failures:
            click.echo(
                f"      FAILED UID {f.uid} ({f.size} bytes, {f.message_id or 'no Message-ID'}): {f.reason}"
            )
        # Altered copies are there: one line per kind of change, not one per message
        # (an LF-storing server alters every message); the report lists each.
        kinds = Counter(a.what for a in r.stored_altered)
        for what, n in sorted(kinds.items()):
            first = [a.uid for a in r.stored_altered if a.what == what][:5]
            uids = ", ".join(map(str, first)) + (", ..." if n > len(first) else "")
            click.echo(
                f"      ALTERED {n} message{'s' if n != 1 else ''} stored, altered by the "
                f"server ({what}): UID {uids}"
            )
    tagged = f"{labelled} labelled (stored once, from another folder), " if labelled else ""
    changed = (
        f"; {altered} of them stored, altered by the server (there, not byte-exact: see above)"
        if altered
        else ""
    )
    click.echo(
        f"Done: {total} messages, {copied} copied, {tagged}{present} already there, "
        f"{failed} failed{changed}"
    )


def _write_json(path: str, data: dict[str, Any]) -> None:
    try:
        write_report(path, data)
    except OSError as exc:
        _die(f"cannot write report {path!r}: {exc.strerror}")


@main.command()
@click.option("--state", "state_path", required=True, metavar="FILE", help="The job's state file.")
@click.option(
    "--dest",
    "dest_url",
    required=True,
    metavar="URL|ADDRESS",
    help="The destination the job copied into: imap[s]://USER@HOST:PORT or an address.",
)
@click.option("--dest-preset", type=click.Choice(providers.keys()), help="Its provider preset.")
@click.option("--dest-password-file", metavar="FILE", help="File holding the destination password.")
@click.option("--ca-file", metavar="FILE", help="Trust this CA bundle too (self-signed servers).")
@click.option("--no-starttls", is_flag=True, help="Plain IMAP without STARTTLS (test servers).")
@click.option(
    "--allow-insecure-auth", is_flag=True, help="Allow a password over an unencrypted connection."
)
@click.option("--apply", "do_apply", is_flag=True, help="Remove them (default: only show what).")
@click.option("--report", "report_path", metavar="FILE", help="Write what was done as JSON here.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds without an answer.")
def undo(
    state_path: str,
    dest_url: str,
    dest_preset: str | None,
    dest_password_file: str | None,
    ca_file: str | None,
    no_starttls: bool,
    allow_insecure_auth: bool,
    do_apply: bool,
    report_path: str | None,
    timeout: float,
) -> None:
    """Remove from DEST exactly the messages a job appended (its state file says which).

    A dry run unless --apply: shows, per folder, how many messages would be removed.
    Folders recreated since the job (UIDVALIDITY changed) are refused; messages that were
    already there, or added since, are never touched; the source is never contacted."""
    from .transfer import undo as engine

    try:
        url, _prov = resolve_account(dest_url, what="--dest", preset=dest_preset)
    except AccountURLError as exc:
        _die(str(exc))
    ctx = None
    if not no_starttls or url.scheme == "imaps" or ca_file:
        try:
            ctx = ssl_context(ca_file)
        except (OSError, ValueError) as exc:
            _die(f"cannot load --ca-file {ca_file!r}: {exc}")
    password = read_password("dest", url, dest_password_file)
    ep = url.endpoint(
        password, ssl_context=ctx, allow_insecure_auth=allow_insecure_auth, starttls=not no_starttls
    )
    path = Path(state_path)
    locks = Locks()
    with locks:
        if do_apply:  # no move of this job at the same time
            try:
                locks.take([job_lock_path(path)], state=path.resolve(), mailbox=ep.label)
            except LockHeld as held:
                _die(f"this job is running ({held.holder.describe()}): wait for it to end")
            except LockError as exc:
                _die(str(exc))
        run = engine.apply if do_apply else engine.preview
        try:
            plan = asyncio.run(run(path, ep, timeout=timeout))
        except engine.UndoError as exc:
            _die(str(exc))
        except (ImapError, OSError) as exc:
            _die(f"the destination: {exc}")
        if do_apply:
            engine.forget_removed(path, plan)
    print_undo(plan)
    if report_path:
        _write_json(report_path, plan.as_dict())
    sys.exit(int(Exit.FAILED if plan.refused else Exit.OK))


def print_undo(plan: Any) -> None:
    """Per folder: what the job appended, what is removed (or would be), or why not."""
    verb = "removed" if plan.applied else "would remove"
    for f in plan.folders:
        if f.refused is not None:
            click.echo(f"{f.dest_name}: refused, nothing removed: {f.refused}")
        elif plan.applied:
            click.echo(f"{f.dest_name}: removed {f.removed:,} of the job's {len(f.uids):,}")
        else:
            click.echo(
                f"{f.dest_name}: would remove {f.present:,} "
                f"({len(f.uids):,} appended by the job, {f.present:,} still there)"
            )
    total = plan.removed if plan.applied else plan.to_remove
    click.echo(f"{verb} {total:,} message(s) in {len(plan.folders):,} folder(s)")
    if plan.left_altered or plan.left_without_uid:
        click.echo(
            f"left in place: {plan.left_altered:,} stored altered by the server, "
            f"{plan.left_without_uid:,} appended without a UID from the server"
        )
    if not plan.applied and total:
        click.echo("nothing was changed: run again with --apply to remove them")


@main.command()
@click.option(
    "--messages",
    type=click.IntRange(1, 1_000_000),
    default=3000,
    show_default=True,
    help="Size of the sample mailbox.",
)
@click.option("--keep", is_flag=True, help="Keep the servers running until Ctrl-C, to look around.")
def demo(messages: int, keep: bool) -> None:
    """Start a throwaway local Dovecot, fill a sample mailbox, and move it with `yippiemove move`."""

    # Only the demo needs these (tempfile pulls in shutil, bz2 and lzma: start-up of
    # every other command, docs/performance.md item 12).
    import secrets
    import subprocess
    import tempfile

    # The demo's servers and sample mail (test doubles) only load for the demo.
    from .testing.dovecot import DovecotServer, MaildirMessage, dovecot_available
    from .testing.sample import sample_mailbox

    if not dovecot_available():
        _die("the demo needs Dovecot: apt-get install dovecot-imapd")
    with tempfile.TemporaryDirectory(prefix="yippiemove-demo-") as tmp:
        work = Path(tmp)
        src_pw, dst_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        click.echo("Starting a throwaway Dovecot on 127.0.0.1 ...")
        with DovecotServer(work / "dovecot", users={"old": src_pw, "new": dst_pw}) as server:
            by_folder: dict[str, list[Any]] = defaultdict(list)
            total = 0
            for m in sample_mailbox(messages):
                by_folder[m.folder].append(MaildirMessage(m.raw, m.flags, m.internaldate))
                total += len(m.raw)
            for folder, items in by_folder.items():
                server.deliver_many("old", folder, items)
            click.echo(
                f"Sample mailbox 'old': {messages} messages, {total / 1e6:.1f} MB in "
                f"{len(by_folder)} folders; moving it to 'new' on the same server."
            )
            (work / "old.pw").write_text(src_pw)
            (work / "new.pw").write_text(dst_pw)
            os.chmod(work / "old.pw", 0o600)
            os.chmod(work / "new.pw", 0o600)
            args = [
                "move",
                "--source",
                f"imap://old@127.0.0.1:{server.port}",
                "--dest",
                f"imap://new@127.0.0.1:{server.port}",
                "--source-password-file",
                str(work / "old.pw"),
                "--dest-password-file",
                str(work / "new.pw"),
                "--ca-file",
                str(server.ca_file),
                "--state",
                str(work / "state.sqlite"),
                "--report",
                str(work / "report.json"),
            ]
            click.echo("$ yippiemove " + " ".join(args))
            cmd = [sys.executable, "-m", "yippiemove.cli", *args]
            rc = subprocess.call(cmd)
            click.echo("\nRunning the same command again (nothing to copy, nothing doubled):")
            rc2 = subprocess.call([*cmd, "--no-progress"])
            report = json.loads((work / "report.json").read_text())
            t = report["totals"]
            click.echo(
                f"Report: {t['source_count']} messages, {t['already_present']} verified present, "
                f"{t['failed']} failed (first run exit {rc}, second {rc2})."
            )
            if keep:
                click.echo(
                    f"Dovecot stays up on 127.0.0.1:{server.port} (users old/new, passwords in "
                    f"{work}). Ctrl-C to stop."
                )
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
    sys.exit(rc or rc2)


# ---------------------------------------------------------------------- the service


def _egress_options(f: Any) -> Any:
    """``--egress-allow``/``--egress-deny`` of ``serve`` and ``worker`` (policy/egress.py)."""
    f = click.option(
        "--egress-deny",
        "egress_deny",
        multiple=True,
        metavar="CIDR",
        help="Never connect to this network for customers (repeatable; wins over "
        "--egress-allow). Env YIPPIEMOVE_EGRESS_DENY.",
    )(f)
    return click.option(
        "--egress-allow",
        "egress_allow",
        multiple=True,
        metavar="CIDR",
        help="Also connect to this network for customers (repeatable; e.g. 127.0.0.0/8 for "
        "servers on this machine). Default: public addresses only. Env YIPPIEMOVE_EGRESS_ALLOW.",
    )(f)


def _database_options(f: Any) -> Any:
    """``--database-url``/``--queue-url`` of every service command (docs/service.md
    "Running a fleet"): the control database and the job queue the hosts share."""
    f = click.option(
        "--queue-url",
        "queue_url",
        metavar="URL",
        help="The job queue: 'sqlite' (embedded, the default) or redis://HOST:PORT/DB "
        "shared by a fleet. Env YIPPIEMOVE_QUEUE_URL.",
    )(f)
    return click.option(
        "--database-url",
        "database_url",
        metavar="URL",
        help="The control database: postgresql://USER@HOST:PORT/DB (as libpq writes it; "
        "password from PGPASSWORD or ~/.pgpass) shared by a fleet, or sqlite:///FILE. "
        "Default: control.sqlite in the data directory. Env YIPPIEMOVE_DATABASE_URL.",
    )(f)


def _host_name_option(f: Any) -> Any:
    return click.option(
        "--host-name",
        metavar="NAME",
        default=None,
        help="This worker host's name in the fleet, unique among the hosts sharing the "
        "control database (default: $YIPPIEMOVE_HOST_NAME, else the machine's host name).",
    )(f)


def _start_or_die(service: Any, workers: int | None, role: str) -> None:
    """``service.start``; another live process with this host name stops us, clearly."""
    from .service.core import TooManyWorkers
    from .service.fleet import HostNameTaken

    try:
        service.start(workers, role=role)
    except (HostNameTaken, TooManyWorkers) as exc:
        service.close()
        _die(str(exc))


def _data_dir_option(f: Any) -> Any:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="YIPPIEMOVE_DATA_DIR",
        help="The service's data directory (control database, queue, jobs, keys). "
        "Default: $YIPPIEMOVE_DATA_DIR, else /var/lib/yippiemove as root, else the user "
        "data directory.",
    )(f)


# The service commands import the service in their functions: it pulls in SQLAlchemy,
# Huey and the job supervisor, which `yippiemove move` must not pay for at start-up
# (docs/performance.md item 12).


def _service(data_dir: Path | None, **overrides: Any) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from .service.config import Settings
    from .service.core import Service
    from .service.db import connect_error, shown_url
    from .service.schema import SchemaError

    try:
        settings = Settings.load(data_dir, **overrides)
    except (OSError, ValueError) as exc:
        _die(f"cannot open the service's data: {exc}")
    try:
        return Service(settings)
    except SchemaError as exc:
        _die(str(exc))
    except SQLAlchemyError as exc:
        _die(
            f"cannot use the control database {shown_url(settings.database_url)}: "
            f"{connect_error(exc, settings.database_url)}"
        )
    except (OSError, ValueError) as exc:
        _die(f"cannot open the service's data: {exc}")


def _load_app_factory(spec: str) -> Any:

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        _die(
            f"the web front door ({module_name}) cannot be loaded: {exc}. "
            "Is this yippiemove complete? (`yippiemove worker` runs the jobs without it.)"
        )
    factory = getattr(module, attr or "create_app", None)
    if not callable(factory):
        _die(f"{module_name} has no function {attr or 'create_app'!r}")
    return factory


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@_data_dir_option
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=None,
    help="Transfers run at the same time by this machine (default 2; 0: web and API "
    "only, the jobs run on `yippiemove worker` hosts; at most what the open-files limit "
    "holds, see docs/service.md).",
)
@_host_name_option
@click.option("--ca-file", metavar="FILE", help="Trust this CA bundle for IMAP servers.")
@click.option(
    "--app",
    "app_factory",
    default="yippiemove.web.app:create_app",
    show_default=True,
    metavar="MODULE:FUNCTION",
    help="The web application factory, called with the Service.",
)
@_egress_options
@_database_options
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    workers: int | None,
    host_name: str | None,
    ca_file: str | None,
    app_factory: str,
    egress_allow: tuple[str, ...],
    egress_deny: tuple[str, ...],
    database_url: str | None,
    queue_url: str | None,
) -> None:
    """Run the service: web app, control database, job queue and local job workers."""

    import uvicorn  # only `serve` needs the web server

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("huey").setLevel(logging.WARNING)
    factory = _load_app_factory(app_factory)
    overrides: dict[str, Any] = {
        "workers": workers,
        "host_name": host_name,
        "ca_file": ca_file,
        "egress_allow": ",".join(egress_allow) if egress_allow else None,
        "egress_deny": ",".join(egress_deny) if egress_deny else None,
        "database_url": database_url,
        "queue_url": queue_url,
    }
    if not os.environ.get("YIPPIEMOVE_BASE_URL"):
        overrides["base_url"] = f"http://{host}:{port}"
    service = _service(data_dir, **overrides)
    app = factory(service)
    # uvicorn re-raises SIGTERM after its own shutdown: make it an exception we catch,
    # so that running jobs are stopped cleanly and put back in the queue.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    _start_or_die(service, workers, "serve")
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"yippiemove is running at http://{shown}:{port}/  "
        f"(data: {service.settings.data_dir}; {service.egress.describe()}; "
        f"{_mail_line(service.settings)}; Ctrl-C to stop)",
        err=True,
    )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="info",
            timeout_graceful_shutdown=5,
            proxy_headers=False,  # the app believes a proxy only with trust_proxy
        )
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
        service.close()


def _mail_line(settings: Any) -> str:
    """Whether e-mail goes out, for the start-up line (never the SMTP password)."""
    if not getattr(settings, "smtp_host", None):
        return "e-mail: off (no SMTP server set, no mail is sent)"
    return f"e-mail: on via {settings.smtp_host}:{settings.smtp_port}"


@main.group(invoke_without_command=True)
@_data_dir_option
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Concurrent jobs (default 2; at most what the open-files limit holds).",
)
@_host_name_option
@click.option("--ca-file", metavar="FILE", help="Trust this CA bundle for IMAP servers.")
@_egress_options
@_database_options
@click.pass_context
def worker(
    ctx: click.Context,
    data_dir: Path | None,
    workers: int | None,
    host_name: str | None,
    ca_file: str | None,
    egress_allow: tuple[str, ...],
    egress_deny: tuple[str, ...],
    database_url: str | None,
    queue_url: str | None,
) -> None:
    """Run job workers only (no web app), e.g. on more machines sharing the queue.

    With a subcommand: `worker drain HOST` / `worker undrain HOST` (operators)."""
    if ctx.invoked_subcommand is not None:
        # `worker --data-dir D drain HOST` means the same as `worker drain HOST --data-dir D`.
        ctx.obj = {"data_dir": data_dir, "database_url": database_url}
        return
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("huey").setLevel(logging.WARNING)
    service = _service(
        data_dir,
        workers=workers,
        host_name=host_name,
        ca_file=ca_file,
        egress_allow=",".join(egress_allow) if egress_allow else None,
        egress_deny=",".join(egress_deny) if egress_deny else None,
        database_url=database_url,
        queue_url=queue_url,
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    _start_or_die(service, workers, "worker")
    click.echo(
        f"yippiemove worker host {service.settings.host_name} is running "
        f"({service.settings.workers if workers is None else workers} worker(s); "
        f"data: {service.settings.data_dir}; Ctrl-C to stop)",
        err=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
        service.close()


def _operator_service(ctx: click.Context, data_dir: Path | None, database_url: str | None) -> Any:
    """The service for `worker drain/undrain`: options given before the subcommand
    (`worker --database-url U drain HOST`) count as well as after it."""
    parent = ctx.obj or {}
    return _service(
        data_dir or parent.get("data_dir"),
        database_url=database_url or parent.get("database_url"),
    )


@worker.command("drain")
@click.argument("host")
@_data_dir_option
@click.option("--wait", is_flag=True, help="Wait until the host runs no job.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="With --wait: give up after this long (exit status 1).",
)
@_database_options
@click.pass_context
def worker_drain(
    ctx: click.Context,
    host: str,
    data_dir: Path | None,
    wait: bool,
    timeout: float | None,
    database_url: str | None,
    queue_url: str | None,
) -> None:
    """Drain the worker host HOST: it takes no new jobs, and its running jobs are
    checkpointed, stopped and resumed by other hosts (it notices within a heartbeat)."""
    from .service.core import ServiceError

    service = _operator_service(ctx, data_dir, database_url)
    try:
        service.drain_host(host, True)
        click.echo(f"{host}: draining", err=True)
        if wait:
            try:
                view = service.wait_drained(host, timeout)
            except TimeoutError as exc:
                click.echo(f"yippiemove: {exc}", err=True)
                sys.exit(1)
            click.echo(f"{host}: {view['state']} (runs no job)", err=True)
    except ServiceError as exc:
        _die(str(exc))
    finally:
        service.close()


@worker.command("undrain")
@click.argument("host")
@_data_dir_option
@_database_options
@click.pass_context
def worker_undrain(
    ctx: click.Context,
    host: str,
    data_dir: Path | None,
    database_url: str | None,
    queue_url: str | None,
) -> None:
    """Let the worker host HOST take jobs again (within a heartbeat)."""
    from .service.core import ServiceError

    service = _operator_service(ctx, data_dir, database_url)
    try:
        service.drain_host(host, False)
    except ServiceError as exc:
        _die(str(exc))
    finally:
        service.close()
    click.echo(f"{host}: taking jobs again", err=True)


@main.command()
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON list, for scripts.")
@_database_options
def hosts(
    data_dir: Path | None, as_json: bool, database_url: str | None, queue_url: str | None
) -> None:
    """List the worker hosts: role, address, capacity, running jobs, version, last
    heartbeat and state (up / draining / drained / gone)."""
    service = _service(data_dir, database_url=database_url)
    try:
        rows = service.hosts()
    finally:
        service.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no worker hosts registered (serve --workers 0 registers none)")
        return
    head = ("HOST", "STATE", "ROLE", "ADDRESS", "CAP", "RUNNING", "VERSION", "HEARTBEAT")
    table = [head]
    for h in rows:
        age = h["heartbeat_age"]
        table.append(
            (
                h["name"],
                h["state"],
                h["role"],
                h["address"],
                str(h["capacity"]),
                str(len(h["running"])),
                h["version"],
                "stopped" if age is None else f"{age:.0f} s ago",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for r in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for h in rows:
        if h["running"]:
            click.echo(f"{h['name']}: {' '.join(h['running'])}")


@main.group()
def user() -> None:
    """Manage customers (operator commands)."""


@user.command("create")
@click.argument("email")
@click.option("--password-file", metavar="FILE", help="Read the password from this file.")
@_data_dir_option
@_database_options
def user_create(
    email: str,
    password_file: str | None,
    data_dir: Path | None,
    database_url: str | None,
    queue_url: str | None,
) -> None:
    """Create the customer EMAIL (password from --password-file or a prompt)."""
    from .service.core import ServiceError

    if password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            _die(f"cannot read --password-file {password_file!r}: {exc.strerror}")
    elif sys.stdin.isatty():
        from .service.passwords import RULE

        password = click.prompt(
            f"Password for {email} ({RULE})", hide_input=True, confirmation_prompt=True, err=True
        )
    else:
        _die("no password: use --password-file FILE, or run on a terminal to be asked")
    service = _service(data_dir, database_url=database_url, queue_url=queue_url)
    try:
        uid = service.create_user(email, password)
    except ServiceError as exc:
        _die(str(exc))
    finally:
        service.close()
    click.echo(f"created customer {email.strip().lower()} (id {uid})")


@user.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice(["customer", "operator"]))
@_data_dir_option
@_database_options
def user_set_role(
    email: str,
    role: str,
    data_dir: Path | None,
    database_url: str | None,
    queue_url: str | None,
) -> None:
    """Make the customer EMAIL an operator (the console at /operator and
    /api/v1/operator), or a customer again.  The only way to make an operator; it is
    written in the audit log."""
    from .service.core import ServiceError

    service = _service(data_dir, database_url=database_url, queue_url=queue_url)
    try:
        uid = service.set_role(email, role)
    except ServiceError as exc:
        _die(str(exc))
    finally:
        service.close()
    click.echo(f"{email.strip().lower()} (id {uid}) is now: {role}")


@main.group()
def billing() -> None:
    """Credits and companies (operator commands; issue 20, docs/billing.md)."""


def _billing_call(
    data_dir: Path | None, database_url: str | None, queue_url: str | None, fn: Any
) -> Any:
    from .service.core import ServiceError

    service = _service(data_dir, database_url=database_url, queue_url=queue_url)
    try:
        return fn(service)
    except ServiceError as exc:
        _die(str(exc))
    finally:
        service.close()


@billing.command("grant")
@click.argument("email")
@click.argument("amount", type=int)
@click.option("--note", default="", help="Kept in the customer's ledger.")
@click.option("--key", default=None, help="Grant once per key (default: a new one).")
@_data_dir_option
@_database_options
def billing_grant(
    email: str,
    amount: int,
    note: str,
    key: str | None,
    data_dir: Path | None,
    database_url: str | None,
    queue_url: str | None,
) -> None:
    """Give the customer EMAIL (or their company) AMOUNT credits, in minor units (cents)."""
    import uuid

    def grant(service: Any) -> tuple[bool, int]:
        uid = service.user_id_for_email(email)
        done = service.billing.grant(uid, amount, "cli", note, key or uuid.uuid4().hex)
        return done, service.billing.summary(uid)["balance"]

    done, balance = _billing_call(data_dir, database_url, queue_url, grant)
    click.echo(f"{'granted' if done else 'already granted (same --key)'}; balance {balance}")


@billing.command("balance")
@click.argument("email")
@_data_dir_option
@_database_options
def billing_balance(
    email: str, data_dir: Path | None, database_url: str | None, queue_url: str | None
) -> None:
    """The balance of EMAIL's account (a company's when they belong to one)."""

    def show(service: Any) -> dict[str, Any]:
        return dict(service.billing.summary(service.user_id_for_email(email), 1))

    summary = _billing_call(data_dir, database_url, queue_url, show)
    who = f" (company {summary['company']})" if summary["company"] else ""
    click.echo(f"{summary['balance']} {summary['currency']}{who}")


@billing.command("company-create")
@click.argument("name")
@_data_dir_option
@_database_options
def billing_company_create(
    name: str, data_dir: Path | None, database_url: str | None, queue_url: str | None
) -> None:
    """A company or reseller account NAME, whose members share one balance."""
    account = _billing_call(
        data_dir, database_url, queue_url, lambda svc: svc.billing.create_company(name)
    )
    click.echo(f"company {name!r}: account {account}")


@billing.command("company-add")
@click.argument("account", type=int)
@click.argument("email")
@_data_dir_option
@_database_options
def billing_company_add(
    account: int,
    email: str,
    data_dir: Path | None,
    database_url: str | None,
    queue_url: str | None,
) -> None:
    """Make the customer EMAIL spend (and see) the company ACCOUNT's credits."""
    _billing_call(
        data_dir,
        database_url,
        queue_url,
        lambda svc: svc.billing.add_member(account, svc.user_id_for_email(email)),
    )
    click.echo(f"{email.strip().lower()} now spends the credits of account {account}")


@main.group()
def token() -> None:
    """Manage API tokens (operator commands)."""


@token.command("create")
@click.argument("email")
@click.option("--name", default="", help="A name to recognise the token by.")
@_data_dir_option
@_database_options
def token_create(
    email: str, name: str, data_dir: Path | None, database_url: str | None, queue_url: str | None
) -> None:
    """Create an API token for the customer EMAIL and print it (shown only this once)."""
    from .service.core import ServiceError

    service = _service(data_dir, database_url=database_url, queue_url=queue_url)
    try:
        tok = service.create_token(service.user_id_for_email(email), name)
    except ServiceError as exc:
        _die(str(exc))
    finally:
        service.close()
    click.echo("API token (shown only once; store it now):", err=True)
    click.echo(tok)


@main.group()
def db() -> None:
    """The control database's schema (Alembic migrations; docs/service.md)."""


def _db_url(data_dir: Path | None, database_url: str | None) -> str:
    """--database-url, else YIPPIEMOVE_DATABASE_URL, else the data directory's SQLite
    (only then is a data directory needed)."""
    if database_url:
        return database_url
    if os.environ.get("YIPPIEMOVE_DATABASE_URL"):
        return os.environ["YIPPIEMOVE_DATABASE_URL"]
    from .service.config import Settings

    try:
        return Settings.load(data_dir).database_url
    except (OSError, ValueError) as exc:
        _die(f"cannot open the service's data: {exc}")


@db.command("upgrade")
@_data_dir_option
@_database_options
def db_upgrade(data_dir: Path | None, database_url: str | None, queue_url: str | None) -> None:
    """Migrate the control database to this version's schema (run once, from one host,
    before starting hosts of a new version on a shared PostgreSQL)."""
    from sqlalchemy.exc import SQLAlchemyError

    from .service.db import Database, connect_error, shown_url
    from .service.schema import SchemaError, upgrade

    url = _db_url(data_dir, database_url)
    shown = shown_url(url)
    try:
        database = Database(url, prepare=False)
        engine = database.migration_engine()
        try:
            done = upgrade(engine)
        finally:
            engine.dispose()
            database.dispose()
    except SchemaError as exc:
        _die(str(exc))
    except SQLAlchemyError as exc:
        _die(f"cannot upgrade the control database {shown}: {connect_error(exc, url)}")
    except ValueError as exc:  # an unparsable URL; its words may hold a secret
        _die(f"not a database URL: {shown} ({type(exc).__name__})")
    if done.stamped:
        click.echo(f"{shown}: made before the migrations; recognised as revision {done.stamped}")
    if done.changed:
        click.echo(f"{shown}: upgraded from {done.before or 'an empty database'} to {done.after}")
    else:
        click.echo(f"{shown}: already at {done.after} (the newest); nothing to do")


@db.command("current")
@_data_dir_option
@_database_options
def db_current(data_dir: Path | None, database_url: str | None, queue_url: str | None) -> None:
    """Print the control database's schema revision and this version's newest."""
    from sqlalchemy.exc import SQLAlchemyError

    from .service.db import Database, connect_error, shown_url
    from .service.schema import current_revision, head_revision

    url = _db_url(data_dir, database_url)
    shown = shown_url(url)
    try:
        database = Database(url, prepare=False)
        try:
            with database.engine.connect() as conn:
                rev = current_revision(conn)
        finally:
            database.dispose()
    except SQLAlchemyError as exc:
        _die(f"cannot read the control database {shown}: {connect_error(exc, url)}")
    except ValueError as exc:
        _die(f"not a database URL: {shown} ({type(exc).__name__})")
    head = head_revision()
    state = "up to date" if rev == head else f"run: yippiemove db upgrade --database-url {shown}"
    click.echo(
        f"{shown}: revision {rev or 'none (empty or made before migrations)'}; "
        f"this yippiemove's newest: {head} ({state})"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
