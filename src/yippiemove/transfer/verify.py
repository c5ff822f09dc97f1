"""Verification: "is every source message there, with its flags and date?"

:func:`check` judges a chunk of source messages against the destination's listing and
returns what it found -- failures, flags to set, notes, what to read back -- without
any I/O (tested from fixtures in tests/transfer/test_verify.py).  :func:`compare_content`
does the same for ``--verify-content``'s hashes.  :class:`Verifier` is the I/O around
them: it lists the destination in chunks, sets the flags and reads bytes back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..imap.client import MessageMeta, message_id_in
from ..imap.errors import CommandError
from ..imap.protocol import format_uid_set
from .altered import Alteration, learn, learn_any
from .dates import same_instant
from .hashing import fingerprint
from .keywords import Keywords
from .matching import match_by_message_id, match_resized_by_message_id
from .model import AlteredMessage, Failure, FolderResult
from .refusals import per_message
from .store import Store

__all__ = ["Checked", "Verifier", "check", "compare_content"]

#: Source messages verified per destination metadata fetch.
VERIFY_CHUNK = 5000
#: Stored copies of another size or other bytes read back (both sides' bytes) to learn
#: what the destination server changes, when the run does not know it yet.
LEARN_SAMPLE = 4
#: Messages with 8-bit header bytes read back (both sides) to find out whether the
#: destination replaces such bytes (it keeps the size), once per run.
PROBE_8BIT = 4


def message_id_text(m: MessageMeta) -> str | None:
    return m.message_id.decode("utf-8", "replace") if m.message_id else None


def failure(folder: str, m: MessageMeta, why: str) -> Failure:
    return Failure(folder, m.uid, m.size, message_id_text(m), why)


@dataclass
class Checked:
    """What :func:`check` found in one chunk."""

    failures: list[Failure] = field(default_factory=list)
    #: source UID -> destination UID of messages stored altered (other size)
    altered: dict[int, int] = field(default_factory=dict)
    #: (destination UID, the flags it must have) in source order
    set_flags: list[tuple[int, list[str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verified: int = 0
    #: (source message, destination UID) verified by metadata, to read back
    verified_pairs: list[tuple[MessageMeta, int]] = field(default_factory=list)


def check(
    folder: str,
    smeta: Sequence[MessageMeta],
    claim: Mapping[int, int],
    by_uid: Mapping[int, MessageMeta],
    failed: set[int],
    storable: Callable[[str], bool],
    *,
    pairs: bool = True,
) -> Checked:
    """Each source message (not already ``failed``) against its own destination
    message ``claim[uid]`` in ``by_uid``: it must be there, with the same size; its
    storable flags must be the destination's (else they are set); an INTERNALDATE of
    another instant is noted (it cannot be changed over IMAP).  ``pairs``: also list
    what was verified (to read it back, ``--verify-content``)."""
    out = Checked()
    for m in smeta:
        if m.uid in failed:
            continue
        duid = claim.get(m.uid)
        d = by_uid.get(duid) if duid is not None else None
        if d is None:
            out.failures.append(failure(folder, m, "not found on the destination after copying"))
            continue
        if d.size != m.size:
            out.altered[m.uid] = d.uid
            why = f"destination UID {d.uid} has {d.size} bytes, the source {m.size}"
            out.failures.append(failure(folder, m, why))
            continue
        want = {f.upper(): f for f in m.flags if storable(f)}
        have = {f.upper() for f in d.flags if f.upper() != "\\RECENT"}
        if set(want) != have:
            out.set_flags.append((d.uid, list(want.values())))
        if not same_instant(d.internaldate, m.internaldate):
            out.notes.append(
                f"UID {m.uid}: destination INTERNALDATE {d.internaldate.decode()} differs "
                f"from the source's {m.internaldate.decode()} (a stored message's "
                "INTERNALDATE cannot be changed over IMAP)"
            )
        out.verified += 1
        if pairs:
            out.verified_pairs.append((m, d.uid))
    return out


def compare_content(
    folder: str,
    pairs: Sequence[tuple[MessageMeta, int]],
    source: Mapping[int, bytes],
    dest: Mapping[int, bytes],
) -> tuple[int, list[Failure], dict[int, int]]:
    """``--verify-content``: (messages whose bytes are equal, failures, altered) for
    ``pairs`` of (source message, destination UID), given the SHA-256 of each side's
    bytes by UID (a missing hash: that side could not be read back)."""
    ok = 0
    failures: list[Failure] = []
    altered: dict[int, int] = {}
    for m, duid in pairs:
        want = source.get(m.uid)
        have = dest.get(duid)
        if want is None or have is None:
            side = "source" if want is None else "destination"
            why = f"could not be read back from the {side} to compare its bytes"
        elif want != have:
            altered[m.uid] = duid
            why = (
                f"destination UID {duid} holds other bytes than the source's (same size, "
                "different SHA-256): the destination server changed the message"
            )
        else:
            ok += 1
            continue
        failures.append(failure(folder, m, why))
    return ok, failures, altered


ReadHashes = Callable[[Store, Sequence[int]], Awaitable[dict[int, tuple[int, bytes]]]]
ReadWith = Callable[[Store, Sequence[int], Callable[[bytes], Any]], Awaitable[dict[int, Any]]]


class Learned(Protocol):
    """Where a run keeps what its destination server changes (transfer/context.py)."""

    alteration: Alteration | None
    #: Whether the destination replaces 8-bit header bytes (None: not known yet).
    replaces_8bit: bool | None


class Verifier:
    """The I/O of a folder's verification (transfer/folder.py calls it last)."""

    def __init__(
        self,
        src: Store,
        dst: Store,
        res: FolderResult,
        storable: Callable[[str], bool],
        *,
        content: bool,
        read_hashes: ReadHashes,
        known_hashes: Mapping[int, bytes],
        expected: int | None = None,
        keywords: Keywords | None = None,
        read_with: ReadWith | None = None,
        learned: Learned | None = None,
        matched_altered: Mapping[int, tuple[str, bytes | None]] | None = None,
        at_risk: set[int] | None = None,
    ) -> None:
        self.src = src
        self.dst = dst
        self.res = res
        self.storable = storable
        self.content = content
        self.read_hashes = read_hashes
        #: source UID -> SHA-256 taken while copying (``content`` only)
        self.known = known_hashes
        #: Messages the destination folder should hold now: what it held when the pass
        #: listed it and what the pass put there; more means another client wrote.
        self.expected = expected
        #: What the destination folder keeps, by evidence (transfer/keywords.py).
        self.keywords = keywords
        #: Reads the stored bytes of copies of another size or other bytes, to recognise
        #: a server's alteration (None: such copies fail, as they did before).
        self.read_with = read_with
        self.learned = learned
        #: source UID -> (what changed, Message-ID), for messages the pass found on the
        #: destination by
        #: their altered fingerprint (FolderPass: "already there?" on an altering server)
        self.matched_altered = matched_altered or {}
        #: (failure as judged from sizes or hashes, destination UID): copies that are
        #: there but differ; recognised as altered, or failed, by :meth:`_judge`
        self.suspects: list[tuple[Failure, int]] = []
        #: source UIDs appended with 8-bit bytes in their header (same size when a
        #: server replaces them: only reading back tells), while the run does not know
        #: whether the destination keeps them
        self.at_risk = at_risk or set()
        #: source UID -> destination UID paired by Message-ID alone (another size: altered?)
        self.tentative: dict[int, int] = {}
        self.claim: dict[int, int] = {}

    async def run(self, smeta: Sequence[MessageMeta], claim: dict[int, int]) -> None:
        """Check each source message against its own destination message.

        The destination's metadata is fetched for the claimed UIDs, a chunk of source
        messages at a time, so a folder of 100,000 messages is never held twice over
        (only a server without UIDPLUS needs the whole listing, to match by Message-ID).
        """
        src, dst, res = self.src, self.dst, self.res
        self.claim = claim
        failed = {f.uid for f in res.failures}
        unmapped = [m for m in smeta if m.uid not in claim and m.uid not in failed]
        by_uid: dict[int, MessageMeta] | None = None
        exists: int | None = None
        if unmapped:
            info, dmeta = await dst.select_and_list(dst.selected or b"INBOX")
            exists = info.exists
            by_uid = {d.uid: d for d in dmeta}
            # No APPENDUID (server without UIDPLUS): match by (size, Message-ID), in order.
            taken = set(claim.values())
            free = [d for d in dmeta if d.uid not in taken]
            s_ids = await src.fetch_message_ids([m.uid for m in unmapped])
            d_ids = await dst.fetch_message_ids([d.uid for d in free]) if free else {}
            claim.update(match_by_message_id(unmapped, s_ids, free, d_ids))
            if self.read_with is not None:
                # ... or stored altered (another size): tentative, until _judge explains it
                taken = set(claim.values())
                rest = [m for m in unmapped if m.uid not in claim]
                left = [d for d in free if d.uid not in taken]
                self.tentative = match_resized_by_message_id(rest, s_ids, left, d_ids)
                claim.update(self.tentative)
            del dmeta, free
        to_read: list[tuple[MessageMeta, int]] = []
        risky: list[tuple[MessageMeta, int]] = []
        for start in range(0, len(smeta), VERIFY_CHUNK):
            chunk = smeta[start : start + VERIFY_CHUNK]
            if by_uid is None:
                want_uids = sorted(
                    claim[m.uid] for m in chunk if m.uid in claim and m.uid not in failed
                )
                if start == 0:
                    # A fresh view after the APPENDs, pipelined with the first fetch:
                    # one round trip (it counts on a WAN link, once per folder).
                    info, dmeta = await dst.reselect_and_fetch_meta(
                        format_uid_set(want_uids) if want_uids else None
                    )
                    exists = info.exists
                elif want_uids:
                    dmeta = await dst.fetch_meta(format_uid_set(want_uids), message_id=False)
                else:
                    dmeta = []
                here = {d.uid: d for d in dmeta}
            else:
                here = by_uid
            matched = self.matched_altered
            pairs = self.content or bool(matched) or bool(self.at_risk)
            found = check(res.source, chunk, claim, here, failed, self.storable, pairs=pairs)
            if await self._probe_keywords(found):
                found = check(res.source, chunk, claim, here, failed, self.storable, pairs=pairs)
            for duid, flags in found.set_flags:
                await dst.store_flags(duid, flags)
            res.flags_fixed += len(found.set_flags)
            for f in found.failures:
                duid = found.altered.get(f.uid)
                if duid is None:
                    res.failures.append(f)
                elif f.uid in matched and duid in here:
                    self._altered(f, duid, here[duid].size, *matched[f.uid])
                else:
                    self.suspects.append((f, duid))
            res.notes += found.notes
            res.verified += found.verified
            for m, duid in found.verified_pairs:
                if m.uid in matched:  # same size, but matched by its altered bytes
                    res.verified -= 1
                    self._altered(failure(res.source, m, ""), duid, m.size, *matched[m.uid])
                elif self.content:
                    to_read.append((m, duid))
                elif m.uid in self.at_risk:
                    risky.append((m, duid))
        if to_read:
            await self._content(to_read)
        if risky:
            await self._probe(risky)
        if self.suspects:
            await self._judge(self.suspects)
        others = (exists or 0) - self.expected if self.expected is not None else 0
        if exists is not None and others > 0:
            res.notes.append(
                f"{others} other message{'s' if others != 1 else ''} appeared in the "
                "destination folder during the copy (new mail or another client): left as "
                "they are, neither claimed nor changed"
            )

    async def _probe_keywords(self, found: Checked) -> bool:
        """The folder's keyword evidence is still missing and a flag fix would set an
        unpromised keyword: set it on that one message and read its flags back (once
        per folder).  True when something was learned (the chunk is judged again)."""
        kw = self.keywords
        if kw is None or kw.verdict is not None:
            return False
        probe = next(((d, f) for d, f in found.set_flags if kw.pending(f)), None)
        if probe is None:
            return False
        duid, flags = probe
        try:
            await self.dst.store_flags(duid, flags)
        except CommandError as exc:
            # e.g. GNU imap4d: "BAD UID STORE Unrecognized flag" -- not kept.  A refusal
            # about the connection or the account is raised (policy/retry.py).
            per_message(exc)
            kw.refused(flags)
            return True
        back = await self.dst.fetch_meta(str(duid), message_id=False)
        kw.learn(flags, back[0].flags if back else ())
        return True

    async def _content(self, pairs: Sequence[tuple[MessageMeta, int]]) -> None:
        """Read the destination's bytes back and compare them with the source's."""
        known = self.known
        read = await self.read_hashes(self.src, [m.uid for m, _ in pairs if m.uid not in known])
        source = {uid: fpr for uid, (_size, fpr) in read.items()}
        source.update(known)
        dest = {
            uid: fpr
            for uid, (_size, fpr) in (
                await self.read_hashes(self.dst, [duid for _, duid in pairs])
            ).items()
        }
        ok, failures, altered = compare_content(self.res.source, pairs, source, dest)
        self.res.content_verified += ok
        self.res.verified -= len(failures)
        for f in failures:
            duid = altered.get(f.uid)
            if duid is None:
                self.res.failures.append(f)
            else:
                self.suspects.append((f, duid))

    async def _probe(self, pairs: Sequence[tuple[MessageMeta, int]]) -> None:
        """Messages with 8-bit header bytes, verified by size: does the destination keep
        those bytes?  The first few are read back from both sides (all of them once the
        run knows the server replaces such bytes); those that differ are judged."""
        learned = self.learned
        verdict = learned.replaces_8bit if learned is not None else None
        if verdict is False:
            return
        if verdict is None:
            pairs = pairs[:PROBE_8BIT]
        sent = await self.read_hashes(self.src, [m.uid for m, _ in pairs])
        stored = await self.read_hashes(self.dst, [d for _, d in pairs])
        differ = False
        for m, duid in pairs:
            if m.uid in sent and duid in stored and sent[m.uid] != stored[duid]:
                differ = True
                self.res.verified -= 1
                why = (
                    f"destination UID {duid} holds other bytes than the source's (same "
                    "size, different SHA-256): the destination server changed the message"
                )
                self.suspects.append((failure(self.res.source, m, why), duid))
        if learned is not None and verdict is None:
            learned.replaces_8bit = differ

    def _altered(
        self, f: Failure, duid: int, stored_size: int, what: str, mid: bytes | None = None
    ) -> None:
        message_id = f.message_id or (mid.decode("utf-8", "replace") if mid else None)
        self.res.stored_altered.append(
            AlteredMessage(f.folder, f.uid, f.size, message_id, duid, stored_size, what)
        )

    async def _judge(self, suspects: Sequence[tuple[Failure, int]]) -> None:
        """Copies that are there with another size or other bytes: stored altered in a
        way transfer/altered.py recognises (``res.stored_altered``), or failed.

        Without a known alteration, the first few are read back from both sides to
        learn it; then the source's bytes of every suspect are read, altered as the
        server alters them, and their SHA-256 compared with the stored bytes'.  Only
        copies that differ are read: an exact destination costs nothing here."""
        learned = self.learned
        alt = learned.alteration if learned is not None else None
        if self.read_with is not None and alt is None:
            sample = suspects[:LEARN_SAMPLE]
            sent = await self.read_with(self.src, [f.uid for f, _ in sample], bytes)
            stored = await self.read_with(self.dst, [d for _, d in sample], bytes)
            alt = learn_any(
                (sent[f.uid], stored[d]) for f, d in sample if f.uid in sent and d in stored
            )
            del sent, stored
            if alt is not None and learned is not None:
                learned.alteration = alt
        if self.read_with is None or alt is None:
            for f, duid in suspects:
                self._differs(f, duid)
            return
        a = alt

        def server_copy(body: bytes) -> tuple[bytes, tuple[str, ...], bytes | None]:
            return fingerprint(a.apply(body)), a.changes(body), message_id_in(body)

        source = await self.read_with(self.src, [f.uid for f, _ in suspects], server_copy)
        dest = await self.read_hashes(self.dst, [d for _, d in suspects])
        odd: list[tuple[Failure, int]] = []
        for f, duid in suspects:
            want = source.get(f.uid)
            have = dest.get(duid)
            if want is not None and have is not None and want[0] == have[1] and want[1]:
                self._altered(f, duid, have[0], ", ".join(want[1]), want[2])
            else:
                odd.append((f, duid))
        del source, dest
        # Not explained by what the run learned (its first messages had no 8-bit
        # header, say): a few are read again and judged on their own.
        await self._judge_alone(odd[:LEARN_SAMPLE])
        for f, duid in odd[LEARN_SAMPLE:]:
            self._differs(f, duid)

    async def _judge_alone(self, pairs: Sequence[tuple[Failure, int]]) -> None:
        if not pairs or self.read_with is None:
            return
        sent = await self.read_with(self.src, [f.uid for f, _ in pairs], bytes)
        stored = await self.read_with(self.dst, [d for _, d in pairs], bytes)
        for f, duid in pairs:
            a, b = sent.get(f.uid), stored.get(duid)
            alt = learn(a, b) if a is not None and b is not None else None
            if alt is None or a is None or b is None:
                self._differs(f, duid)
                continue
            if self.learned is not None:
                known = self.learned.alteration
                self.learned.alteration = alt if known is None else known.union(alt)
            self._altered(f, duid, len(b), ", ".join(alt.changes(a)), message_id_in(a))

    def _differs(self, f: Failure, duid: int) -> None:
        """A copy that differs otherwise: failed (never sent again) -- unless it was only
        paired by its Message-ID (no APPENDUID): then it is not this message's copy."""
        if f.uid in self.tentative:
            del self.claim[f.uid]
            f.reason = "not found on the destination after copying"
        else:
            self.res.altered[f.uid] = duid
        self.res.failures.append(f)
