"""Which flags and keywords a destination folder keeps: by what it actually stores.

PERMANENTFLAGS (RFC 3501 7.1) promises: a flag it lists is kept, and ``\\*`` says new
keywords can be made.  A server whose PERMANENTFLAGS lacks ``\\*`` may store keywords
all the same (seen in the wild: every keyword of 452 messages was dropped by a mover that
believed it).  So a keyword the answer does not promise is decided by evidence, once per
folder pass, never per message:

1. a message already in the destination folder carries a keyword not promised: the
   folder stores keywords;
2. else the first message appended with such keywords is appended alone, with them, and
   its flags are read back (transfer/copy.py); a refused APPEND that is taken without
   them means "not stored";
3. else (nothing appended carried them) the verify's first flag fix that sets one is
   read back the same way (transfer/verify.py).

A keyword seen kept is kept, one seen dropped is dropped, and the others follow the
folder's verdict (the first evidence).  System flags stay as PERMANENTFLAGS says (they
are few, and a server lists the ones it keeps).  Pure bookkeeping: the I/O is the
callers'.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from ..imap.client import MessageMeta, SelectInfo

__all__ = ["Keywords"]


class Keywords:
    """The evidence of one destination folder (one pass)."""

    def __init__(self, dinfo: SelectInfo, dmeta: Iterable[MessageMeta] = ()) -> None:
        self.dinfo = dinfo
        self._promised: dict[str, bool] = {}
        #: keywords (upper-cased) seen kept / dropped by this folder
        self.kept: set[str] = set()
        self.lost: set[str] = set()
        #: whether this folder keeps keywords PERMANENTFLAGS does not promise (None:
        #: not known yet)
        self.verdict: bool | None = None
        #: An APPEND with unpromised keywords was taken but what it kept could not be
        #: read back (no UIDPLUS, another message at ``*``): the copy sends them (the
        #: server takes them) and the verify's read-back decides.
        self.taken = False
        #: Copy probes left whose message the server refused with and without them
        #: (refused for its own sake: no evidence); none left: not kept.
        self.attempts = 3
        for d in dmeta:
            for f in d.flags:
                if self.unpromised(f):
                    self.kept.add(f.upper())
                    self.verdict = True

    def promised(self, flag: str) -> bool:
        v = self._promised.get(flag)
        if v is None:
            v = self._promised[flag] = self.dinfo.can_store(flag)
        return v

    def unpromised(self, flag: str) -> bool:
        """A keyword PERMANENTFLAGS does not promise (decided by evidence)."""
        return not flag.startswith("\\") and not self.promised(flag)

    def storable(self, flag: str) -> bool:
        """Whether ``flag`` is sent with APPEND and expected by the verify.  A keyword
        not decided yet is tried (the first message that carries one is the probe)."""
        if self.promised(flag):
            return True
        if flag.startswith("\\"):
            return False
        up = flag.upper()
        if up in self.kept:
            return True
        if up in self.lost:
            return False
        return self.verdict is not False

    def pending(self, flags: Sequence[str]) -> bool:
        """Whether setting ``flags`` (the verify) would be the evidence still missing."""
        return self.verdict is None and any(self.unpromised(f) for f in flags)

    def pending_append(self, flags: Sequence[str]) -> bool:
        """Whether appending a message with ``flags`` is to be the probe (the copy)."""
        return not self.taken and self.pending(flags)

    def inconclusive(self, refused: bool) -> None:
        """A copy probe told nothing: its APPEND was taken but not read back
        (``refused`` False), or its message was refused with and without the keywords."""
        if not refused:
            self.taken = True
            return
        self.attempts -= 1
        if self.attempts <= 0 and self.verdict is None:
            self.verdict = False

    def learn(self, sent: Sequence[str], stored: Iterable[str]) -> None:
        """Flags ``sent`` (APPEND or STORE) and those the message has now."""
        have = {f.upper() for f in stored}
        for f in sent:
            if self.unpromised(f):
                (self.kept if f.upper() in have else self.lost).add(f.upper())
        if self.verdict is None and (self.kept or self.lost):
            self.verdict = bool(self.kept)

    def refused(self, sent: Sequence[str]) -> None:
        """An APPEND with ``sent`` was refused and taken without the unpromised ones."""
        self.learn(sent, ())

    def dropped(self, messages: Iterable[MessageMeta]) -> Counter[str]:
        """Per flag or keyword the destination does not keep: how many of ``messages``
        carry it (``\\Recent`` is the server's own, never counted)."""
        out: Counter[str] = Counter()
        for m in messages:
            for f in m.flags:
                if f.upper() != "\\RECENT" and not self.storable(f):
                    out[f] += 1
        return out
