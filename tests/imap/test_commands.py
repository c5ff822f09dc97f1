"""The command state (``ClientState``), from bytes: tags, commands in flight, routing.

Every conversation is fed whole, cut once at every offset, byte by byte and (with
Hypothesis) cut anywhere, and must give the same events and the same data to the
same commands each time, the way the parser is tested (test_protocol.py, test_bulk.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yippiemove.imap.client import _BodyCollector, _meta_collector
from yippiemove.imap.commands import (
    WANTS,
    Broken,
    Bye,
    ClientState,
    Command,
    Completed,
    ContinuationRequest,
    Event,
    Greeting,
    HandlerFailed,
    Unsolicited,
)
from yippiemove.imap.protocol import FetchRun, Literal, ProtocolError, ResponseParser, Untagged

from .test_fuzz import fuzz, split


def one(line: bytes) -> Untagged:
    """What the per-line parser makes of one untagged response."""
    (r,) = ResponseParser().feed(line)
    assert isinstance(r, Untagged)
    return r


def norm(ev: Event) -> tuple[Any, ...]:
    """An event as comparable data (a command by its tag)."""
    if isinstance(ev, Completed):
        t = ev.result.tagged
        return ("completed", ev.command.tag, t.status, t.text, ev.result.untagged)
    if isinstance(ev, HandlerFailed):
        return ("failed", ev.command.tag, type(ev.error).__name__, str(ev.error))
    if isinstance(ev, ContinuationRequest):
        return ("continue", ev.text)
    if isinstance(ev, Greeting | Unsolicited | Bye):
        return (type(ev).__name__, ev.response)
    assert isinstance(ev, Broken)
    return ("broken", ev.reason)


class Recorder:
    """A handler that takes runs whole (as the client's collectors do) and records
    what it was given, runs expanded."""

    def __init__(self) -> None:
        self.got: list[Untagged] = []

    def __call__(self, u: Untagged) -> None:
        self.got.append(u)

    def on_run(self, run: FetchRun) -> None:
        self.got.extend(run.untagged())


Send = tuple[str, tuple[Any, ...], Callable[[], Any] | None]


def converse(
    sends: list[Send], chunks: list[bytes], *, greeted: bool = True
) -> tuple[list[tuple[Any, ...]], ClientState, list[Command], list[Any]]:
    """Send the commands, feed the server's bytes in ``chunks``: the events (as data),
    the state, the commands and their handlers (made fresh for each feeding)."""
    state = ClientState(greeted=greeted)
    cmds, handlers = [], []
    for name, args, make in sends:
        h = make() if make is not None else None
        cmd, _ = state.send(name, *args, handler=h)
        cmds.append(cmd)
        handlers.append(h)
    events: list[tuple[Any, ...]] = []
    for c in chunks:
        events += [norm(e) for e in state.receive_data(c)]
    return events, state, cmds, handlers


def feedings(data: bytes) -> list[list[bytes]]:
    """Whole, cut once at every offset, and byte by byte."""
    out = [[data]]
    out += [[data[:i], data[i:]] for i in range(1, len(data))]
    out.append([data[i : i + 1] for i in range(len(data))])
    return out


def every_split(sends: list[Send], data: bytes, **kw: Any) -> tuple[Any, ...]:
    """The conversation's outcome, checked to be the same however ``data`` is cut."""
    first: tuple[Any, ...] | None = None
    for chunks in feedings(data):
        events, state, _, handlers = converse(sends, chunks, **kw)
        outcome = (
            events,
            [getattr(h, "got", None) for h in handlers],
            sorted(state.pending),
        )
        if first is None:
            first = outcome
        else:
            assert outcome == first, chunks
    assert first is not None
    return first


# --------------------------------------------------------------------------------------
# Tags and bytes


def test_tags_count_up_and_the_bytes_are_the_commands() -> None:
    state = ClientState()
    c1, p1 = state.send("NOOP")
    c2, p2 = state.send("STATUS", b'"INBOX"', b"(MESSAGES)")
    c3, p3 = state.send("APPEND", b'"Box"', Literal(b"hi"), nonsync_max=4096)
    c4, p4 = state.send("APPEND", b'"Box"', Literal(b"hi"))
    assert [c.tag for c in (c1, c2, c3, c4)] == ["Y1", "Y2", "Y3", "Y4"]
    assert p1 == [b"Y1 NOOP\r\n"]
    assert p2 == [b'Y2 STATUS "INBOX" (MESSAGES)\r\n']
    assert p3 == [b'Y3 APPEND "Box" {2+}\r\n', Literal(b"hi"), b"\r\n"]
    assert p4 == [b'Y4 APPEND "Box" {2}\r\n', Literal(b"hi"), b"\r\n"]
    assert state.in_flight == 4 and list(state.pending) == ["Y1", "Y2", "Y3", "Y4"]
    assert (c2.wants, c3.wants) == (frozenset({"STATUS"}), frozenset())


def test_a_command_that_cannot_be_encoded_is_not_in_flight() -> None:
    state = ClientState()
    with pytest.raises(UnicodeEncodeError):
        state.send("NOOP", "ü")
    assert state.in_flight == 0


def test_the_first_response_is_the_greeting_even_a_bye() -> None:
    for greeting in (b"* OK [CAPABILITY IMAP4rev1] hi\r\n", b"* BYE too busy\r\n"):
        events, *_ = every_split([], greeting + b"* 3 EXISTS\r\n", greeted=False)
        assert events == [
            ("Greeting", one(greeting)),
            ("Unsolicited", one(b"* 3 EXISTS\r\n")),
        ]


# --------------------------------------------------------------------------------------
# Routing


def test_out_of_order_completions_of_pipelined_commands() -> None:
    """Dovecot runs pipelined commands concurrently: a later command may complete
    first, and its data may come before an earlier command's completion."""
    sends: list[Send] = [
        ("LIST", (b'""', b'"*"'), None),
        ("NOOP", (), None),
        ("STATUS", (b'"A"', b"(MESSAGES)"), None),
        ("SELECT", (b'"A"',), None),
    ]
    data = (
        b"* STATUS A (MESSAGES 1)\r\n"
        b"Y3 OK Status completed.\r\n"
        b"* FLAGS (\\Seen)\r\n"
        b'* LIST () "/" A\r\n'
        b"Y2 OK NOOP completed.\r\n"
        b"* 1 EXISTS\r\n"
        b"* OK [UIDVALIDITY 7] Ok\r\n"
        b"Y4 OK [READ-WRITE] Select completed.\r\n"
        b'* LIST () "/" B\r\n'
        b"Y1 OK List completed.\r\n"
    )
    events, _, pending = every_split(sends, data)
    assert events == [
        ("completed", "Y3", "OK", b"Status completed.", [one(b"* STATUS A (MESSAGES 1)\r\n")]),
        ("completed", "Y2", "OK", b"NOOP completed.", []),
        (
            "completed",
            "Y4",
            "OK",
            b"Select completed.",
            [
                one(b"* FLAGS (\\Seen)\r\n"),
                one(b"* 1 EXISTS\r\n"),
                one(b"* OK [UIDVALIDITY 7] Ok\r\n"),
            ],
        ),
        (
            "completed",
            "Y1",
            "OK",
            b"List completed.",
            [one(b'* LIST () "/" A\r\n'), one(b'* LIST () "/" B\r\n')],
        ),
    ]
    assert pending == []


def test_status_and_list_go_to_the_command_that_asked() -> None:
    """STATUS and LIST answers in the other order from the commands: each to its own;
    the oldest of two STATUS commands collects STATUS until it completes (the client
    matches STATUS answers by mailbox name, not by command)."""
    sends: list[Send] = [
        ("STATUS", (b'"A"', b"(UIDNEXT)"), None),
        ("LSUB", (b'""', b'"*"'), None),
        ("LIST", (b'""', b'"*"'), None),
        ("STATUS", (b'"B"', b"(UIDNEXT)"), None),
    ]
    st_a = b"* STATUS A (UIDNEXT 5)\r\n"
    st_b = b"* STATUS B (UIDNEXT 9)\r\n"
    lsub = b'* LSUB () "." A\r\n'
    lst = b'* LIST (\\HasNoChildren) "." A\r\n'
    data = (
        lst
        + st_b
        + lsub
        + b"Y3 OK List completed.\r\n"
        + st_a
        + b"Y1 OK done\r\nY2 OK done\r\n"
        + st_b
        + b"Y4 OK done\r\n"
    )
    events, _, pending = every_split(sends, data)
    assert events == [
        ("completed", "Y3", "OK", b"List completed.", [one(lst)]),
        ("completed", "Y1", "OK", b"done", [one(st_b), one(st_a)]),
        ("completed", "Y2", "OK", b"done", [one(lsub)]),
        ("completed", "Y4", "OK", b"done", [one(st_b)]),
    ]
    assert pending == []


def body_line(n: int, uid: int, body: bytes) -> bytes:
    return b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (n, uid, len(body)) + body + b")\r\n"


def test_interleaved_fetch_of_two_uid_fetches_is_matched_by_uid() -> None:
    """Two pipelined ``UID FETCH (UID BODY.PEEK[])`` answered interleaved, the second
    completing first: every body lands under its UID (the engine's one dict for all
    batches), byte for byte, and nothing is unsolicited."""
    bodies = {
        uid: b"Subject: %d\r\n\r\n" % uid + b"x\r\n" * uid + b")\r\n* 9 FETCH {3}\r\n"
        for uid in (3, 4, 10, 11)
    }
    got: dict[int, bytes] = {}

    def collector() -> _BodyCollector:
        return _BodyCollector(got.__setitem__)

    sends: list[Send] = [
        ("UID FETCH", ("3:4", b"(UID BODY.PEEK[])"), collector),
        ("UID FETCH", ("10:11", b"(UID BODY.PEEK[])"), collector),
    ]
    data = (
        body_line(1, 3, bodies[3])
        + body_line(3, 10, bodies[10])
        + body_line(4, 11, bodies[11])
        + b"Y2 OK Fetch completed.\r\n"
        + body_line(2, 4, bodies[4])
        + b"Y1 OK Fetch completed.\r\n"
    )
    for chunks in feedings(data):
        got.clear()
        events, state, _, _ = converse(sends, chunks)
        assert [e[:2] for e in events] == [("completed", "Y2"), ("completed", "Y1")]
        assert got == bodies
        assert state.in_flight == 0


def test_fetch_goes_to_the_next_fetch_once_the_oldest_completes() -> None:
    sends: list[Send] = [
        ("UID FETCH", ("1", b"(UID BODY.PEEK[])"), Recorder),
        ("NOOP", (), None),
        ("UID FETCH", ("2", b"(UID BODY.PEEK[])"), Recorder),
    ]
    a, b = body_line(1, 1, b"one"), body_line(2, 2, b"two")
    data = a + b"Y1 OK done\r\n" + b + b"Y2 OK done\r\nY3 OK done\r\n"
    events, handlers, _ = every_split(sends, data)
    assert [e[:2] for e in events] == [("completed", t) for t in ("Y1", "Y2", "Y3")]
    assert handlers == [[one(a)], None, [one(b)]]


def test_a_listing_run_reaches_a_select_and_list_pipeline_whole() -> None:
    """SELECT and a metadata UID FETCH pipelined (``select_and_list``): the mailbox's
    data goes to SELECT, each listing line to the FETCH's collector."""
    out: list[Any] = []
    sends: list[Send] = [
        ("SELECT", (b'"INBOX"',), None),
        (
            "UID FETCH",
            ("1:*", b"(UID RFC822.SIZE FLAGS INTERNALDATE)"),
            lambda: _meta_collector(out),
        ),
    ]
    lines = [
        b'* %d FETCH (UID %d RFC822.SIZE %d FLAGS (\\Seen) INTERNALDATE "d")\r\n' % (i, i, i)
        for i in range(1, 6)
    ]
    data = (
        b"* FLAGS (\\Seen)\r\n* 5 EXISTS\r\n"
        + b"".join(lines[:3])
        + b"* OK [UIDNEXT 6] x\r\n"  # a concurrent SELECT's tail inside the listing
        + b"".join(lines[3:])
        + b"Y1 OK done\r\nY2 OK done\r\n"
    )
    for chunks in feedings(data):
        out.clear()
        events, *_ = converse(sends, chunks)
        assert events[0] == (
            "completed",
            "Y1",
            "OK",
            b"done",
            [one(b"* FLAGS (\\Seen)\r\n"), one(b"* 5 EXISTS\r\n"), one(b"* OK [UIDNEXT 6] x\r\n")],
        )
        assert [m.uid for m in out] == [1, 2, 3, 4, 5]


def test_unsolicited_exists_expunge_and_flag_changes() -> None:
    """What no command in flight collects comes out as Unsolicited, in order; the
    commands complete untouched."""
    sends: list[Send] = [("NOOP", (), None), ("APPEND", (b'"Box"', Literal(b"x")), None)]
    unsolicited = [
        b"* 7 EXISTS\r\n",
        b"* 2 EXPUNGE\r\n",
        b"* 1 RECENT\r\n",
        b"* 3 FETCH (FLAGS (\\Seen))\r\n",
        b"* OK [ALERT] maintenance at noon\r\n",
    ]
    data = (
        unsolicited[0]
        + unsolicited[1]
        + b"Y1 OK NOOP completed.\r\n"
        + b"".join(unsolicited[2:])
        + b"Y2 OK [APPENDUID 1 5] done\r\n"
    )
    events, _, pending = every_split(sends, data)
    assert events == [
        ("Unsolicited", one(unsolicited[0])),
        ("Unsolicited", one(unsolicited[1])),
        ("completed", "Y1", "OK", b"NOOP completed.", []),
        *[("Unsolicited", one(u)) for u in unsolicited[2:]],
        ("completed", "Y2", "OK", b"done", []),
    ]
    assert pending == []


def test_bye_while_commands_are_pending() -> None:
    """BYE is an event of its own (not data of a command); the commands still in
    flight stay so until the connection ends, then are abandoned oldest first."""
    sends: list[Send] = [
        ("UID FETCH", ("1:*", b"(FLAGS)"), None),
        ("NOOP", (), None),
        ("STATUS", (b'"A"', b"(MESSAGES)"), None),
    ]
    fetch = b"* 1 FETCH (UID 1 FLAGS ())\r\n"
    bye = b"* BYE [UNAVAILABLE] shutting down\r\n"
    data = fetch + b"Y2 OK done\r\n" + bye
    events, _, pending = every_split(sends, data)
    assert events == [("completed", "Y2", "OK", b"done", []), ("Bye", one(bye))]
    assert pending == ["Y1", "Y3"]
    _, state, cmds, _ = converse(sends, [data])
    assert state.abandon() == [cmds[0], cmds[2]]
    assert cmds[0].untagged == [one(fetch)]
    assert state.in_flight == 0 and state.abandon() == []
    # Routing is empty too: a late FETCH is nobody's.
    assert [norm(e) for e in state.receive_data(fetch)] == [("Unsolicited", one(fetch))]


def test_a_tagged_response_for_an_unknown_tag_breaks_the_connection() -> None:
    sends: list[Send] = [("NOOP", (), None), ("NOOP", (), None)]
    data = b"Y1 OK done\r\nY7 OK what\r\nY2 OK done\r\n* 3 EXISTS\r\n"
    events, _, pending = every_split(sends, data)
    assert events == [
        ("completed", "Y1", "OK", b"done", []),
        ("broken", "answered an unknown tag 'Y7'"),
    ]
    assert pending == ["Y2"]
    # A tag completes once: its second completion is a tag we do not know.
    events, *_ = every_split(sends[:1], b"Y1 OK done\r\nY1 OK again\r\n")
    assert events[-1] == ("broken", "answered an unknown tag 'Y1'")


def test_invalid_data_breaks_the_connection_and_later_data_is_ignored() -> None:
    for chunks in feedings(b"* 1 EXISTS\r\n* 1 FETCH (UID 1\r\nY1 OK done\r\n"):
        state = ClientState(greeted=True)
        state.send("NOOP")
        events: list[Event] = []
        for c in chunks:
            events += state.receive_data(c)
        assert isinstance(events[-1], Broken), chunks
        assert events[-1].reason.startswith("sent invalid IMAP data: unbalanced '('")
        assert all(isinstance(e, Unsolicited) for e in events[:-1])
        assert state.broken and state.receive_data(b"Y1 OK done\r\n") == []


def test_continuations_are_expected_only_for_a_waiting_literal() -> None:
    # Nobody waits: a protocol error.
    events, *_ = every_split([("NOOP", (), None)], b"+ go ahead\r\n")
    assert events == [("broken", "sent an unexpected continuation")]
    # Expected: one continuation for the literal, a second is unexpected.
    state = ClientState(greeted=True)
    cmd, _ = state.send("APPEND", b'"Box"', Literal(b"hello"))
    state.expect_continuation(cmd)
    assert [norm(e) for e in state.receive_data(b"+ Ready for literal data\r\n+ again\r\n")] == [
        ("continue", b"Ready for literal data"),
        ("broken", "sent an unexpected continuation"),
    ]
    # Refused before its literal (TRYCREATE): the command's completion ends the wait.
    state = ClientState(greeted=True)
    cmd, _ = state.send("APPEND", b'"Nope"', Literal(b"hello"))
    state.expect_continuation(cmd)
    events = state.receive_data(b"Y1 NO [TRYCREATE] no such mailbox\r\n+ late\r\n")
    assert [norm(e)[:3] for e in events] == [
        ("completed", "Y1", "NO"),
        ("broken", "sent an unexpected continuation"),
    ]


def test_a_handlers_error_fails_its_command_once_and_the_rest_stay_in_step() -> None:
    got: dict[int, bytes] = {}
    sends: list[Send] = [
        ("UID FETCH", ("1:2", b"(UID BODY.PEEK[])"), lambda: _BodyCollector(got.__setitem__)),
        ("STATUS", (b'"A"', b"(MESSAGES)"), None),
    ]
    bad = b"* 1 FETCH (UID (1) BODY[] {1}\r\nx)\r\n"
    status = b"* STATUS A (MESSAGES 2)\r\n"
    data = bad + bad + status + b"Y1 OK done\r\nY2 OK done\r\n"
    events, _, pending = every_split(sends, data)
    assert events == [
        ("failed", "Y1", "ProtocolError", "malformed UID: ['1']"),
        ("completed", "Y1", "OK", b"done", []),
        ("completed", "Y2", "OK", b"done", [one(status)]),
    ]
    assert pending == []

    class Refuses(Recorder):
        def on_run(self, run: FetchRun) -> None:
            raise ProtocolError("no runs here")

    # (Fed whole the line is a run; cut before its end it is not: fed whole only.)
    events, *_ = converse(
        [("UID FETCH", ("1", b"(UID BODY.PEEK[])"), Refuses)],
        [body_line(1, 1, b"a") + b"Y1 OK done\r\n"],
    )
    assert events == [
        ("failed", "Y1", "ProtocolError", "no runs here"),
        ("completed", "Y1", "OK", b"done", []),
    ]


def test_restart_stream_forgets_a_partial_response() -> None:
    """STARTTLS: bytes before the TLS handshake are not read after it."""
    state = ClientState(greeted=True)
    state.send("NOOP")
    assert state.receive_data(b"* 1 EXISTS\r\nY1 OK in") == [Unsolicited(one(b"* 1 EXISTS\r\n"))]
    state.restart_stream()
    assert [norm(e) for e in state.receive_data(b"Y1 OK done\r\n")] == [
        ("completed", "Y1", "OK", b"done", [])
    ]


# --------------------------------------------------------------------------------------
# Properties


# One response of each kind a command may collect, and some nobody collects; ``{i}``
# makes each response distinct.
SAMPLES: dict[str, Callable[[int], bytes]] = {
    "FETCH": lambda i: b"* %d FETCH (UID %d)\r\n" % (i, i),
    "STATUS": lambda i: b'* STATUS "m%d" (MESSAGES %d)\r\n' % (i, i),
    "LIST": lambda i: b'* LIST () "/" "m%d"\r\n' % i,
    "LSUB": lambda i: b'* LSUB () "/" "m%d"\r\n' % i,
    "SEARCH": lambda i: b"* SEARCH %d\r\n" % i,
    "ESEARCH": lambda i: b"* ESEARCH UID COUNT %d\r\n" % i,
    "CAPABILITY": lambda i: b"* CAPABILITY m%d\r\n" % i,
    "ENABLED": lambda i: b"* ENABLED m%d\r\n" % i,
    "FLAGS": lambda i: b"* FLAGS (m%d)\r\n" % i,
    "EXISTS": lambda i: b"* %d EXISTS\r\n" % i,
    "RECENT": lambda i: b"* %d RECENT\r\n" % i,
    "EXPUNGE": lambda i: b"* %d EXPUNGE\r\n" % i,
    "OK": lambda i: b"* OK [UIDNEXT %d] m\r\n" % i,
    "NO": lambda i: b"* NO m%d\r\n" % i,
}
VERBS = [*WANTS, "NOOP", "APPEND", "CREATE"]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from(VERBS)),
        st.tuples(st.just("untagged"), st.sampled_from(sorted(SAMPLES))),
        st.tuples(st.just("complete"), st.integers(0, 30)),
    ),
    max_size=40,
)


@fuzz(150)
@given(steps, st.lists(st.integers(0, 10_000), max_size=8))
def test_routing_agrees_with_the_oldest_command_that_collects_the_kind(script, cuts) -> None:
    """Whatever is in flight and whatever arrives, each untagged response goes to the
    oldest command in flight that collects its kind (a plain scan of the table in
    order, the reference here), else is unsolicited; every command completes once."""
    state = ClientState(greeted=True)
    ref_pending: list[tuple[str, str]] = []  # (tag, name), oldest first
    expect: dict[str, list[Untagged]] = {}
    expect_unsolicited: list[Untagged] = []
    completed_order: list[str] = []
    events: list[Event] = []
    data = b""  # received since the last command was sent, fed before the next one
    for i, (op, arg) in enumerate([*script, ("send", "NOOP")], start=1):
        if op == "send":
            for chunk in split(data, cuts):
                events += state.receive_data(chunk)
            data = b""
            cmd, _ = state.send(arg)  # type: ignore[arg-type]
            ref_pending.append((cmd.tag, arg))  # type: ignore[arg-type]
            expect[cmd.tag] = []
        elif op == "untagged":
            line = SAMPLES[arg](i)  # type: ignore[index]
            u = one(line)
            for tag, name in ref_pending:
                if u.kind in WANTS.get(name, frozenset()):
                    expect[tag].append(u)
                    break
            else:
                expect_unsolicited.append(u)
            data += line
        elif ref_pending:
            tag, _ = ref_pending.pop(arg % len(ref_pending))  # type: ignore[operator]
            completed_order.append(tag)
            data += b"%s OK done\r\n" % tag.encode()
    done = [e for e in events if isinstance(e, Completed)]
    assert [e.command.tag for e in done] == completed_order
    for e in done:
        assert e.result.untagged == expect[e.command.tag]
    assert [e.response for e in events if isinstance(e, Unsolicited)] == expect_unsolicited
    assert not any(isinstance(e, Broken | HandlerFailed) for e in events)
    assert sorted(state.pending) == sorted(t for t, _ in ref_pending)
    for tag, _ in ref_pending:
        assert state.pending[tag].untagged == expect[tag]


@fuzz(100)
@given(
    st.lists(st.lists(st.binary(max_size=200), min_size=1, max_size=6), min_size=1, max_size=4),
    st.randoms(use_true_random=False),
    st.lists(st.integers(0, 100_000), max_size=10),
)
def test_pipelined_body_fetches_in_any_interleaving(batches, rnd, cuts) -> None:
    """Several pipelined body fetches, their output interleaved and their completions
    in any order (each after its own output): every body reaches the shared dict under
    its UID, exactly, however the bytes are cut."""
    got: dict[int, bytes] = {}
    state = ClientState(greeted=True)
    queues: list[list[bytes]] = []
    bodies: dict[int, bytes] = {}
    uid = 0
    for batch in batches:
        cmd, _ = state.send(
            "UID FETCH", "1:*", b"(UID BODY.PEEK[])", handler=_BodyCollector(got.__setitem__)
        )
        lines = []
        for body in batch:
            uid += 1
            bodies[uid] = body
            lines.append(body_line(uid, uid, body))
        lines.append(b"%s OK done\r\n" % cmd.tag.encode())
        queues.append(lines)
    data = b""
    order: list[str] = []
    while any(queues):
        q = rnd.choice([q for q in queues if q])
        line = q.pop(0)
        if not q:
            order.append(line.split()[0].decode())
        data += line
    events: list[Event] = []
    for chunk in split(data, cuts):
        events += state.receive_data(chunk)
    assert [e.command.tag for e in events if isinstance(e, Completed)] == order
    assert len(events) == len(order)
    assert got == bodies
    assert state.in_flight == 0
