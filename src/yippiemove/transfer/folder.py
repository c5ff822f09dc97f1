"""One folder pass: list both sides, match, copy what is missing, verify, record.

A pass is idempotent (docs/design.md "Never lost, never doubled"), so a transient
failure is handled by running it again (transfer/engine.py's workers).  The decisions
are pure functions (transfer/matching.py, transfer/verify.py); this module is the I/O
around them.  Provider behaviour comes in as :class:`PassHooks` (Gmail's labels:
transfer/gmail_pass.py), never as branches here.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol

from ..imap.client import MessageMeta, SelectInfo, message_id_in
from ..imap.errors import CommandError
from ..imap.protocol import format_uid_set
from ..policy import retry as retry_policy
from .altered import Alteration, learn_any
from .context import Context, chunks_by_count, norm_inbox
from .copy import Copier
from .hashing import fingerprint
from .keywords import Keywords
from .matching import (
    ContentPool,
    Match,
    altered_candidates,
    claim_from_state,
    find_ambiguous,
    flags_kept_by_merge,
    size_candidates,
)
from .model import FolderPlan, FolderResult, Outcome
from .refusals import FolderError
from .state import FolderRow, MessageRow
from .store import Store
from .verify import LEARN_SAMPLE, Verifier

__all__ = ["FolderPass", "PassHooks", "PlainHooks", "recreated_notes"]

#: The state's ``error`` of a message stored altered in a recognised way (the rest is
#: what changed); other ``altered`` rows are copies that differ otherwise (failed).
ALTERED_PREFIX = "stored altered by the server: "


class PassHooks(Protocol):
    """What a destination with its own semantics (Gmail's labels) adds to a pass."""

    #: Every copied message gets a SHA-256 (not only the possible duplicates).
    strong_hashes: bool

    def dated(self) -> Callable[[bytes], int | None] | None:
        """Matching also compares INTERNALDATE instants (this function) when not None."""

    async def before_copy(self, fpass: FolderPass, to_copy: Sequence[MessageMeta]) -> None:
        """After matching, before the copy (the destination folder is selected)."""

    def label_instead(self, m: MessageMeta, fpr: bytes) -> bool:
        """A fetched message about to be appended: True when it is stored another way."""

    async def after_copy(self, fpass: FolderPass) -> None:
        """After the pass's APPENDs were answered."""

    def end(self) -> None:
        """The pass is over, or failed."""

    async def verify_flags(
        self, fpass: FolderPass, vmeta: Sequence[MessageMeta]
    ) -> Sequence[MessageMeta]:
        """Source messages as the verify should judge their flags."""


class PlainHooks:
    """An ordinary IMAP destination: nothing to add."""

    strong_hashes = False

    def dated(self) -> Callable[[bytes], int | None] | None:
        return None

    async def before_copy(self, fpass: FolderPass, to_copy: Sequence[MessageMeta]) -> None:
        return None

    def label_instead(self, m: MessageMeta, fpr: bytes) -> bool:
        return False

    async def after_copy(self, fpass: FolderPass) -> None:
        return None

    def end(self) -> None:
        return None

    async def verify_flags(
        self, fpass: FolderPass, vmeta: Sequence[MessageMeta]
    ) -> Sequence[MessageMeta]:
        return vmeta


def recreated_notes(
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


class FolderPass:
    """One idempotent pass over one folder (:meth:`run` once)."""

    def __init__(
        self, ctx: Context, src: Store, dst: Store, fp: FolderPlan, hooks: PassHooks
    ) -> None:
        self.ctx = ctx
        self.src = src
        self.dst = dst
        self.fp = fp
        self.hooks = hooks
        self.res = FolderResult(fp.source.name, fp.dest_name)
        self.folder_id = 0
        self.match = Match()
        #: Source UIDs that may already be on the destination (checked by content).
        self.ambiguous: set[int] = set()
        self.pool = ContentPool()
        #: Source UIDs that may be on the destination stored altered by the server
        #: (checked by the SHA-256 of their bytes altered the same way), and the
        #: alteration; source UID -> (what changed, Message-ID), for those found there.
        self.altered_ambiguous: set[int] = set()
        self.matched_altered: dict[int, tuple[str, bytes | None]] = {}
        #: Message-IDs of the possible copies (source), and the candidates by Message-ID
        self.s_ids: dict[int, bytes | None] = {}
        self.dest_by_mid: defaultdict[bytes | None, list[int]] = defaultdict(list)
        self.learn_tries = 0
        #: Source UIDs appended with 8-bit header bytes (while the run does not know
        #: whether the destination keeps them, or knows it does not).
        self.at_risk: set[int] = set()
        self.dinfo: SelectInfo | None = None
        self.storable: Callable[[str], bool] = lambda flag: True
        #: What the destination folder keeps, by evidence (transfer/keywords.py).
        self.keywords: Keywords | None = None

    # ---------------------------------------------------------------- listing

    async def list_source(self) -> tuple[SelectInfo, list[MessageMeta]]:
        """The source folder's messages: all, or those the message filters select.

        Filters run as ``UID SEARCH`` on the source (its own date and size semantics);
        the copy and the verify then only see the selected messages, so a destination
        message outside the filter is never touched.
        """
        return await list_source(self.ctx, self.src, self.fp)

    async def _list_both(
        self,
    ) -> tuple[tuple[SelectInfo, list[MessageMeta]], tuple[SelectInfo, list[MessageMeta]]]:
        slist, dlist = await asyncio.gather(
            self.list_source(),
            self.dst.select_and_list(self.fp.dest_raw),
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
                    f"the destination folder {self.fp.dest_name!r} cannot be opened: "
                    + outcome.server_text
                )
            if isinstance(outcome, BaseException):
                raise outcome
        assert not isinstance(slist, BaseException) and not isinstance(dlist, BaseException)
        return slist, dlist

    # ---------------------------------------------------------------- the pass

    async def run(self) -> FolderResult:
        ctx, fp, res = self.ctx, self.fp, self.res
        opts = ctx.options
        (sinfo, smeta), (dinfo, dmeta) = await self._list_both()
        self.dinfo = dinfo
        res.source_uidvalidity = sinfo.uidvalidity
        res.dest_uidvalidity = dinfo.uidvalidity
        res.source_count = len(smeta)
        if opts.filters.active:
            res.notes.append(
                f"{len(smeta)} of {sinfo.exists} messages match the filter "
                f"({opts.filters.describe()}); only those are copied and verified"
            )
        ctx.on_event(f"{fp.source.name} -> {fp.dest_name}: {len(smeta)} messages")
        rows = self._open_state(sinfo, dinfo)

        # --- match: state first, then (size, Message-ID) candidates checked by content
        dest_by_uid = {d.uid: d for d in dmeta}
        self.match = claim_from_state(smeta, rows, dest_by_uid)
        claim = self.match.claim
        self._known_altered(rows)
        to_copy = [m for m in smeta if m.uid not in claim]
        free_dest = [d for d in dmeta if d.uid not in self.match.claimed_dest]
        await self._find_possible_copies(to_copy, free_dest)
        for m in smeta:
            if m.uid in claim:
                ctx.tally.advance(fp, m.size)

        # --- copy
        self.keywords = Keywords(dinfo, dmeta)
        self.storable = self.keywords.storable
        try:
            await self.hooks.before_copy(self, to_copy)
            if to_copy:
                await Copier(self, to_copy).run()
            await self.hooks.after_copy(self)
        finally:
            self.hooks.end()

        # --- verify (the live progress says so: its state "verifying")
        if opts.verify:
            ctx.progress.verifying.add(fp.source.name)
        try:
            if opts.verify:
                vmeta = self._merged_flags(dinfo, smeta, dest_by_uid)
                vmeta = await self.hooks.verify_flags(self, vmeta)
                known = {
                    uid: f for (folder, uid), f in ctx.source_fprs.items() if folder == res.source
                }
                for uid in known:
                    del ctx.source_fprs[(res.source, uid)]
                await Verifier(
                    self.src,
                    self.dst,
                    res,
                    self.storable,
                    content=opts.verify_content,
                    read_hashes=ctx.read_hashes,
                    known_hashes=known,
                    expected=len(dmeta) + self._added(),
                    keywords=self.keywords,
                    read_with=ctx.read_with,
                    learned=ctx,
                    matched_altered=self.matched_altered,
                    at_risk=self.at_risk,
                ).run(vmeta, claim)
        finally:
            ctx.progress.verifying.discard(fp.source.name)
        self._report_dropped(smeta)
        await self._name_failures()
        self._remember_merge(dinfo)
        self._finish(smeta)
        return res

    async def _name_failures(self) -> None:
        """The Message-ID of each failed message the pass does not know it of (the
        source listing is fetched without Message-IDs: they cost on the hot path; the
        verify's failures and a body never fetched have none): one pipelined FETCH for
        all of them, only when something failed, so every failure line names it."""
        nameless = [f for f in self.res.failures if f.message_id is None]
        if not nameless:
            return
        try:
            ids = await self.src.fetch_message_ids(sorted({f.uid for f in nameless}))
        except CommandError:
            return  # the report goes out without them rather than not at all
        for f in nameless:
            mid = ids.get(f.uid)
            if mid:
                f.message_id = mid.decode("utf-8", "replace")

    def _added(self) -> int:
        """Messages this pass put into the destination folder (APPENDs, Gmail labels)."""
        added = (Outcome.COPIED, Outcome.LABELLED)
        return sum(1 for o in self.match.outcome_of.values() if o in added)

    async def copy_more(self, msgs: list[MessageMeta]) -> None:
        """Append ``msgs`` too, as plain copies (for hooks: Gmail's unlabelled leftovers)."""
        saved = self.ambiguous, self.pool
        self.ambiguous, self.pool = set(), ContentPool()
        try:
            await Copier(self, msgs).run()
        finally:
            self.ambiguous, self.pool = saved

    def _open_state(self, sinfo: SelectInfo, dinfo: SelectInfo) -> dict[int, MessageRow]:
        state = self.ctx.state
        if state is None:
            return {}
        fp = self.fp
        last = state.folder(fp.source.name)
        self.folder_id, valid = state.open_folder(
            fp.source.name, sinfo.uidvalidity, fp.dest_name, dinfo.uidvalidity
        )
        rows = state.messages(self.folder_id) if valid else {}
        for note in recreated_notes(last, sinfo.uidvalidity, fp.dest_name, dinfo.uidvalidity):
            self.res.notes.append(note)
            self.ctx.on_event(f"{fp.source.name}: {note}")
        return rows

    async def _find_possible_copies(
        self, to_copy: list[MessageMeta], free_dest: list[MessageMeta]
    ) -> None:
        """Only messages of a size found on the other side can be exact copies: ask for
        their Message-IDs (cheap), and hash the remaining candidates' bodies.  On a
        plain destination, copies the server stored altered are looked for too
        (:meth:`_find_altered_copies`)."""
        s_cand, d_cand = size_candidates(to_copy, free_dest)
        s_ids: dict[int, bytes | None] = {}
        d_ids: dict[int, bytes | None] = {}
        candidates: set[int] = set()
        if s_cand:
            s_ids = await self.src.fetch_message_ids([m.uid for m in s_cand])
            d_ids = await self.dst.fetch_message_ids([d.uid for d in d_cand])
            self.ambiguous, candidates = find_ambiguous(
                s_cand, s_ids, d_cand, d_ids, instant=self.hooks.dated()
            )
        if to_copy and free_dest and self.hooks.dated() is None:
            candidates |= await self._find_altered_copies(to_copy, free_dest, s_ids, d_ids)
        self.s_ids = s_ids
        self.dest_by_mid = defaultdict(list)
        for d in free_dest:
            if d.uid in candidates:
                self.dest_by_mid[d_ids.get(d.uid)].append(d.uid)
        if candidates:
            self.ctx.on_event(
                f"{self.fp.source.name}: checking {len(candidates)} destination messages "
                "that may already be copies"
            )
            self.pool = ContentPool(await self.ctx.read_hashes(self.dst, sorted(candidates)))

    def _known_altered(self, rows: dict[int, MessageRow]) -> None:
        """Messages an earlier run verified as stored altered in a recognised way (a
        stored message never changes: the state's word is taken, not read back)."""
        for uid, row in rows.items():
            why = row.error or ""
            if row.outcome == Outcome.ALTERED and why.startswith(ALTERED_PREFIX):
                if self.match.claim.get(uid) == row.dest_uid:
                    self.matched_altered[uid] = (why[len(ALTERED_PREFIX) :], row.message_id)

    async def _find_altered_copies(
        self,
        to_copy: list[MessageMeta],
        free_dest: list[MessageMeta],
        s_ids: dict[int, bytes | None],
        d_ids: dict[int, bytes | None],
    ) -> set[int]:
        """Destination messages that may be source messages stored altered by the
        server (a re-run after ``kill -9`` or without the state file): of the same
        Message-ID and no larger (or both without one).  The alteration is what this
        run learned already, else learned here from a few pairs of one Message-ID and
        two sizes (both sides read).  Returns the destination UIDs to hash."""
        s_more = [m.uid for m in to_copy if m.uid not in s_ids]
        d_more = [d.uid for d in free_dest if d.uid not in d_ids]
        if s_more:
            s_ids.update(await self.src.fetch_message_ids(s_more))
        if d_more:
            d_ids.update(await self.dst.fetch_message_ids(d_more))
        sources, dests, pairs = altered_candidates(to_copy, s_ids, free_dest, d_ids)
        if not sources:
            return set()
        ctx = self.ctx
        if ctx.alteration is None and pairs:
            pairs = pairs[:LEARN_SAMPLE]
            sent = await ctx.read_with(self.src, [s for s, _ in pairs], bytes)
            stored = await ctx.read_with(self.dst, [d for _, d in pairs], bytes)
            ctx.alteration = learn_any(
                (sent[s], stored[d]) for s, d in pairs if s in sent and d in stored
            )
            del sent, stored
        self.altered_ambiguous = sources
        return dests if ctx.alteration is not None else set()

    async def take_altered(self, m: MessageMeta, body: bytes) -> int | None:
        """A possible copy not found with its exact bytes: the destination message that
        holds its bytes as the server alters them, claimed (None: none).

        When what the run learned does not explain it (nothing yet; or line endings, and
        this is the first message with 8-bit header bytes), the first few such misses of
        a pass are compared with their candidates' stored bytes to learn more (a server
        that replaces 8-bit header bytes keeps the size: only the bytes tell)."""
        ctx = self.ctx
        tried: set[Alteration] = set()
        while True:
            alt = ctx.alteration
            if alt is not None and alt not in tried:
                tried.add(alt)
                changed = alt.apply(body)
                duid = (
                    self.pool.take(len(changed), fingerprint(changed)) if changed != body else None
                )
                if duid is not None:
                    what = ", ".join(alt.changes(body))
                    self.matched_altered[m.uid] = (what, message_id_in(body))
                    return duid
            if self.learn_tries >= LEARN_SAMPLE:
                return None
            duids = self.dest_by_mid.get(self.s_ids.get(m.uid), [])[:2]
            if not duids:
                return None
            self.learn_tries += 1
            stored = await ctx.read_with(self.dst, duids, bytes)
            new = learn_any((body, b) for b in stored.values())
            if new is None:
                return None
            ctx.alteration = new if alt is None else alt.union(new)

    # ---------------------------------------------------------------- outcomes

    def record(
        self, m: MessageMeta, fpr: bytes | None, dest_uid: int | None, outcome: Outcome
    ) -> None:
        """One message handled: claim, outcome, progress and the state's row."""
        ctx = self.ctx
        if fpr is not None and ctx.options.verify_content:
            ctx.source_fprs[(self.fp.source.name, m.uid)] = fpr
        if dest_uid is not None:
            self.match.claim[m.uid] = dest_uid
        self.match.outcome_of[m.uid] = outcome
        ctx.tally.advance(self.fp, m.size)
        if ctx.state is not None:
            ctx.state.record(self.folder_id, m.uid, m.size, m.message_id, fpr, dest_uid, outcome)

    def _finish(self, smeta: Sequence[MessageMeta]) -> None:
        res = self.res
        claim, outcome_of = self.match.claim, self.match.outcome_of
        failed_uids = {f.uid for f in res.failures}
        altered_uids = {a.uid for a in res.stored_altered}
        failed, missing = Outcome.FAILED, Outcome.MISSING  # (enum look-ups: not per message)
        messages = res.messages
        how: Counter[Outcome] = Counter()  # how the altered ones got there
        for m in smeta:
            if m.uid in failed_uids:
                messages.append((m.uid, res.altered.get(m.uid), failed))
            elif m.uid in altered_uids:
                messages.append((m.uid, claim.get(m.uid), Outcome.ALTERED))
                how[outcome_of.get(m.uid, missing)] += 1
            else:
                messages.append((m.uid, claim.get(m.uid), outcome_of.get(m.uid, missing)))
        counts = Counter(o for _, _, o in messages) + how
        res.copied = counts[Outcome.COPIED]
        res.present = counts[Outcome.PRESENT]
        res.labelled = counts[Outcome.LABELLED]
        res.failed = len(res.failures)
        state = self.ctx.state
        if state is not None:
            for f in res.failures:
                altered_to = res.altered.get(f.uid)
                state.record(
                    self.folder_id,
                    f.uid,
                    f.size,
                    f.message_id.encode() if f.message_id else None,
                    None,
                    altered_to,
                    Outcome.FAILED if altered_to is None else Outcome.ALTERED,
                    f.reason,
                )
            for a in res.stored_altered:
                state.record(
                    self.folder_id,
                    a.uid,
                    a.size,
                    a.message_id.encode() if a.message_id else None,
                    None,
                    a.dest_uid,
                    Outcome.ALTERED,
                    ALTERED_PREFIX + a.what,
                )
            state.flush()

    # ---------------------------------------------------------------- flags

    def _report_dropped(self, smeta: Sequence[MessageMeta]) -> None:
        """The flags and keywords the destination folder does not keep, as the evidence
        of this pass says (transfer/keywords.py), each with its message count."""
        assert self.keywords is not None
        dropped = self.keywords.dropped(smeta)
        if not dropped:
            return
        res = self.res
        res.unstorable_flags.update(dropped)
        res.dropped_flags = dict(sorted(dropped.items()))
        res.notes.append(
            "the destination does not keep these flags/keywords (messages carrying each): "
            + ", ".join(f"{f} ({n})" for f, n in sorted(dropped.items()))
        )

    def _merged_flags(
        self, dinfo: SelectInfo, smeta: Sequence[MessageMeta], dest_by_uid: dict[int, MessageMeta]
    ) -> Sequence[MessageMeta]:
        """In a merged folder, the first folder of the group sets the flags
        (:func:`~yippiemove.transfer.matching.flags_kept_by_merge`)."""
        if not self.fp.merged_with:
            return smeta
        key = norm_inbox(self.fp.dest_name)
        validity, earlier = self.ctx.merge_claims.get(key, (-1, set()))
        if validity != dinfo.uidvalidity or not earlier:
            return smeta
        return flags_kept_by_merge(smeta, self.match.claim, dest_by_uid, earlier)

    def _remember_merge(self, dinfo: SelectInfo) -> None:
        if not self.fp.merged_with:
            return
        key = norm_inbox(self.fp.dest_name)
        validity, seen = self.ctx.merge_claims.get(key, (dinfo.uidvalidity, set()))
        if validity != dinfo.uidvalidity:
            seen = set()
        self.ctx.merge_claims[key] = (dinfo.uidvalidity, seen | set(self.match.claim.values()))


async def list_source(
    ctx: Context, src: Store, fp: FolderPlan
) -> tuple[SelectInfo, list[MessageMeta]]:
    """A source folder's messages after the message filters (see FolderPass.list_source)."""
    filters = ctx.options.filters
    if fp.archived_only:
        # Gmail's All Mail, only the archived messages (policy/gmail.py)
        if ctx.gmail_src is None:
            raise FolderError("the archive of a Gmail source needs a plan (make_plan)")
        return await ctx.gmail_src.list_archived(src, fp.source.raw, filters)  # type: ignore[arg-type]
    if not filters.active:
        return await src.select_and_list(fp.source.raw, readonly=True)
    info = await src.select(fp.source.raw, readonly=True)
    uids = await src.uid_search(filters.criteria()) if info.exists else []
    metas: list[MessageMeta] = []
    for chunk in chunks_by_count(uids, 2000):
        metas += await src.fetch_meta(format_uid_set(chunk), message_id=False)
    return info, metas
