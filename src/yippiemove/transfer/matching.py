"""Matching: "is this source message already on the destination?" -- pure functions.

The heart of "never lost, never doubled" (docs/design.md).  Nothing here does I/O: each
function takes listings (metadata the engine fetched) and returns decisions, so every
rule is tested from fixtures in milliseconds (tests/transfer/test_matching.py), the way
the protocol parser is tested from bytes.

A folder pass matches in three steps:

1. :func:`claim_from_state` -- a destination message that the state file says we put
   there (same UID under the same UIDVALIDITY, same size) is claimed by its source
   message.
2. :func:`size_candidates` then :func:`find_ambiguous` -- of the rest, only a source
   message whose size occurs among the unclaimed destination messages can already be
   there; those whose (size, Message-ID[, INTERNALDATE]) also match are *ambiguous*,
   and the candidates' bodies are hashed (:class:`ContentPool`).
3. :meth:`ContentPool.take` -- while copying, an ambiguous message whose exact bytes are
   among the unclaimed destination hashes claims that message instead of being
   appended; anything else is appended.

:func:`match_by_message_id` is the verify's fallback for a destination without UIDPLUS
(no APPENDUID), and :func:`flags_kept_by_merge` / :func:`flags_kept_on_gmail` say which
flags a message should be judged by when another folder set them first.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..imap.client import MessageMeta
from .altered import GROWS_AT_MOST
from .model import STORED, Outcome

__all__ = [
    "ContentPool",
    "Match",
    "altered_candidates",
    "claim_from_state",
    "find_ambiguous",
    "flags_kept_by_merge",
    "flags_kept_on_gmail",
    "match_by_message_id",
    "match_resized_by_message_id",
    "size_candidates",
]


class StateRow(Protocol):
    """What :func:`claim_from_state` reads of a state row (transfer/state.py MessageRow)."""

    dest_uid: int | None
    outcome: str


@dataclass
class Match:
    """The claims of one folder pass: which destination message is whose."""

    #: source UID -> destination UID
    claim: dict[int, int] = field(default_factory=dict)
    #: destination UIDs claimed (the values of ``claim``)
    claimed_dest: set[int] = field(default_factory=set)
    #: source UID -> outcome, for the messages handled so far
    outcome_of: dict[int, Outcome] = field(default_factory=dict)
    #: source UIDs whose destination copy this pass, or (per the state) an earlier run,
    #: appended itself
    appended: set[int] = field(default_factory=set)


def claim_from_state(
    smeta: Sequence[MessageMeta],
    rows: Mapping[int, StateRow],
    dest_by_uid: Mapping[int, MessageMeta],
) -> Match:
    """Claim the destination messages the state file says we stored (``rows``: the
    state's rows of this folder by source UID, valid for both UIDVALIDITYs).

    A row claims its destination UID when the message is still there, whatever its
    size: under the same UIDVALIDITY a UID is never given to another message (RFC 3501
    2.3.1.1), so it is the message we stored -- maybe stored *altered* by the server
    (the verify judges it: altered or failed, never sent twice; a size check here made
    a re-run after ``kill -9`` append every altered message again).  No destination
    message is claimed twice."""
    match = Match()
    for m in smeta:
        r = rows.get(m.uid)
        if r is None or r.dest_uid is None or r.outcome not in STORED:
            continue
        d = dest_by_uid.get(r.dest_uid)
        if d is not None and d.uid not in match.claimed_dest:
            match.claim[m.uid] = d.uid
            match.claimed_dest.add(d.uid)
            match.outcome_of[m.uid] = Outcome.PRESENT
            if r.outcome == Outcome.COPIED:
                match.appended.add(m.uid)
    return match


def size_candidates(
    to_copy: Sequence[MessageMeta], free_dest: Sequence[MessageMeta]
) -> tuple[list[MessageMeta], list[MessageMeta]]:
    """(source, destination) messages that may be copies of each other: only a size
    found on the other side can be.  Their Message-IDs are worth fetching."""
    if not to_copy or not free_dest:
        return [], []
    dsizes = {d.size for d in free_dest}
    ssizes = {m.size for m in to_copy}
    return [m for m in to_copy if m.size in dsizes], [d for d in free_dest if d.size in ssizes]


def find_ambiguous(
    s_cand: Sequence[MessageMeta],
    s_ids: Mapping[int, bytes | None],
    d_cand: Sequence[MessageMeta],
    d_ids: Mapping[int, bytes | None],
    *,
    instant: Callable[[bytes], int | None] | None = None,
) -> tuple[set[int], set[int]]:
    """(ambiguous source UIDs, destination UIDs to hash): a source message whose
    (size, Message-ID) equals an unclaimed destination message's may be a copy of it.
    A message without Message-ID matches one without.  With ``instant`` (a Gmail
    destination, where a message is its bytes *and* its INTERNALDATE) the instants
    must match too."""
    index: dict[tuple[int, bytes | None, int | None], list[int]] = defaultdict(list)
    for d in d_cand:
        when = instant(d.internaldate) if instant else None
        index[(d.size, d_ids.get(d.uid), when)].append(d.uid)
    ambiguous: set[int] = set()
    candidates: set[int] = set()
    for m in s_cand:
        when = instant(m.internaldate) if instant else None
        key = (m.size, s_ids.get(m.uid), when)
        if key in index:
            ambiguous.add(m.uid)
            candidates.update(index[key])
    return ambiguous, candidates


class ContentPool:
    """Unclaimed destination messages by (size, SHA-256): each can be claimed once."""

    def __init__(self, hashed: Mapping[int, tuple[int, bytes]] | None = None) -> None:
        self._pool: dict[tuple[int, bytes], list[int]] = defaultdict(list)
        for uid, key in sorted((hashed or {}).items()):
            self._pool[key].append(uid)

    def take(self, size: int, fpr: bytes) -> int | None:
        """The lowest unclaimed destination UID holding exactly these bytes, claimed."""
        cands = self._pool.get((size, fpr))
        return cands.pop(0) if cands else None


def _nearest_other(sizes: Sequence[int], size: int) -> int | None:
    """Index in ``sizes`` (ascending) of the largest size of at most
    ``size + GROWS_AT_MOST`` that is not ``size`` (None: none)."""
    i = bisect_right(sizes, size + GROWS_AT_MOST) - 1
    while i >= 0 and sizes[i] == size:
        i -= 1
    return i if i >= 0 else None


def altered_candidates(
    to_copy: Sequence[MessageMeta],
    s_ids: Mapping[int, bytes | None],
    free_dest: Sequence[MessageMeta],
    d_ids: Mapping[int, bytes | None],
) -> tuple[set[int], set[int], list[tuple[int, int]]]:
    """Messages that may be on the destination stored *altered* (transfer/altered.py):
    (source UIDs, destination UIDs to hash, pairs to learn the alteration from).

    A recognised alteration makes a message larger by at most ``GROWS_AT_MOST`` bytes,
    so a source message may be stored as a destination message of its Message-ID (a
    message without one: of no Message-ID) that is no larger than that.  The learning
    pairs: one per source message whose Message-ID a destination message of another
    size has, in source order; then, for messages without Message-ID, each with the
    nearest one of another size without (a guess: learning from two different messages
    learns nothing).  Sorted sizes, not a scan per message, for those without."""
    index: dict[bytes | None, list[MessageMeta]] = defaultdict(list)
    for d in free_dest:
        index[d_ids.get(d.uid)].append(d)
    nameless = sorted((d.size, d.uid) for d in index.pop(None, ()))
    nsizes = [size for size, _ in nameless]
    sources: set[int] = set()
    dests: set[int] = set()
    pairs: list[tuple[int, int]] = []
    loose: list[tuple[int, int]] = []
    biggest = -1
    for m in to_copy:
        mid = s_ids.get(m.uid)
        if mid is None:
            if not nsizes or nsizes[0] > m.size + GROWS_AT_MOST:
                continue
            sources.add(m.uid)
            biggest = max(biggest, m.size)
            j = _nearest_other(nsizes, m.size)
            if j is not None:
                loose.append((m.uid, nameless[j][1]))
            continue
        fits = [d for d in index.get(mid, ()) if d.size <= m.size + GROWS_AT_MOST]
        if not fits:
            continue
        sources.add(m.uid)
        dests.update(d.uid for d in fits)
        other = next((d for d in fits if d.size != m.size), None)
        if other is not None:
            pairs.append((m.uid, other.uid))
    dests.update(uid for size, uid in nameless if size <= biggest + GROWS_AT_MOST)
    return sources, dests, pairs + loose


def match_by_message_id(
    unmapped: Sequence[MessageMeta],
    s_ids: Mapping[int, bytes | None],
    free: Sequence[MessageMeta],
    d_ids: Mapping[int, bytes | None],
) -> dict[int, int]:
    """A destination without UIDPLUS gives no APPENDUID: pair each unmapped source
    message with a free destination message of the same (size, Message-ID), in UID
    order, each destination message at most once."""
    index: dict[tuple[int, bytes | None], list[int]] = defaultdict(list)
    for d in free:
        index[(d.size, d_ids.get(d.uid))].append(d.uid)
    out: dict[int, int] = {}
    for m in unmapped:
        lst = index.get((m.size, s_ids.get(m.uid)))
        if lst:
            out[m.uid] = lst.pop(0)
    return out


def match_resized_by_message_id(
    unmapped: Sequence[MessageMeta],
    s_ids: Mapping[int, bytes | None],
    free: Sequence[MessageMeta],
    d_ids: Mapping[int, bytes | None],
) -> dict[int, int]:
    """No APPENDUID, and no free message of the same (size, Message-ID): pair each
    source message with a free destination message of its Message-ID (a message without
    one: of none, the nearest size) and another size that a recognised alteration can
    give -- stored altered? the verify reads both to tell, and undoes a pair it cannot
    explain.  In UID order, each destination message at most once."""
    index: dict[bytes | None, list[MessageMeta]] = defaultdict(list)
    for d in free:
        index[d_ids.get(d.uid)].append(d)
    nameless = sorted((d.size, d.uid) for d in index.pop(None, ()))
    nsizes = [size for size, _ in nameless]
    out: dict[int, int] = {}
    for m in unmapped:
        mid = s_ids.get(m.uid)
        if mid is None:
            j = _nearest_other(nsizes, m.size)
            if j is not None:
                del nsizes[j]
                out[m.uid] = nameless.pop(j)[1]
            continue
        lst = index.get(mid, [])
        d = next((d for d in lst if d.size != m.size and d.size <= m.size + GROWS_AT_MOST), None)
        if d is not None:
            lst.remove(d)
            out[m.uid] = d.uid
    return out


def _without_recent(flags: Sequence[str]) -> tuple[str, ...]:
    return tuple(f for f in flags if f.upper() != "\\RECENT")


def flags_kept_by_merge(
    smeta: Sequence[MessageMeta],
    claim: Mapping[int, int],
    dest_by_uid: Mapping[int, MessageMeta],
    earlier: set[int],
) -> list[MessageMeta]:
    """Source messages as the verify should judge them in a merged folder: one that an
    earlier folder of the merge group (same run, same destination folder) claimed as
    ``earlier`` keeps the flags that folder gave it -- the first folder of the group
    wins, so re-runs do not set flags back and forth."""
    out: list[MessageMeta] = []
    for m in smeta:
        duid = claim.get(m.uid)
        d = dest_by_uid.get(duid) if duid is not None and duid in earlier else None
        if d is not None:
            m = dataclasses.replace(m, flags=_without_recent(d.flags))
        out.append(m)
    return out


def flags_kept_on_gmail(
    smeta: Sequence[MessageMeta],
    claim: Mapping[int, int],
    shared: set[int],
    have: Mapping[int, tuple[str, ...]],
) -> list[MessageMeta]:
    """On Gmail flags belong to the message, which other folders may share: a source
    message whose destination message (in ``shared``) this folder did not append is
    judged by the flags it has (``have``: the appending folder's)."""
    out: list[MessageMeta] = []
    for m in smeta:
        duid = claim.get(m.uid)
        if duid in shared and duid in have:
            m = dataclasses.replace(m, flags=have[duid])
        out.append(m)
    return out
