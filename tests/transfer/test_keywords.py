"""Keywords by evidence (transfer/keywords.py): its decisions, and the engine using them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.transfer import memstore
from tests.transfer.memstore import MemoryServer, MemoryStore, Message, _no
from yippiemove.imap.client import AppendItem, MessageMeta, SelectInfo
from yippiemove.imap.connection import CommandResult
from yippiemove.imap.errors import CommandError
from yippiemove.imap.protocol import Tagged
from yippiemove.transfer.engine import Mover
from yippiemove.transfer.keywords import Keywords
from yippiemove.transfer.model import Endpoint, Options
from yippiemove.transfer.state import State

SYSTEM = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")


def info(perm: tuple[str, ...]) -> SelectInfo:
    return SelectInfo(0, 1, 1, (*SYSTEM, "$Old"), perm, False)


def meta(uid: int, *flags: str) -> MessageMeta:
    return MessageMeta(uid, 100, flags, b"01-Jan-2024 00:00:00 +0000", None)


def test_star_promises_every_keyword() -> None:
    kw = Keywords(info((*SYSTEM, "\\*")))
    assert kw.storable("$Label1") and not kw.pending(("$Label1",))
    assert kw.verdict is None and not kw.dropped([meta(1, "$Label1")])


def test_without_star_a_keyword_is_tried_once_and_the_evidence_decides() -> None:
    kw = Keywords(info(SYSTEM))
    assert kw.unpromised("$Label1") and not kw.unpromised("\\Seen")
    assert kw.pending(("\\Seen", "$Label1")) and not kw.pending(("\\Seen",))
    assert kw.storable("$Label1")  # tried: the probe carries it
    kw.learn(("\\Seen", "$Label1", "Work"), ("\\Seen", "$label1", "Work"))
    assert kw.verdict is True and not kw.pending(("$Other",))
    assert kw.storable("$Other") and kw.storable("$LABEL1")
    assert not kw.dropped([meta(1, "$Label1", "\\Seen"), meta(2, "$Other")])


def test_a_folder_that_drops_keywords_reports_each_with_its_count() -> None:
    kw = Keywords(info(SYSTEM))
    kw.learn(("$Label1",), ("\\Seen",))
    assert kw.verdict is False and not kw.storable("$Label1") and not kw.storable("$Other")
    msgs = [meta(1, "$Label1", "\\Seen"), meta(2, "$Label1", "$Other"), meta(3, "\\Recent")]
    assert kw.dropped(msgs) == {"$Label1": 2, "$Other": 1}


def test_some_kept_some_dropped() -> None:
    kw = Keywords(info(SYSTEM))
    kw.learn(("$A", "$B"), ("$A",))
    assert kw.verdict is True and kw.storable("$A") and not kw.storable("$B")
    assert kw.storable("$C")  # the folder keeps keywords: a new one is expected kept


def test_the_destination_folder_own_messages_are_evidence() -> None:
    kw = Keywords(info(SYSTEM), [meta(1, "\\Seen"), meta(2, "$Seen_Elsewhere")])
    assert kw.verdict is True and not kw.pending(("$Label1",))
    kw = Keywords(info(SYSTEM), [meta(1, "\\Seen", "$Old")])  # only what FLAGS listed...
    assert kw.verdict is True  # ...but not PERMANENTFLAGS: it was stored, so it is evidence


def test_refused_append_with_keywords_means_not_kept() -> None:
    kw = Keywords(info(SYSTEM))
    kw.refused(("\\Seen", "$Label1"))
    assert kw.verdict is False and not kw.storable("$Label1") and kw.storable("\\Seen")


def test_an_inconclusive_probe_is_not_repeated_per_message() -> None:
    kw = Keywords(info(SYSTEM))
    kw.inconclusive(refused=False)  # taken, not read back: sent from now on
    assert not kw.pending_append(("$A",)) and kw.pending(("$A",)) and kw.storable("$A")
    kw = Keywords(info(SYSTEM))
    for _ in range(2):
        kw.inconclusive(refused=True)  # the message itself refused: try the next one
        assert kw.pending_append(("$A",))
    kw.inconclusive(refused=True)  # bounded: three, then not kept
    assert kw.verdict is False and not kw.pending_append(("$A",)) and not kw.storable("$A")


def test_system_flags_follow_permanentflags() -> None:
    kw = Keywords(info(("\\Seen", "\\Deleted")))
    assert not kw.storable("\\Flagged") and not kw.pending(("\\Flagged",))
    assert kw.dropped([meta(1, "\\Flagged", "\\Seen")]) == {"\\Flagged": 1}


def test_permanentflags_listing_a_keyword_promises_it() -> None:
    kw = Keywords(info((*SYSTEM, "$Forwarded")))
    assert kw.storable("$Forwarded") and not kw.unpromised("$Forwarded")
    assert kw.unpromised("$Label1")


# --------------------------------------------------------------------------- the engine
# Against the in-memory stores (tests/transfer/memstore.py) with a PERMANENTFLAGS that
# lacks \* -- a server that keeps keywords all the same, and one that drops them.

DATE = b"01-Jan-2020 10:00:00 +0000"
N = 60


def _bad(text: bytes) -> Tagged:
    return Tagged("M1", "BAD", None, text)


class Recording(MemoryStore):
    """Records each APPEND's flag lists; ``drop``: keeps system flags only; ``refuse``:
    an APPEND carrying a keyword is refused (NO)."""

    drop = False
    refuse = False
    appends: list[list[tuple[str, ...]]]
    stores: list[tuple[str, ...]]

    def _keep(self, flags: Sequence[str]) -> tuple[str, ...]:
        return tuple(f for f in flags if f.startswith("\\") or not self.drop)

    async def submit_append(self, raw_mailbox: bytes, items: Sequence[AppendItem]):  # type: ignore[override]
        self.appends.append([it.flags for it in items])
        if self.refuse and any(not f.startswith("\\") for it in items for f in it.flags):
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(CommandResult(_no(None, b"Invalid keyword")))
            return fut
        kept = [AppendItem(it.body, self._keep(it.flags), it.internaldate) for it in items]
        return await super().submit_append(raw_mailbox, kept)

    async def store_flags(self, uid: int, flags: Sequence[str]) -> None:
        self.stores.append(tuple(flags))
        if self.refuse and any(not f.startswith("\\") for f in flags):
            raise CommandError("UID STORE", _bad(b"UID STORE Unrecognized flag"))
        await super().store_flags(uid, self._keep(flags))


def _setup(monkeypatch: pytest.MonkeyPatch, drop: bool, refuse: bool = False):
    monkeypatch.setattr(memstore, "PERMANENT", SYSTEM)  # no \* in PERMANENTFLAGS
    s = MemoryServer()
    inbox = s.account("alice").folders["INBOX"]
    for n in range(N):
        flags = ("\\Seen", "$Label1") if n % 2 else ("$Label1", "Work")
        body = f"Message-ID: <k{n}@example.org>\r\nSubject: {n}\r\n\r\nbody\r\n".encode()
        inbox.add(Message(body, flags, DATE))
    s.account("bob")
    appends: list[list[tuple[str, ...]]] = []
    stores: list[tuple[str, ...]] = []

    async def factory(ep: Endpoint, role: str, on_open):  # type: ignore[no-untyped-def]
        on_open()
        st = Recording(s.account(ep.user))
        st.drop, st.appends, st.stores = drop and role == "destination", appends, stores
        st.refuse = refuse and role == "destination"
        return st

    return s, factory, appends, stores


def _move(factory, state: State | None = None) -> Mover:  # type: ignore[no-untyped-def]
    mover = Mover(
        Endpoint("mem", 1, "alice"), Endpoint("mem", 2, "bob"), state=state,
        options=Options(), stores=factory,
    )  # fmt: skip
    asyncio.run(mover.run())
    return mover


def _dest_flags(s: MemoryServer) -> list[tuple[str, ...]]:
    return sorted(m.flags for m in s.account("bob").folders["INBOX"].messages.values())


def test_keywords_kept_although_permanentflags_lacks_star(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quirk of issue 13 item 5: keywords are stored although PERMANENTFLAGS lacks
    \\*; they are copied and verified, and none is reported dropped."""
    s, factory, appends, _stores = _setup(monkeypatch, drop=False)
    mover = _move(factory)
    (res,) = mover.results
    assert res.copied == N and not res.failures and res.verified == N
    src = sorted(m.flags for m in s.account("alice").folders["INBOX"].messages.values())
    assert _dest_flags(s) == src
    assert not res.unstorable_flags and not res.dropped_flags
    assert not any("keep" in n for n in res.notes), res.notes
    assert appends[0] == [("$Label1", "Work")]  # the probe, alone; then groups
    assert sum(len(a) for a in appends) == N


def test_keywords_really_dropped_are_reported_with_counts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s, factory, appends, stores = _setup(monkeypatch, drop=True)
    mover = _move(factory, State(tmp_path / "s.sqlite"))
    (res,) = mover.results
    assert res.copied == N and not res.failures
    assert all(f in {(), ("\\Seen",)} for f in _dest_flags(s))
    assert res.dropped_flags == {"$Label1": N, "Work": N // 2}
    assert res.unstorable_flags == {"$Label1", "Work"}
    assert any("$Label1 (60), Work (30)" in n for n in res.notes), res.notes
    # Tried once (the probe), never again: no retry per message, no flag fixes.
    assert appends[0] == [("$Label1", "Work")]
    assert [a for batch in appends[1:] for a in batch if "$Label1" in a] == []
    assert stores == [] and res.flags_fixed == 0
    # A re-run (nothing to append): the verify's first flag fix is the probe, once.
    again = _move(factory, State(tmp_path / "s.sqlite"))
    (res2,) = again.results
    assert res2.present == N and res2.copied == 0
    assert res2.dropped_flags == {"$Label1": N, "Work": N // 2}
    assert len(stores) == 1


def test_a_server_refusing_appends_with_keywords(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """APPEND with a keyword answered NO (GNU imap4d: BAD "Unrecognized flag"): the
    probe is taken without them, and every later message goes without them (one
    refusal, not one per message); a re-run's refused flag fix says the same."""
    s, factory, appends, stores = _setup(monkeypatch, drop=False, refuse=True)
    (res,) = _move(factory, State(tmp_path / "s.sqlite")).results
    assert res.copied == N and not res.failures and res.verified == N
    assert res.dropped_flags == {"$Label1": N, "Work": N // 2}
    assert appends[:2] == [[("$Label1", "Work")], [()]]  # refused, then taken without
    assert [a for batch in appends[2:] for a in batch if "$Label1" in a] == []
    assert all(f in {(), ("\\Seen",)} for f in _dest_flags(s))
    (again,) = _move(factory, State(tmp_path / "s.sqlite")).results
    assert again.present == N and again.copied == 0 and not again.failures
    assert again.dropped_flags == {"$Label1": N, "Work": N // 2}
    assert len(stores) == 1  # the refused flag fix, once
