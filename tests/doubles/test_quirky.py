"""The quirky IMAP double (tests.doubles.quirky): each quirk, seen on the wire.

Two independent clients drive it: the standard library's imaplib and a raw socket (for
the exact bytes of answers, literals and continuations).  The seeding/inspection API
(add_message, messages, folders, snapshot, commands) is the ground truth.
"""

from __future__ import annotations

import base64
import imaplib
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from hashlib import sha256
from typing import Any

import pytest

from tests.doubles import rawimap
from tests.doubles.quirky import FETCH_SPELLINGS, Quirks, QuirkyServer
from yippiemove.imap import utf7

U, PW = "user", "pass"
WHEN = datetime(2019, 4, 5, 6, 7, 8, tzinfo=timezone(timedelta(hours=2)))


def msg(n: int, extra: bytes = b"") -> bytes:
    return (
        b"From: a@example.org\r\nSubject: message %d\r\nMessage-ID: <m%d@example.org>\r\n" % (n, n)
        + extra
        + b"\r\nline one\r\nline two %d\r\n" % n
    )


@pytest.fixture
def make() -> Iterator[Callable[..., QuirkyServer]]:
    """``make(**quirks)``: a running quirky server with one user; stopped at teardown,
    failing the test if the double hit an internal error."""
    servers: list[QuirkyServer] = []

    def start(**quirks: Any) -> QuirkyServer:
        srv = QuirkyServer(users={U: PW}, quirks=Quirks(**quirks)).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()
        assert not srv.internal_errors, srv.internal_errors


def Raw(srv: QuirkyServer, login: bool = True) -> rawimap.Raw:
    """A raw connection, logged in unless asked not to be."""
    r = rawimap.Raw(srv.port, srv.host)
    assert r.greeting.startswith(b"* OK")
    if login:
        r.login(U, PW)
    return r


def login(srv: QuirkyServer) -> imaplib.IMAP4:
    c = imaplib.IMAP4(srv.host, srv.port)
    c.login(U, PW)
    return c


def caps(srv: QuirkyServer) -> set[str]:
    c = login(srv)
    try:
        return set(c.capabilities)
    finally:
        c.logout()


# ---------------------------------------------------------------------------- a plain server


def test_plain_server_serves_the_mailbox_exactly(make):
    srv = make()
    raw = msg(1) + b"8-bit body \xe4\xff and a bare CR\r here\r\n"
    uid = srv.add_message(U, "INBOX", raw, flags=("\\Seen", "$Label1"), internaldate=WHEN)
    srv.create_folder(U, "Sent", special_use="\\Sent")
    c = login(srv)
    assert {"LITERAL+", "MULTIAPPEND", "UIDPLUS", "NAMESPACE", "SPECIAL-USE"} <= set(c.capabilities)
    typ, data = c.list('""', "*")
    assert typ == "OK"
    assert b'(\\HasNoChildren) "/" "INBOX"' in data
    assert b'(\\HasNoChildren \\Sent) "/" "Sent"' in data
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"1"]
    typ, data = c.uid("FETCH", str(uid), "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    head, body = data[0]
    assert body == raw
    assert b"FLAGS ($Label1 \\Seen)" in head
    assert b'INTERNALDATE "05-Apr-2019 04:07:08 +0000"' in head
    assert b"RFC822.SIZE %d" % len(raw) in head
    typ, data = c.uid("SEARCH", None, "HEADER", "Message-ID", "<m1@example.org>")
    assert data == [b"1"]
    typ, data = c.uid("SEARCH", None, "NOT", "DELETED")
    assert data == [b"1"]
    # APPEND keeps the bytes, flags and date; UIDPLUS answers APPENDUID
    typ, data = c.append("Sent", "(\\Draft $Work)", imaplib.Time2Internaldate(WHEN), msg(2))
    assert typ == "OK" and re.search(rb"\[APPENDUID \d+ 1\]", data[0])
    stored = srv.messages(U, "Sent")[0]
    assert stored.raw == msg(2) and stored.flags == {"\\Draft", "$Work"}
    assert stored.internaldate == WHEN
    c.logout()
    assert srv.folders(U) == ["INBOX", "Sent"]


def test_partials_header_and_rfc822_items(make):
    srv = make()
    srv.add_message(U, "INBOX", msg(3))
    r = Raw(srv)
    r.cmd(b"s EXAMINE INBOX")
    out = b"\r\n".join(r.cmd(b"f FETCH 1 (BODY.PEEK[]<0.4> BODY.PEEK[HEADER] RFC822.HEADER)"))
    head = msg(3)[: msg(3).index(b"\r\n\r\n") + 4]
    assert b"BODY[]<0> {4}\r\nFrom" in out
    assert b"BODY[HEADER] {%d}\r\n" % len(head) + head in out
    assert b"RFC822.HEADER {%d}\r\n" % len(head) + head in out
    assert srv.messages(U, "INBOX")[0].flags == frozenset()  # EXAMINE, PEEK: not \Seen
    r.cmd(b"s2 SELECT INBOX")
    out = b"\r\n".join(r.cmd(b"f2 FETCH 1 (BODY[TEXT])"))
    assert b"FLAGS (\\Seen)" in out and b"BODY[TEXT] {" in out
    assert srv.messages(U, "INBOX")[0].flags == {"\\Seen"}
    r.close()


# ---------------------------------------------------------------------------- FETCH spellings


EXPECTED_NAME = {
    "plain": b"BODY[HEADER.FIELDS (MESSAGE-ID)]",
    "quoted": b'BODY[HEADER.FIELDS ("MESSAGE-ID")]',
    "lower": b"body[header.fields (message-id)]",
    "mixed": b'Body[Header.Fields ("Message-Id")]',
    "peek": b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]",
    "rfc822": b"BODY[HEADER.FIELDS (MESSAGE-ID)]",
}


@pytest.mark.parametrize("spelling", FETCH_SPELLINGS)
def test_fetch_spelling_of_header_fields(make, spelling):
    srv = make(fetch_spelling=spelling)
    srv.add_message(U, "INBOX", msg(4))
    r = Raw(srv)
    r.cmd(b"s EXAMINE INBOX")
    out = r.cmd(b"f UID FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    field = b"Message-ID: <m4@example.org>\r\n\r\n"
    assert (
        out[0]
        == b"* 1 FETCH (UID 1 " + EXPECTED_NAME[spelling] + b" {%d}\r\n" % len(field) + field + b")"
    )
    # a quoted field name in the request is understood as well
    out = r.cmd(b'g UID FETCH 1 (BODY.PEEK[HEADER.FIELDS ("Message-ID")])')
    assert field in out[0]
    r.close()


def test_fetch_spelling_rfc822_synonyms(make):
    srv = make(fetch_spelling="rfc822")
    srv.add_message(U, "INBOX", msg(5))
    r = Raw(srv)
    r.cmd(b"s EXAMINE INBOX")
    out = r.cmd(b"f UID FETCH 1 (BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[]<0.3>)")
    line = out[0]
    raw = msg(5)
    head = raw[: raw.index(b"\r\n\r\n") + 4]
    assert b" RFC822 {%d}\r\n" % len(raw) + raw in line
    assert b"RFC822.HEADER {%d}\r\n" % len(head) + head in line
    assert b"RFC822.TEXT {%d}\r\n" % (len(raw) - len(head)) in line
    assert b"BODY[]<0> {3}\r\nFro" in line  # a partial keeps its BODY name
    assert b"BODY[" not in line.replace(b"BODY[]<0>", b"")
    r.close()


# ---------------------------------------------------------------------------- APPEND alterations


def test_store_lf_changes_bytes_and_size(make):
    srv = make(store_lf=True)
    c = login(srv)
    raw = msg(6)
    assert c.append("INBOX", None, None, raw)[0] == "OK"
    stored = srv.messages(U, "INBOX")[0].raw
    assert stored == raw.replace(b"\r\n", b"\n") and b"\r" not in stored
    c.select("INBOX", readonly=True)
    _typ, data = c.fetch("1", "(RFC822.SIZE)")
    assert data == [b"1 (RFC822.SIZE %d)" % len(stored)] and len(stored) < len(raw)
    c.logout()
    srv.add_message(U, "INBOX", raw)  # seeding is exact: the quirk is APPEND's
    assert srv.messages(U, "INBOX")[1].raw == raw


def test_replace_8bit_headers(make):
    srv = make(replace_8bit_headers=True)
    raw = msg(7, b"X-Name: M\xc3\xa4rz\r\n") + b"body \xe4\r\n"
    r = Raw(srv)
    r.send(b"a APPEND INBOX {%d+}\r\n" % len(raw) + raw + b"\r\n")
    assert r.until(b"a")[-1].startswith(b"a OK")
    stored = srv.messages(U, "INBOX")[0].raw
    assert b"X-Name: M??rz\r\n" in stored and stored.endswith(b"body \xe4\r\n")
    assert len(stored) == len(raw)
    r.close()


# ---------------------------------------------------------------------------- literals


def test_no_literal_plus_refuses_nonsync_literals(make):
    srv = make(literal_plus=False)
    assert "LITERAL+" not in caps(srv)
    r = Raw(srv)
    raw = msg(8)
    r.send(b"a APPEND INBOX {%d+}\r\n" % len(raw) + raw + b"\r\n")
    answer = r.until(b"a")
    assert answer[-1].startswith(b"a BAD") and b"LITERAL+" in answer[-1]
    assert srv.messages(U, "INBOX") == []
    r.send(b"b APPEND INBOX {%d}\r\n" % len(raw))
    assert r.line() == b"+ go ahead"  # a synchronizing literal waits for this
    r.send(raw + b"\r\n")
    assert r.until(b"b")[-1].startswith(b"b OK")
    assert srv.messages(U, "INBOX")[0].raw == raw
    r.close()


def test_literal_plus_takes_nonsync_literals(make):
    srv = make()
    r = Raw(srv)
    raw = msg(9)
    r.send(b"a APPEND INBOX {%d+}\r\n" % len(raw) + raw + b"\r\n")
    assert r.until(b"a")[-1].startswith(b"a OK [APPENDUID ")
    assert srv.messages(U, "INBOX")[0].raw == raw
    r.close()


def test_sync_literal_delay(make):
    srv = make(literal_plus=False, sync_literal_delay=0.2)
    r = Raw(srv)
    t0 = time.monotonic()
    r.send(b"a APPEND INBOX {5}\r\n")
    assert r.line() == b"+ go ahead"
    assert time.monotonic() - t0 >= 0.2
    r.send(b"x\r\ny\r\n\r\n")
    assert r.until(b"a")[-1].startswith(b"a OK")
    r.close()


# ---------------------------------------------------------------------------- capabilities off


def test_multiappend_on_and_off(make):
    two = b"a APPEND INBOX (\\Seen) {%d+}\r\n%s {%d+}\r\n%s\r\n" % (
        len(msg(1)),
        msg(1),
        len(msg(2)),
        msg(2),
    )
    srv = make()
    r = Raw(srv)
    r.send(two)
    assert re.match(rb"a OK \[APPENDUID \d+ 1,2\]", r.until(b"a")[-1])
    assert [m.flags for m in srv.messages(U, "INBOX")] == [{"\\Seen"}, frozenset()]
    r.close()
    srv = make(multiappend=False)
    assert "MULTIAPPEND" not in caps(srv)
    r = Raw(srv)
    r.send(two)
    assert r.until(b"a")[-1].startswith(b"a BAD")
    assert srv.messages(U, "INBOX") == []
    r.close()


def test_no_uidplus(make):
    srv = make(uidplus=False)
    assert "UIDPLUS" not in caps(srv)
    srv.create_folder(U, "Other")
    r = Raw(srv)
    r.send(b"a APPEND INBOX (\\Deleted) {%d+}\r\n" % len(msg(1)) + msg(1) + b"\r\n")
    assert r.until(b"a")[-1] == b"a OK Append completed."
    r.cmd(b"s SELECT INBOX")
    assert r.cmd(b"c UID COPY 1 Other")[-1] == b"c OK Copy completed."
    assert r.cmd(b"x UID EXPUNGE 1")[-1].startswith(b"x BAD")
    assert r.cmd(b"y EXPUNGE")[-2:] == [b"* 1 EXPUNGE", b"y OK Expunge completed."]
    r.close()
    assert srv.messages(U, "INBOX") == [] and len(srv.messages(U, "Other")) == 1


def test_uidplus_copyuid_and_uid_expunge(make):
    srv = make()
    srv.create_folder(U, "Other")
    for n in (1, 2):
        srv.add_message(U, "INBOX", msg(n), flags=("\\Deleted",))
    r = Raw(srv)
    r.cmd(b"s SELECT INBOX")
    v = srv.uidvalidity(U, "Other")
    assert r.cmd(b"c UID COPY 1:2 Other")[-1] == b"c OK [COPYUID %d 1,2 1,2] Copy completed." % v
    assert r.cmd(b"x UID EXPUNGE 2")[-2:] == [b"* 2 EXPUNGE", b"x OK Expunge completed."]
    r.close()
    assert [m.uid for m in srv.messages(U, "INBOX")] == [1]


def test_no_namespace(make):
    srv = make(namespace=False)
    assert "NAMESPACE" not in caps(srv)
    r = Raw(srv)
    assert r.cmd(b"n NAMESPACE")[-1].startswith(b"n BAD")
    r.close()
    srv = make()
    r = Raw(srv)
    assert r.cmd(b"n NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL NIL'
    r.close()


def test_special_use_on_and_off(make):
    srv = make(special_use=False)
    srv.create_folder(U, "Sent", special_use="\\Sent")
    assert not {"SPECIAL-USE", "LIST-EXTENDED"} & caps(srv)
    r = Raw(srv)
    assert b'* LIST (\\HasNoChildren) "/" "Sent"' in r.cmd(b'l LIST "" "*"')
    assert r.cmd(b'l2 LIST "" "*" RETURN (SPECIAL-USE)')[-1].startswith(b"l2 BAD")
    r.close()
    srv = make()
    srv.create_folder(U, "Sent", special_use="\\Sent")
    r = Raw(srv)
    out = r.cmd(b'l LIST "" "*" RETURN (SPECIAL-USE)')
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in out
    out = r.cmd(b'l2 LIST (SPECIAL-USE) "" "*"')
    assert out[:-1] == [b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"']
    r.close()


# ---------------------------------------------------------------------------- names


def test_inbox_dot_namespace(make):
    srv = make(inbox_dot=True)
    assert srv.create_folder(U, "Sent", special_use="\\Sent") == "INBOX.Sent"
    srv.add_message(U, "Archive", msg(1))  # seeding names are under INBOX. too
    r = Raw(srv)
    assert r.cmd(b"n NAMESPACE")[0] == b'* NAMESPACE (("INBOX." ".")) NIL NIL'
    assert r.cmd(b'l LIST "" ""')[0] == b'* LIST (\\Noselect) "." ""'
    assert r.cmd(b"c CREATE Top")[-1].startswith(b"c NO [CANNOT]")
    assert r.cmd(b"c2 CREATE INBOX.Projects.2019")[-1].startswith(b"c2 OK")
    assert r.cmd(b"c3 CREATE inbox.Lower")[-1].startswith(b"c3 OK")
    out = r.cmd(b'l2 LIST "" "*"')
    assert b'* LIST (\\HasChildren) "." "INBOX"' in out
    assert b'* LIST (\\HasNoChildren \\Sent) "." "INBOX.Sent"' in out
    assert b'* LIST (\\HasNoChildren) "." "INBOX.Projects.2019"' in out
    assert r.cmd(b'l3 LIST "" "INBOX.%"')[:-1] == [
        b'* LIST (\\HasNoChildren \\Sent) "." "INBOX.Sent"',
        b'* LIST (\\HasNoChildren) "." "INBOX.Archive"',
        b'* LIST (\\HasNoChildren) "." "INBOX.Lower"',
    ]
    r.close()
    assert srv.folders(U) == [
        "INBOX",
        "INBOX.Sent",
        "INBOX.Archive",
        "INBOX.Projects.2019",
        "INBOX.Lower",
    ]
    assert len(srv.messages(U, "INBOX.Archive")) == 1 == len(srv.messages(U, "Archive"))


def test_refused_characters_and_utf8_accept(make):
    srv = make(refuse_chars="🎉", utf8_accept=True)
    assert "UTF8=ACCEPT" in caps(srv)
    r = Raw(srv)
    party = "Ünïcödé 🎉"
    assert r.cmd(b'c CREATE "' + utf7.encode(party) + b'"')[-1].startswith(b"c NO [CANNOT]")
    assert r.cmd(b'c2 CREATE "' + utf7.encode("Ünïcödé") + b'"')[-1].startswith(b"c2 OK")
    assert srv.folders(U) == ["INBOX", "Ünïcödé"]
    assert r.cmd(b"e ENABLE UTF8=ACCEPT")[0] == b"* ENABLED UTF8=ACCEPT"
    raw_name = b'"' + party.encode() + b'"'
    assert r.cmd(b"c3 CREATE " + raw_name)[-1].startswith(b"c3 OK")
    assert party in srv.folders(U)
    out = r.cmd(b'l LIST "" "*"')
    assert b'* LIST (\\HasNoChildren) "/" ' + raw_name in out  # names out as UTF-8 now
    r.close()
    # without UTF8=ACCEPT advertised, ENABLE enables nothing
    srv = make(refuse_chars="🎉")
    r = Raw(srv)
    assert r.cmd(b"e ENABLE UTF8=ACCEPT")[0] == b"* ENABLED"
    r.close()


def test_permanentflags_without_star_still_stores_keywords(make):
    srv = make(permanentflags_star=False)
    srv.add_message(U, "INBOX", msg(1), flags=("$Old",))
    r = Raw(srv)
    out = r.cmd(b"s SELECT INBOX")
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Old)" in out
    assert (
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)] Flags permitted."
        in out
    )
    r.send(b"a APPEND INBOX ($Label1 \\Seen) {%d+}\r\n" % len(msg(2)) + msg(2) + b"\r\n")
    assert r.until(b"a")[-1].startswith(b"a OK")
    assert r.cmd(b"t STORE 1 +FLAGS ($Label2)")[-1].startswith(b"t OK")
    r.close()
    assert [m.flags for m in srv.messages(U, "INBOX")] == [
        {"$Old", "$Label2"},
        {"$Label1", "\\Seen"},
    ]
    srv = make()
    r = Raw(srv)
    assert b"\\*)] Flags permitted." in b"\n".join(r.cmd(b"s SELECT INBOX"))
    r.close()


# ---------------------------------------------------------------------------- sessions and API


def test_sessions_see_each_other_and_commands_are_logged(make):
    srv = make()
    one, two = Raw(srv), login(srv)
    one.cmd(b"s SELECT INBOX")
    two.append("INBOX", None, None, msg(1))
    assert one.cmd(b"n NOOP")[0] == b"* 1 EXISTS"
    two.select("INBOX")
    two.store("1", "+FLAGS", "(\\Deleted)")
    two.expunge()
    assert one.cmd(b"n2 NOOP")[0] == b"* 1 EXPUNGE"
    one.close()
    two.logout()
    cmds = srv.commands(U)
    assert cmds.count(b"LOGIN") == 2
    assert all(b"pass" not in c for c in cmds)
    assert b"APPEND INBOX {%d}" % len(msg(1)) in cmds  # as sent: imaplib's sync literal
    assert b"SELECT INBOX" in cmds and b"NOOP" in cmds


def test_authenticate_plain_and_bad_login(make):
    srv = make()
    r = Raw(srv, login=False)
    token = base64.b64encode(b"\0user\0wrong")
    assert r.cmd(b"a AUTHENTICATE PLAIN " + token)[-1].startswith(b"a NO [AUTHENTICATIONFAILED]")
    token = base64.b64encode(b"\0user\0pass")
    assert r.cmd(b"b AUTHENTICATE PLAIN " + token)[-1].startswith(b"b OK")
    assert r.cmd(b"c FROB")[-1].startswith(b"c BAD")
    r.close()
    assert srv.commands(U)[:2] == [b"AUTHENTICATE PLAIN", b"FROB"]


def test_snapshot_sees_changes_and_only_changes(make):
    srv = make()
    srv.add_message(U, "INBOX", msg(1), internaldate=WHEN)
    before = srv.snapshot(U)
    hash(before)
    c = login(srv)
    c.select("INBOX", readonly=True)
    c.fetch("1", "(BODY.PEEK[] FLAGS)")
    c.close()
    assert srv.snapshot(U) == before
    c.select("INBOX")
    c.store("1", "+FLAGS", "(\\Flagged)")
    c.logout()
    after = srv.snapshot(U)
    assert after != before and hash(after) != hash(before)
    validity = srv.uidvalidity(U, "INBOX")
    assert before["INBOX"][0] == validity
    assert after["INBOX"] == (validity, {1: (frozenset({"\\Flagged"}), sha256(msg(1)).hexdigest())})
    assert {before, after} == {srv.snapshot(U), before}  # hashable


def test_stored_message_api(make):
    srv = make()
    uid = srv.add_message(U, "Work/Deep", msg(1), flags=("\\Seen",), internaldate=WHEN)
    (m,) = srv.messages(U, "Work/Deep")
    assert (m.uid, m.flags, m.internaldate, m.raw) == (uid, {"\\Seen"}, WHEN, msg(1))
    assert m.internaldate.astimezone(UTC) == WHEN
    with pytest.raises(ValueError):
        srv.add_message(U, "INBOX", msg(2), internaldate=datetime(2020, 1, 1))
    with pytest.raises(ValueError):
        Quirks(fetch_spelling="spaces")
