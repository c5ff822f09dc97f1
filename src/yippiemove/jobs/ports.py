"""What the supervisor needs from the service, as interfaces the service implements.

The jobs layer sits below the service: it never imports ``yippiemove.service``.  The
supervisor reads and writes the control database through a :class:`JobStore`, has
customers mailed through :class:`Notifications`, and gets its settings as one
:class:`SupervisorConfig` value.  ``service/jobhost.py`` implements the store on the
SQLAlchemy database and the credential box; ``Settings.supervisor_config()`` builds the
config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .vocab import JobStatus

__all__ = [
    "Checkpoint",
    "Claim",
    "CredentialsUnreadable",
    "JobStore",
    "Notifications",
    "SupervisorConfig",
    "Waiting",
]


class CredentialsUnreadable(Exception):
    """A job's stored passwords cannot be decrypted; the message is safe to show."""


@dataclass(frozen=True)
class SupervisorConfig:
    """The settings the supervisor and the job launchers use, taken from the service's
    (service/jobhost.py ``supervisor_config``): their defaults and meanings are written
    once, in service/config.py ``Settings``."""

    jobs_dir: Path
    #: "fork" (from the zygote) or "exec" (jobs/launch.py).
    job_spawn: str
    job_max_open_files: int
    job_max_memory: int
    job_connections: int | None
    job_max_restarts: int
    job_max_attempts: int
    lease_seconds: float
    job_stall_seconds: float
    progress_interval: float
    job_kill_grace: float
    restart_delay: float
    ca_file: str | None
    allow_insecure_hosts: bool
    #: A job whose destination mailbox another job writes into is tried again after
    #: this many seconds (it stays ``queued``).
    mailbox_wait_seconds: float = 5.0
    #: E-mail policy (issue 17): a run's start mail goes out once it has lasted this
    #: many seconds, none when it ended sooner.
    start_mail_after: float = 60.0
    #: The egress policy's operator lists (policy/egress.py), comma-separated CIDRs.
    egress_allow: str = ""
    egress_deny: str = ""
    #: Fair share (jobs/fairshare.py): the servers must move this many bytes per second
    #: over ``job_rate_window`` seconds (0: no minimum), and a run that lasts
    #: ``job_max_seconds`` (0: no limit) is checkpointed and queued again.
    job_min_rate: float = 0.0
    job_rate_window: float = 600.0
    job_max_seconds: float = 0.0
    #: When the service runs as root, each running job gets the user id
    #: ``job_uid_base + slot`` (jobs/privilege.py); 0: jobs run as the service's user.
    job_uid_base: int = 0
    #: This worker host's name (``Settings.host_name``): process identities (lease
    #: owners, job processes) are written with it, and only this host's processes are
    #: judged dead or killed by it (jobs/supervisor.py).  "": the machine's host name.
    host_name: str = ""
    #: Seconds between two checkpoints of a running job's state (only when it changed);
    #: folder ends and the end of a run take one too.  0: only those.
    checkpoint_interval: float = 60.0
    #: A state file larger than this is not checkpointed (a log line says so).
    checkpoint_max_bytes: int = 256 * 1024 * 1024
    #: The job process stops writing to the destination this long before the lease it
    #: was last told about expires in the database (fencing; jobs/fence.py).
    lease_margin: float = 0.0
    #: Admission of jobs by the processors' pressure and the jobs' nice value
    #: (jobs/admission.py; service/config.py ``Settings``).
    job_admission_pressure: float = 0.0
    job_admission_floor: int = 0
    job_nice: int = 0
    #: The operator's OAuth2 settings (``yippiemove.oauth.OAuthConfig.to_dict()``, issue
    #: 16), handed to a job process whose accounts sign in with OAuth2 on its stdin only
    #: (client secrets: never in ``repr``, argv or the environment).
    oauth_config: dict[str, Any] | None = field(default=None, repr=False)

    def job_dir(self, job_id: str) -> Path:
        """A job's private working directory (state.sqlite, report.json, job.log)."""
        return self.jobs_dir / job_id


@dataclass
class Claim:
    """A job the supervisor took (``queued`` -> ``running``), with what it runs."""

    source: dict[str, Any]
    dest: dict[str, Any]
    folders: dict[str, Any] | None
    progress: dict[str, Any]
    email: str
    notified_start: bool
    #: The fencing token of this claim (``Job.lease_token``): every write made under the
    #: lease names it, and is refused once another claim took the job.
    token: int = 0
    #: The worker host that ran the job before this claim (None: never ran).
    last_host: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A stored copy of a job's state database (jobs/checkpoint.py): zlib of a
    consistent sqlite copy, the uncompressed size and SHA-256 (hex)."""

    host: str
    taken: float
    size: int
    sha256: str
    data: bytes
    token: int = 0


@dataclass(frozen=True)
class Waiting:
    """A job that cannot run yet: another job writes into its destination mailbox
    (``holder``, None when the other is not known yet), or its customer has as many
    jobs running as allowed (``reason`` says so); it stays ``queued``."""

    holder: str | None
    reason: str | None = None


class JobStore(Protocol):
    """The control database as the supervisor sees it.

    ``owner`` is the supervisor's identity (jobs/supervisor.py ``process_identity``): a
    write that needs the lease is only done while ``owner`` holds it.
    """

    def claim(
        self, job_id: str, owner: str, lease_seconds: float, max_attempts: int
    ) -> Claim | Waiting | None:
        """Take a ``queued`` job, or None (someone else has it, or it ended).  A job
        that was started ``max_attempts`` times is failed instead.  One job at a time
        runs into a destination mailbox: when another one does, the job stays queued
        and :class:`Waiting` names the other."""
        ...

    def waiting(self, job_id: str, reason: str) -> bool:
        """A ``queued`` job is not claimed for a reason of this host's (it is at its
        limit of open files): show it waiting, with ``reason``; False if not queued."""
        ...

    def passwords(self, job_id: str) -> tuple[str, str] | None:
        """(source, destination) password, None when deleted; CredentialsUnreadable."""
        ...

    def credentials(self, job_id: str) -> dict[str, Any] | None:
        """The job's whole credentials blob (``source_password``, ``dest_password`` and,
        for a side signed in with OAuth2, ``source_oauth``/``dest_oauth``: grants), None
        when deleted; CredentialsUnreadable."""
        ...

    def oauth_grants(self, job_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(source, destination) OAuth2 grant (contract 4's ``source_oauth`` /
        ``dest_oauth``), None for a side that logs in with its password."""
        ...

    def store_grant(
        self, job_id: str, owner: str, token: int, side: str, grant: dict[str, Any]
    ) -> bool:
        """The provider rotated ``side``'s refresh token while the job ran: ``grant``
        replaces the stored one (encrypted, in the credentials blob) while ``owner``
        holds the lease under ``token``; False when it does not, or the credentials
        were deleted meanwhile (nothing stored)."""
        ...

    def mark_start_notified(self, job_id: str) -> None: ...

    def jail_started(self, job_id: str, owner: str, token: int, identity: str) -> bool:
        """A job process started: its identity, one more attempt; False (nothing
        written) when the lease is no longer ours."""
        ...

    def jail_ended(self, job_id: str, owner: str, token: int) -> None: ...

    def heartbeat(
        self,
        job_id: str,
        owner: str,
        token: int,
        lease_seconds: float,
        progress: Callable[[int], dict[str, Any]],
    ) -> tuple[bool, bool]:
        """Store ``progress(attempts)`` and renew the lease: (lease still ours, cancel
        asked).  Raises when the database fails."""
        ...

    def heartbeat_many(
        self,
        owner: str,
        lease_seconds: float,
        beats: dict[str, tuple[int, dict[str, Any]]],
    ) -> dict[str, tuple[bool, bool]]:
        """:meth:`heartbeat` for many jobs in one transaction (jobs/heartbeats.py):
        ``beats`` maps job id -> (fencing token, progress without its ``attempt``);
        answers job id -> (lease still ours, cancel asked).  Raises when the database
        fails (then nothing is written)."""
        ...

    def requeue(
        self,
        job_id: str,
        owner: str,
        token: int,
        progress: dict[str, Any] | None,
        *,
        checkpoint: bool = False,
    ) -> bool:
        """Give a running job back to the queue (the service stops, or ``checkpoint``: its
        run reached the maximum duration, which is not counted as a failed attempt);
        False if not ours."""
        ...

    def finish(
        self,
        job_id: str,
        owner: str,
        token: int | None,
        status: JobStatus,
        error: str | None,
        progress: Callable[[dict[str, Any]], dict[str, Any]],
        report_path: str | None,
    ) -> str | None:
        """End the job (``progress`` gets the stored progress and returns the final
        one); returns its owner's e-mail address, or None when it was not ours to end.
        ``token`` None: a job that was never claimed.  Its checkpoint is deleted."""
        ...

    def save_checkpoint(self, job_id: str, owner: str, token: int, ckpt: Checkpoint) -> bool:
        """Store the job's checkpoint (replacing the last one) if the lease is still ours
        under ``token`` (checked in the same transaction); False if not."""
        ...

    def load_checkpoint(self, job_id: str) -> Checkpoint | None:
        """The job's last checkpoint, or None."""
        ...

    def mail_view(self, job_id: str) -> dict[str, Any]:
        """What the notification mails show of a job (never a password); ``quiet``
        true: send no mail for this run (a staged job's top-up pass)."""
        ...

    def batch_summary(self, job_id: str) -> dict[str, Any] | None:
        """When ``job_id`` was the last of its batch to end: the batch (``id``,
        ``email``, ``timezone``, ``jobs``: their mail views), claimed once for its
        summary mail; else None."""
        ...

    def end_user_notice(self, job_id: str) -> dict[str, Any] | None:
        """When ``job_id`` is done and its batch asked for a notice to each end user:
        ``{"to": the source address, "job": its mail view}``, claimed once; else None."""
        ...


class Notifications(Protocol):
    """Mails to a job's owner (service/notify.py ``Notifier``)."""

    def job_started(self, to: str, job: dict[str, Any]) -> None: ...

    def job_done(self, to: str, job: dict[str, Any]) -> None: ...

    def job_failed(self, to: str, job: dict[str, Any]) -> None: ...

    def batch_done(self, to: str, batch: dict[str, Any]) -> None: ...

    def end_user_done(self, to: str, job: dict[str, Any]) -> None: ...
