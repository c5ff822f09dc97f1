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


def store_lf(body: bytes) -> bytes:
    return body.replace(b"\r\n", b"\n")


def store_8bit_as_q(body: bytes) -> bytes:
    head, sep, rest = body.partition(b"\r\n\r\n")
    return bytes(b if b < 0x80 else 0x3F for b in head) + sep + rest


def dest_count(s: MemoryServer) -> int:
    return sum(len(f.messages) for f in s.account("bob").folders.values())


def altered_of(mover: Mover) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in mover.results:
        for a in r.stored_altered:
            out[a.what] = out.get(a.what, 0) + 1
    return out


def test_a_destination_that_stores_lf_reports_altered_not_failed(tmp_path: Path) -> None:
    """Every message is there, with LF line ends: "stored, altered by the server", not
    failed; re-runs (with the state, without it) copy nothing and report the same."""
    s = server()
    s.account("bob").alter = store_lf
    first = move(s, State(tmp_path / "s.sqlite"))
    assert sum(r.failed for r in first.results) == 0
    assert sum(r.copied for r in first.results) == 7
    assert altered_of(first) == {"line endings CRLF -> LF": 7}
    assert sum(r.verified for r in first.results) == 0  # not byte-exact: not "verified"
    inbox = next(r for r in first.results if r.source == "INBOX")
    assert {o for _, _, o in inbox.messages} == {Outcome.ALTERED}
    a = inbox.stored_altered[0]
    assert a.stored_size == a.size - 4 and a.message_id == "<m1@example.org>"
    count = dest_count(s)
    assert count == 7
    for state in (State(tmp_path / "s.sqlite"), None, None):
        read = s.account("bob").bodies_read
        again = move(s, state)
        if state is not None:  # known from the state: nothing read back
            assert s.account("bob").bodies_read == read
        assert dest_count(s) == count
        assert sum(r.copied for r in again.results) == 0
        assert sum(r.present for r in again.results) == 7
        assert sum(r.failed for r in again.results) == 0
        assert altered_of(again) == {"line endings CRLF -> LF": 7}


def test_lf_storage_without_uidplus_pairs_by_message_id_then_judges() -> None:
    """No APPENDUID: the verify pairs each message with one of another size of its
    Message-ID (without one: of none) and judges the pair; a re-run recognises the
    altered copies instead of appending them again."""
    s = server()
    bob = s.account("bob")
    bob.alter = store_lf
    bob.capabilities = bob.capabilities - {"UIDPLUS"}
    first = move(s)
    assert altered_of(first) == {"line endings CRLF -> LF": 7}
    assert sum(r.failed for r in first.results) == 0
    again = move(s)
    assert dest_count(s) == 7
    assert altered_of(again) == {"line endings CRLF -> LF": 7}
    assert sum(r.failed for r in again.results) == 0


def test_without_uidplus_a_pair_no_change_explains_is_undone() -> None:
    """A message of its Message-ID and another size that is not its copy: not claimed
    (the copy is "not found"), the other message left alone."""
    s = server()
    bob = s.account("bob")
    bob.alter = lambda body: body + b"-- \r\nadded by the server\r\n"
    bob.capabilities = bob.capabilities - {"UIDPLUS"}
    bob.folders["INBOX"].add(Message(mail(3).replace(b"body 3", b"body"), (), DATE))
    first = move(s)
    reasons = sorted(f.reason for r in first.results for f in r.failures)
    assert reasons == ["not found on the destination after copying"] * 7
    assert altered_of(first) == {}
    inbox = next(r for r in first.results if r.source == "INBOX")
    assert all(d is None for _, d, _ in inbox.messages)


def test_a_rerun_after_a_kill_appends_no_altered_message_again(tmp_path: Path) -> None:
    """A kill -9 mid-run leaves rows "copied" (never judged) or none at all: neither
    kind of message is appended a second time."""
    s = server()
    s.account("bob").alter = store_lf
    move(s, State(tmp_path / "s.sqlite"))
    state = State(tmp_path / "s.sqlite")
    uids = sorted(state.db.execute("SELECT source_uid FROM messages").fetchall())
    # as after a kill: the first rows as the copy wrote them, the others never written
    state.db.execute("UPDATE messages SET outcome='copied', error=NULL WHERE source_uid <= 3")
    state.db.execute("DELETE FROM messages WHERE source_uid > 3")
    assert len(uids) == 7
    again = move(s, state)
    assert dest_count(s) == 7
    assert sum(r.copied for r in again.results) == 0
    assert altered_of(again) == {"line endings CRLF -> LF": 7}


def test_8bit_header_bytes_replaced_by_the_server(tmp_path: Path) -> None:
    """Same size, other bytes: the verify reads the first messages with 8-bit header
    bytes back and finds the change; a re-run without the state recognises the altered
    copies (learned from the first miss) instead of appending them again."""
    s = server()
    box = s.account("alice").folders["INBOX"]
    box.add(Message(b"Subject: M\xe4rz\r\nMessage-ID: <8@x>\r\n\r\nK\xf6ln\r\n", (), DATE))
    box.add(Message(b"Subject: \xe9t\xe9\r\n\r\nno Message-ID\r\n", (), DATE))
    s.account("bob").alter = store_8bit_as_q
    first = move(s)
    assert sum(r.failed for r in first.results) == 0
    assert altered_of(first) == {"8-bit header bytes replaced by '?'": 2}
    assert sum(r.verified for r in first.results) == 7
    assert dest_count(s) == 9
    for _ in range(2):
        again = move(s)  # no state file
        assert dest_count(s) == 9
        assert sum(r.copied for r in again.results) == 0
        assert altered_of(again) == {"8-bit header bytes replaced by '?'": 2}


def test_a_faithful_destination_costs_a_few_reads_for_8bit_headers() -> None:
    s = server()
    box = s.account("alice").folders["INBOX"]
    for n in range(20):
        box.add(Message(f"Subject: {n} M\xe4rz\r\n\r\nx\r\n".encode("latin-1"), (), DATE))
    first = move(s)
    assert sum(r.verified for r in first.results) == 27 and altered_of(first) == {}
    assert s.account("bob").bodies_read == 4  # the first four such messages only


def test_other_changes_stay_failures_and_are_not_sent_again(tmp_path: Path) -> None:
    s = server()
    s.account("bob").alter = lambda body: body + b"-- \r\nadded by the server\r\n"
    first = move(s, State(tmp_path / "s.sqlite"))
    assert sum(r.failed for r in first.results) == 7
    assert all("bytes, the source" in f.reason for r in first.results for f in r.failures)
    assert altered_of(first) == {}
    second = move(s, State(tmp_path / "s.sqlite"))
    assert dest_count(s) == 7
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
