"""The engine's half of Gmail's labels (the decisions are in policy/gmail.py).

Gmail as the source: :class:`GmailSource` lists and counts the *archive* pass -- the
messages of ``[Gmail]/All Mail`` without a label that is a folder -- with one
``UID FETCH (... X-GM-LABELS)`` over All Mail (robust: it does not depend on how Gmail's
search language treats labels hidden from IMAP, and costs some 60 bytes a message).

Gmail as the destination: :class:`GmailDest` makes a message that several source folders
hold one Gmail message with several labels.

* A message is identified by its *key*: the SHA-256 of its bytes (the fingerprint the
  engine computes anyway) and its INTERNALDATE as an instant.
* The *registry* maps a key to the Gmail messages known to hold it (compact records:
  folder, UIDVALIDITY, UID, X-GM-MSGID): those appended in this run (a folder pass
  *reserves* a :class:`Stored` entry when it decides to APPEND, and *publishes* the UID
  and X-GM-MSGID once its APPENDs are answered), and those found in ``[Gmail]/All Mail``
  -- the destination is the truth: the state file is only an accelerator.  All Mail is listed once per run (UID, size, INTERNALDATE,
  X-GM-MSGID); a message there whose X-GM-MSGID the state file knows has a known key;
  the others are hashed only when a message to copy has the same size and instant.
* In the copy (transfer/copy.py), a fetched message whose key the registry holds, in a Gmail message
  not yet in this folder, is *deferred* instead of appended (its body is dropped).
  After the APPENDs, the pass waits for the entries it deferred to (other passes
  publish theirs as soon as their own APPENDs are done, before they wait for anything:
  no pass can wait for itself through another) and adds its label with ``UID COPY``
  from the folder the message was found in: on Gmail COPY adds a label and answers
  COPYUID (RFC 4315), i.e. the message's UID in this folder for the state and the verify.
* Whatever could not be labelled (the entry's APPEND failed, the message is gone, its
  folder was recreated) is looked for in All Mail by size, INTERNALDATE and hash; what is
  still not found is appended after all.
* Multiplicity: a pass never uses one Gmail message for two of its source messages, nor
  one that is in its folder already, so a message a folder holds twice becomes two Gmail
  messages; the account ends up with as many Gmail messages of a key as the folder that
  holds it most often.

The ``gmail_messages`` table of the state file (transfer/state.py) records X-GM-MSGID ->
key of every message appended or hashed, so that a re-run (after a crash between an
APPEND and a label, say) finds the message in All Mail without downloading it again.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ..imap import gmail as gm
from ..imap.client import MessageMeta, SelectInfo
from ..imap.errors import CommandError
from ..policy import gmail as gmail_policy
from ..policy import retry as retry_policy
from ..policy.rules import MessageFilter
from .dates import parse_internaldate
from .hashing import fingerprint as _fingerprint
from .model import Outcome
from .state import GmailRow, State
from .store import GmailStore

log = logging.getLogger(__name__)

__all__ = ["DestPass", "GmailDest", "GmailSource", "Key", "Stored", "message_key"]

#: (SHA-256 of the bytes, INTERNALDATE as Unix seconds)
Key = tuple[bytes, int]


async def _hash_uids(dst: GmailStore, uids: Sequence[int]) -> dict[int, bytes]:
    """Fingerprints of messages of the selected folder; bodies are hashed as they come
    and dropped (200 UIDs a command, three commands in flight)."""
    out: dict[int, bytes] = {}

    def on_body(uid: int, body: bytes) -> None:
        out[uid] = _fingerprint(body)

    futs = []
    ordered = sorted(uids)
    for i in range(0, len(ordered), 200):
        futs.append(await dst.submit_fetch_bodies(ordered[i : i + 200], on_body))
        if len(futs) >= 3:
            r = await futs.pop(0)
            if not r.tagged.ok:
                raise CommandError("UID FETCH", r.tagged)
    for f in futs:
        r = await f
        if not r.tagged.ok:
            raise CommandError("UID FETCH", r.tagged)
    return out


def instant(internaldate: bytes) -> int | None:
    try:
        return int(parse_internaldate(internaldate).timestamp())
    except ValueError:
        return None


def message_key(fpr: bytes, internaldate: bytes) -> Key | None:
    """A message's identity on a Gmail destination; None when its date cannot be read
    (then it is always appended)."""
    when = instant(internaldate)
    return None if when is None else (fpr, when)


# ----------------------------------------------------------------------------- source


class GmailSource:
    """The archive pass of a Gmail source: All Mail, restricted to archived messages."""

    def __init__(self, folder_labels: frozenset[str]) -> None:
        self.folder_labels = folder_labels

    async def _archived(
        self, src: GmailStore, raw: bytes, filters: MessageFilter
    ) -> tuple[SelectInfo, list[MessageMeta]]:
        info = await src.select(raw, readonly=True)
        if not info.exists:
            return info, []
        if filters.active:
            uids = await src.uid_search(filters.criteria())
            listed = await src.fetch_labelled_meta(uids) if uids else []
        else:
            listed = await src.fetch_labelled_meta()
        return info, [
            m for m, labels in listed if gmail_policy.is_archived(labels, self.folder_labels)
        ]

    async def list_archived(
        self, src: GmailStore, raw: bytes, filters: MessageFilter
    ) -> tuple[SelectInfo, list[MessageMeta]]:
        """EXAMINE All Mail and list its archived messages (after the message filters)."""
        return await self._archived(src, raw, filters)

    async def count_archived(
        self, src: GmailStore, raw: bytes, filters: MessageFilter
    ) -> tuple[int, int, tuple[str, ...]]:
        """(messages, bytes, All Mail's FLAGS) of the archive pass, for the plan."""
        info, metas = await self._archived(src, raw, filters)
        return len(metas), sum(m.size for m in metas), info.flags


# ----------------------------------------------------------------------------- destination

#: A message known to be stored: folder (index), UIDVALIDITY, UID, X-GM-MSGID (0: unknown).
_REC = struct.Struct("<HIIQ")
#: An All Mail message whose key is not known yet: UID, X-GM-MSGID.
_ALL = struct.Struct("<IQ")


def _kb(key: Key) -> bytes:
    """A key as a compact dict key (the registry holds one per message of the account)."""
    return key[0] + key[1].to_bytes(8, "big", signed=True)


def _si(size: int, when: int) -> int:
    """(size, instant) as one int: the index of All Mail messages not hashed yet."""
    return (size << 44) | (when + (1 << 43))


@dataclass(eq=False, slots=True)
class Stored:
    """One Gmail message that holds a key, and where it can be copied from."""

    key: Key
    size: int
    #: The source folder whose pass appended it (None: found on the destination).
    origin: str | None
    folder: bytes  # raw name of the destination folder it can be copied from
    uidvalidity: int = 0
    uid: int | None = None
    msgid: int | None = None
    #: While its APPEND is pending: done when its pass has published its APPENDs (one
    #: future for all of them); then ``uid`` is None if it was not stored.
    ready: asyncio.Future[None] | None = None

    @property
    def failed(self) -> bool:
        return self.ready is not None and self.ready.done() and self.uid is None


@dataclass(eq=False)
class DestPass:
    """One folder pass into a Gmail destination."""

    source: str
    dest_raw: bytes
    dest_name: str
    #: X-GM-MSGIDs of the messages in the destination folder (at the start of the pass,
    #: plus those labelled by it).
    present: set[int] = field(default_factory=set)
    #: The pending APPENDs it deferred to, and the stored messages it chose (X-GM-MSGID,
    #: or folder index and UID): never one Gmail message for two source messages.
    used: set[Stored] = field(default_factory=set)
    taken: set[object] = field(default_factory=set)
    deferred: list[tuple[MessageMeta, Stored]] = field(default_factory=list)
    reserved: list[tuple[MessageMeta, Stored]] = field(default_factory=list)
    #: Leftovers are appended: no registry lookup then.
    append_all: bool = False
    #: Source UIDs of leftovers reserved when :meth:`GmailDest.label` chose to append
    #: them (before any await: two passes never both decide to append one key).
    prereserved: set[int] = field(default_factory=set)
    labelled: set[int] = field(default_factory=set)  # destination UIDs labelled by it
    #: Done when the reservations made so far are published (or dropped).
    round: asyncio.Future[None] | None = None


#: Called for a labelled message: (source message, its fingerprint, destination UID).
OnLabelled = Callable[[MessageMeta, bytes, int], None]


class GmailDest:
    """Gmail as the destination, for one run (shared by all folder workers).

    Memory: the registry holds some 200 bytes per message stored or found (a 40-byte key
    and an 18-byte record in a dict), the index of All Mail messages not hashed yet some
    150 bytes per message; pending APPENDs are objects, but only while they are pending.
    """

    def __init__(self, all_mail: bytes | None, state: State | None) -> None:
        self.all_mail = all_mail
        self.state = state
        self.passes: dict[str, DestPass] = {}
        self._pending: dict[bytes, list[Stored]] = {}
        self._known: dict[bytes, bytes] = {}
        self._folders: list[bytes] = []
        self._folder_ix: dict[bytes, int] = {}
        self._lock = asyncio.Lock()
        self._indexed = False
        self._all_validity = 0
        #: All Mail messages whose key is not known yet, by _si(size, instant).
        self._unhashed: dict[int, bytes] = {}
        #: Keys of APPENDs that may have been stored but were never published (:meth:`end`).
        self._uncertain: set[bytes] = set()

    # ---------------------------------------------------------------- the registry

    def _ix(self, folder: bytes) -> int:
        ix = self._folder_ix.get(folder)
        if ix is None:
            ix = self._folder_ix[folder] = len(self._folders)
            self._folders.append(folder)
        return ix

    def _remember(
        self, key: Key, folder: bytes, validity: int, uid: int, msgid: int | None
    ) -> None:
        kb = _kb(key)
        recs = self._known.get(kb, b"")
        if msgid:
            for i in range(0, len(recs), _REC.size):
                if _REC.unpack_from(recs, i)[3] == msgid:
                    return  # known already (appended in this run, then found in All Mail)
        self._known[kb] = recs + _REC.pack(self._ix(folder), validity, uid, msgid or 0)

    def _stored(self, key: Key, size: int) -> Iterator[tuple[object, Stored]]:
        """The messages known to hold a key: (identity, where)."""
        recs = self._known.get(_kb(key), b"")
        for i in range(0, len(recs), _REC.size):
            ix, validity, uid, msgid = _REC.unpack_from(recs, i)
            token: object = msgid if msgid else (ix, validity, uid)
            yield token, Stored(key, size, None, self._folders[ix], validity, uid, msgid or None)

    # ---------------------------------------------------------------- the index

    async def _index(self, dst: GmailStore) -> None:
        """List All Mail once (lock held): known keys go to the registry."""
        if self._indexed or self.all_mail is None:
            self._indexed = True
            return
        info = await dst.select(self.all_mail, readonly=True)
        self._all_validity = info.uidvalidity
        entries = await dst.fetch_index() if info.exists else []
        known: dict[int, GmailRow] = self.state.gmail_rows() if self.state is not None else {}
        for e in entries:
            when = instant(e.internaldate)
            if when is None:
                continue
            row = known.get(e.msgid)
            if row is not None and row.size == e.size and row.instant == when:
                self._remember(
                    (row.fingerprint, when), self.all_mail, info.uidvalidity, e.uid, e.msgid
                )
            else:
                k = _si(e.size, when)
                self._unhashed[k] = self._unhashed.get(k, b"") + _ALL.pack(e.uid, e.msgid)
        self._indexed = True
        log.debug("Gmail destination: %d messages in All Mail", len(entries))

    async def _hash_candidates(self, dst: GmailStore, to_copy: Sequence[MessageMeta]) -> None:
        """Hash the All Mail messages that have the size and instant of a message to copy."""
        assert self.all_mail is not None
        want: dict[int, tuple[int, int, int]] = {}  # uid -> (size, instant, msgid)
        taken: dict[int, bytes] = {}
        for m in to_copy:
            when = instant(m.internaldate)
            if when is None:
                continue
            k = _si(m.size, when)
            recs = self._unhashed.pop(k, None)
            if recs is None:
                continue
            taken[k] = recs
            for uid, msgid in _ALL.iter_unpack(recs):
                want[uid] = (m.size, when, msgid)
        if not want:
            return
        try:
            info = await dst.select(self.all_mail, readonly=True)
            if info.uidvalidity != self._all_validity:
                return  # All Mail was recreated (never seen on Gmail): the fallback copes
            fprs = await _hash_uids(dst, list(want))
        except BaseException:
            self._unhashed.update(taken)  # not hashed after all: a later pass tries again
            raise
        for uid, (size, when, msgid) in want.items():
            fpr = fprs.get(uid)
            if fpr is None:
                continue  # gone meanwhile
            self._remember((fpr, when), self.all_mail, self._all_validity, uid, msgid)
            if self.state is not None:
                self.state.record_gmail(GmailRow(msgid, fpr, size, when))

    # ---------------------------------------------------------------- one pass

    async def prepare(
        self,
        dst: GmailStore,
        source: str,
        dest_raw: bytes,
        dest_name: str,
        to_copy: Sequence[MessageMeta],
        *,
        empty: bool = False,
    ) -> DestPass:
        """Before a pass copies into a shared Gmail folder (selected on ``dst``): learn
        which messages are in it and the keys of All Mail messages that may be copies."""
        p = DestPass(source, dest_raw, dest_name)
        if not empty:
            p.present = set((await dst.fetch_msgids()).values())
        if self.all_mail is not None:
            async with self._lock:
                await self._index(dst)
                await self._hash_candidates(dst, to_copy)
            if dst.selected != dest_raw:
                await dst.select(dest_raw)
        self.passes[source] = p
        return p

    def label_instead(self, source: str, m: MessageMeta, fpr: bytes) -> bool:
        """:meth:`label_instead_of` for the pass of the source folder ``source``."""
        return self.label_instead_of(self.passes.get(source), m, fpr)

    def label_instead_of(self, p: DestPass | None, m: MessageMeta, fpr: bytes) -> bool:
        """Called by the copy of pass ``p`` for each fetched message about to be appended:
        True when a Gmail message with the same key will get this folder's label instead
        (the body is not needed any more); else the APPEND goes ahead and is reserved
        here."""
        if p is None:
            return False
        if p.append_all and m.uid in p.prereserved:
            p.prereserved.discard(m.uid)  # reserved by label(): append it
            return False
        key = message_key(fpr, m.internaldate)
        if key is None:
            return False
        kb = _kb(key)
        if not p.append_all:
            for s in self._pending.get(kb, ()):
                if s in p.used or s.folder == p.dest_raw or s.failed:
                    continue
                p.used.add(s)
                p.deferred.append((m, s))
                return True
            for token, s in self._stored(key, m.size):
                if token in p.taken or s.folder == p.dest_raw or s.msgid in p.present:
                    continue
                p.taken.add(token)
                p.deferred.append((m, s))
                return True
            if kb in self._uncertain:
                # Perhaps stored by a pass that failed before it could say so: deferred
                # as a failed entry, :meth:`label` looks for it in All Mail (and appends
                # it after all when it is not there).
                p.deferred.append((m, Stored(key, m.size, None, b"")))
                return True
        if p.round is None or p.round.done():
            p.round = asyncio.get_running_loop().create_future()
        s = Stored(key, m.size, p.source, p.dest_raw, ready=p.round)
        self._pending.setdefault(kb, []).append(s)
        p.reserved.append((m, s))
        return False

    async def publish(
        self,
        dst: GmailStore,
        p: DestPass,
        dinfo: SelectInfo,
        claim: dict[int, int],
        outcome_of: dict[int, Outcome],
    ) -> None:
        """After the pass's APPENDs: its reserved entries become known Gmail messages
        (UID from APPENDUID, X-GM-MSGID fetched here; the folder is selected) or, when
        the APPEND failed, are dropped.  Other passes waiting for them go on."""
        done, failed = [], []
        for m, s in p.reserved:
            duid = claim.get(m.uid)
            if duid is not None and outcome_of.get(m.uid) == Outcome.COPIED:
                done.append((s, duid))
            else:
                failed.append(s)
        p.reserved = []
        # The X-GM-MSGIDs; when the connection drops meanwhile, the UIDs are published
        # without them (others can still label from the folder), then the error goes on.
        ids: dict[int, int] = {}
        try:
            if done:
                ids = await dst.fetch_msgids([duid for _s, duid in done])
        finally:
            for s, duid in done:
                s.uid, s.uidvalidity, s.msgid = duid, dinfo.uidvalidity, ids.get(duid)
                self._remember(s.key, s.folder, s.uidvalidity, duid, s.msgid)
                self._unpend(s)
                if s.msgid is not None:
                    p.present.add(s.msgid)
                    if self.state is not None:
                        self.state.record_gmail(
                            GmailRow(
                                s.msgid,
                                s.key[0],
                                s.size,
                                s.key[1],
                                s.origin,
                                p.dest_name,
                                s.uidvalidity,
                                duid,
                            )
                        )
            for s in failed:
                self._unpend(s)
            _finish(p)

    def _unpend(self, s: Stored) -> None:
        kb = _kb(s.key)
        entries = self._pending.get(kb)
        if entries is not None:
            if s in entries:
                entries.remove(s)
            if not entries:
                del self._pending[kb]

    def end(
        self,
        p: DestPass,
        claim: dict[int, int] | None = None,
        outcome_of: dict[int, Outcome] | None = None,
        uidvalidity: int = 0,
    ) -> None:
        """The pass is over (or failed): nobody may wait for its reservations any more.

        Reservations it could not publish (the connection dropped after some of its
        APPENDs were stored: a cut, a ``BYE`` when a session's token expired): those
        whose APPEND was answered (``claim``/``outcome_of``: the APPENDUID) are
        remembered by folder and UID, so that other passes label them; the others may be
        Gmail messages nobody knows of: their keys become *uncertain*, and a pass that
        would append one looks for it in All Mail first (:meth:`label_instead_of`), so
        that it is labelled instead of stored a second time."""
        for m, s in p.reserved:
            duid = claim.get(m.uid) if claim is not None and outcome_of is not None else None
            if (
                duid is not None
                and outcome_of is not None
                and outcome_of.get(m.uid) == Outcome.COPIED
            ):
                self._remember(s.key, s.folder, uidvalidity, duid, None)
            else:
                self._uncertain.add(_kb(s.key))
        for _m, s in p.reserved:
            self._unpend(s)
        p.reserved = []
        _finish(p)
        if self.passes.get(p.source) is p:
            del self.passes[p.source]

    async def label(
        self, dst: GmailStore, p: DestPass, claim: dict[int, int], on_labelled: OnLabelled
    ) -> list[MessageMeta]:
        """Add this folder's label to the deferred messages; returns those that must be
        appended after all.  Leaves the pass's folder selected."""
        items, p.deferred = p.deferred, []
        if not items:
            return []
        pending = {s.ready for _m, s in items if s.ready is not None and not s.ready.done()}
        if pending:
            await asyncio.wait(pending)
        claimed = set(claim.values())
        groups: dict[tuple[bytes, int], list[tuple[MessageMeta, Stored]]] = defaultdict(list)
        retry: list[tuple[MessageMeta, Key]] = []
        for m, s in items:
            if s.uid is None:  # its APPEND failed, or its pass did
                retry.append((m, s.key))
            else:
                groups[(s.folder, s.uidvalidity)].append((m, s))

        def labelled(m: MessageMeta, key: Key, duid: int, msgid: int | None) -> None:
            claim[m.uid] = duid
            claimed.add(duid)
            p.labelled.add(duid)
            if msgid is not None:
                p.present.add(msgid)
            on_labelled(m, key[0], duid)

        try:
            for (folder, validity), group in groups.items():
                info = await dst.select(folder, readonly=True)
                if info.uidvalidity != validity:
                    retry.extend((m, s.key) for m, s in group)
                    continue
                try:
                    mapping = await dst.copy_uids(
                        [s.uid for _m, s in group if s.uid is not None], p.dest_raw
                    )
                except CommandError as exc:
                    if retry_policy.classify(exc).kind != retry_policy.MESSAGE:
                        raise
                    log.debug("UID COPY refused: %s", exc)
                    mapping = {}
                for m, s in group:
                    duid = mapping.get(s.uid) if s.uid is not None else None
                    if duid is None or duid in claimed:
                        retry.append((m, s.key))
                    else:
                        labelled(m, s.key, duid, s.msgid)
            leftovers = await self._find_in_all_mail(dst, p, retry, claimed, labelled)
            # No await from here until the reservations are made: another pass that
            # searched All Mail for the same key meanwhile either reserved it first (then
            # this one labels its copy) or finds this pass's reservation.
            key_of = {id(m): key for m, key in retry}
            covered = self._reserve_leftovers(p, leftovers, key_of)
        finally:
            if dst.selected != p.dest_raw:
                await dst.select(p.dest_raw)
        if covered:
            taken = {id(m) for m, _s in covered}
            leftovers = [m for m in leftovers if id(m) not in taken]
            p.deferred.extend(covered)
            leftovers += await self.label(dst, p, claim, on_labelled)
        return leftovers

    def _reserve_leftovers(
        self, p: DestPass, leftovers: list[MessageMeta], key_of: dict[int, Key]
    ) -> list[tuple[MessageMeta, Stored]]:
        """Reserve the keys ``p`` will append after all (synchronously); returns those
        another pass is appending already (to be labelled from its copy instead)."""
        covered: list[tuple[MessageMeta, Stored]] = []
        for m in leftovers:
            key = key_of.get(id(m))
            if key is None:
                continue
            kb = _kb(key)
            other = next(
                (
                    s
                    for s in self._pending.get(kb, ())
                    if s.folder != p.dest_raw and not s.failed and s not in p.used
                ),
                None,
            )
            if other is not None:
                p.used.add(other)
                covered.append((m, other))
                continue
            if p.round is None or p.round.done():
                p.round = asyncio.get_running_loop().create_future()
            s = Stored(key, m.size, p.source, p.dest_raw, ready=p.round)
            self._pending.setdefault(kb, []).append(s)
            p.reserved.append((m, s))
            p.prereserved.add(m.uid)
        return covered

    async def _find_in_all_mail(
        self,
        dst: GmailStore,
        p: DestPass,
        items: list[tuple[MessageMeta, Key]],
        claimed: set[int],
        labelled: Callable[[MessageMeta, Key, int, int | None], None],
    ) -> list[MessageMeta]:
        """Look for messages whose entry failed in All Mail (by size, instant, then the
        hash) and label them; returns the ones not found."""
        if not items or self.all_mail is None:
            return [m for m, _k in items]
        await dst.select(self.all_mail, readonly=True)
        sizes = sorted({m.size for m, _k in items})
        cands: dict[int, gm.IndexEntry] = {}
        for size in sizes:
            uids = await dst.uid_search([b"LARGER", str(size - 1), b"SMALLER", str(size + 1)])
            if uids:
                for e in await dst.fetch_index(uids):
                    cands[e.uid] = e
        wanted = {(m.size, k[1]) for m, k in items}
        to_hash = [
            e
            for e in cands.values()
            if e.msgid not in p.present and (e.size, instant(e.internaldate)) in wanted
        ]
        fprs = await _hash_uids(dst, [e.uid for e in to_hash]) if to_hash else {}
        by_key: dict[Key, list[gm.IndexEntry]] = defaultdict(list)
        for e in to_hash:
            fpr = fprs.get(e.uid)
            when = instant(e.internaldate)
            if fpr is not None and when is not None:
                by_key[(fpr, when)].append(e)
        leftovers: list[MessageMeta] = []
        picks: list[tuple[MessageMeta, Key, gm.IndexEntry]] = []
        taken: set[int] = set()
        for m, key in items:
            e = next((e for e in by_key.get(key, ()) if e.uid not in taken), None)
            if e is None:
                leftovers.append(m)
            else:
                taken.add(e.uid)
                picks.append((m, key, e))
        if picks:
            try:
                mapping = await dst.copy_uids([e.uid for _m, _k, e in picks], p.dest_raw)
            except CommandError as exc:
                if retry_policy.classify(exc).kind != retry_policy.MESSAGE:
                    raise
                mapping = {}
            for m, key, e in picks:
                duid = mapping.get(e.uid)
                if duid is None or duid in claimed:
                    leftovers.append(m)
                else:
                    labelled(m, key, duid, e.msgid)
        return leftovers


def _finish(p: DestPass) -> None:
    """Wake the passes waiting for ``p``'s reservations (published or dropped)."""
    if p.round is not None and not p.round.done():
        p.round.set_result(None)
