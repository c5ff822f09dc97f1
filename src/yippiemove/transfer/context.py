"""What the folder passes of one transfer share: options, state, progress, the byte
budget, the hasher, Gmail's registry and merge bookkeeping.  The :class:`Mover`
(transfer/engine.py) makes one; each :class:`~yippiemove.transfer.folder.FolderPass`
reads and updates it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ..imap.connection import CommandResult
from ..imap.errors import CommandError
from .altered import Alteration
from .budget import ByteBudget
from .hashing import Hasher, fingerprint
from .model import FolderPlan, Options, Progress
from .state import State
from .store import Store

if TYPE_CHECKING:  # Gmail's modules load only for a Gmail account (start-up)
    from .gmail import GmailDest, GmailSource

__all__ = ["Context", "EventHandler", "Tally", "check", "chunks_by_count", "norm_inbox"]

EventHandler = Callable[[str], None]
T = TypeVar("T")


def norm_inbox(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1); other names are not."""
    if name.upper() == "INBOX":
        return "INBOX"
    return name


def chunks_by_count(seq: Sequence[int], n: int) -> list[list[int]]:
    return [list(seq[i : i + n]) for i in range(0, len(seq), n)]


def check(res: CommandResult, what: str) -> None:
    """Raise the refusal of a completed command."""
    if not res.tagged.ok:
        raise CommandError(what, res.tagged)


class Tally:
    """Progress counted per folder pass, so that a retried pass is not counted twice."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        #: source folder -> [messages, bytes, failed] of its latest pass
        self.passes: dict[str, list[int]] = {}

    def start(self, folder: str) -> None:
        self.passes[folder] = [0, 0, 0]

    def reached(self, folder: str) -> int:
        """Messages the folder's latest pass handled (progress, for policy/retry.py)."""
        return self.passes.get(folder, [0, 0, 0])[0]

    def advance(self, fp: FolderPlan, size: int, *, failed: bool = False) -> None:
        p = self.progress
        p.messages_done += 1
        p.bytes_done += size
        counts = self.passes.setdefault(fp.source.name, [0, 0, 0])
        counts[0] += 1
        counts[1] += size
        if failed:
            p.failed += 1
            counts[2] += 1

    def undo(self, fp: FolderPlan) -> None:
        """A folder pass is being retried: take its progress back."""
        msgs, size, failed = self.passes.pop(fp.source.name, [0, 0, 0])
        flying = self.progress.in_flight
        for key in [k for k, s in list(flying.items()) if s.folder == fp.source.name]:
            flying.pop(key, None)
        self.progress.messages_done -= msgs
        self.progress.bytes_done -= size
        self.progress.failed -= failed

    def by_folder(self) -> dict[str, tuple[int, int, int]]:
        return {name: (c[0], c[1], c[2]) for name, c in list(self.passes.items())}


@dataclass
class Context:
    options: Options
    state: State | None
    progress: Progress
    on_event: EventHandler
    budget: ByteBudget
    tally: Tally
    hasher: Hasher = field(default_factory=Hasher)
    #: Gmail's labels (policy/gmail.py, transfer/gmail.py), set by the planning.
    gmail_src: GmailSource | None = None
    gmail_dest: GmailDest | None = None
    #: Source folders whose messages may share one Gmail message on the destination.
    gmail_shared: set[str] = field(default_factory=set)
    #: Merged destination folder -> (its UIDVALIDITY, destination UIDs the folders
    #: merged into it claimed so far in this run); see FolderPass.
    merge_claims: dict[str, tuple[int, set[int]]] = field(default_factory=dict)
    #: (source folder, UID) -> SHA-256 of messages copied in this run, until the folder
    #: is verified (verify_content only).
    source_fprs: dict[tuple[str, int], bytes] = field(default_factory=dict)
    #: What the destination server changes in the messages it stores, once learned in
    #: this run (transfer/altered.py); None: nothing seen so far.
    alteration: Alteration | None = None
    #: Whether it replaces 8-bit header bytes (None: not known yet; see
    #: transfer/verify.py ``Verifier._probe``).
    replaces_8bit: bool | None = None

    async def read_hashes(self, store: Store, uids: Sequence[int]) -> dict[int, tuple[int, bytes]]:
        """(size, SHA-256) of the selected folder's messages ``uids``, by UID: bodies are
        fetched in pipelined chunks, hashed, then dropped."""
        return await self.read_with(store, uids, lambda body: (len(body), fingerprint(body)))

    async def read_with(
        self, store: Store, uids: Sequence[int], digest: Callable[[bytes], T]
    ) -> dict[int, T]:
        """``digest(body)`` of the selected folder's messages ``uids``, by UID: bodies are
        fetched in pipelined chunks, digested, then dropped."""
        out: dict[int, T] = {}

        def on_body(uid: int, body: bytes) -> None:
            out[uid] = digest(body)

        futs = []
        for chunk in chunks_by_count(sorted(uids), 200):
            futs.append(await store.submit_fetch_bodies(chunk, on_body))
            if len(futs) >= self.options.fetch_window:
                check(await futs.pop(0), "UID FETCH")
        for f in futs:
            check(await f, "UID FETCH")
        return out
