"""The engine against in-memory stores (tests/transfer/memstore.py): plan, copy, verify,
re-runs and the duplicate check in milliseconds, without a server.  The same promises
are proven against real Dovecot and Cyrus servers in test_move.py and friends."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.transfer.memstore import Folder, MemoryServer, Message
from yippiemove.transfer.engine import Mover
from yippiemove.transfer.model import Endpoint, Options, Outcome
from yippiemove.transfer.state import State

DATE = b"01-Jan-2020 10:00:00 +0000"
SRC = Endpoint("mem", 1, "alice")
DST = Endpoint("mem", 2, "bob")


def mail(n: int, mid: bool = True, extra: bytes = b"") -> bytes:
    head = f"Message-ID: <m{n}@example.org>\r\n".encode() if mid else b""
    return head + f"Subject: {n}\r\n\r\nbody {n}\r\n".encode() + extra


def server() -> MemoryServer:
    s = MemoryServer()
    src = s.account("alice")
    inbox = src.folders["INBOX"]
    for n in range(1, 6):
        inbox.add(Message(mail(n), ("\\Seen",) if n % 2 else (), DATE))
    inbox.add(Message(mail(1), (), DATE))  # an exact duplicate: multiplicity is kept
    src.folders["Archive"] = Folder()
    src.folders["Archive"].add(Message(mail(9, mid=False), ("$label1",), DATE))
    src.subscribed = {"INBOX", "Archive"}
    s.account("bob")
    return s


def move(s: MemoryServer, state: State | None = None, **opts: object) -> Mover:
    mover = Mover(SRC, DST, state=state, options=Options(**opts), stores=s.factory)  # type: ignore[arg-type]
    asyncio.run(mover.run())
    return mover


def contents(s: MemoryServer, user: str) -> dict[str, list[tuple[bytes, tuple[str, ...], bytes]]]:
    return {
        name: sorted((m.body, tuple(sorted(m.flags)), m.internaldate) for m in f.messages.values())
        for name, f in s.account(user).folders.items()
    }


def test_a_mailbox_is_copied_exactly_and_the_source_never_written() -> None:
    s = server()
    mover = move(s)
    assert contents(s, "bob") == contents(s, "alice")
    assert s.account("alice").writes == 0
    assert s.account("bob").subscribed == {"INBOX", "Archive"}
    assert sum(r.copied for r in mover.results) == 7
    assert all(r.verified == r.source_count and not r.failures for r in mover.results)
    assert mover.progress.messages_done == 7 and mover.progress.phase == "done"


def test_a_rerun_with_the_state_copies_nothing(tmp_path: Path) -> None:
    s = server()
    move(s, State(tmp_path / "s.sqlite"))
    writes = s.account("bob").writes
    again = move(s, State(tmp_path / "s.sqlite"))
    assert contents(s, "bob") == contents(s, "alice")
    assert sum(r.present for r in again.results) == 7 and sum(r.copied for r in again.results) == 0
    assert s.account("bob").writes == writes  # nothing appended, no flag set


def test_without_the_state_copies_are_recognised_by_content() -> None:
    s = server()
    move(s)
    again = move(s)  # no state file: the destination is the truth
    assert contents(s, "bob") == contents(s, "alice")
    inbox = next(r for r in again.results if r.source == "INBOX")
    assert inbox.present == 6 and inbox.copied == 0
    assert {o for _, _, o in inbox.messages} == {Outcome.PRESENT}


def test_same_size_and_message_id_but_other_bytes_is_not_a_copy() -> None:
    s = server()
    impostor = mail(2).replace(b"body 2", b"BODY 2")  # same size, same Message-ID
    s.account("bob").folders["INBOX"].add(Message(impostor, (), DATE))
    move(s)
    bodies = [m.body for m in s.account("bob").folders["INBOX"].messages.values()]
    assert bodies.count(mail(2)) == 1 and bodies.count(impostor) == 1


def test_a_destination_that_alters_messages_is_reported_and_never_fed_twice(
    tmp_path: Path,
) -> None:
    s = server()
    s.account("bob").alter = lambda body: body.replace(b"\r\n", b"\n")
    first = move(s, State(tmp_path / "s.sqlite"))
    assert sum(r.failed for r in first.results) == 7
    assert all("bytes, the source" in f.reason for r in first.results for f in r.failures)
    count = sum(len(f.messages) for f in s.account("bob").folders.values())
    second = move(s, State(tmp_path / "s.sqlite"))
    assert sum(len(f.messages) for f in s.account("bob").folders.values()) == count
    assert sum(r.failed for r in second.results) == 7


def test_flags_changed_on_the_source_are_set_on_the_destination() -> None:
    s = server()
    move(s)
    box = s.account("alice").folders["INBOX"]
    box.messages[2] = Message(box.messages[2].body, ("\\Flagged",), DATE)
    again = move(s)
    assert contents(s, "bob") == contents(s, "alice")
    assert sum(r.flags_fixed for r in again.results) == 1


def test_a_dry_run_plans_and_writes_nothing() -> None:
    s = server()
    mover = move(s, dry_run=True)
    assert mover.plan is not None and mover.plan.total_messages == 7
    assert [f.dest_name for f in mover.plan.folders] == ["Archive", "INBOX"]
    assert s.account("bob").writes == 0 and set(s.account("bob").folders) == {"INBOX"}
