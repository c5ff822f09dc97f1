"""The transfer engine: plan, copy, verify -- one account to another.

Theory of operation
-------------------
1. **Plan.**  List both sides (LIST, LSUB, NAMESPACE), select the source folders the user
   asked for, map each name to the destination's namespace and separator
   (:mod:`yippiemove.policy.folders`), and count messages and bytes.
2. **Copy**, folder by folder, by ``Options.connections`` workers that each hold one
   source and one destination connection.  For one folder:

   * list both sides' metadata (UID, size, flags, INTERNALDATE, Message-ID; no bodies);
   * *claim* destination messages that the state file says we put there (same size);
   * any other source message whose (size, Message-ID) matches an unclaimed destination
     message is *ambiguous*: the candidates' bodies are fetched and hashed, and the source
     message is only appended when no unclaimed destination message has the same bytes.
     This is what makes a re-run after a crash, a lost state file, or an APPEND whose
     answer never arrived exact: nothing missing, nothing doubled, multiplicity kept;
   * everything else is fetched in pipelined ``UID FETCH`` batches sized by bytes and
     appended with pipelined MULTIAPPEND (RFC 3502) + LITERAL+ (RFC 7888) into the
     SELECTed destination folder; a refused MULTIAPPEND (all-or-nothing) is retried one
     message at a time to find and report the refused message with the server's words;
   * outcomes (with APPENDUID destination UIDs, RFC 4315) go to the state file in batches.
3. **Verify.**  The destination folder is listed again and every source message must have
   its own destination message with the same size, flags and INTERNALDATE; flags that
   differ are set (UID STORE), anything else is reported.

A folder pass is idempotent, so a transient failure (dropped connection, timeout,
``* BYE``, ``NO [UNAVAILABLE]``, a provider's throttling answer) is handled by waiting,
reconnecting and running the pass again, a bounded number of times; the planning is
retried the same way.  What is retried, how long it waits and what stops the transfer
is decided by :mod:`yippiemove.policy.retry`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import hashlib
import logging
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from xxhash import xxh3_128_digest

from ..imap import utf7
from ..imap.client import (
    AppendItem,
    ImapClient,
    MailboxInfo,
    MessageMeta,
    SelectInfo,
    message_id_in,
)
from ..imap.connection import CommandResult, ImapConnection
from ..imap.errors import CommandError, HostUnreachable, ImapError
from ..imap.gmail import has_gmail_extensions
from ..imap.protocol import format_uid_set, quote
from ..policy import folders as folder_policy
from ..policy import gmail as gmail_policy
from ..policy import retry as retry_policy
from ..policy import rules as rule_policy
from ..policy.special import Box
from .dates import same_instant
from .gmail import DestPass, GmailDest, GmailSource, instant
from .model import (
    Endpoint,
    Failure,
    FolderPlan,
    FolderResult,
    GmailPlan,
    Options,
    Plan,
    Progress,
)
from .state import FolderRow, State

log = logging.getLogger(__name__)

__all__ = ["Mover", "PlanError", "fingerprint"]


class PlanError(Exception):
    """The transfer cannot be planned as asked (e.g. --folder names no folder)."""


class FolderError(Exception):
    """One folder cannot be copied (it vanished, or its name is refused); the rest goes on."""


_PLAIN = re.compile(r"[^A-Za-z0-9 _.,+-]")


def _plain_name(name: str, separator: str | None) -> str:
    """A conservative ASCII spelling of a folder name, keeping its hierarchy."""
    if not separator:
        return _PLAIN.sub("_", name)
    return separator.join(_PLAIN.sub("_", part) or "_" for part in name.split(separator))


class ByteBudget:
    """Message bytes in flight (fetched, not yet stored) shared by all folder workers.

    Memory then stays bounded whatever ``--connections`` is. A request larger than the
    whole budget (one huge message) waits until nothing else is in flight.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    def grow(self, limit: int) -> None:
        """Raise the limit (never lower it: bytes may be in flight)."""
        if limit > self.limit:
            self.limit = limit
            self.release(0)  # wake the waiters

    def would_wait(self, n: int) -> bool:
        """True when ``acquire(n)`` would have to wait for others to release bytes."""
        return bool(self.used) and self.used + min(max(0, n), self.limit) > self.limit

    async def acquire(self, n: int) -> int:
        n = min(max(0, n), self.limit)
        while self.used and self.used + n > self.limit:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        self.used += n
        return n

    def release(self, n: int) -> None:
        self.used = max(0, self.used - n)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)


def fingerprint(body: bytes) -> bytes:
    """Content fingerprint of a message's exact bytes (SHA-256: fast with SHA-NI).

    Every decision that a destination message *is* a source message (the duplicate
    check, Gmail's one-copy rule, ``--verify-content``) compares these 32 bytes.
    """
    return hashlib.sha256(body).digest()


def checksum(body: bytes) -> bytes:
    """The 16-byte XXH3-128 of a message's bytes: the state's record of what was copied
    when no decision needs the SHA-256 (docs/design.md "Content hashes"). ~50 GB/s
    here against 1.75 for SHA-256, which cost a quarter of the mover's CPU on large mail.
    """
    return xxh3_128_digest(body)


def _fingerprint_all(bodies: Sequence[bytes | None]) -> list[bytes | None]:
    return [None if b is None else fingerprint(b) for b in bodies]


#: A pass copying at least this many messages appends in groups of _BIG_FOLDER_GROUP.
_BIG_FOLDER = 20_000
_BIG_FOLDER_GROUP = 1024

#: Source messages verified per destination metadata fetch.
_VERIFY_CHUNK = 5000

#: Bodies of at least _HASH_BIG bytes are hashed on a helper thread when a batch has
#: at least _HASH_OFFLOAD bytes of them.
_HASH_BIG = 64 * 1024
_HASH_OFFLOAD = 512 * 1024

EventHandler = Callable[[str], None]

#: Put in a pass's fetch queue: "send the APPEND group you are holding now".
_FLUSH = object()


class Mover:
    """Moves one mailbox.  ``run()`` returns per-folder results; it raises
    :class:`ImapError` when the transfer could not start or was cut short."""

    def __init__(
        self,
        source: Endpoint,
        dest: Endpoint,
        *,
        state: State | None = None,
        options: Options | None = None,
        progress: Progress | None = None,
        on_event: EventHandler | None = None,
    ) -> None:
        self.source = source
        self.dest = dest
        self.state = state
        self.options = options or Options()
        self.progress = progress or Progress()
        self.on_event = on_event or (lambda msg: None)
        self.plan: Plan | None = None
        self.results: list[FolderResult] = []
        self._passes: dict[str, list[int]] = {}
        self._folder_errors: dict[str, str] = {}
        self._budget = ByteBudget(self.options.memory_budget)
        #: Seconds of a round trip to the farther server (NOOPs while planning), if measured.
        self.rtt: float | None = None
        #: The destination's subscriptions, listed while planning.
        self._dst_subscribed: set[str] | None = None
        self._hasher: ThreadPoolExecutor | None = None
        #: Merged destination folder -> (its UIDVALIDITY, destination UIDs the folders
        #: merged into it claimed so far in this run); see _merged_flags.
        self._merge_claims: dict[str, tuple[int, set[int]]] = {}
        #: Gmail's labels (policy/gmail.py, transfer/gmail.py), set by make_plan.
        self._gmail_src: GmailSource | None = None
        self._gmail_dest: GmailDest | None = None
        #: Source folders whose messages may share one Gmail message on the destination.
        self._gmail_shared: set[str] = set()
        #: Waits between attempts (policy/retry.py); tests may seed ``backoff.rng``.
        self.backoff = retry_policy.Backoff(cap=self.options.max_backoff, rng=random.Random())
        self._throttles: dict[object, float] = {}
        #: (host, port) of the servers that answered once: unreachable later = retry.
        self._reached: set[tuple[str, int]] = set()
        #: Connected (source, destination) pairs waiting for a worker.
        self._spares: list[tuple[ImapClient, ImapClient]] = []
        #: (source folder, UID) -> SHA-256 of messages copied in this run, until the
        #: folder is verified (verify_content only).
        self._source_fprs: dict[tuple[str, int], bytes] = {}

    # ------------------------------------------------------------------ connections

    async def connect(self, ep: Endpoint, role: str) -> ImapClient:
        conn = await ImapConnection.open(
            ep.host,
            ep.port,
            security=ep.security,
            ssl_context=ep.ssl_context,
            timeout=self.options.connect_timeout,
            idle_timeout=self.options.idle_timeout,
            name=role,
        )
        self._reached.add((ep.host, ep.port))
        try:
            await conn.login(ep.user, ep.password, allow_insecure=ep.allow_insecure_auth)
        except BaseException:
            conn.abort()
            raise
        return ImapClient(conn)

    async def open_pair(self) -> tuple[ImapClient, ImapClient]:
        """A source and a destination connection, opened at the same time (each costs
        the server a login process and a mailbox process: tens of milliseconds)."""
        src_t = asyncio.ensure_future(self.connect(self.source, "source"))
        dst_t = asyncio.ensure_future(self.connect(self.dest, "destination"))
        try:
            await asyncio.wait({src_t, dst_t}, return_when=asyncio.ALL_COMPLETED)
        except BaseException:
            for t in (src_t, dst_t):
                t.cancel()
            await asyncio.gather(src_t, dst_t, return_exceptions=True)
            for t in (src_t, dst_t):
                if not t.cancelled() and t.exception() is None:
                    t.result().conn.abort()
            raise
        if src_t.exception() is not None or dst_t.exception() is not None:
            for t in (src_t, dst_t):
                if t.exception() is None:
                    await t.result().logout()
            exc = src_t.exception() or dst_t.exception()
            assert exc is not None
            raise exc
        return src_t.result(), dst_t.result()

    def _drop_spares(self) -> None:
        for pair in self._spares:
            for c in pair:
                c.conn.abort()
        self._spares = []

    # ------------------------------------------------------------------ plan

    async def make_plan(self, src: ImapClient, dst: ImapClient) -> Plan:
        """List both sides, choose and place the source folders (policy/rules.py: rules,
        special folders, namespaces), count what the message filters select and find
        the flags each destination folder cannot keep.  Gmail on either side
        (policy/gmail.py): its views are not copied, archived messages are, and a
        message of several folders is stored once with several labels."""
        self.progress.phase = "planning"
        opts = self.options
        # Both sides at once, each side's commands pipelined: one round trip, not five.
        src_ns, src_boxes, src_sub_boxes, dst_ns, dst_boxes, dst_sub_boxes = await _gather_all(
            src.namespace(),
            _list_with_special_use(src),
            src.list_mailboxes(subscribed=True),
            dst.namespace(),
            _list_with_special_use(dst),
            dst.list_mailboxes(subscribed=True),
        )
        src_subs = {m.name for m in src_sub_boxes}
        self._dst_subscribed = {m.name for m in dst_sub_boxes}
        dst_names = {_norm_inbox(m.name): m for m in dst_boxes}

        # Separators: each LIST answer names its own; the namespace's is the default.
        src_pol = folder_policy.Namespace(src_ns.prefix, src_ns.separator)
        dst_pol = folder_policy.Namespace(dst_ns.prefix, dst_ns.separator)
        selectable = [m for m in src_boxes if m.selectable]
        skipped = [(m.name, "not selectable (\\Noselect)") for m in src_boxes if not m.selectable]

        # Gmail source: its views are skipped; archived messages come from All Mail
        # through a pseudo-folder "Archive" (for --folder/--exclude and the rules).
        src_gmail = has_gmail_extensions(src)
        views: dict[str, str] = {}
        all_mail: MailboxInfo | None = None
        pseudo: MailboxInfo | None = None
        labels: frozenset[str] = frozenset()
        self._gmail_src = None
        if src_gmail:
            boxes = [Box(m.name, m.flags) for m in selectable]
            views = gmail_policy.views(boxes, src_pol)
            labels = gmail_policy.folder_labels(boxes, src_pol)
            found = gmail_policy.all_mail_folder(boxes, src_pol)
            all_mail = next((m for m in selectable if m.name == found), None)
            self._gmail_src = GmailSource(labels)
            if all_mail is not None and not any(
                m.name == gmail_policy.ARCHIVE_NAME for m in selectable
            ):
                pseudo = MailboxInfo(
                    all_mail.raw,
                    gmail_policy.ARCHIVE_NAME,
                    all_mail.separator,
                    gmail_policy.ARCHIVE_BOX.attributes,
                )
        candidates = selectable + ([pseudo] if pseudo is not None else [])
        included = select_folders(candidates, opts.include, [], src_pol)
        kept = select_folders(candidates, [], opts.exclude, src_pol)
        chosen = [m for m in included if m in kept]
        # The archive is named "Archive" or by its All Mail folder (the service lists it
        # under that name): chosen when either is included and neither is excluded.
        archive = pseudo or next(
            (m for m in selectable if m.name == gmail_policy.ARCHIVE_NAME), None
        )
        archived = (
            all_mail is not None
            and archive is not None
            and (archive in included or all_mail in included)
            and archive in kept
            and all_mail in kept
        )
        for m in candidates:
            if m.name in views:
                skipped.append((m.name, views[m.name]))
            elif m is pseudo and not archived:
                skipped.append((f"{m.name} (archived messages)", "excluded by --folder/--exclude"))
            elif m not in chosen and m is not pseudo:
                skipped.append((m.name, "excluded by --folder/--exclude"))
        if pseudo is not None and archived and pseudo not in chosen:
            chosen.append(pseudo)
        chosen = [m for m in chosen if m.name not in views and (m is not pseudo or archived)]
        folders = [m for m in chosen if m is not pseudo]

        try:
            placements = rule_policy.place_folders(
                [Box(m.name, m.flags) for m in chosen],
                src_pol,
                [Box(m.name, m.flags) for m in dst_boxes],
                dst_pol,
                opts.rules,
                create_special_use=dst.has("CREATE-SPECIAL-USE"),
            )
        except ValueError as exc:  # RuleError: a --rename-regex made an unusable name
            raise PlanError(str(exc)) from None
        by_source = {p.source: p for p in placements}

        counts = await self._counts(src, folders)
        entries = [(m, by_source[m.name], counts[m.raw], False) for m in folders]
        dst_gmail = has_gmail_extensions(dst)
        dst_all_name = gmail_policy.all_mail_folder(
            [Box(m.name, m.flags) for m in dst_boxes], dst_pol
        )
        dst_all = dst_names.get(dst_all_name) if dst_gmail and dst_all_name else None
        if archived:
            assert all_mail is not None and self._gmail_src is not None
            entries.append(
                (
                    all_mail,
                    self._archive_placement(
                        by_source[gmail_policy.ARCHIVE_NAME],
                        all_mail,
                        pseudo is None,
                        dst_all,
                        dst_names,
                    ),
                    await self._gmail_src.count_archived(src, all_mail.raw, opts.filters),
                    True,
                )
            )
            # Who is merged with whom, by final destination (the archive may have moved).
            by_dest: dict[str, list[str]] = defaultdict(list)
            for m, pl, _c, _a in entries:
                by_dest[_norm_inbox(pl.dest)].append(m.name)
            entries = [
                (
                    m,
                    dataclasses.replace(
                        pl,
                        merged_with=tuple(n for n in by_dest[_norm_inbox(pl.dest)] if n != m.name),
                    ),
                    c,
                    a,
                )
                for m, pl, c, a in entries
            ]

        # What the destination folders can store: PERMANENTFLAGS needs SELECT (EXAMINE
        # answers PERMANENTFLAGS ()); a folder still to be created is judged by INBOX.
        targets = {_norm_inbox(pl.dest) for _m, pl, _c, _a in entries}
        dst_raws = sorted({dst_names[k].raw for k in targets if k in dst_names} | {b"INBOX"})
        dst_infos = await dst.select_many(dst_raws) if entries and opts.dry_run else {}
        plans: list[FolderPlan] = []
        create: list[tuple[str, bytes]] = []
        planned_create: set[str] = set()
        for m, pl, (count, size, src_flags), archived_only in entries:
            dest_name = pl.dest
            key = _norm_inbox(dest_name)
            exists = key in dst_names
            # Parents are left to the server (RFC 3501 6.3.3: CREATE makes superiors),
            # so a source \\Noselect parent does not become a real folder here.
            if not exists and key not in planned_create:
                planned_create.add(key)
                create.append((dest_name, utf7.encode(dest_name)))
            dinfo = dst_infos.get(dst_names[key].raw if exists else b"INBOX")
            unstorable = tuple(
                sorted(
                    f
                    for f in src_flags
                    if f.upper() != "\\RECENT" and dinfo is not None and not dinfo.can_store(f)
                )
            )
            plans.append(
                FolderPlan(
                    source=m,
                    dest_name=dest_name,
                    dest_raw=dst_names[key].raw if exists else utf7.encode(dest_name),
                    reasons=pl.reasons,
                    subscribed=m.name in src_subs,
                    dest_exists=exists,
                    count=count,
                    size=size,
                    role=pl.role,
                    merged_with=pl.merged_with,
                    unstorable_flags=unstorable,
                    create_use=None if exists else pl.create_use,
                    archived_only=archived_only,
                )
            )
        gmail = None
        self._gmail_dest = None
        self._gmail_shared = set()
        if src_gmail or dst_gmail:
            gmail = await self._gmail_plan(
                src, plans, dst_names, src_gmail, dst_gmail, views, labels, dst_all
            )
        plan = Plan(src_ns, dst_ns, plans, create, skipped, opts.rules, opts.filters, gmail)
        self.progress.folders_total = len(plans)
        self.progress.messages_total = plan.total_messages
        self.progress.bytes_total = plan.total_bytes
        return plan

    def _archive_placement(
        self,
        pl: rule_policy.Placement,
        all_mail: MailboxInfo,
        label: bool,
        dst_all: MailboxInfo | None,
        dst_names: dict[str, MailboxInfo],
    ) -> rule_policy.Placement:
        """Where a Gmail source's archived messages go (policy/gmail.py): where the rules
        put a folder "Archive" (``label``: the source's own label "Archive", merged with
        it); to a Gmail destination's \\All folder instead of a new "Archive"."""
        reasons = [gmail_policy.archive_reason(all_mail.name)]
        if label:
            reasons.append(
                f"the source also has a label {gmail_policy.ARCHIVE_NAME!r}: they go to the "
                "same folder"
            )
        if (
            dst_all is not None
            and not label
            and pl.role == "archive"
            and _norm_inbox(pl.dest) not in dst_names
        ):
            reasons.append(
                f"the destination is Gmail: archived messages go to its \\All folder "
                f"{dst_all.name!r}, where a message without labels is archived"
            )
            return dataclasses.replace(
                pl, dest=dst_all.name, reasons=tuple(reasons), create_use=None
            )
        # (The pseudo-folder's own "is the source's \\Archive folder" says nothing here.)
        own = f"{gmail_policy.ARCHIVE_NAME!r} is the source's"
        rest = tuple(r for r in pl.reasons if label or not r.startswith(own))
        return dataclasses.replace(pl, reasons=(*reasons, *rest), role="archive")

    async def _gmail_plan(
        self,
        src: ImapClient,
        plans: list[FolderPlan],
        dst_names: dict[str, MailboxInfo],
        src_gmail: bool,
        dst_gmail: bool,
        views: dict[str, str],
        labels: frozenset[str],
        dst_all: MailboxInfo | None,
    ) -> GmailPlan:
        """The Gmail part of the plan; sets up the Gmail destination for the copy."""
        archive = next((fp for fp in plans if fp.archived_only), None)
        shared: list[str] = []
        appended: list[str] = []
        several: int | None = None
        instead: int | None = None
        if dst_gmail:
            for fp in plans:
                d = dst_names.get(_norm_inbox(fp.dest_name))
                attrs = d.flags if d is not None else frozenset()
                (shared if gmail_policy.shares_labels(attrs, fp.role) else appended).append(
                    fp.source.name
                )
            self._gmail_shared = set(shared)
            self._gmail_dest = GmailDest(dst_all.raw if dst_all is not None else None, self.state)
            if self.options.dry_run:
                several, instead = await self._gmail_estimate(
                    src, [fp for fp in plans if fp.source.name in self._gmail_shared]
                )
        return GmailPlan(
            source=src_gmail,
            dest=dst_gmail,
            views=tuple(views),
            folder_labels=tuple(sorted(labels)),
            archive=(archive.source.name, archive.dest_name) if archive is not None else None,
            archived=archive.count if archive is not None else 0,
            shared=tuple(shared),
            appended=tuple(appended),
            in_several_folders=several,
            labels_instead=instead,
        )

    async def _gmail_estimate(self, src: ImapClient, plans: list[FolderPlan]) -> tuple[int, int]:
        """--dry-run into Gmail: (Gmail messages that get labels of several of these source
        folders, APPENDs that become labels), judged by size, INTERNALDATE and Message-ID
        (an estimate: no bodies are read)."""
        folders_of: dict[tuple[int, int, bytes | None], list[int]] = defaultdict(list)
        for i, fp in enumerate(plans):
            _info, metas = await self._list_source(src, fp)
            ids = await src.fetch_message_ids([m.uid for m in metas]) if metas else {}
            per: dict[tuple[int, int, bytes | None], int] = defaultdict(int)
            for m in metas:
                when = instant(m.internaldate)
                if when is not None:
                    per[(m.size, when, ids.get(m.uid))] += 1
            for k, n in per.items():
                folders_of[k].extend([i] * n)
        several = 0
        instead = 0
        for occurrences in folders_of.values():
            counts = Counter(occurrences)
            if len(counts) > 1:
                # As many Gmail messages as the folder holding it most often has copies;
                # the i-th of them gets a label from each folder with more than i copies.
                top = max(counts.values())
                several += sum(1 for i in range(top) if sum(n > i for n in counts.values()) > 1)
                instead += len(occurrences) - top
        return several, instead

    async def _counts(
        self, src: ImapClient, chosen: Sequence[MailboxInfo]
    ) -> dict[bytes, tuple[int, int, tuple[str, ...]]]:
        """(messages, bytes, the folder's FLAGS) of each source folder, after the filters."""
        raws = [m.raw for m in chosen]
        out: dict[bytes, tuple[int, int, tuple[str, ...]]] = {}
        filters = self.options.filters
        if filters.active:
            # UID SEARCH on the source: the server's own date and size semantics.
            for raw in raws:
                info = await src.select(raw, readonly=True)
                uids = await src.uid_search(filters.criteria()) if info.exists else []
                sizes: list[tuple[int, int]] = []
                for chunk in _chunks_by_count(uids, 2000):
                    sizes += await src.fetch_sizes(format_uid_set(chunk))
                out[raw] = (len(sizes), sum(s for _, s in sizes), info.flags)
            return out
        # Counts and sizes: one pipelined STATUS per folder (RFC 8438 SIZE).  A dry run
        # also reads the folders' FLAGS (EXAMINE, in the same round trip) to say which
        # flags the destination cannot store; a real run says it per folder as it copies
        # (FolderResult.unstorable_flags), and saves the server 15-20 ms of EXAMINEs.
        preview = self.options.dry_run
        statuses: dict[bytes, dict[str, int]] | None = None
        infos: dict[bytes, SelectInfo | None] = {}
        if raws and src.has("STATUS=SIZE"):
            infos, statuses = await _gather_all(
                src.select_many(raws, readonly=True) if preview else _nothing(),
                src.status_many(raws, "(MESSAGES SIZE)"),
            )
        elif raws and preview:
            infos = await src.select_many(raws, readonly=True)
        for raw in raws:
            info = infos.get(raw)
            count, size = await self._count(src, raw, statuses)
            out[raw] = (count, size, info.flags if info is not None else ())
        return out

    async def _count(
        self, src: ImapClient, raw: bytes, statuses: dict[bytes, dict[str, int]] | None
    ) -> tuple[int, int]:
        st = statuses.get(raw) if statuses is not None else None
        if st is not None and "MESSAGES" in st and "SIZE" in st:
            return st["MESSAGES"], st["SIZE"]
        info = await src.select(raw, readonly=True)
        if not info.exists:
            return 0, 0
        sizes = await src.fetch_sizes()
        return len(sizes), sum(s for _, s in sizes)

    # ------------------------------------------------------------------ run

    async def run(self) -> list[FolderResult]:
        """Plan, then (unless dry-run) copy and verify every planned folder."""
        effort = retry_policy.Effort(self.options.retries, self.backoff)
        while True:
            try:
                plan = await self._setup()
                break
            except ImapError as exc:
                verdict = retry_policy.classify(exc)
                both = {(ep.host, ep.port) for ep in (self.source, self.dest)}
                if isinstance(exc, HostUnreachable) and not both <= self._reached:
                    raise  # never reached: a wrong host or port, say so at once
                wait = effort.next_wait(verdict)
                if wait is None:
                    raise effort.give_up("planning", exc, verdict) from exc
                await self._pause("planning", exc, verdict, wait, effort)
        if self.options.dry_run:
            return []
        return await self._copy_all(plan)

    async def _pause(
        self,
        what: str,
        exc: BaseException,
        verdict: retry_policy.Verdict,
        seconds: float,
        effort: retry_policy.Effort,
    ) -> None:
        """Say why and wait before the next attempt; a throttled wait shows in progress."""
        self.progress.reconnects += 1
        until = time.time() + seconds
        clock = time.strftime("%H:%M:%S", time.localtime(until))
        if verdict.kind == retry_policy.THROTTLED:
            head = f"{what}: throttled ({verdict.why}): {exc}; waiting {seconds:.1f} s"
        else:
            head = f"{what}: {exc}; retrying in {seconds:.1f} s"
        self.on_event(
            f"{head} (until {clock}; attempt {effort.failures} of {effort.attempts} "
            "without progress)"
        )
        if verdict.kind != retry_policy.THROTTLED:
            await asyncio.sleep(seconds)
            return
        token = object()
        self._throttles[token] = until
        self.progress.throttled_until = max(self._throttles.values())
        try:
            await asyncio.sleep(seconds)
        finally:
            del self._throttles[token]
            self.progress.throttled_until = max(self._throttles.values(), default=None)

    async def _setup(self) -> Plan:
        """One attempt at connecting, planning, and creating and subscribing the
        destination folders (all idempotent)."""
        self._folder_errors = {}
        self._drop_spares()
        src, dst = await self.open_pair()
        # The other workers' connections open while the plan is made; the planning
        # pair itself becomes the first worker's (see _worker).
        extra = (
            []
            if self.options.dry_run
            else [
                asyncio.ensure_future(self.open_pair()) for _ in range(self.options.connections - 1)
            ]
        )
        # Far servers (a slow round trip): more workers, opened while the plan is made.
        # The NOOP goes out before the planning commands, so that its round trip is
        # not also theirs.
        far = (
            None
            if self.options.dry_run
            else asyncio.ensure_future(
                self._far_pairs(
                    src,
                    dst,
                    time.monotonic(),
                    await src.conn.submit("NOOP"),
                    await dst.conn.submit("NOOP"),
                )
            )
        )
        keep = False
        try:
            self.plan = plan = await self.make_plan(src, dst)
            if self.options.dry_run:
                return plan
            dst_subs = self._dst_subscribed
            if dst_subs is None:
                dst_subs = {m.name for m in await dst.list_mailboxes(subscribed=True)}
            # CREATE and SUBSCRIBE pipelined: one round trip each, whatever the folder count.
            # A special folder the destination lacks is created with its RFC 6154
            # attribute when the server offers CREATE-SPECIAL-USE.
            use = {fp.dest_name: fp.create_use for fp in plan.folders if fp.create_use}
            created = [
                (name, raw, await dst.conn.submit("CREATE", quote(raw), *_use_arg(use.get(name))))
                for name, raw in plan.create
            ]
            for name, raw, fut in created:
                r = await fut
                exists = r.tagged.code is not None and r.tagged.code.name == "ALREADYEXISTS"
                if not r.tagged.ok and not exists:
                    # Throttled, unavailable, over quota: not about the name; the
                    # planning is retried or the run stops (policy/retry.py).
                    _per_message(CommandError("CREATE", r.tagged))
                if not r.tagged.ok and not exists and name in use:
                    # e.g. NO [USEATTR] (RFC 6154 section 3): a plain folder then.
                    r = await (await dst.conn.submit("CREATE", quote(raw)))
                    if not r.tagged.ok:
                        _per_message(CommandError("CREATE", r.tagged))
                if r.tagged.ok or (r.tagged.code and r.tagged.code.name == "ALREADYEXISTS"):
                    self.on_event(f"created folder {name!r} on the destination")
                else:
                    await self._create_fallback(dst, plan, name, CommandError("CREATE", r.tagged))
            subs = [
                await dst.conn.submit("SUBSCRIBE", quote(fp.dest_raw))
                for fp in plan.folders
                if fp.source.name not in self._folder_errors
                and fp.subscribed
                and fp.dest_name not in dst_subs
            ]
            for fut in subs:
                _check(await fut, "SUBSCRIBE")
            keep = not (src.conn.closed or dst.conn.closed)
        finally:
            if far is not None:
                if not keep:
                    far.cancel()
                (grown,) = await asyncio.gather(far, return_exceptions=True)
                if isinstance(grown, list):
                    extra += [_done(pair) for pair in grown]
            if extra:
                if not keep:
                    for t in extra:
                        t.cancel()
                done = await asyncio.gather(*extra, return_exceptions=True)
                for pair in done:
                    if isinstance(pair, tuple):
                        if keep:
                            self._spares.append(pair)
                        else:
                            for c in pair:
                                c.conn.abort()
            if keep:
                self._spares.append((src, dst))
            else:
                await src.logout()
                await dst.logout()
        return plan

    async def _far_pairs(
        self,
        src: ImapClient,
        dst: ImapClient,
        sent: float,
        src_noop: asyncio.Future[CommandResult],
        dst_noop: asyncio.Future[CommandResult],
    ) -> list[tuple[ImapClient, ImapClient]]:
        """The round trip to the farther of the two servers (a folder waits on both),
        each the shorter of a NOOP's and of the time its connection took to greet
        (each is at least one round trip; taking both keeps a busy machine's hiccup
        from passing for distance).  When it is
        ``Options.far_rtt`` or more, the byte budget grows to ``far_memory_budget``
        (``far_memory_budget_tls`` over TLS) and the pairs of the extra workers
        (``far_connections``) are opened.  A pair that cannot be opened (a server's
        connection limit...) only means fewer workers."""
        answered: dict[int, float] = {}
        for noop in (src_noop, dst_noop):
            noop.add_done_callback(lambda f: answered.setdefault(id(f), time.monotonic()))
        trips = []
        for client, noop in ((src, src_noop), (dst, dst_noop)):
            _check(await noop, "NOOP")
            trip = answered.get(id(noop), time.monotonic()) - sent
            if client.conn.greeted_in is not None:
                trip = min(trip, client.conn.greeted_in)
            trips.append(trip)
        self.rtt = max(trips)
        opts = self.options
        if self.rtt < opts.far_rtt:
            return []
        tls = src.conn.tls or dst.conn.tls
        self._budget.grow(opts.far_memory_budget_tls if tls else opts.far_memory_budget)
        if opts.far_connections <= opts.connections:
            return []
        tasks = [
            asyncio.ensure_future(self.open_pair())
            for _ in range(opts.far_connections - opts.connections)
        ]
        try:
            await asyncio.wait(tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for t in tasks:
                if not t.cancelled() and t.exception() is None:
                    for c in t.result():
                        c.conn.abort()
            raise
        pairs = [t.result() for t in tasks if t.exception() is None]
        self.on_event(
            f"servers {self.rtt * 1000:.0f} ms away: {opts.connections + len(pairs)} workers"
        )
        return pairs

    async def _copy_all(self, plan: Plan) -> list[FolderResult]:
        """Copy and verify every planned folder with ``Options.connections`` workers."""
        self.progress.phase = "copying"
        # Folders merged into one destination folder go to one worker, one after the
        # other: two workers appending to one folder would race the duplicate check.
        groups: dict[str, list[FolderPlan]] = defaultdict(list)
        for fp in plan.folders:
            groups[_norm_inbox(fp.dest_name)].append(fp)
        queue: asyncio.Queue[list[FolderPlan]] = asyncio.Queue()
        for group in sorted(groups.values(), key=lambda g: -sum(f.size for f in g)):
            # The folder named like the destination first (its flags win, see sync_folder).
            group.sort(key=lambda f: (f.source.name != f.dest_name, f.source.name))
            queue.put_nowait(group)
        # As many workers as connection pairs were opened (more on a far link, _setup).
        workers = max(1, min(max(self.options.connections, len(self._spares)), len(groups)))
        while len(self._spares) > workers:  # fewer folders than connections
            for c in self._spares.pop():
                await c.logout()
        results: dict[str, FolderResult] = {}
        tasks = [asyncio.create_task(self._worker(queue, results)) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            for pair in self._spares:  # more pairs than folders to copy
                for c in pair:
                    await c.logout()
            self._spares = []
            if self._hasher is not None:
                self._hasher.shutdown(wait=True, cancel_futures=True)
                self._hasher = None
            if self.state is not None:
                self.state.flush()
        self.results = [results[f.source.name] for f in plan.folders]
        self.progress.phase = "done"
        return self.results

    async def _worker(
        self, queue: asyncio.Queue[list[FolderPlan]], results: dict[str, FolderResult]
    ) -> None:
        src: ImapClient | None = None
        dst: ImapClient | None = None
        if self._spares:  # opened during planning
            src, dst = self._spares.pop()
        pending: list[FolderPlan] = []  # the rest of a group of merged folders
        try:
            while True:
                if not pending:
                    try:
                        pending = list(queue.get_nowait())
                    except asyncio.QueueEmpty:
                        return
                fp = pending.pop(0)
                effort = retry_policy.Effort(self.options.retries, self.backoff)
                while True:
                    try:
                        src_ok = src is not None and not src.conn.closed
                        dst_ok = dst is not None and not dst.conn.closed
                        if not src_ok and not dst_ok:
                            src, dst = await self.open_pair()
                        elif not src_ok:
                            src = await self.connect(self.source, "source")
                        elif not dst_ok:
                            dst = await self.connect(self.dest, "destination")
                        assert src is not None and dst is not None
                        self.progress.current.add(fp.source.name)
                        self._passes[fp.source.name] = [0, 0, 0]
                        if fp.source.name in self._folder_errors:
                            results[fp.source.name] = self._failed_folder(fp)
                            break
                        try:
                            results[fp.source.name] = await self.sync_folder(src, dst, fp)
                        except FolderError as exc:
                            self._undo_pass(fp)
                            self._folder_errors[fp.source.name] = str(exc)
                            self.on_event(f"{fp.source.name}: {exc}")
                            results[fp.source.name] = self._failed_folder(fp)
                        break
                    except ImapError as exc:
                        # How far this pass got (messages handled): a pass that got
                        # further than all before it is progress (policy/retry.py).
                        reached = self._passes.get(fp.source.name, [0, 0, 0])[0]
                        self._undo_pass(fp)
                        verdict = retry_policy.classify(exc)
                        wait = effort.next_wait(verdict, reached)
                        if wait is None:
                            raise effort.give_up(
                                f"folder {fp.source.name!r}", exc, verdict
                            ) from exc
                        for c in (src, dst):
                            if c is not None:
                                c.conn.abort()
                        src = dst = None
                        await self._pause(fp.source.name, exc, verdict, wait, effort)
                    finally:
                        self.progress.current.discard(fp.source.name)
                self.progress.folders_done += 1
        except asyncio.CancelledError:
            # Cut short (Ctrl-C, a cancelled job): a command may be half written (an
            # APPEND literal), so a LOGOUT could only time out. Drop the connections.
            for c in (src, dst):
                if c is not None:
                    c.conn.abort()
            raise
        finally:
            for c in (src, dst):
                if c is not None:
                    await c.logout()

    # ------------------------------------------------------------------ folder errors

    async def _create_fallback(
        self, dst: ImapClient, plan: Plan, name: str, exc: CommandError
    ) -> None:
        """The destination refused a folder name: try a plain one, else fail the folder."""
        idx = next((i for i, f in enumerate(plan.folders) if f.dest_name == name), None)
        plain = _plain_name(name, plan.dest_namespace.separator)
        taken = {f.dest_name for f in plan.folders}
        # A run before this one may have made the plain folder already: use it, so that a
        # re-run neither makes a second folder nor copies the messages again.
        existing = {m.name for m in await dst.list_mailboxes()} if idx is not None else set()
        for alt in (plain, plain + "_", plain + "_2"):
            if alt == name or alt in taken or idx is None:
                continue
            if alt not in existing:
                try:
                    await dst.create(utf7.encode(alt))
                except CommandError as refused:
                    _per_message(refused)  # a temporary refusal is not about the name
                    continue
            why = f"the destination refused the name {name!r} ({exc.server_text})"
            for i, fp in enumerate(plan.folders):  # every folder merged into it, too
                if fp.dest_name == name:
                    plan.folders[i] = dataclasses.replace(
                        fp, dest_name=alt, dest_raw=utf7.encode(alt), reasons=(*fp.reasons, why)
                    )
            made = "using existing" if alt in existing else "created"
            self.on_event(f"{made} folder {alt!r} on the destination instead of {name!r}")
            return
        if idx is None:
            raise exc
        for fp in plan.folders:
            if fp.dest_name == name:
                self._folder_errors[fp.source.name] = (
                    f"the destination refused to create {name!r}: {exc.server_text}"
                )

    async def _fingerprints(
        self, bodies: Sequence[bytes | None], strong: Sequence[bool]
    ) -> list[bytes | None]:
        """SHA-256 of each body marked ``strong`` (the big ones on a helper thread), the
        XXH3-128 :func:`checksum` of the others.

        hashlib releases the GIL while it hashes a buffer of over 2 kB, so big bodies are
        hashed on the other core while the event loop goes on reading and writing the
        sockets (a quarter of the mover's CPU on large mail would otherwise block the
        loop).  Small bodies are hashed here: for them the thread would mostly trade the
        GIL back and forth.
        """
        out: list[bytes | None] = [None] * len(bodies)
        big: list[int] = []
        big_bytes = 0
        for i, b in enumerate(bodies):
            if b is None:
                continue
            if not strong[i]:
                out[i] = checksum(b)
            elif len(b) >= _HASH_BIG:
                big.append(i)
                big_bytes += len(b)
            else:
                out[i] = fingerprint(b)
        if big and big_bytes < _HASH_OFFLOAD:
            for i in big:
                out[i] = fingerprint(bodies[i])  # type: ignore[arg-type]
        elif big:
            if self._hasher is None:
                self._hasher = ThreadPoolExecutor(1, thread_name_prefix="yippiemove-hash")
            loop = asyncio.get_running_loop()
            fprs = await loop.run_in_executor(
                self._hasher, _fingerprint_all, [bodies[i] for i in big]
            )
            for i, f in zip(big, fprs, strict=True):
                out[i] = f
        return out

    def _failed_folder(self, fp: FolderPlan) -> FolderResult:
        res = FolderResult(fp.source.name, fp.dest_name, source_count=fp.count)
        res.error = self._folder_errors[fp.source.name]
        res.failed = fp.count
        self.progress.failed += fp.count
        self.progress.messages_done += fp.count
        self.progress.bytes_done += fp.size
        return res

    # ------------------------------------------------------------------ progress

    def _advance(self, fp: FolderPlan, size: int, *, failed: bool = False) -> None:
        p = self.progress
        p.messages_done += 1
        p.bytes_done += size
        counts = self._passes.setdefault(fp.source.name, [0, 0, 0])
        counts[0] += 1
        counts[1] += size
        if failed:
            p.failed += 1
            counts[2] += 1

    def folder_progress(self) -> dict[str, tuple[int, int, int]]:
        """(messages, bytes, failed) done so far per source folder in its latest pass.

        A folder that has not started is absent.  For front doors that show progress
        folder by folder (the service's job process).
        """
        return {name: (c[0], c[1], c[2]) for name, c in list(self._passes.items())}

    def _undo_pass(self, fp: FolderPlan) -> None:
        """A folder pass is being retried: take its progress back so it is not counted twice."""
        msgs, size, failed = self._passes.pop(fp.source.name, [0, 0, 0])
        self.progress.messages_done -= msgs
        self.progress.bytes_done -= size
        self.progress.failed -= failed

    # ------------------------------------------------------------------ one folder

    async def _list_source(
        self, src: ImapClient, fp: FolderPlan
    ) -> tuple[SelectInfo, list[MessageMeta]]:
        """The source folder's messages: all, or those the message filters select.

        Filters run as ``UID SEARCH`` on the source (its own date and size semantics);
        the copy and the verify then only see the selected messages, so a destination
        message outside the filter is never touched.
        """
        filters = self.options.filters
        if fp.archived_only:
            # Gmail's All Mail, only the archived messages (policy/gmail.py)
            if self._gmail_src is None:
                raise FolderError("the archive of a Gmail source needs a plan (make_plan)")
            return await self._gmail_src.list_archived(src, fp.source.raw, filters)
        if not filters.active:
            return await src.select_and_list(fp.source.raw, readonly=True)
        info = await src.select(fp.source.raw, readonly=True)
        uids = await src.uid_search(filters.criteria()) if info.exists else []
        metas: list[MessageMeta] = []
        for chunk in _chunks_by_count(uids, 2000):
            metas += await src.fetch_meta(format_uid_set(chunk), message_id=False)
        return info, metas

    def _merged_flags(
        self,
        fp: FolderPlan,
        dinfo: SelectInfo,
        smeta: Sequence[MessageMeta],
        claim: dict[int, int],
        dest_by_uid: dict[int, MessageMeta],
    ) -> Sequence[MessageMeta]:
        """Source messages as the verify should judge them in a merged folder.

        A message that an earlier folder of the merge group (same run, same destination
        folder) already claimed keeps the flags that folder gave it: the first folder of
        the group wins, so re-runs do not set flags back and forth.
        """
        if not fp.merged_with:
            return smeta
        validity, earlier = self._merge_claims.get(_norm_inbox(fp.dest_name), (-1, set()))
        if validity != dinfo.uidvalidity or not earlier:
            return smeta
        out: list[MessageMeta] = []
        for m in smeta:
            duid = claim.get(m.uid)
            d = dest_by_uid.get(duid) if duid is not None and duid in earlier else None
            if d is not None:
                kept = tuple(f for f in d.flags if f.upper() != "\\RECENT")
                m = dataclasses.replace(m, flags=kept)
            out.append(m)
        return out

    def _remember_merge(self, fp: FolderPlan, dinfo: SelectInfo, claim: dict[int, int]) -> None:
        if not fp.merged_with:
            return
        key = _norm_inbox(fp.dest_name)
        validity, seen = self._merge_claims.get(key, (dinfo.uidvalidity, set()))
        if validity != dinfo.uidvalidity:
            seen = set()
        self._merge_claims[key] = (dinfo.uidvalidity, seen | set(claim.values()))

    async def sync_folder(self, src: ImapClient, dst: ImapClient, fp: FolderPlan) -> FolderResult:
        """One idempotent pass over one folder: match, copy what is missing, verify."""
        opts = self.options
        res = FolderResult(fp.source.name, fp.dest_name)
        slist, dlist = await asyncio.gather(
            self._list_source(src, fp),
            dst.select_and_list(fp.dest_raw),
            return_exceptions=True,
        )
        for side, outcome in (("source", slist), ("destination", dlist)):
            if isinstance(outcome, CommandError) and not retry_policy.retryable(outcome):
                if side == "source":
                    raise FolderError(
                        "the source folder cannot be opened (deleted or renamed?): "
                        + outcome.server_text
                    )
                raise FolderError(
                    f"the destination folder {fp.dest_name!r} cannot be opened: "
                    + outcome.server_text
                )
            if isinstance(outcome, BaseException):
                raise outcome
        assert not isinstance(slist, BaseException) and not isinstance(dlist, BaseException)
        sinfo, smeta = slist
        dinfo, dmeta = dlist
        res.source_uidvalidity = sinfo.uidvalidity
        res.dest_uidvalidity = dinfo.uidvalidity
        res.source_count = len(smeta)
        if opts.filters.active:
            res.notes.append(
                f"{len(smeta)} of {sinfo.exists} messages match the filter "
                f"({opts.filters.describe()}); only those are copied and verified"
            )
        self.on_event(f"{fp.source.name} -> {fp.dest_name}: {len(smeta)} messages")

        folder_id = 0
        rows = {}
        if self.state is not None:
            last = self.state.folder(fp.source.name)
            folder_id, valid = self.state.open_folder(
                fp.source.name, sinfo.uidvalidity, fp.dest_name, dinfo.uidvalidity
            )
            if valid:
                rows = self.state.messages(folder_id)
            for note in _recreated(last, sinfo.uidvalidity, fp.dest_name, dinfo.uidvalidity):
                res.notes.append(note)
                self.on_event(f"{fp.source.name}: {note}")

        # --- match: state first, then (size, Message-ID) candidates checked by content
        dest_by_uid = {d.uid: d for d in dmeta}
        claim: dict[int, int] = {}  # source UID -> destination UID
        claimed_dest: set[int] = set()
        outcome_of: dict[int, str] = {}
        #: Source messages this pass (or an earlier one, per the state) appended itself.
        appended: set[int] = set()
        for m in smeta:
            r = rows.get(m.uid)
            if r is None or r.dest_uid is None:
                continue
            if r.outcome not in ("copied", "present", "labelled", "altered"):
                continue
            d = dest_by_uid.get(r.dest_uid)
            # An "altered" message is the destination's changed copy of this one (the
            # verify reports it again): claimed whatever its size, never sent twice.
            size_ok = d is not None and (d.size == m.size or r.outcome == "altered")
            if d is not None and size_ok and d.uid not in claimed_dest:
                claim[m.uid] = d.uid
                claimed_dest.add(d.uid)
                outcome_of[m.uid] = "present"
                if r.outcome == "copied":
                    appended.add(m.uid)
        to_copy = [m for m in smeta if m.uid not in claim]
        ambiguous: set[int] = set()
        candidate_dest: set[int] = set()
        free_dest = [d for d in dmeta if d.uid not in claimed_dest]
        if to_copy and free_dest:
            # Only messages of a size found on the other side can be copies: ask for
            # their Message-IDs (cheap), and hash the remaining candidates' bodies below.
            dsizes = {d.size for d in free_dest}
            ssizes = {m.size for m in to_copy}
            s_cand = [m for m in to_copy if m.size in dsizes]
            d_cand = [d for d in free_dest if d.size in ssizes]
            # On a Gmail destination a message is its bytes *and* its INTERNALDATE
            # (transfer/gmail.py): the same bytes on another date are another message.
            dated = self._gmail_dest is not None and fp.source.name in self._gmail_shared
            if s_cand:
                s_ids = await src.fetch_message_ids([m.uid for m in s_cand])
                d_ids = await dst.fetch_message_ids([d.uid for d in d_cand])
                index: dict[tuple[int, bytes | None, int | None], list[int]] = defaultdict(list)
                for d in d_cand:
                    when = instant(d.internaldate) if dated else None
                    index[(d.size, d_ids.get(d.uid), when)].append(d.uid)
                for m in s_cand:
                    when = instant(m.internaldate) if dated else None
                    key = (m.size, s_ids.get(m.uid), when)
                    if key in index:
                        ambiguous.add(m.uid)
                        candidate_dest.update(index[key])
        pool: dict[tuple[int, bytes], list[int]] = defaultdict(list)
        if candidate_dest:
            self.on_event(
                f"{fp.source.name}: checking {len(candidate_dest)} destination messages "
                "that may already be copies"
            )
            await self._hash_dest(dst, sorted(candidate_dest), pool)

        for m in smeta:
            if m.uid in claim:
                self._advance(fp, m.size)

        # --- copy
        storable = self._storable(dinfo, smeta, res)
        gp = await self._gmail_prepare(dst, fp, dinfo, to_copy)
        try:
            if to_copy:
                await self._copy(
                    src,
                    dst,
                    fp,
                    folder_id,
                    to_copy,
                    ambiguous,
                    pool,
                    storable,
                    res,
                    claim,
                    outcome_of,
                )
            if gp is not None:
                await self._gmail_label(
                    src, dst, fp, gp, dinfo, folder_id, storable, res, claim, outcome_of
                )
        finally:
            if gp is not None and self._gmail_dest is not None:
                self._gmail_dest.end(gp)

        # --- verify
        if opts.verify:
            vmeta = self._merged_flags(fp, dinfo, smeta, claim, dest_by_uid)
            if self._gmail_dest is not None and fp.source.name in self._gmail_shared:
                # On Gmail flags belong to the message, which other folders may share:
                # only the folder that appended it sets them (policy/gmail.py).
                appended |= {u for u, o in outcome_of.items() if o == "copied"}
                shared = {d for u, d in claim.items() if u not in appended}
                if shared:
                    vmeta = await self._gmail_flags(dst, vmeta, claim, shared)
            await self._verify(src, dst, vmeta, claim, storable, res)
        self._remember_merge(fp, dinfo, claim)
        failed_uids = {f.uid for f in res.failures}
        for m in smeta:
            if m.uid in failed_uids:
                res.messages.append((m.uid, res.altered.get(m.uid), "failed"))
            else:
                res.messages.append((m.uid, claim.get(m.uid), outcome_of.get(m.uid, "missing")))
        res.copied = sum(1 for _, _, o in res.messages if o == "copied")
        res.present = sum(1 for _, _, o in res.messages if o == "present")
        res.labelled = sum(1 for _, _, o in res.messages if o == "labelled")
        res.failed = len(res.failures)
        if self.state is not None:
            state = self.state
            for f in res.failures:
                altered_to = res.altered.get(f.uid)
                state.record(
                    folder_id,
                    f.uid,
                    f.size,
                    f.message_id.encode() if f.message_id else None,
                    None,
                    altered_to,
                    "failed" if altered_to is None else "altered",
                    f.reason,
                )
            state.flush()
        return res

    # ------------------------------------------------------------------ Gmail destination

    async def _gmail_prepare(
        self, dst: ImapClient, fp: FolderPlan, dinfo: SelectInfo, to_copy: Sequence[MessageMeta]
    ) -> DestPass | None:
        """A pass into a Gmail destination folder that shares messages with others
        (transfer/gmail.py): learn what is there and in All Mail before copying."""
        gd = self._gmail_dest
        if gd is None or not to_copy or fp.source.name not in self._gmail_shared:
            return None
        return await gd.prepare(
            dst, fp.source.name, fp.dest_raw, fp.dest_name, to_copy, empty=not dinfo.exists
        )

    async def _gmail_label(
        self,
        src: ImapClient,
        dst: ImapClient,
        fp: FolderPlan,
        gp: DestPass,
        dinfo: SelectInfo,
        folder_id: int,
        storable: Callable[[str], bool],
        res: FolderResult,
        claim: dict[int, int],
        outcome_of: dict[int, str],
    ) -> None:
        """After the pass's APPENDs: publish them, add this folder's label to the messages
        the copy deferred, and append those that could not be labelled after all."""
        gd = self._gmail_dest
        assert gd is not None
        state = self.state

        def on_labelled(m: MessageMeta, fpr: bytes, duid: int) -> None:
            outcome_of[m.uid] = "labelled"
            self._advance(fp, m.size)
            if state is not None:
                state.record(folder_id, m.uid, m.size, m.message_id, fpr, duid, "labelled")

        await gd.publish(dst, gp, dinfo, claim, outcome_of)
        if gp.deferred:
            self.on_event(
                f"{fp.source.name}: adding the label {fp.dest_name!r} to {len(gp.deferred)} "
                "messages stored from other folders"
            )
        leftovers = await gd.label(dst, gp, claim, on_labelled)
        if leftovers:
            self.on_event(
                f"{fp.source.name}: {len(leftovers)} messages could not be labelled; appending them"
            )
            gp.append_all = True
            await self._copy(
                src,
                dst,
                fp,
                folder_id,
                leftovers,
                set(),
                defaultdict(list),
                storable,
                res,
                claim,
                outcome_of,
            )
            await gd.publish(dst, gp, dinfo, claim, outcome_of)

    async def _gmail_flags(
        self,
        dst: ImapClient,
        smeta: Sequence[MessageMeta],
        claim: dict[int, int],
        shared: set[int],
    ) -> list[MessageMeta]:
        """Source messages as the verify should judge them on Gmail: a message this
        folder did not append keeps the flags it has (the appending folder's)."""
        have = {
            d.uid: d.flags
            for d in await dst.fetch_meta(format_uid_set(sorted(shared)), message_id=False)
        }
        out: list[MessageMeta] = []
        for m in smeta:
            duid = claim.get(m.uid)
            if duid in shared and duid in have:
                m = dataclasses.replace(m, flags=have[duid])
            out.append(m)
        return out

    def _storable(
        self, dinfo: SelectInfo, smeta: Sequence[MessageMeta], res: FolderResult
    ) -> Callable[[str], bool]:
        cache: dict[str, bool] = {}

        def ok(flag: str) -> bool:
            v = cache.get(flag)
            if v is None:
                v = cache[flag] = dinfo.can_store(flag)
            return v

        for m in smeta:
            for f in m.flags:
                if not ok(f):
                    res.unstorable_flags.add(f)
        if res.unstorable_flags:
            res.notes.append(
                "the destination cannot store these flags/keywords: "
                + ", ".join(sorted(res.unstorable_flags))
            )
        return ok

    async def _hash_dest(
        self, dst: ImapClient, uids: list[int], pool: dict[tuple[int, bytes], list[int]]
    ) -> None:
        """Fingerprint destination messages into ``pool``: (size, SHA-256) -> UIDs."""
        for uid, key in sorted((await self._read_fingerprints(dst, uids)).items()):
            pool[key].append(uid)

    async def _copy(
        self,
        src: ImapClient,
        dst: ImapClient,
        fp: FolderPlan,
        folder_id: int,
        to_copy: list[MessageMeta],
        ambiguous: set[int],
        pool: dict[tuple[int, bytes], list[int]],
        storable: Callable[[str], bool],
        res: FolderResult,
        claim: dict[int, int],
        outcome_of: dict[int, str],
    ) -> None:
        opts = self.options
        state = self.state
        fetch_q: asyncio.Queue[
            tuple[list[MessageMeta], dict[int, bytes], asyncio.Future[CommandResult]]
            | object
            | None
        ] = asyncio.Queue(maxsize=max(1, opts.fetch_window - 1))

        # One dict for all batches, keyed by UID: Dovecot may interleave the output of
        # pipelined FETCH commands, so a body is matched by its UID, not by its command.
        got: dict[int, bytes] = {}

        budget = self._budget
        held = 0  # bytes of this pass counted in the shared budget

        def release_one(size: int) -> None:
            nonlocal held
            n = min(size, held)
            if n:
                held -= n
                budget.release(n)

        async def producer() -> None:
            nonlocal held
            for batch in _batches(to_copy, opts.fetch_batch_bytes, opts.fetch_batch_messages):
                need = sum(m.size for m in batch)
                if budget.would_wait(need):
                    # Bodies waiting in this pass's unsent APPEND group hold budget too:
                    # have them sent before waiting, or every worker could wait on the
                    # others' unsent groups for ever.
                    await fetch_q.put(_FLUSH)
                # Not ``held += await ...``: that reads ``held`` before the wait, and
                # the APPENDs answered meanwhile (release_one) would be counted back in.
                taken = await budget.acquire(need)
                held += taken
                fut = await src.submit_fetch_bodies([m.uid for m in batch], got.__setitem__)
                await fetch_q.put((batch, got, fut))
            await fetch_q.put(None)

        append_sem = asyncio.Semaphore(opts.append_window)
        append_tasks: set[asyncio.Task[None]] = set()
        errors: list[BaseException] = []

        def record(m: MessageMeta, fpr: bytes | None, dest_uid: int | None, outcome: str) -> None:
            if fpr is not None and opts.verify_content:
                self._source_fprs[(fp.source.name, m.uid)] = fpr
            if dest_uid is not None:
                claim[m.uid] = dest_uid
            outcome_of[m.uid] = outcome
            self._advance(fp, m.size)
            release_one(m.size)
            if state is not None:
                state.record(folder_id, m.uid, m.size, m.message_id, fpr, dest_uid, outcome)

        def fail(m: MessageMeta, reason: str, body: bytes | None = None) -> None:
            mid = m.message_id or (message_id_in(body) if body is not None else None)
            failure = Failure(
                fp.source.name,
                m.uid,
                m.size,
                mid.decode("utf-8", "replace") if mid else None,
                reason,
            )
            res.failures.append(failure)
            release_one(m.size)
            live = self.progress.failures
            live.append(failure.as_dict())
            if len(live) > 200:
                del live[:-200]
            outcome_of[m.uid] = "failed"
            self._advance(fp, m.size, failed=True)
            self.on_event(f"{fp.source.name}: UID {m.uid} failed: {reason}")

        async def finish_append(
            fut: asyncio.Future[CommandResult],
            group: list[tuple[MessageMeta, AppendItem, bytes]],
        ) -> None:
            try:
                r = await fut
                if r.tagged.ok:
                    au = r.tagged.appenduid()
                    uids: Sequence[int | None] = (
                        au.uids
                        if au is not None and len(au.uids) == len(group)
                        else [None] * len(group)
                    )
                    for (m, item, fpr), duid in zip(group, uids, strict=True):
                        record(m, fpr, duid, "copied")
                        res.bytes_copied += len(item.body)
                    return
                _per_message(CommandError("APPEND", r.tagged))
                if len(group) == 1:
                    m, item, _ = group[0]
                    fail(
                        m,
                        "destination refused it: " + CommandError("APPEND", r.tagged).server_text,
                        item.body,
                    )
                    return
                # MULTIAPPEND is all-or-nothing (RFC 3502): find the refused one(s).
                for m, item, fpr in group:
                    single = await dst.submit_append(fp.dest_raw, [item])
                    r1 = await single
                    if r1.tagged.ok:
                        au = r1.tagged.appenduid()
                        record(m, fpr, au.uids[0] if au and au.uids else None, "copied")
                        res.bytes_copied += len(item.body)
                    else:
                        _per_message(CommandError("APPEND", r1.tagged))
                        fail(
                            m,
                            "destination refused it: "
                            + CommandError("APPEND", r1.tagged).server_text,
                            item.body,
                        )
            except BaseException as exc:
                errors.append(exc)
            finally:
                append_sem.release()

        group: list[tuple[MessageMeta, AppendItem, bytes]] = []
        group_bytes = 0
        # SHA-256 where a decision compares it: possible copies on the destination (the
        # ``ambiguous`` ones), a Gmail destination (one copy per message), the content
        # check; the rest only needs the state's checksum.
        all_strong = self._gmail_dest is not None or opts.verify_content
        multi = dst.has("MULTIAPPEND")
        max_group = opts.append_batch_messages if multi else 1
        if multi and len(to_copy) >= _BIG_FOLDER:
            # Dovecot's work per MULTIAPPEND grows with the folder: into a folder of
            # 100,000 messages, groups of 1,024 cost it a third less CPU than groups of
            # 256 (bench/scale.py, docs/benchmarks.md "Scale").
            max_group = max(max_group, _BIG_FOLDER_GROUP)
        append_limit, too_large = _size_limit(dst.capabilities, opts)
        if append_limit is not None:
            # Known too large from its size: reported now, never fetched nor retried.
            big = [m for m in to_copy if m.size > append_limit and m.uid not in ambiguous]
            ids = await src.fetch_message_ids([m.uid for m in big]) if big else {}
            for m in big:
                m = dataclasses.replace(m, message_id=m.message_id or ids.get(m.uid))
                fail(m, f"it is larger ({m.size} bytes) than {too_large}")
            to_copy = [m for m in to_copy if m.size <= append_limit or m.uid in ambiguous]

        async def flush_group() -> None:
            nonlocal group, group_bytes
            if not group:
                return
            g, group, group_bytes = group, [], 0
            await append_sem.acquire()
            try:
                fut = await dst.submit_append(fp.dest_raw, [it for _, it, _ in g])
            except BaseException:
                append_sem.release()
                raise
            t = asyncio.create_task(finish_append(fut, g))
            append_tasks.add(t)
            t.add_done_callback(append_tasks.discard)

        prod = asyncio.create_task(producer())
        try:
            while True:
                entry = await fetch_q.get()
                if entry is None:
                    break
                if entry is _FLUSH:
                    await flush_group()
                    continue
                assert isinstance(entry, tuple)
                batch, got, fut = entry
                fres = await fut
                if errors:
                    raise errors[0]
                if not fres.tagged.ok:
                    _per_message(CommandError("UID FETCH", fres.tagged))
                bodies = [got.pop(m.uid, None) for m in batch]
                fprs = await self._fingerprints(
                    bodies, [all_strong or m.uid in ambiguous for m in batch]
                )
                for m, body, fpr in zip(batch, bodies, fprs, strict=True):
                    if body is None:
                        why = "it disappeared from the source during the transfer (expunged)"
                        if not fres.tagged.ok:
                            why = (
                                "the source refused to send it: "
                                + CommandError("UID FETCH", fres.tagged).server_text
                            )
                        fail(m, why)
                        continue
                    assert fpr is not None
                    if m.uid in ambiguous:
                        cands = pool.get((len(body), fpr))
                        if cands:
                            record(m, fpr, cands.pop(0), "present")
                            continue
                    if append_limit is not None and len(body) > append_limit:
                        fail(m, f"it is larger ({len(body)} bytes) than {too_large}", body)
                        continue
                    # --- Gmail destination (transfer/gmail.py): a message another folder
                    # stores already gets this folder's label after the APPENDs instead.
                    gd = self._gmail_dest
                    if gd is not None and gd.label_instead(fp.source.name, m, fpr):
                        release_one(m.size)
                        continue
                    flags = tuple(f for f in m.flags if storable(f))
                    item = AppendItem(body, flags, m.internaldate)
                    group.append((m, item, fpr))
                    group_bytes += len(body)
                    if len(group) >= max_group or group_bytes >= opts.append_batch_bytes:
                        await flush_group()
                # Drop this batch's references before waiting for the next one: the
                # budget is given back when the APPEND is answered, and a body still
                # held here would be memory the budget no longer counts (measured: ~5 MB
                # per worker, 6 workers on a far link went 72 -> 121 MB).
                bodies = fprs = []
                body = item = None  # type: ignore[assignment]
            await flush_group()
            while append_tasks:
                await asyncio.wait(set(append_tasks))
            if errors:
                raise errors[0]
        finally:
            prod.cancel()
            await asyncio.gather(prod, return_exceptions=True)
            for t in list(append_tasks):
                t.cancel()
            if held:
                budget.release(held)
                held = 0

    async def _verify(
        self,
        src: ImapClient,
        dst: ImapClient,
        smeta: Sequence[MessageMeta],
        claim: dict[int, int],
        storable: Callable[[str], bool],
        res: FolderResult,
    ) -> None:
        """Check each source message against its own destination message.

        The destination's metadata is fetched for the claimed UIDs, a chunk of source
        messages at a time, so a folder of 100,000 messages is never held twice over
        (only a server without UIDPLUS needs the whole listing, to match by Message-ID).
        """
        failed = {f.uid for f in res.failures}
        unmapped = [m for m in smeta if m.uid not in claim and m.uid not in failed]
        by_uid: dict[int, MessageMeta] | None = None
        if unmapped:
            _info, dmeta = await dst.select_and_list(dst.selected or b"INBOX")
            by_uid = {d.uid: d for d in dmeta}
            # No APPENDUID (server without UIDPLUS): match by (size, Message-ID), in order.
            taken = set(claim.values())
            free = [d for d in dmeta if d.uid not in taken]
            s_ids = await src.fetch_message_ids([m.uid for m in unmapped])
            d_ids = await dst.fetch_message_ids([d.uid for d in free]) if free else {}
            index: dict[tuple[int, bytes | None], list[int]] = defaultdict(list)
            for d in free:
                index[(d.size, d_ids.get(d.uid))].append(d.uid)
            for m in unmapped:
                lst = index.get((m.size, s_ids.get(m.uid)))
                if lst:
                    claim[m.uid] = lst.pop(0)
            del dmeta, free, index
        to_read: list[tuple[MessageMeta, int]] = []  # for verify_content
        for start in range(0, len(smeta), _VERIFY_CHUNK):
            chunk = smeta[start : start + _VERIFY_CHUNK]
            if by_uid is None:
                want_uids = sorted(
                    claim[m.uid] for m in chunk if m.uid in claim and m.uid not in failed
                )
                if start == 0:
                    # A fresh view after the APPENDs, pipelined with the first fetch:
                    # one round trip (it counts on a WAN link, once per folder).
                    dmeta = await dst.reselect_and_fetch_meta(
                        format_uid_set(want_uids) if want_uids else None
                    )
                elif want_uids:
                    dmeta = await dst.fetch_meta(format_uid_set(want_uids), message_id=False)
                else:
                    dmeta = []
                here = {d.uid: d for d in dmeta}
            else:
                here = by_uid
            await self._verify_chunk(dst, chunk, claim, here, failed, storable, res, to_read)
        if to_read:
            await self._verify_content(src, dst, to_read, res)

    async def _verify_chunk(
        self,
        dst: ImapClient,
        smeta: Sequence[MessageMeta],
        claim: dict[int, int],
        by_uid: dict[int, MessageMeta],
        failed: set[int],
        storable: Callable[[str], bool],
        res: FolderResult,
        to_read: list[tuple[MessageMeta, int]],
    ) -> None:
        for m in smeta:
            if m.uid in failed:
                continue
            duid = claim.get(m.uid)
            d = by_uid.get(duid) if duid is not None else None
            if d is None:
                res.failures.append(
                    Failure(
                        res.source,
                        m.uid,
                        m.size,
                        _mid(m),
                        "not found on the destination after copying",
                    )
                )
                continue
            if d.size != m.size:
                res.altered[m.uid] = d.uid
                res.failures.append(
                    Failure(
                        res.source,
                        m.uid,
                        m.size,
                        _mid(m),
                        f"destination UID {d.uid} has {d.size} bytes, the source {m.size}",
                    )
                )
                continue
            want = {f.upper(): f for f in m.flags if storable(f)}
            have = {f.upper() for f in d.flags if f.upper() != "\\RECENT"}
            if set(want) != have:
                await dst.store_flags(d.uid, list(want.values()))
                res.flags_fixed += 1
            if not same_instant(d.internaldate, m.internaldate):
                res.notes.append(
                    f"UID {m.uid}: destination INTERNALDATE {d.internaldate.decode()} differs "
                    f"from the source's {m.internaldate.decode()} (a stored message's "
                    "INTERNALDATE cannot be changed over IMAP)"
                )
            res.verified += 1
            if self.options.verify_content:
                to_read.append((m, d.uid))

    async def _read_fingerprints(
        self, client: ImapClient, uids: Sequence[int]
    ) -> dict[int, tuple[int, bytes]]:
        """(size, SHA-256) of the selected folder's messages ``uids``, by UID: bodies are
        fetched in pipelined chunks, hashed, then dropped."""
        out: dict[int, tuple[int, bytes]] = {}

        def on_body(uid: int, body: bytes) -> None:
            out[uid] = (len(body), fingerprint(body))

        futs = []
        for chunk in _chunks_by_count(sorted(uids), 200):
            futs.append(await client.submit_fetch_bodies(chunk, on_body))
            if len(futs) >= self.options.fetch_window:
                _check(await futs.pop(0), "UID FETCH")
        for f in futs:
            _check(await f, "UID FETCH")
        return out

    async def _verify_content(
        self,
        src: ImapClient,
        dst: ImapClient,
        pairs: Sequence[tuple[MessageMeta, int]],
        res: FolderResult,
    ) -> None:
        """Read the destination's bytes back and compare them with the source's."""
        known = {uid: f for (folder, uid), f in self._source_fprs.items() if folder == res.source}
        for uid in known:
            del self._source_fprs[(res.source, uid)]
        src_fprs = await self._read_fingerprints(
            src, [m.uid for m, _ in pairs if m.uid not in known]
        )
        dst_fprs = await self._read_fingerprints(dst, [duid for _, duid in pairs])
        for m, duid in pairs:
            read = src_fprs.get(m.uid)
            want = known.get(m.uid) or (read[1] if read else None)
            have = dst_fprs[duid][1] if duid in dst_fprs else None
            if want is None or have is None:
                side = "source" if want is None else "destination"
                why = f"could not be read back from the {side} to compare its bytes"
            elif want != have:
                res.altered[m.uid] = duid
                why = (
                    f"destination UID {duid} holds other bytes than the source's (same size, "
                    "different SHA-256): the destination server changed the message"
                )
            else:
                res.content_verified += 1
                continue
            res.verified -= 1
            res.failures.append(Failure(res.source, m.uid, m.size, _mid(m), why))


def _size_limit(caps: frozenset[str], opts: Options) -> tuple[int | None, str]:
    """The destination's message size limit and how to name it: the smaller of its
    APPENDLIMIT and ``Options.max_message_size`` (a provider preset's figure)."""
    limits: list[tuple[int, str]] = []
    announced = _append_limit(caps)
    if announced is not None:
        limits.append((announced, f"the destination accepts (APPENDLIMIT={announced})"))
    if opts.max_message_size is not None:
        n = opts.max_message_size
        limits.append((n, opts.max_message_size_label or f"the maximum message size ({n} bytes)"))
    return min(limits) if limits else (None, "")


def _append_limit(caps: frozenset[str]) -> int | None:
    """The destination's message size limit from APPENDLIMIT=N (RFC 7889), if announced."""
    for cap in caps:
        if cap.startswith("APPENDLIMIT="):
            try:
                return int(cap.split("=", 1)[1])
            except ValueError:
                return None
    return None


def _recreated(
    last: FolderRow | None, source_validity: int, dest_name: str, dest_validity: int
) -> list[str]:
    """Notes for a folder deleted and made again since the state file last saw it (a
    new UIDVALIDITY): its old UIDs mean nothing now, so its messages are matched on the
    destination by content (size, Message-ID, SHA-256), never appended twice."""
    out: list[str] = []
    if last is not None and last.source_uidvalidity not in (None, source_validity):
        out.append(
            f"the source folder was recreated since the last run (UIDVALIDITY "
            f"{last.source_uidvalidity} -> {source_validity}): its messages were matched "
            "on the destination by content, not by UID"
        )
    if (
        last is not None
        and last.dest_name == dest_name
        and last.dest_uidvalidity not in (None, dest_validity)
    ):
        out.append(
            f"the destination folder was recreated since the last run (UIDVALIDITY "
            f"{last.dest_uidvalidity} -> {dest_validity}): its messages were matched by "
            "content, not by UID"
        )
    return out


def _mid(m: MessageMeta) -> str | None:
    return m.message_id.decode("utf-8", "replace") if m.message_id else None


def _per_message(refusal: CommandError) -> None:
    """A refused APPEND or UID FETCH fails its message(s) (a refused CREATE: that folder
    name), and the rest goes on -- unless the answer is about the connection or the
    account (throttled, unavailable, over quota: policy/retry.py); then it is raised, to
    retry the pass or the planning, or to stop the transfer."""
    if retry_policy.classify(refusal).kind != retry_policy.MESSAGE:
        raise refusal


def _check(res: CommandResult, what: str) -> None:
    if not res.tagged.ok:
        raise CommandError(what, res.tagged)


def _batches(
    msgs: Sequence[MessageMeta], max_bytes: int, max_count: int
) -> Iterator[list[MessageMeta]]:
    batch: list[MessageMeta] = []
    size = 0
    for m in msgs:
        if batch and (size + m.size > max_bytes or len(batch) >= max_count):
            yield batch
            batch, size = [], 0
        batch.append(m)
        size += m.size
    if batch:
        yield batch


def _chunks_by_count(seq: Sequence[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(seq), n):
        yield list(seq[i : i + n])


async def _nothing() -> dict[bytes, SelectInfo | None]:
    return {}


def _done(value: Any) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


async def _gather_all(*aws: Awaitable[Any]) -> list[Any]:
    """``asyncio.gather`` that, when one fails, cancels and waits for the others before
    raising the first error (no orphaned command keeps a connection busy)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _list_with_special_use(client: ImapClient) -> list[MailboxInfo]:
    """LIST, with RFC 6154 attributes even from a server that only gives them when asked
    (LIST-EXTENDED ``RETURN (SPECIAL-USE)``, RFC 5258); Dovecot gives them in plain LIST."""
    boxes = await client.list_mailboxes()
    if any(m.special_use for m in boxes) or not (
        client.has("SPECIAL-USE") and client.has("LIST-EXTENDED")
    ):
        return boxes
    try:
        marked = await client.list_mailboxes(special_use=True)
    except CommandError as exc:
        if retry_policy.retryable(exc):
            raise  # a temporary refusal: plan again rather than without special folders
        return boxes
    attrs = {m.raw: m.special_use for m in marked}
    return [
        dataclasses.replace(m, flags=m.flags | attrs[m.raw]) if attrs.get(m.raw) else m
        for m in boxes
    ]


def _use_arg(attribute: str | None) -> tuple[bytes, ...]:
    """CREATE's ``(USE (\\Sent))`` parameter (RFC 6154 section 3), or nothing."""
    return (b"(USE (" + attribute.encode("ascii") + b"))",) if attribute else ()


def _norm_inbox(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1); other names are not."""
    if name.upper() == "INBOX":
        return "INBOX"
    return name


def select_folders(
    boxes: Sequence[MailboxInfo],
    include: Sequence[str],
    exclude: Sequence[str],
    namespace: folder_policy.Namespace | None = None,
) -> list[MailboxInfo]:
    """Apply --folder/--exclude.

    A pattern matches a folder by its exact name, as a parent (``Archive`` matches
    ``Archive/2019`` with the server's separator) or as a shell glob (``Archive/*``).
    INBOX matches case-insensitively.  With the source's ``namespace``, a pattern also
    matches the folder's path written as the folder rules write it (policy/rules.py:
    relative to the personal namespace, "/" between components), so ``Archive/2019``
    matches "INBOX.Archive.2019" on a Cyrus-style server.  A --folder pattern that
    matches nothing is an error.
    """

    def logical(name: str) -> str | None:
        if namespace is None:
            return None
        try:
            return "/".join(folder_policy.split_name(name, namespace))
        except ValueError:
            return None

    paths = {m.name: logical(m.name) for m in boxes}

    def matches(pattern: str, m: MailboxInfo) -> bool:
        name = m.name
        if _norm_inbox(pattern) == _norm_inbox(name):
            return True
        sep = m.separator
        if sep and name.startswith(pattern + sep):
            return True
        if pattern.upper().startswith("INBOX" + (sep or "")) and sep:
            rest = pattern[5:]
            if name.upper().startswith("INBOX") and name[5:].startswith(rest):
                return True
        glob = any(ch in pattern for ch in "*?[")
        if glob and fnmatch.fnmatchcase(name, pattern):
            return True
        path = paths.get(name)
        if path is None or path == name:
            return False
        head = pattern.partition("/")[0]
        pat = "INBOX" + pattern[5:] if head.upper() == "INBOX" else pattern
        return (
            path == pat or path.startswith(pat + "/") or (glob and fnmatch.fnmatchcase(path, pat))
        )

    chosen = list(boxes)
    if include:
        unknown = [p for p in include if not any(matches(p, m) for m in boxes)]
        if unknown:
            names = ", ".join(sorted(m.name for m in boxes)) or "(none)"
            raise PlanError(
                "no source folder matches --folder "
                + ", ".join(repr(u) for u in unknown)
                + f"; the source has: {names}"
            )
        chosen = [m for m in boxes if any(matches(p, m) for p in include)]
    if exclude:
        chosen = [m for m in chosen if not any(matches(p, m) for p in exclude)]
    return chosen
