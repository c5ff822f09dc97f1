"""Plain data of a transfer: endpoints, options, plan, progress and results."""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from ..imap.client import MailboxInfo, NamespaceInfo
from ..policy.rules import FolderRules, MessageFilter


class Outcome(StrEnum):
    """What became of one source message (the state file, the report and the service
    store these strings)."""

    #: Appended by this run (or, in the state, by an earlier one).
    COPIED = "copied"
    #: Already on the destination (recorded by the state, or recognised by content).
    PRESENT = "present"
    #: Gmail destination: stored from another folder; this folder's label was added.
    LABELLED = "labelled"
    #: On the destination, stored altered by the server.  In the report: a change the mover
    #: recognises (line endings, 8-bit header bytes: transfer/altered.py), not a failure.
    #: In the state: any stored copy with other size or bytes (recognised or not: an
    #: unrecognised one is reported failed) -- never sent again.
    ALTERED = "altered"
    FAILED = "failed"
    #: Not handled (only seen in a report of a pass that went wrong).
    MISSING = "missing"


#: Outcomes that put a message on the destination: a state row with one of these and a
#: destination UID lets a later pass claim that UID.
STORED = frozenset({Outcome.COPIED, Outcome.PRESENT, Outcome.LABELLED, Outcome.ALTERED})


class Phase(StrEnum):
    """Where a transfer is (``Progress.phase``)."""

    CONNECTING = "connecting"
    PLANNING = "planning"
    COPYING = "copying"
    DONE = "done"


@runtime_checkable
class TokenSource(Protocol):
    """Where an account's OAuth2 access tokens come from (the oauth layer's
    ``GrantTokenSource``; a test's stand-in).  ``access_token()``: a token that is valid
    now (cached, refreshed ahead of expiry); ``refresh=True``: the server refused the
    last one, get a new one.  Raises :class:`~yippiemove.imap.errors.ConsentRevoked`
    when the provider will not give one (the owner must sign in again)."""

    async def access_token(self, *, refresh: bool = False) -> str: ...


@dataclass(frozen=True)
class Endpoint:
    """One IMAP account.  The password never appears in ``repr`` or ``label``; neither
    does ``oauth``, the account's token source: when set, the login is OAuth2
    (XOAUTH2/OAUTHBEARER with its access tokens, transfer/store.py) and ``password`` is
    not used."""

    host: str
    port: int
    user: str
    security: str = "starttls"  # "tls" | "starttls" | "require-starttls" | "none"
    password: str = field(default="", repr=False, compare=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    allow_insecure_auth: bool = False
    #: The resolved address to connect to (the service's egress check pinned it:
    #: accounts.py ``pin_endpoint``); None: resolve ``host`` when connecting (the CLI).
    #: ``host`` stays the name TLS checks the certificate against (SNI).
    address: str | None = field(default=None, compare=False)
    #: OAuth2: the access tokens to log in with instead of the password.
    oauth: TokenSource | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        scheme = "imaps" if self.security == "tls" else "imap"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{self.user}@{host}:{self.port}"


@dataclass
class Options:
    """Knobs of a transfer; defaults are tuned for Dovecot on loopback and real WAN links."""

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    #: Rename/merge/prefix/special-folder rules (policy/rules.py).
    rules: FolderRules = field(default_factory=FolderRules)
    #: Which messages to copy (date and size filters, IMAP SEARCH on the source).
    filters: MessageFilter = field(default_factory=MessageFilter)
    dry_run: bool = False
    #: Folder workers; each has one source and one destination connection.
    connections: int = 2
    #: Workers when a round trip to either server takes ``far_rtt`` seconds or more
    #: (measured with a NOOP while planning): each folder costs a few round trips that nothing else
    #: can hide, so more folders in flight.  ``yippiemove move --connections N`` sets
    #: both to N; provider presets cap both (policy/providers.py).
    far_connections: int = 6
    far_rtt: float = 0.010
    #: ``memory_budget`` on such a link: the bytes in flight must cover two round trips
    #: (FETCH, then the APPEND's answer) for the link to stay busy.
    far_memory_budget: int = 40 * 1024 * 1024
    #: The same when TLS is in use: its connections' buffers cost memory too, and the
    #: servers' TLS work sets the pace (why this figure: docs/performance.md item 21).
    far_memory_budget_tls: int = 28 * 1024 * 1024
    fetch_batch_bytes: int = 2 * 1024 * 1024
    fetch_batch_messages: int = 256
    fetch_window: int = 3
    append_batch_messages: int = 256
    append_batch_bytes: int = 8 * 1024 * 1024
    append_window: int = 3
    #: Message bytes in flight across all workers (fetched, not yet stored).
    memory_budget: int = 24 * 1024 * 1024
    #: Retries of a folder pass (or of the planning) in a row without progress after a
    #: dropped connection, a timeout or a throttling answer (policy/retry.py).
    retries: int = 5
    #: Longest wait between two attempts (seconds); also caps a server's suggested wait.
    max_backoff: float = 300.0
    connect_timeout: float = 30.0
    idle_timeout: float = 120.0
    verify: bool = True
    #: Also read every verified message back from the destination and compare its
    #: SHA-256 with the source's: catches a server that changes bytes but not the size
    #: (Cyrus can replace 8-bit header bytes with "X").  Costs a second read of the mail.
    verify_content: bool = False
    #: Largest message the destination takes (bytes), e.g. from a provider preset
    #: (policy/providers.py).  Treated like APPENDLIMIT (RFC 7889): larger messages are
    #: reported as failed without being fetched.
    max_message_size: int | None = None
    #: How that limit is named in the failure reason, e.g. "Gmail's 34 MB limit".
    max_message_size_label: str = ""
    #: Awaited before every command that may change the destination (APPEND, STORE,
    #: CREATE...; imap/connection.py ``write_gate``); it raises to stop the transfer.
    #: The service's job process fences its writes with it (jobs/fence.py); ``yippiemove
    #: move`` passes none.
    write_gate: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    #: Destination connections close abortively (SO_LINGER 0, imap/connection.py): when
    #: this process dies or drops a connection without a LOGOUT answered, the bytes its
    #: kernel had not sent yet are dropped (the server gets a reset), never delivered
    #: later -- after another run (a resumed ``move``, another host's job) took over.
    abortive_close: bool = True


@dataclass(frozen=True)
class FolderPlan:
    """One source folder and where it goes."""

    source: MailboxInfo
    dest_name: str
    dest_raw: bytes
    reasons: tuple[str, ...]
    subscribed: bool
    dest_exists: bool
    count: int  # after the message filters
    size: int
    #: Special role it was mapped by (policy/special.py), if any.
    role: str | None = None
    #: Other source folders going to the same destination folder (merged).
    merged_with: tuple[str, ...] = ()
    #: Flags/keywords in the source folder's FLAGS the destination folder cannot keep
    #: (worked out by dry runs; a real run reports them per folder as it copies).
    unstorable_flags: tuple[str, ...] = ()
    #: Keywords in the source folder's FLAGS that the destination's PERMANENTFLAGS does
    #: not promise (no ``\*``): tried when copying, kept if the server keeps them
    #: (transfer/keywords.py); a dry run cannot know.
    untested_keywords: tuple[str, ...] = ()
    #: RFC 6154 attribute the destination folder is created with (CREATE-SPECIAL-USE).
    create_use: str | None = None
    #: Gmail source: only the archived messages of this folder (All Mail) are copied:
    #: those without a label that is a folder (policy/gmail.py).
    archived_only: bool = False


@dataclass(frozen=True)
class GmailPlan:
    """What the mover does about Gmail's labels (policy/gmail.py), for the plan."""

    #: The source / destination has Gmail's IMAP extensions (X-GM-EXT-1).
    source: bool = False
    dest: bool = False
    #: Source: the views that are not copied as folders (they are in Plan.skipped too).
    views: tuple[str, ...] = ()
    #: Source: labels that are folders (a message with none of them is archived).
    folder_labels: tuple[str, ...] = ()
    #: Source: the archive pass (source name, destination name) and its message count.
    archive: tuple[str, str] | None = None
    archived: int = 0
    #: Destination: source folders whose messages may share one Gmail message (a label is
    #: added instead of a second APPEND), and those always appended (Trash, Spam).
    shared: tuple[str, ...] = ()
    appended: tuple[str, ...] = ()
    #: Destination, --dry-run only: messages found in several of the shared source folders
    #: (same size, INTERNALDATE and Message-ID: an estimate) and APPENDs that become labels.
    in_several_folders: int | None = None
    labels_instead: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "dest": self.dest,
            "views_skipped": list(self.views),
            "folder_labels": list(self.folder_labels),
            "archive": (
                {"source": self.archive[0], "dest": self.archive[1], "messages": self.archived}
                if self.archive
                else None
            ),
            "shared_folders": list(self.shared),
            "appended_folders": list(self.appended),
            "in_several_folders": self.in_several_folders,
            "labels_instead_of_copies": self.labels_instead,
        }


@dataclass
class Plan:
    source_namespace: NamespaceInfo
    dest_namespace: NamespaceInfo
    folders: list[FolderPlan]
    create: list[tuple[str, bytes]]  # destination folders to create, parents first
    skipped: list[tuple[str, str]]  # (source folder, why)
    rules: FolderRules = field(default_factory=FolderRules)
    filters: MessageFilter = field(default_factory=MessageFilter)
    #: Gmail's labels on either side (None: neither side is Gmail).
    gmail: GmailPlan | None = None

    @property
    def total_messages(self) -> int:
        return sum(f.count for f in self.folders)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.folders)

    def as_dict(self) -> dict[str, object]:
        return {
            "source_namespace": {
                "prefix": self.source_namespace.prefix,
                "separator": self.source_namespace.separator,
            },
            "dest_namespace": {
                "prefix": self.dest_namespace.prefix,
                "separator": self.dest_namespace.separator,
            },
            "folders": [
                {
                    "source": f.source.name,
                    "dest": f.dest_name,
                    "reasons": list(f.reasons),
                    "messages": f.count,
                    "bytes": f.size,
                    "dest_exists": f.dest_exists,
                    "subscribed": f.subscribed,
                    "role": f.role,
                    "merged_with": list(f.merged_with),
                    "unstorable_flags": list(f.unstorable_flags),
                    "untested_keywords": list(f.untested_keywords),
                    "create_use": f.create_use,
                    "archived_only": f.archived_only,
                }
                for f in self.folders
            ],
            "create": [name for name, _ in self.create],
            "rules": self.rules.as_dict(),
            "filters": self.filters.as_dict(),
            "skipped": [{"folder": n, "why": w} for n, w in self.skipped],
            "gmail": self.gmail.as_dict() if self.gmail is not None else None,
            "total_messages": self.total_messages,
            "total_bytes": self.total_bytes,
        }


@dataclass
class Failure:
    folder: str
    uid: int
    size: int
    message_id: str | None
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "folder": self.folder,
            "uid": self.uid,
            "size": self.size,
            "message_id": self.message_id,
            "reason": self.reason,
        }


@dataclass
class AlteredMessage:
    """A message on the destination that the server stored altered in a way the mover
    recognises (transfer/altered.py): there, not byte-exact, not a failure."""

    folder: str
    uid: int
    size: int
    message_id: str | None
    dest_uid: int
    stored_size: int
    #: What the server changed, in words ("line endings CRLF -> LF", ...).
    what: str

    def as_dict(self) -> dict[str, object]:
        return {
            "folder": self.folder,
            "uid": self.uid,
            "size": self.size,
            "message_id": self.message_id,
            "dest_uid": self.dest_uid,
            "stored_size": self.stored_size,
            "what": self.what,
        }


@dataclass
class FolderResult:
    source: str
    dest: str
    source_count: int = 0
    copied: int = 0
    present: int = 0
    #: Gmail destination: messages stored already (from another folder) that got this
    #: folder's label instead of a second copy.
    labelled: int = 0
    failed: int = 0
    verified: int = 0
    #: Messages whose destination bytes were read back and hashed (``verify_content``).
    content_verified: int = 0
    #: Source UID -> destination UID of messages the destination stored altered (other
    #: size, or other bytes under ``verify_content``): failed, but there; never re-sent.
    altered: dict[int, int] = field(default_factory=dict)
    #: Messages stored altered by the server in a recognised way (verified as such).
    stored_altered: list[AlteredMessage] = field(default_factory=list)
    flags_fixed: int = 0
    bytes_copied: int = 0
    source_uidvalidity: int = 0
    dest_uidvalidity: int = 0
    failures: list[Failure] = field(default_factory=list)
    unstorable_flags: set[str] = field(default_factory=set)
    #: Flag or keyword the destination does not keep -> messages of the folder carrying it
    dropped_flags: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Why the whole folder could not be copied, if it could not.
    error: str | None = None
    #: (source UID, destination UID or None, outcome) for every source message.
    messages: list[tuple[int, int | None, Outcome]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "dest": self.dest,
            "source_uidvalidity": self.source_uidvalidity,
            "dest_uidvalidity": self.dest_uidvalidity,
            "source_count": self.source_count,
            "copied": self.copied,
            "already_present": self.present,
            "labelled": self.labelled,
            "failed": self.failed,
            "verified": self.verified,
            "content_verified": self.content_verified,
            "altered": len(self.stored_altered),
            "flags_fixed": self.flags_fixed,
            "bytes_copied": self.bytes_copied,
            "unstorable_flags": sorted(self.unstorable_flags),
            "dropped_flags": dict(self.dropped_flags),
            "notes": self.notes,
            "error": self.error,
            "failures": [f.as_dict() for f in self.failures],
            "altered_messages": [a.as_dict() for a in self.stored_altered],
            "messages": [
                {"source_uid": s, "dest_uid": d, "outcome": o} for s, d, o in self.messages
            ],
        }


@dataclass
class Sending:
    """One APPEND on its way: its message bytes and where its last byte is in its
    connection's output; ``delivered()`` says how far the peer has acknowledged that
    output (imap/connection.py ``bytes_delivered``)."""

    folder: str
    size: int
    end: int
    delivered: Callable[[], int]

    def sent(self) -> int:
        """Message bytes of this APPEND the destination has received so far."""
        return max(0, min(self.size, self.size - (self.end - self.delivered())))


@dataclass
class Progress:
    """Live counters, updated in place by the engine; front doors poll it.

    ``messages_done`` / ``bytes_done`` count a message once the destination answered its
    APPEND (or found it there already, or it failed); :meth:`sending` adds the bytes of
    APPENDs on their way, so that progress moves during a large message or a long
    MULTIAPPEND.  ``bytes_copied`` counts only bytes appended in this process (never
    taken back): with :meth:`sending` it is what crossed the link, the basis of a rate
    (messages found already there are not)."""

    folders_total: int = 0
    folders_done: int = 0
    messages_total: int = 0
    messages_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    failed: int = 0
    current: set[str] = field(default_factory=set)
    #: The latest failed messages (at most 200), for front doors that show them live.
    failures: list[dict[str, object]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    phase: Phase = Phase.CONNECTING
    #: Unix time until which a worker waits because the server is throttling us (the
    #: latest such time when several wait), or None.
    throttled_until: float | None = None
    #: Unix time until which a worker waits before retrying (any cause), or None: a wait
    #: the job chose, which its supervisor does not count as a silent server.
    retry_until: float | None = None
    #: Attempts repeated so far after a dropped connection, a timeout or throttling.
    reconnects: int = 0
    #: Message bytes appended and answered in this process (module doc).
    bytes_copied: int = 0
    #: APPENDs on their way, by a key of their sender's choosing.
    in_flight: dict[int, Sending] = field(default_factory=dict)
    #: Source folders whose pass is verifying now.
    verifying: set[str] = field(default_factory=set)
    #: Source folder -> "done" or "failed", once its last pass ended.
    finished: dict[str, str] = field(default_factory=dict)

    def sending(self, folder: str | None = None) -> int:
        """Bytes of APPENDs on their way (of ``folder`` only, if given) that the
        destination has received so far."""
        return sum(
            s.sent() for s in list(self.in_flight.values()) if folder is None or s.folder == folder
        )

    def sending_by_folder(self) -> dict[str, int]:
        """:meth:`sending` of every folder with APPENDs on their way (one look each)."""
        out: dict[str, int] = {}
        for s in list(self.in_flight.values()):
            out[s.folder] = out.get(s.folder, 0) + s.sent()
        return out

    def bytes_now(self) -> int:
        """``bytes_done`` and the bytes on their way: what a progress bar shows."""
        done = self.bytes_done + self.sending()
        return min(done, self.bytes_total) if self.bytes_total else done

    def bytes_moved(self) -> int:
        """Bytes that crossed the link to the destination so far (for a rate)."""
        return self.bytes_copied + self.sending()

    def rate(self) -> float:
        """Bytes per second since the start."""
        elapsed = time.monotonic() - self.started
        return self.bytes_moved() / elapsed if elapsed > 0 else 0.0
