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

A folder pass is idempotent, so a transient failure (dropped connection, timeout) is
handled by reconnecting and running the pass again, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import hashlib
import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

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
from ..imap.errors import CommandError, ImapError
from ..imap.protocol import format_uid_set, quote
from ..policy import folders as folder_policy
from ..policy import rules as rule_policy
from ..policy.special import Box
from .dates import same_instant
from .model import Endpoint, Failure, FolderPlan, FolderResult, Options, Plan, Progress
from .state import State

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
    """Content fingerprint of a message's exact bytes (SHA-256: fast with SHA-NI)."""
    return hashlib.sha256(body).digest()


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
        #: Merged destination folder -> (its UIDVALIDITY, destination UIDs the folders
        #: merged into it claimed so far in this run); see _merged_flags.
        self._merge_claims: dict[str, tuple[int, set[int]]] = {}

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
        try:
            await conn.login(ep.user, ep.password, allow_insecure=ep.allow_insecure_auth)
        except BaseException:
            conn.abort()
            raise
        return ImapClient(conn)

    # ------------------------------------------------------------------ plan

    async def make_plan(self, src: ImapClient, dst: ImapClient) -> Plan:
        """List both sides, choose and place the source folders (policy/rules.py: rules,
        special folders, namespaces), count what the message filters select and find
        the flags each destination folder cannot keep."""
        self.progress.phase = "planning"
        opts = self.options
        src_ns = await src.namespace()
        dst_ns = await dst.namespace()
        src_boxes = await _list_with_special_use(src)
        src_subs = {m.name for m in await src.list_mailboxes(subscribed=True)}
        dst_boxes = await _list_with_special_use(dst)
        dst_names = {_norm_inbox(m.name): m for m in dst_boxes}

        # Separators: each LIST answer names its own; the namespace's is the default.
        src_pol = folder_policy.Namespace(src_ns.prefix, src_ns.separator)
        dst_pol = folder_policy.Namespace(dst_ns.prefix, dst_ns.separator)
        selectable = [m for m in src_boxes if m.selectable]
        skipped = [(m.name, "not selectable (\\Noselect)") for m in src_boxes if not m.selectable]
        chosen = select_folders(selectable, opts.include, opts.exclude, src_pol)
        for m in selectable:
            if m not in chosen:
                skipped.append((m.name, "excluded by --folder/--exclude"))

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

        counts = await self._counts(src, chosen)
        # What the destination folders can store: PERMANENTFLAGS needs SELECT (EXAMINE
        # answers PERMANENTFLAGS ()); a folder still to be created is judged by INBOX.
        targets = {_norm_inbox(p.dest) for p in placements}
        dst_raws = sorted({dst_names[k].raw for k in targets if k in dst_names} | {b"INBOX"})
        dst_infos = await dst.select_many(dst_raws) if chosen else {}
        plans: list[FolderPlan] = []
        create: list[tuple[str, bytes]] = []
        planned_create: set[str] = set()
        for m in chosen:
            pl = by_source[m.name]
            dest_name = pl.dest
            key = _norm_inbox(dest_name)
            exists = key in dst_names
            # Parents are left to the server (RFC 3501 6.3.3: CREATE makes superiors),
            # so a source \\Noselect parent does not become a real folder here.
            if not exists and key not in planned_create:
                planned_create.add(key)
                create.append((dest_name, utf7.encode(dest_name)))
            count, size, src_flags = counts[m.raw]
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
                )
            )
        plan = Plan(src_ns, dst_ns, plans, create, skipped, opts.rules, opts.filters)
        self.progress.folders_total = len(plans)
        self.progress.messages_total = plan.total_messages
        self.progress.bytes_total = plan.total_bytes
        return plan

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
        infos = await src.select_many(raws, readonly=True) if raws else {}
        # Counts and sizes: one pipelined STATUS per folder (RFC 8438 SIZE).
        statuses: dict[bytes, dict[str, int]] | None = None
        if src.has("STATUS=SIZE") and raws:
            statuses = await src.status_many(raws, "(MESSAGES SIZE)")
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
        src_t = asyncio.ensure_future(self.connect(self.source, "source"))
        dst_t = asyncio.ensure_future(self.connect(self.dest, "destination"))
        await asyncio.wait({src_t, dst_t}, return_when=asyncio.ALL_COMPLETED)
        if src_t.exception() is not None or dst_t.exception() is not None:
            for t in (src_t, dst_t):
                if t.exception() is None:
                    await t.result().logout()
            exc = src_t.exception() or dst_t.exception()
            assert exc is not None
            raise exc
        src, dst = src_t.result(), dst_t.result()
        try:
            self.plan = plan = await self.make_plan(src, dst)
            if self.options.dry_run:
                return []
            self.progress.phase = "copying"
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
                if not r.tagged.ok and not exists and name in use:
                    # e.g. NO [USEATTR] (RFC 6154 section 3): a plain folder then.
                    r = await (await dst.conn.submit("CREATE", quote(raw)))
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
        finally:
            await src.logout()
            await dst.logout()

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
        workers = max(1, min(self.options.connections, len(groups)))
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
        pending: list[FolderPlan] = []  # the rest of a group of merged folders
        try:
            while True:
                if not pending:
                    try:
                        pending = list(queue.get_nowait())
                    except asyncio.QueueEmpty:
                        return
                fp = pending.pop(0)
                attempt = 0
                while True:
                    try:
                        if src is None or src.conn.closed:
                            src = await self.connect(self.source, "source")
                        if dst is None or dst.conn.closed:
                            dst = await self.connect(self.dest, "destination")
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
                        self._undo_pass(fp)
                        if not exc.transient or attempt >= self.options.retries:
                            raise
                        attempt += 1
                        delay = min(30.0, 0.5 * 2**attempt) * (0.5 + random.random())
                        self.on_event(
                            f"{fp.source.name}: {exc}; retrying in {delay:.1f} s "
                            f"(attempt {attempt} of {self.options.retries})"
                        )
                        for c in (src, dst):
                            if c is not None:
                                c.conn.abort()
                        src = dst = None
                        await asyncio.sleep(delay)
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
                except CommandError:
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
            if isinstance(outcome, CommandError) and not outcome.transient:
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
            folder_id, valid = self.state.open_folder(
                fp.source.name, sinfo.uidvalidity, fp.dest_name, dinfo.uidvalidity
            )
            if valid:
                rows = self.state.messages(folder_id)

        # --- match: state first, then (size, Message-ID) candidates checked by content
        dest_by_uid = {d.uid: d for d in dmeta}
        claim: dict[int, int] = {}  # source UID -> destination UID
        claimed_dest: set[int] = set()
        outcome_of: dict[int, str] = {}
        for m in smeta:
            r = rows.get(m.uid)
            if r is None or r.dest_uid is None or r.outcome not in ("copied", "present"):
                continue
            d = dest_by_uid.get(r.dest_uid)
            if d is not None and d.size == m.size and d.uid not in claimed_dest:
                claim[m.uid] = d.uid
                claimed_dest.add(d.uid)
                outcome_of[m.uid] = "present"
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
            if s_cand:
                s_ids = await src.fetch_message_ids([m.uid for m in s_cand])
                d_ids = await dst.fetch_message_ids([d.uid for d in d_cand])
                index: dict[tuple[int, bytes | None], list[int]] = defaultdict(list)
                for d in d_cand:
                    index[(d.size, d_ids.get(d.uid))].append(d.uid)
                for m in s_cand:
                    key = (m.size, s_ids.get(m.uid))
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
        if to_copy:
            await self._copy(
                src, dst, fp, folder_id, to_copy, ambiguous, pool, storable, res, claim, outcome_of
            )

        # --- verify
        if opts.verify:
            vmeta = self._merged_flags(fp, dinfo, smeta, claim, dest_by_uid)
            await self._verify(src, dst, vmeta, claim, storable, res)
        self._remember_merge(fp, dinfo, claim)
        failed_uids = {f.uid for f in res.failures}
        for m in smeta:
            if m.uid in failed_uids:
                res.messages.append((m.uid, None, "failed"))
            else:
                res.messages.append((m.uid, claim.get(m.uid), outcome_of.get(m.uid, "missing")))
        res.copied = sum(1 for _, _, o in res.messages if o == "copied")
        res.present = sum(1 for _, _, o in res.messages if o == "present")
        res.failed = len(res.failures)
        if self.state is not None:
            state = self.state
            for f in res.failures:
                m_size = f.size
                state.record(
                    folder_id,
                    f.uid,
                    m_size,
                    f.message_id.encode() if f.message_id else None,
                    None,
                    None,
                    "failed",
                    f.reason,
                )
            state.flush()
        return res

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
        """Fingerprint destination messages (bodies are hashed, then dropped)."""

        def on_body(uid: int, body: bytes) -> None:
            pool[(len(body), fingerprint(body))].append(uid)

        futs = []
        for chunk in _chunks_by_count(uids, 200):
            futs.append(await dst.submit_fetch_bodies(chunk, on_body))
            if len(futs) >= self.options.fetch_window:
                _check(await futs.pop(0), "UID FETCH")
        for f in futs:
            _check(await f, "UID FETCH")
        for v in pool.values():
            v.sort()

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
                held += await budget.acquire(need)
                fut = await src.submit_fetch_bodies([m.uid for m in batch], got.__setitem__)
                await fetch_q.put((batch, got, fut))
            await fetch_q.put(None)

        append_sem = asyncio.Semaphore(opts.append_window)
        append_tasks: set[asyncio.Task[None]] = set()
        errors: list[BaseException] = []

        def record(m: MessageMeta, fpr: bytes | None, dest_uid: int | None, outcome: str) -> None:
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
        multi = dst.has("MULTIAPPEND")
        max_group = opts.append_batch_messages if multi else 1
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
                for m in batch:
                    body = got.pop(m.uid, None)
                    if body is None:
                        why = "it disappeared from the source during the transfer (expunged)"
                        if not fres.tagged.ok:
                            why = (
                                "the source refused to send it: "
                                + CommandError("UID FETCH", fres.tagged).server_text
                            )
                        fail(m, why)
                        continue
                    fpr = fingerprint(body)
                    if m.uid in ambiguous:
                        cands = pool.get((len(body), fpr))
                        if cands:
                            record(m, fpr, cands.pop(0), "present")
                            continue
                    if append_limit is not None and len(body) > append_limit:
                        fail(m, f"it is larger ({len(body)} bytes) than {too_large}", body)
                        continue
                    flags = tuple(f for f in m.flags if storable(f))
                    item = AppendItem(body, flags, m.internaldate)
                    group.append((m, item, fpr))
                    group_bytes += len(body)
                    if len(group) >= max_group or group_bytes >= opts.append_batch_bytes:
                        await flush_group()
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
        """Check each source message against its own destination message."""
        _info, dmeta = await dst.select_and_list(dst.selected or b"INBOX")
        by_uid = {d.uid: d for d in dmeta}
        failed = {f.uid for f in res.failures}
        unmapped = [m for m in smeta if m.uid not in claim and m.uid not in failed]
        if unmapped:
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
                    f"from the source's {m.internaldate.decode()} (it was already there)"
                )
            res.verified += 1


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


def _mid(m: MessageMeta) -> str | None:
    return m.message_id.decode("utf-8", "replace") if m.message_id else None


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
    except CommandError:
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
