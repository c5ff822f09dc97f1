"""Settings of the service: where its data lives, how jobs are run, whom to mail.

Everything has an embedded default so that ``yippiemove serve`` runs on one machine with
no configuration.  Each field can be set by an environment variable named
``YIPPIEMOVE_<FIELD>`` (upper case, e.g. ``YIPPIEMOVE_SMTP_HOST``), and by keyword
overrides of :meth:`Settings.load` (the command line), which win over the environment.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..policy.egress import EgressPolicy
from .pricing import PriceError, Prices, parse_bands, parse_bundles, parse_size

__all__ = ["Settings", "read_or_create_secret"]

GiB = 1 << 30


def default_data_dir(euid: int | None = None) -> Path:
    """``/var/lib/yippiemove`` for a service run as root (a system service's place: its
    parents are searchable, so job processes can drop to their own user ids and still
    reach their job directories: jobs/privilege.py), else the user's data directory
    (``~/.local/share/yippiemove``)."""
    if (os.geteuid() if euid is None else euid) == 0:
        return Path("/var/lib/yippiemove")
    import platformdirs

    return Path(platformdirs.user_data_dir("yippiemove"))


@dataclass
class Settings:
    """The service's configuration (see docs/service-contract.md and docs/service.md)."""

    data_dir: Path
    database_url: str
    secret_key_file: Path
    credentials_key_file: Path
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "yippiemove@localhost"
    allow_insecure_hosts: bool = False
    ca_file: str | None = None
    workers: int = 2
    credential_retention_days: float = 7
    base_url: str = "http://127.0.0.1:8080"
    # --- additions (not in the first contract) -------------------------------------
    #: SMTP: STARTTLS and login (password read from this file at send time).
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password_file: Path | None = None
    #: E-mail policy (issue 17): the start mail goes out only once a run has lasted this
    #: many seconds (none for a run that ended sooner).
    start_mail_after: float = 60.0
    #: Queue backend: "sqlite" (embedded Huey, file under data_dir) or a Huey
    #: "redis://..." URL for workers on many machines (see docs/service.md).
    queue_url: str = "sqlite"
    #: How job processes start: "fork" (from a preloaded zygote: cheaper to start, code
    #: pages shared; see docs/performance.md, "Job process start-up") or "exec" (a new
    #: interpreter per job).  See jobs/launch.py.
    job_spawn: str = "fork"
    #: Limits of each job process (the jail).
    job_max_open_files: int = 1024
    job_max_memory: int = GiB
    #: Admission (jobs/admission.py, issue 18): past ``job_admission_floor`` running
    #: jobs (0: four per processor), a job starts only while the machine's processors
    #: are not saturated (the share of time some task waited for one, Linux PSI, below
    #: ``job_admission_pressure``; 0: start every job at once); the others wait, queued.
    job_admission_pressure: float = 0.8
    job_admission_floor: int = 0
    #: Job processes run at this nice value (0-19): the web front door, the API and the
    #: supervision stay responsive however many jobs keep the processors busy.
    job_nice: int = 10
    #: Parallel folder workers inside one job (one connection per side each); None:
    #: automatic, as `yippiemove move` (2, or 6 when the servers are 10 ms or more away).
    job_connections: int | None = None
    #: How often a job that died of a transient cause is started again, per run.
    job_max_restarts: int = 3
    #: Job processes started per run at most, restarts and resumptions after a restart
    #: of the service included (a job that keeps dying is given up).
    job_max_attempts: int = 12
    #: A running job whose supervisor has not renewed its lease for this long is
    #: taken over (its supervisor is presumed dead).
    lease_seconds: float = 30.0
    #: A job whose mail servers send and take not one byte this long is stalled (and a
    #: job process that prints nothing this long is hung): stopped and restarted.
    job_stall_seconds: float = 300.0
    #: Fair share (docs/service.md "Fair share"): a job whose servers move fewer than
    #: ``job_min_rate`` bytes/s over ``job_rate_window`` seconds is ended as too slow
    #: (0: no minimum); a run longer than ``job_max_seconds`` (0: none) is checkpointed
    #: and queued again behind the others when it moves data, ended when not.
    job_min_rate: float = 512.0
    job_rate_window: float = 600.0
    job_max_seconds: float = 6 * 3600.0
    #: Per customer: jobs running at once (the others wait, queued; 0: no limit), jobs
    #: queued or running (new orders are refused beyond it; 0: no limit), and lines
    #: of a batch file.
    customer_max_running: int = 2
    customer_max_pending: int = 200
    batch_max_transfers: int = 1000
    #: A batch's pre-flight: lines whose two accounts are checked at once (issue 17;
    #: each check is a child process, and all count against ``checks_total``).
    batch_check_parallel: int = 8
    #: Seconds between progress writes to the control database, per job.
    progress_interval: float = 1.0
    #: SIGTERM first, SIGKILL after this many seconds (cancel, shutdown).
    job_kill_grace: float = 5.0
    #: Seconds between maintenance rounds (expired credentials, stale leases).
    maintenance_interval: float = 60.0
    #: Staged moves (issue 17, service/staged.py): the shortest interval between
    #: top-up passes a customer may ask for (seconds), how often each service process
    #: looks for due passes (seconds), and how far ahead a start or final pass may be.
    staged_min_interval: float = 3600.0
    staged_poll_interval: float = 30.0
    staged_max_days: float = 90.0
    #: Seconds between restarts of a job: base of an exponential backoff.
    restart_delay: float = 1.0
    #: A job whose destination mailbox another job writes into stays queued and is
    #: tried again after this many seconds (docs/design.md "One writer").
    mailbox_wait_seconds: float = 5.0
    #: The egress policy (policy/egress.py, docs/security.md): networks the service may
    #: connect to on a customer's behalf although they are not public (comma-separated
    #: CIDRs, e.g. "127.0.0.0/8" for servers on this machine), and networks it never
    #: connects to.  ``serve --egress-allow/--egress-deny CIDR`` (repeatable).
    egress_allow: str = ""
    egress_deny: str = ""
    #: Account checks (log in, list folders, plan) run in a short-lived child process
    #: with this much address space and wall-clock time (service/checks.py).
    check_max_memory: int = 256 * 1024 * 1024
    check_timeout: float = 60.0
    #: Account checks in flight per customer and in all; more is 429 (0: no limit).
    checks_per_user: int = 2
    checks_total: int = 8
    #: Behind a reverse proxy: believe its X-Forwarded-Proto (https -> Secure cookies)
    #: and X-Forwarded-For (the client address that log-in throttling counts).  Off:
    #: those headers are ignored (anyone could send them).
    trust_proxy: bool = False
    #: Least privilege (issue 14): when the service runs as root, each running job
    #: process has a user id of its own, ``job_uid_base`` + a slot (no account needs to
    #: exist; jobs/privilege.py), with access to its own job directory only.  0: job
    #: processes run as the service's user (not advised as root).
    job_uid_base: int = 1_900_000_000
    #: The fleet (docs/service.md "Running a fleet"): this worker host's name (unique in
    #: the fleet; default: the machine's host name) and the address shown for it (default:
    #: found from the network), and how often a running job's state database is
    #: checkpointed to the control database (also at every folder's end and when the job
    #: stops), so that another host resumes it from there.
    host_name: str = ""
    host_address: str = ""
    checkpoint_interval: float = 60.0
    #: Seconds between a worker host's heartbeats in the control database (its
    #: ``worker_hosts`` row; the host also notices a drain at each); a host silent for
    #: three heartbeats is shown "gone" (service/fleet.py).
    host_heartbeat_interval: float = 5.0
    #: Seconds between a worker host's recovery sweeps: running jobs whose lease
    #: expired are taken over, ``queued`` jobs that no queue message will deliver
    #: (lost with a Redis restart, or a failed enqueue) are enqueued again
    #: (service/fleet.py).  0: only the maintenance round (``maintenance_interval``).
    recovery_interval: float = 5.0
    #: A job's state file larger than this is not checkpointed (logged; jobs/checkpoint.py).
    checkpoint_max_bytes: int = 256 * 1024 * 1024
    #: Fencing (jobs/fence.py): a job process stops writing to the destination this many
    #: seconds before its lease expires in the control database; 0: a quarter of
    #: ``lease_seconds``, at most 5 s.
    lease_margin: float = 0.0
    #: OAuth2 (issue 16): the providers customers may sign in with (``OAuthConfig``
    #: from ``YIPPIEMOVE_GOOGLE_CLIENT_ID``, ``YIPPIEMOVE_MICROSOFT_CLIENT_ID``, their
    #: ``..._CLIENT_SECRET_FILE``, ``YIPPIEMOVE_OAUTH_PROVIDERS_FILE``; docs/service.md
    #: "Sign in with Google / Microsoft").  None: read from the environment at load.
    oauth: Any = field(default=None, repr=False)
    #: The IMAP server of each sign-in provider, where the mail of a signed-in account
    #: is: ``KEY=HOST:PORT[:SECURITY]``, comma-separated; unset keys keep the built-in
    #: (google=imap.gmail.com:993:tls, microsoft=outlook.office365.com:993:tls).  Tests
    #: point them at a local Dovecot.
    oauth_imap: str = ""
    #: Seconds a started sign-in waits for the provider's answer, and a finished one
    #: that no order used keeps its grant (then both are deleted).
    oauth_sign_in_seconds: float = 900.0
    oauth_unused_seconds: float = 3600.0
    #: Account lifecycle (issue 17, service/account.py): how long a mailed password
    #: reset link works, and a link confirming a new e-mail address.
    password_reset_seconds: float = 3600.0
    email_change_seconds: float = 24 * 3600.0
    #: Deleting an account waits this long (at most) for its running jobs to stop.
    account_delete_wait: float = 60.0
    # --- billing (issue 20, docs/billing.md; service/pricing.py) --------------------
    #: Off by default: a self-hosted single machine does not bill itself.
    billing_enabled: bool = False
    billing_currency: str = "usd"
    #: The price of one mailbox by size, in minor units: "1GB:900,10GB:1500,*:2500".
    price_bands: str = "*:1000"
    #: Credit bundles, CREDIT:PRICE in minor units: "15000:12000,60000:45000".
    price_bundles: str = ""
    #: Mailboxes up to this size are free ("0": none; "50MB").
    free_mailbox_size: str = "0"
    #: A re-run or top-up of a transfer paid within this many days is free.
    free_rerun_days: int = 30
    #: How long a quote's price holds (seconds).
    quote_seconds: float = 3600.0
    #: An order not paid for within this many days is cancelled, its passwords deleted.
    unpaid_order_days: float = 7.0
    #: Stripe (billing on): the keys of the operator's Stripe account and its webhook's
    #: signing secret.  Never logged; not in repr.
    stripe_secret_key: str = field(default="", repr=False)
    stripe_publishable_key: str = ""
    stripe_webhook_secret: str = field(default="", repr=False)
    #: Another Stripe API address (the tests' localstripe); empty: Stripe's.
    stripe_api_base: str = ""
    #: Where the payment page loads Stripe.js from.
    stripe_js_url: str = "https://js.stripe.com/v3/"
    #: The seller named on receipts.
    billing_seller: str = "yippiemove"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def job_dir(self, job_id: str) -> Path:
        """A job's private working directory (state.sqlite, report.json, job.log)."""
        return self.jobs_dir / job_id

    def session_key(self) -> bytes:
        """The web session signing key (created 0600 on first use)."""
        return read_or_create_secret(self.secret_key_file, lambda: secrets.token_bytes(32))

    def oauth_config(self) -> Any:
        """The OAuth2 providers (``yippiemove.oauth.OAuthConfig``), none configured: an
        empty one."""
        if self.oauth is None:
            from ..oauth import OAuthConfig

            self.oauth = OAuthConfig.from_env()
        return self.oauth

    def oauth_config_dict(self) -> dict[str, Any] | None:
        """The OAuth2 settings as the job process gets them on stdin (never in its
        environment or argv: they hold client secrets); None without providers."""
        data = self.oauth_config().to_dict()
        return data if data and data.get("providers", data) else None

    def prices(self) -> Prices:
        """The operator's prices (service/pricing.py); a bad one names its variable."""
        def parsed(name: str, parse: Any) -> Any:
            raw = getattr(self, name)
            try:
                return parse(raw)
            except PriceError as exc:
                raise ValueError(f"YIPPIEMOVE_{name.upper()}={raw!r}: {exc}") from None

        currency = self.billing_currency.strip().lower()
        if not (len(currency) == 3 and currency.isalpha() and currency.isascii()):
            raise ValueError(
                f"YIPPIEMOVE_BILLING_CURRENCY={self.billing_currency!r}: not an ISO 4217 "
                "code (e.g. usd, eur)"
            )
        if self.free_rerun_days < 0:
            raise ValueError(f"YIPPIEMOVE_FREE_RERUN_DAYS={self.free_rerun_days}: below 0")
        free = self.free_mailbox_size.strip()
        return Prices(
            currency=currency,
            bands=parsed("price_bands", parse_bands),
            bundles=parsed("price_bundles", parse_bundles),
            free_bytes=0 if free in ("", "0") else parsed("free_mailbox_size", parse_size),
            free_rerun_days=self.free_rerun_days,
        )

    def egress(self) -> EgressPolicy:
        """The egress policy of this service (its lists and its own addresses)."""
        from ..accounts import own_addresses

        return EgressPolicy.from_settings(self.egress_allow, self.egress_deny, own_addresses())

    @classmethod
    def load(cls, data_dir: Path | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``YIPPIEMOVE_*`` environment variables, then ``overrides``.

        ``data_dir``: argument, else ``YIPPIEMOVE_DATA_DIR``, else
        :func:`default_data_dir`.  It is created with mode 0700.
        """
        env = os.environ
        if data_dir is None:
            data_dir = Path(env["YIPPIEMOVE_DATA_DIR"]) if env.get("YIPPIEMOVE_DATA_DIR") else None
        if data_dir is None:
            data_dir = default_data_dir()
        data_dir = Path(data_dir).absolute()
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": f"sqlite:///{data_dir / 'control.sqlite'}",
            "secret_key_file": data_dir / "session.key",
            "credentials_key_file": data_dir / "credentials.key",
        }
        fields = {
            f.name: f for f in dataclasses.fields(cls) if f.name not in ("data_dir", "extra")
        }
        env_fields = {k: f for k, f in fields.items() if k != "oauth"}
        for name, f in env_fields.items():
            raw = env.get("YIPPIEMOVE_" + name.upper())
            if raw is not None and raw != "":
                values[name] = _convert(name, f.type, raw)
        for name, value in overrides.items():
            if name not in fields:
                raise TypeError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = value
        for name in ("egress_allow", "egress_deny"):
            if not isinstance(values.get(name, ""), str):  # a list from the command line
                values[name] = ",".join(values[name])
        settings = cls(**values)
        if not settings.host_name:
            settings.host_name = socket.gethostname()
        settings.egress()  # a bad CIDR stops the start, naming it
        settings.prices()  # so does a bad price, billing on or off
        if settings.billing_enabled:
            missing = [
                "YIPPIEMOVE_" + n.upper()
                for n in ("stripe_secret_key", "stripe_publishable_key", "stripe_webhook_secret")
                if not getattr(settings, n)
            ]
            if missing:
                raise ValueError(
                    "YIPPIEMOVE_BILLING_ENABLED is on but " + ", ".join(missing)
                    + (" is" if len(missing) == 1 else " are") + " not set (docs/billing.md)"
                )
        if not settings.data_dir.exists():
            settings.data_dir.mkdir(parents=True)
            os.chmod(settings.data_dir, 0o700)  # ours: private (an existing one is kept)
        settings.jobs_dir.mkdir(mode=0o700, exist_ok=True)
        # Private: no reading or writing by others; search (x) stays when the job
        # launcher opened it for jobs with user ids of their own (jobs/privilege.py).
        mode = settings.jobs_dir.stat().st_mode & 0o777
        if mode & 0o066 or not mode & 0o700 == 0o700:
            os.chmod(settings.jobs_dir, (mode | 0o700) & ~0o066)
        return settings


def _convert(name: str, type_name: object, raw: str) -> Any:
    """Environment strings to field types (annotations are strings here)."""
    t = str(type_name)
    try:
        if t.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if t.startswith("int"):
            return int(raw)
        if t.startswith("float"):
            return float(raw)
        if t.startswith("Path"):
            return Path(raw)
    except ValueError:
        raise ValueError(f"YIPPIEMOVE_{name.upper()}={raw!r} is not a valid {t}") from None
    return raw


def read_or_create_secret(path: Path, make: Any) -> bytes:
    """Read a secret file, or create it (mode 0600, atomically) with ``make()``.

    A file readable by others is refused: a leaked key would undo the protection.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, make())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a key another process just made
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        st = path.stat()
    if st.st_mode & 0o077:
        raise PermissionError(
            f"{path} is readable by other users (mode {st.st_mode & 0o777:o}); chmod 600 it"
        )
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path} is empty")
    return data
