"""One folder pass: list both sides, match, copy what is missing, verify, record.

A pass is idempotent (docs/design.md "Never lost, never doubled"), so a transient
failure is handled by running it again (transfer/engine.py's workers).  The decisions
are pure functions (transfer/matching.py, transfer/verify.py); this module is the I/O
around them.  Provider behaviour comes in as :class:`PassHooks` (Gmail's labels:
transfer/gmail_pass.py), never as branches here.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from ..imap.client import MessageMeta, SelectInfo
from ..imap.errors import CommandError
from ..imap.protocol import format_uid_set
from ..policy import retry as retry_policy
from .context import Context, chunks_by_count, norm_inbox
from .copy import Copier
from .matching import (
    ContentPool,
    Match,
    claim_from_state,
    find_ambiguous,
    flags_kept_by_merge,
    size_candidates,
)
from .model import FolderPlan, FolderResult, Outcome
from .refusals import FolderError
from .state import FolderRow, MessageRow
from .store import Store
from .verify import Verifier

__all__ = ["FolderPass", "PassHooks", "PlainHooks", "recreated_notes"]


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
        self.dinfo: SelectInfo | None = None
        self.storable: Callable[[str], bool] = lambda flag: True

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
        to_copy = [m for m in smeta if m.uid not in claim]
        free_dest = [d for d in dmeta if d.uid not in self.match.claimed_dest]
        await self._find_possible_copies(to_copy, free_dest)
        for m in smeta:
            if m.uid in claim:
                ctx.tally.advance(fp, m.size)

        # --- copy
        self.storable = self._storable(dinfo, smeta)
        try:
            await self.hooks.before_copy(self, to_copy)
            if to_copy:
                await Copier(self, to_copy).run()
            await self.hooks.after_copy(self)
        finally:
            self.hooks.end()

        # --- verify
        if opts.verify:
            vmeta = self._merged_flags(dinfo, smeta, dest_by_uid)
            vmeta = await self.hooks.verify_flags(self, vmeta)
            known = {uid: f for (folder, uid), f in ctx.source_fprs.items() if folder == res.source}
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
            ).run(vmeta, claim)
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
        """Only messages of a size found on the other side can be copies: ask for their
        Message-IDs (cheap), and hash the remaining candidates' bodies."""
        s_cand, d_cand = size_candidates(to_copy, free_dest)
        if not s_cand:
            return
        s_ids = await self.src.fetch_message_ids([m.uid for m in s_cand])
        d_ids = await self.dst.fetch_message_ids([d.uid for d in d_cand])
        self.ambiguous, candidates = find_ambiguous(
            s_cand, s_ids, d_cand, d_ids, instant=self.hooks.dated()
        )
        if candidates:
            self.ctx.on_event(
                f"{self.fp.source.name}: checking {len(candidates)} destination messages "
                "that may already be copies"
            )
            self.pool = ContentPool(await self.ctx.read_hashes(self.dst, sorted(candidates)))

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
        failed, missing = Outcome.FAILED, Outcome.MISSING  # (enum look-ups: not per message)
        messages = res.messages
        for m in smeta:
            if m.uid in failed_uids:
                messages.append((m.uid, res.altered.get(m.uid), failed))
            else:
                messages.append((m.uid, claim.get(m.uid), outcome_of.get(m.uid, missing)))
        counts = Counter(o for _, _, o in messages)
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
            state.flush()

    # ---------------------------------------------------------------- flags

    def _storable(self, dinfo: SelectInfo, smeta: Sequence[MessageMeta]) -> Callable[[str], bool]:
        res = self.res
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
