"""The copy of one folder pass: fetch source bodies in pipelined ``UID FETCH`` batches
sized by bytes, append them with pipelined MULTIAPPEND (RFC 3502) + LITERAL+ (RFC 7888)
into the SELECTed destination folder, and record each outcome.

A refused MULTIAPPEND (all-or-nothing) is retried one message at a time to find and
report the refused message with the server's words.  Bodies in flight count against the
transfer's shared :class:`~yippiemove.transfer.budget.ByteBudget`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..imap.client import AppendItem, MessageMeta, message_id_in
from ..imap.connection import CommandResult
from ..imap.errors import CommandError
from .altered import has_8bit_header
from .model import Failure, Options, Outcome, Sending
from .refusals import per_message

if TYPE_CHECKING:
    from .folder import FolderPass

__all__ = ["Copier", "size_limit"]

#: A pass copying at least this many messages appends in groups of BIG_FOLDER_GROUP
#: (why: docs/performance.md, "Scale").
BIG_FOLDER = 20_000
BIG_FOLDER_GROUP = 1024

_KEYS = itertools.count()

#: Messages count when the destination answers their APPEND, which answers a MULTIAPPEND
#: group at once: on a slow link a group holds about GROUP_SECONDS of the link's rate
#: (measured on the pass's destination connection), at least MIN_GROUP_BYTES; the
#: first one, before there is a rate, at most FIRST_GROUP_BYTES.  A fast link gets
#: ``append_batch_bytes`` as before.
GROUP_SECONDS = 1.0
MIN_GROUP_BYTES = 256 * 1024
FIRST_GROUP_BYTES = 512 * 1024

#: Put in a pass's fetch queue: "send the APPEND group you are holding now".
_FLUSH = object()

_Group = list[tuple[MessageMeta, AppendItem, bytes]]
_Fetched = tuple[list[MessageMeta], dict[int, bytes], asyncio.Future[CommandResult]]


def batches(
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


def append_limit(caps: frozenset[str]) -> int | None:
    """The destination's message size limit from APPENDLIMIT=N (RFC 7889), if announced."""
    for cap in caps:
        if cap.startswith("APPENDLIMIT="):
            try:
                return int(cap.split("=", 1)[1])
            except ValueError:
                return None
    return None


def size_limit(caps: frozenset[str], opts: Options) -> tuple[int | None, str]:
    """The destination's message size limit and how to name it: the smaller of its
    APPENDLIMIT and ``Options.max_message_size`` (a provider preset's figure)."""
    limits: list[tuple[int, str]] = []
    announced = append_limit(caps)
    if announced is not None:
        limits.append((announced, f"the destination accepts (APPENDLIMIT={announced})"))
    if opts.max_message_size is not None:
        n = opts.max_message_size
        limits.append((n, opts.max_message_size_label or f"the maximum message size ({n} bytes)"))
    return min(limits) if limits else (None, "")


class Copier:
    """Copies ``to_copy`` for one :class:`FolderPass` (one call of :meth:`run`)."""

    def __init__(self, fpass: FolderPass, to_copy: list[MessageMeta]) -> None:
        self.p = fpass
        self.to_copy = to_copy
        opts = fpass.ctx.options
        self.fetch_q: asyncio.Queue[_Fetched | object | None] = asyncio.Queue(
            maxsize=max(1, opts.fetch_window - 1)
        )
        # One dict for all batches, keyed by UID: Dovecot may interleave the output of
        # pipelined FETCH commands, so a body is matched by its UID, not by its command.
        self.got: dict[int, bytes] = {}
        self.held = 0  # bytes of this pass counted in the shared budget
        self.append_sem = asyncio.Semaphore(opts.append_window)
        self.append_tasks: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []
        self.group: _Group = []
        self.group_bytes = 0
        self.all_strong = False
        self.max_group = 1
        self.limit: int | None = None
        self.too_large = ""
        #: Keys of this pass's APPENDs in ``Progress.in_flight``.
        self.keys: set[int] = set()
        #: When the first group was sent, and the connection's delivered bytes then.
        self.first_sent: tuple[float, int] | None = None

    # ---------------------------------------------------------------- bookkeeping

    def release_one(self, size: int) -> None:
        n = min(size, self.held)
        if n:
            self.held -= n
            self.p.ctx.budget.release(n)

    def record(
        self, m: MessageMeta, fpr: bytes | None, dest_uid: int | None, outcome: Outcome
    ) -> None:
        self.p.record(m, fpr, dest_uid, outcome)
        self.release_one(m.size)

    def fail(self, m: MessageMeta, reason: str, body: bytes | None = None) -> None:
        p = self.p
        mid = m.message_id or (message_id_in(body) if body is not None else None)
        failure = Failure(
            p.fp.source.name,
            m.uid,
            m.size,
            mid.decode("utf-8", "replace") if mid else None,
            reason,
        )
        p.res.failures.append(failure)
        self.release_one(m.size)
        live = p.ctx.progress.failures
        live.append(failure.as_dict())
        if len(live) > 200:
            del live[:-200]
        p.match.outcome_of[m.uid] = Outcome.FAILED
        p.ctx.tally.advance(p.fp, m.size, failed=True)
        p.ctx.on_event(f"{p.fp.source.name}: UID {m.uid} failed: {reason}")

    # ---------------------------------------------------------------- fetching

    async def producer(self) -> None:
        opts = self.p.ctx.options
        budget = self.p.ctx.budget
        for batch in batches(self.to_copy, opts.fetch_batch_bytes, opts.fetch_batch_messages):
            need = sum(m.size for m in batch)
            if budget.would_wait(need):
                # Bodies waiting in this pass's unsent APPEND group hold budget too:
                # have them sent before waiting, or every worker could wait on the
                # others' unsent groups for ever.
                await self.fetch_q.put(_FLUSH)
            # Not ``held += await ...``: that reads ``held`` before the wait, and the
            # APPENDs answered meanwhile (release_one) would be counted back in.
            taken = await budget.acquire(need)
            self.held += taken
            fut = await self.p.src.submit_fetch_bodies([m.uid for m in batch], self.got.__setitem__)
            await self.fetch_q.put((batch, self.got, fut))
        await self.fetch_q.put(None)

    # ---------------------------------------------------------------- appending

    async def finish_append(
        self, fut: asyncio.Future[CommandResult], group: _Group, key: int | None = None
    ) -> None:
        p = self.p
        try:
            r = await fut
            if key is not None:  # answered: no longer on its way (counted below)
                p.ctx.progress.in_flight.pop(key, None)
            if r.tagged.ok:
                au = r.tagged.appenduid()
                uids: Sequence[int | None] = (
                    au.uids
                    if au is not None and len(au.uids) == len(group)
                    else [None] * len(group)
                )
                copied = Outcome.COPIED
                for (m, item, fpr), duid in zip(group, uids, strict=True):
                    self.record(m, fpr, duid, copied)
                    p.res.bytes_copied += len(item.body)
                    p.ctx.progress.bytes_copied += len(item.body)
                return
            per_message(CommandError("APPEND", r.tagged))
            if len(group) == 1:
                m, item, _ = group[0]
                refusal = CommandError("APPEND", r.tagged).server_text
                self.fail(m, "destination refused it: " + refusal, item.body)
                return
            # MULTIAPPEND is all-or-nothing (RFC 3502): find the refused one(s).
            for m, item, fpr in group:
                r1 = await (await p.dst.submit_append(p.fp.dest_raw, [item]))
                if r1.tagged.ok:
                    au = r1.tagged.appenduid()
                    self.record(m, fpr, au.uids[0] if au and au.uids else None, Outcome.COPIED)
                    p.res.bytes_copied += len(item.body)
                    p.ctx.progress.bytes_copied += len(item.body)
                else:
                    per_message(CommandError("APPEND", r1.tagged))
                    refusal = CommandError("APPEND", r1.tagged).server_text
                    self.fail(m, "destination refused it: " + refusal, item.body)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            if key is not None:
                p.ctx.progress.in_flight.pop(key, None)
                self.keys.discard(key)
            self.append_sem.release()

    async def flush_group(self) -> None:
        if not self.group:
            return
        g, self.group, self.group_bytes = self.group, [], 0
        await self.append_sem.acquire()
        dst = self.p.dst
        if self.first_sent is None:
            self.first_sent = (time.monotonic(), dst.wire_out()[1])
        try:
            fut = await dst.submit_append(self.p.fp.dest_raw, [it for _, it, _ in g])
        except BaseException:
            self.append_sem.release()
            raise
        key = self.sending(sum(len(it.body) for _, it, _ in g))
        t = asyncio.create_task(self.finish_append(fut, g, key))
        self.append_tasks.add(t)
        t.add_done_callback(self.append_tasks.discard)

    def sending(self, size: int) -> int:
        """Count the APPEND just written (``size`` message bytes) as on its way until
        it is answered: progress moves as its bytes reach the destination
        (transfer/model.py ``Sending``).  Its last byte is the connection's latest one
        (a command written by another task meanwhile only makes it count later)."""
        dst = self.p.dst
        end = dst.wire_out()[0]
        key = next(_KEYS)
        self.keys.add(key)
        self.p.ctx.progress.in_flight[key] = Sending(
            self.p.fp.source.name, size, end, lambda: dst.wire_out()[1]
        )
        return key

    def group_cap(self) -> int:
        """The bytes an APPEND group may hold now (GROUP_SECONDS)."""
        most = self.p.ctx.options.append_batch_bytes
        if self.first_sent is None:
            return min(most, FIRST_GROUP_BYTES)
        t0, delivered0 = self.first_sent
        elapsed = time.monotonic() - t0
        if elapsed < 0.25:
            return min(most, FIRST_GROUP_BYTES)
        rate = (self.p.dst.wire_out()[1] - delivered0) / elapsed
        return max(MIN_GROUP_BYTES, min(most, int(rate * GROUP_SECONDS)))

    # ---------------------------------------------------------------- the pass

    async def run(self) -> None:
        p = self.p
        opts = p.ctx.options
        # SHA-256 where a decision compares it: possible copies on the destination (the
        # ``ambiguous`` ones), a Gmail destination (one copy per message), the content
        # check; the rest only needs the state's checksum.
        self.all_strong = p.hooks.strong_hashes or opts.verify_content
        multi = p.dst.has("MULTIAPPEND")
        self.max_group = opts.append_batch_messages if multi else 1
        if multi and len(self.to_copy) >= BIG_FOLDER:
            self.max_group = max(self.max_group, BIG_FOLDER_GROUP)
        self.limit, self.too_large = size_limit(p.dst.capabilities, opts)
        if self.limit is not None:
            await self._fail_too_large(self.limit)
        prod = asyncio.create_task(self.producer())
        try:
            while True:
                entry = await self.fetch_q.get()
                if entry is None:
                    break
                if entry is _FLUSH:
                    await self.flush_group()
                    continue
                assert isinstance(entry, tuple)
                batch, got, fut = entry
                fres = await fut
                if self.errors:
                    raise self.errors[0]
                if not fres.tagged.ok:
                    per_message(CommandError("UID FETCH", fres.tagged))
                # In its own frame: this batch's bodies are dropped on return, before
                # the next batch is awaited (the budget is given back when the APPEND
                # is answered, and a body still held here would be memory the budget no
                # longer counts: docs/performance.md, "the byte budget").
                await self._take(batch, got, fres)
            await self.flush_group()
            while self.append_tasks:
                await asyncio.wait(set(self.append_tasks))
            if self.errors:
                raise self.errors[0]
        finally:
            prod.cancel()
            await asyncio.gather(prod, return_exceptions=True)
            for t in list(self.append_tasks):
                t.cancel()
            for key in self.keys:  # unanswered: on their way no more
                p.ctx.progress.in_flight.pop(key, None)
            if self.held:
                p.ctx.budget.release(self.held)
                self.held = 0

    async def _fail_too_large(self, limit: int) -> None:
        """Messages known too large from their size: reported now, never fetched nor
        retried (an ambiguous one may be on the destination already: fetched)."""
        p = self.p
        big = [m for m in self.to_copy if m.size > limit and m.uid not in p.ambiguous]
        ids = await p.src.fetch_message_ids([m.uid for m in big]) if big else {}
        for m in big:
            m = dataclasses.replace(m, message_id=m.message_id or ids.get(m.uid))
            self.fail(m, f"it is larger ({m.size} bytes) than {self.too_large}")
        self.to_copy = [m for m in self.to_copy if m.size <= limit or m.uid in p.ambiguous]

    async def _probe(self, m: MessageMeta, body: bytes, fpr: bytes) -> None:
        """The folder's first message with keywords PERMANENTFLAGS does not promise:
        appended alone, with them, and its flags read back -- what the folder keeps is
        decided by that (transfer/keywords.py), once.  Refused with them but taken
        without: they are not kept."""
        p = self.p
        kw = p.keywords
        assert kw is not None
        flags = tuple(f for f in m.flags if p.storable(f))
        r = await (
            await p.dst.submit_append(p.fp.dest_raw, [AppendItem(body, flags, m.internaldate)])
        )
        if not r.tagged.ok:
            per_message(CommandError("APPEND", r.tagged))
            plain = tuple(f for f in flags if not kw.unpromised(f))
            r = await (
                await p.dst.submit_append(p.fp.dest_raw, [AppendItem(body, plain, m.internaldate)])
            )
            if not r.tagged.ok:
                per_message(CommandError("APPEND", r.tagged))
                kw.inconclusive(refused=True)  # refused for its own sake (bounded)
                self.fail(
                    m,
                    "destination refused it: " + CommandError("APPEND", r.tagged).server_text,
                    body,
                )
                return
            kw.refused(flags)
        au = r.tagged.appenduid()
        duid = au.uids[0] if au is not None and len(au.uids) == 1 else None
        if kw.verdict is None:
            # Without UIDPLUS: the highest UID, if it has this message's size (the
            # APPENDs before it on this connection were answered first; a server may
            # not show it to this session yet: then the verify decides).
            back = await p.dst.fetch_meta(str(duid) if duid else "*", message_id=False)
            if back and (duid is not None or back[-1].size == len(body)):
                kw.learn(flags, back[-1].flags)
            else:
                kw.inconclusive(refused=False)
        self.record(m, fpr, duid, Outcome.COPIED)
        p.res.bytes_copied += len(body)
        p.ctx.progress.bytes_copied += len(body)

    async def _take(
        self, batch: list[MessageMeta], got: dict[int, bytes], fres: CommandResult
    ) -> None:
        """One fetched batch: each body is failed, recognised as already there, handed
        to the hooks, or put in the APPEND group (sent when full)."""
        p = self.p
        hooks, ambiguous, storable, keywords = p.hooks, p.ambiguous, p.storable, p.keywords
        limit, max_group = self.limit, self.max_group
        group_bytes_max = self.group_cap()
        # Does the destination replace 8-bit header bytes (same size: the verify reads
        # a few such messages back)?  Not asked under --verify-content (reads them all).
        watch_8bit = p.ctx.replaces_8bit is not False and not p.ctx.options.verify_content
        bodies = [got.pop(m.uid, None) for m in batch]
        fprs = await p.ctx.hasher.hash(
            bodies, [self.all_strong or m.uid in ambiguous for m in batch]
        )
        for m, body, fpr in zip(batch, bodies, fprs, strict=True):
            if body is None:
                why = "it disappeared from the source during the transfer (expunged)"
                if not fres.tagged.ok:
                    why = (
                        "the source refused to send it: "
                        + CommandError("UID FETCH", fres.tagged).server_text
                    )
                self.fail(m, why)
                continue
            assert fpr is not None
            if m.uid in ambiguous:
                duid = p.pool.take(len(body), fpr)
                if duid is not None:
                    self.record(m, fpr, duid, Outcome.PRESENT)
                    continue
            if m.uid in ambiguous or m.uid in p.altered_ambiguous:
                # Stored altered by the server (line endings...)? transfer/altered.py
                duid = await p.take_altered(m, body)
                if duid is not None:
                    self.record(m, fpr, duid, Outcome.PRESENT)
                    continue
            if limit is not None and len(body) > limit:
                self.fail(m, f"it is larger ({len(body)} bytes) than {self.too_large}", body)
                continue
            # A Gmail destination (transfer/gmail_pass.py): a message another folder
            # stores already gets this folder's label after the APPENDs instead.
            if hooks.label_instead(m, fpr):
                self.release_one(m.size)
                continue
            if watch_8bit and has_8bit_header(body):
                p.at_risk.add(m.uid)
            if keywords is not None and keywords.pending_append(m.flags):
                await self.flush_group()
                await self._probe(m, body, fpr)
                continue
            flags = tuple(f for f in m.flags if storable(f))
            self.group.append((m, AppendItem(body, flags, m.internaldate), fpr))
            self.group_bytes += len(body)
            if len(self.group) >= max_group or self.group_bytes >= group_bytes_max:
                await self.flush_group()
