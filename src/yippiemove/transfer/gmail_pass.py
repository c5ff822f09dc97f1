"""Gmail as the destination, in a folder pass: the :class:`~yippiemove.transfer.folder.
PassHooks` that make a message several source folders hold one Gmail message with several
labels (the registry and its rules: transfer/gmail.py; the decisions: policy/gmail.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..imap.client import MessageMeta
from ..imap.protocol import format_uid_set
from .gmail import DestPass, GmailDest, instant
from .matching import flags_kept_on_gmail
from .model import Outcome

if TYPE_CHECKING:
    from .folder import FolderPass

__all__ = ["GmailHooks"]


class GmailHooks:
    """Hooks of one pass into a Gmail destination.  ``shared``: the folder's messages
    may share Gmail messages with other folders' (else it is always appended: Trash,
    Spam) -- every copied message is hashed with SHA-256 either way."""

    strong_hashes = True

    def __init__(self, dest: GmailDest, shared: bool) -> None:
        self.dest = dest
        self.shared = shared
        self.gp: DestPass | None = None
        self.fpass: FolderPass | None = None

    def dated(self) -> Callable[[bytes], int | None] | None:
        # On a Gmail destination a message is its bytes *and* its INTERNALDATE: the
        # same bytes on another date are another message.
        return instant if self.shared else None

    async def before_copy(self, fpass: FolderPass, to_copy: Sequence[MessageMeta]) -> None:
        """Learn what is in the folder and in All Mail before copying."""
        if not to_copy or not self.shared:
            return
        fp = fpass.fp
        assert fpass.dinfo is not None
        self.fpass = fpass
        self.gp = await self.dest.prepare(
            fpass.dst,  # type: ignore[arg-type]
            fp.source.name,
            fp.dest_raw,
            fp.dest_name,
            to_copy,
            empty=not fpass.dinfo.exists,
        )

    def label_instead(self, m: MessageMeta, fpr: bytes) -> bool:
        return self.dest.label_instead_of(self.gp, m, fpr)

    async def after_copy(self, fpass: FolderPass) -> None:
        """Publish the pass's APPENDs, add this folder's label to the messages the copy
        deferred, and append those that could not be labelled after all."""
        gp = self.gp
        if gp is None:
            return
        gd, fp, dst = self.dest, fpass.fp, fpass.dst
        assert fpass.dinfo is not None
        claim, outcome_of = fpass.match.claim, fpass.match.outcome_of

        def on_labelled(m: MessageMeta, fpr: bytes, duid: int) -> None:
            outcome_of[m.uid] = Outcome.LABELLED
            fpass.ctx.tally.advance(fp, m.size)
            state = fpass.ctx.state
            if state is not None:
                state.record(
                    fpass.folder_id, m.uid, m.size, m.message_id, fpr, duid, Outcome.LABELLED
                )

        await gd.publish(dst, gp, fpass.dinfo, claim, outcome_of)  # type: ignore[arg-type]
        if gp.deferred:
            fpass.ctx.on_event(
                f"{fp.source.name}: adding the label {fp.dest_name!r} to {len(gp.deferred)} "
                "messages stored from other folders"
            )
        leftovers = await gd.label(dst, gp, claim, on_labelled)  # type: ignore[arg-type]
        if leftovers:
            fpass.ctx.on_event(
                f"{fp.source.name}: {len(leftovers)} messages could not be labelled; appending them"
            )
            gp.append_all = True
            await fpass.copy_more(leftovers)
            await gd.publish(dst, gp, fpass.dinfo, claim, outcome_of)  # type: ignore[arg-type]

    def end(self) -> None:
        if self.gp is not None:
            fpass = self.fpass
            if fpass is None or fpass.dinfo is None:
                self.dest.end(self.gp)
            else:  # what its APPENDs stored, when the pass failed before publishing
                m = fpass.match
                self.dest.end(self.gp, m.claim, m.outcome_of, fpass.dinfo.uidvalidity)

    async def verify_flags(
        self, fpass: FolderPass, vmeta: Sequence[MessageMeta]
    ) -> Sequence[MessageMeta]:
        """On Gmail flags belong to the message, which other folders may share: only the
        folder that appended it sets them (policy/gmail.py)."""
        if not self.shared:
            return vmeta
        match = fpass.match
        appended = match.appended | {u for u, o in match.outcome_of.items() if o == Outcome.COPIED}
        shared = {d for u, d in match.claim.items() if u not in appended}
        if not shared:
            return vmeta
        have = {
            d.uid: d.flags
            for d in await fpass.dst.fetch_meta(format_uid_set(sorted(shared)), message_id=False)
        }
        return flags_kept_on_gmail(vmeta, match.claim, shared, have)
