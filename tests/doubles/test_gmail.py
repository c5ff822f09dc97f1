"""The Gmail IMAP double (tests.doubles.gmail), driven by independent clients.

Three clients look at it: the standard library's imaplib, a raw socket (for the exact
bytes of literals and pipelining) and the project's own async ImapClient (what the mover
will use).  The seeding/inspection API is the ground truth the answers are checked
against.  The last tests run ``yippiemove move`` to and from the double.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import imaplib
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests import mailcheck
from tests.doubles.gmail import APPENDLIMIT, GmailServer
from tests.doubles.rawimap import Raw
from yippiemove.imap.client import AppendItem, ImapClient, append_result
from yippiemove.imap.connection import ImapConnection
from yippiemove.imap.errors import AuthenticationError, CommandError

ME = "me@gmail.test"
PW = "app-password"
WHEN = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)


def msg(n: int, *, size: int = 0, msgid: str | None = "auto", extra: str = "") -> bytes:
    head = [f"From: Sender {n} <s{n}@example.org>", f"Subject: message {n}"]
    if msgid == "auto":
        head.append(f"Message-ID: <m{n}@example.org>")
    elif msgid is not None:
        head.append(f"Message-ID: {msgid}")
    if extra:
        head.append(extra)
    return "\r\n".join(head).encode() + b"\r\n\r\n" + f"body {n}\r\n".encode() + b"y" * size


@pytest.fixture
def server() -> Iterator[GmailServer]:
    with GmailServer(users={ME: PW}) as g:
        yield g
    assert not g.internal_errors


def login(g: GmailServer) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", g.port)
    c.login(ME, PW)
    return c


def q(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


_ITEM = re.compile(rb"(UID|X-GM-MSGID|X-GM-THRID|RFC822\.SIZE) (\d+)")
_LABELS = re.compile(rb"X-GM-LABELS \(((?:[^()\"]|\"(?:[^\"\\]|\\.)*\")*)\)")
_LABEL_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"|([^\s"]+)')


def parse_labels(head: bytes) -> set[str]:
    m = _LABELS.search(head)
    assert m, head
    out = set()
    for quoted, atom in _LABEL_TOKEN.findall(m.group(1)):
        out.add(re.sub(rb"\\(.)", rb"\1", quoted).decode() if quoted else atom.decode())
    return out


def fetch(c: imaplib.IMAP4, folder: str, items: str = "(UID X-GM-MSGID X-GM-LABELS)") -> list[dict]:
    """Per message: UID, X-GM-MSGID... as ints, labels as a set, body when asked."""
    typ, data = c.select(q(folder), readonly=True)
    assert typ == "OK", (folder, data)
    typ, data = c.uid("FETCH", "1:*", items)
    assert typ == "OK", data
    out = []
    for item in data:
        if item is None or item == b")":
            continue
        head, body = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
        row: dict = {k.decode(): int(v) for k, v in _ITEM.findall(head)}
        if b"X-GM-LABELS" in head:
            row["labels"] = parse_labels(head)
        if body is not None:
            row["body"] = body
        out.append(row)
    return sorted(out, key=lambda r: r["UID"])


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ---------------------------------------------------------------------------- greeting, auth


def test_capabilities_like_gmail(server: GmailServer) -> None:
    raw = Raw(server.port)
    assert raw.greeting.startswith(b"* OK Gimap ready for requests from 127.0.0.1")
    raw.send(b"a CAPABILITY\r\n")
    pre = raw.until(b"a")
    pre_caps = set(pre[0].split()[2:])
    assert {b"IMAP4rev1", b"X-GM-EXT-1", b"AUTH=PLAIN", b"SASL-IR", b"ID", b"XLIST"} <= pre_caps
    assert b"UIDPLUS" not in pre_caps  # post-authentication only, like Gmail
    raw.send(b"b AUTHENTICATE PLAIN " + base64.b64encode(f"\0{ME}\0{PW}".encode()) + b"\r\n")
    auth = raw.until(b"b")
    assert auth[-1] == f"b OK {ME} authenticated (Success)".encode()
    post_caps = set(auth[0].removeprefix(b"* CAPABILITY ").split())
    for cap in (b"UIDPLUS", b"MOVE", b"LITERAL-", b"SPECIAL-USE", b"CONDSTORE", b"ESEARCH"):
        assert cap in post_caps
    assert b"APPENDLIMIT=%d" % APPENDLIMIT in post_caps
    # What the mover must cope with: no MULTIAPPEND, no LITERAL+, no STATUS=SIZE, no STARTTLS.
    for cap in (b"MULTIAPPEND", b"LITERAL+", b"STATUS=SIZE", b"STARTTLS"):
        assert cap not in post_caps | pre_caps
    raw.send(b"c NAMESPACE\r\nd ID NIL\r\ne LOGOUT\r\n")
    out = raw.until(b"e")
    assert out[0] == b'* NAMESPACE (("" "/")) NIL NIL'
    assert out[2].startswith(b'* ID ("name" "GImap"')
    assert out[-2:] == [b"* BYE LOGOUT Requested", b"e OK 73 good day (Success)"]
    raw.close()


def test_bad_login_and_wrong_state(server: GmailServer) -> None:
    c = imaplib.IMAP4("127.0.0.1", server.port)
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED.*Invalid credentials"):
        c.login(ME, "wrong")
    c.login(ME.upper(), PW)  # Gmail accepts the address in any case
    c.logout()
    raw = Raw(server.port)
    raw.send(b"a SELECT INBOX\r\nb FROB\r\nc\r\n")
    assert raw.until(b"a") == [b"a BAD Command received in Invalid state."]
    assert raw.until(b"b") == [b"b BAD Unknown command FROB (not implemented by the Gmail double)"]
    assert raw.line() == b"* BAD Could not parse command"
    # AUTHENTICATE PLAIN without an initial response: the server asks with "+ ".
    raw.send(b"d AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(base64.b64encode(f"\0{ME}\0{PW}".encode()) + b"\r\n")
    assert raw.until(b"d")[-1] == f"d OK {ME} authenticated (Success)".encode()
    raw.close()


# ---------------------------------------------------------------------------- folders


def test_list_special_use(server: GmailServer) -> None:
    server.add_message(ME, msg(1), {"Work/2024"})
    c = login(server)
    boxes = mailcheck.folders(c)
    assert boxes["INBOX"][1] == {"\\HasNoChildren"}
    assert boxes["[Gmail]"][1] == {"\\Noselect", "\\HasChildren"}
    uses = {name: attrs - {"\\HasNoChildren"} for name, (_, attrs) in boxes.items()}
    assert uses["[Gmail]/All Mail"] == {"\\All"}
    assert uses["[Gmail]/Sent Mail"] == {"\\Sent"}
    assert uses["[Gmail]/Drafts"] == {"\\Drafts"}
    assert uses["[Gmail]/Spam"] == {"\\Junk"}
    assert uses["[Gmail]/Trash"] == {"\\Trash"}
    assert uses["[Gmail]/Starred"] == {"\\Flagged"}
    assert uses["[Gmail]/Important"] == {"\\Important"}
    assert boxes["Work"][1] == {"\\HasChildren"}  # a parent label is a real folder
    assert boxes["Work/2024"][1] == {"\\HasNoChildren"}
    assert {sep for sep, _ in boxes.values()} == {"/"}
    # LIST-EXTENDED: only special-use folders, with subscription state (RFC 6154, 5258).
    typ, data = c._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"', "RETURN", "(SUBSCRIBED)")
    assert typ == "OK"
    lines = c.untagged_responses.pop("LIST")
    names = {line.split(b' "/" ')[1] for line in lines}
    assert names == {
        b'"[Gmail]/All Mail"',
        b'"[Gmail]/Drafts"',
        b'"[Gmail]/Important"',
        b'"[Gmail]/Sent Mail"',
        b'"[Gmail]/Spam"',
        b'"[Gmail]/Starred"',
        b'"[Gmail]/Trash"',
    }
    assert all(b"\\Subscribed" in line for line in lines)
    # % does not cross the separator.
    typ, data = c.list('""', "%")
    assert {d.split(b' "/" ')[1] for d in data} == {b'"INBOX"', b'"Work"', b'"[Gmail]"'}
    c.logout()


def test_list_through_the_project_client(server: GmailServer) -> None:
    async def go() -> None:
        conn = await ImapConnection.open("127.0.0.1", server.port, security="none")
        await conn.login(ME, PW, allow_insecure=True)
        client = ImapClient(conn)
        boxes = {m.name: m for m in await client.list_mailboxes()}
        assert not boxes["[Gmail]"].selectable
        assert boxes["[Gmail]/All Mail"].special_use == {"\\ALL"}
        assert boxes["[Gmail]/Sent Mail"].special_use == {"\\SENT"}
        assert boxes["[Gmail]/Spam"].special_use == {"\\JUNK"}
        ns = await client.namespace()
        assert (ns.prefix, ns.separator) == ("", "/")
        await client.logout()

    asyncio.run(go())


def test_unicode_label_names(server: GmailServer) -> None:
    server.add_message(ME, msg(1), {"Reisen/Übersee"})
    c = login(server)
    assert "Reisen/&ANw-bersee" in mailcheck.folders(c)  # modified UTF-7 (RFC 3501 5.1.3)
    rows = fetch(c, "[Gmail]/All Mail")
    assert rows[0]["labels"] == {"Reisen/&ANw-bersee"}
    c.logout()
    c = login(server)
    typ, _ = c._simple_command("ENABLE", "UTF8=ACCEPT")  # RFC 6855: names in UTF-8 now
    assert typ == "OK"
    typ, data = c.list('""', '"Reisen/*"')
    assert data == ['(\\HasNoChildren) "/" "Reisen/Übersee"'.encode()]
    c.logout()


def test_create_rename_delete_subscribe(server: GmailServer) -> None:
    c = login(server)
    assert c.create("Projects/Alpha")[0] == "OK"
    assert c.create("Projects")[0] == "NO"  # created as the parent already
    typ, data = c.create('"[Gmail]/Mine"')
    assert typ == "NO" and b"CANNOT" in data[0]
    assert c.create("INBOX")[0] == "NO"
    assert "Projects/Alpha" in server.folders(ME)
    server.add_message(ME, msg(1), {"Projects/Alpha"})
    assert c.rename("Projects", "Old")[0] == "OK"
    assert {"Old", "Old/Alpha"} <= set(server.folders(ME))
    assert "Projects/Alpha" not in server.folders(ME)
    assert server.messages(ME)[0].labels == {"Old/Alpha"}
    assert c.unsubscribe("Old/Alpha")[0] == "OK"
    typ, data = c.lsub('""', "*")
    assert b'"Old/Alpha"' not in b" ".join(data) and b'"Old"' in b" ".join(data)
    assert c.delete("Old/Alpha")[0] == "OK"
    assert server.messages(ME)[0].labels == frozenset()  # the message stays, archived
    typ, data = c.delete('"[Gmail]/Trash"')
    assert typ == "NO"
    c.logout()


# ---------------------------------------------------------------------------- labels as folders


def test_one_message_many_folders(server: GmailServer) -> None:
    # Messages before it make the folders' UID counters differ.
    server.add_message(ME, msg(1), {"Work"})
    server.add_message(ME, msg(2), {"Work", "Travel"})
    server.add_message(ME, msg(3), ())
    gid = server.add_message(ME, msg(4), {"\\Inbox", "Work", "Travel"}, {"\\Seen"}, WHEN)
    c = login(server)
    where = {}
    for folder in ("INBOX", "Work", "Travel", "[Gmail]/All Mail"):
        rows = {r["X-GM-MSGID"]: r for r in fetch(c, folder)}
        assert gid in rows, folder
        where[folder] = rows[gid]["UID"]
    assert where == {"INBOX": 1, "Work": 3, "Travel": 2, "[Gmail]/All Mail": 4}
    for folder in ("[Gmail]/Sent Mail", "[Gmail]/Spam", "[Gmail]/Trash", "[Gmail]/Starred"):
        assert fetch(c, folder) == []
    # Every folder has its own UIDVALIDITY.
    validities = {f: server.uidvalidity(ME, f) for f in where}
    assert len(set(validities.values())) == len(validities)
    _typ, data = c.status("Work", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
    assert data[0] == b'"Work" (MESSAGES 3 UIDNEXT 4 UIDVALIDITY %d UNSEEN 2)' % validities["Work"]
    c.logout()
    snap = server.message(ME, gid)
    assert snap.labels == {"\\Inbox", "Work", "Travel"}
    assert snap.flags == {"\\Seen"}
    assert snap.internaldate == WHEN
    assert len(server.messages(ME)) == 4


def test_fetch_labels(server: GmailServer) -> None:
    gid = server.add_message(ME, msg(1), {"\\Inbox", "\\Important", "Muy Importante", "foo"})
    c = login(server)
    [row] = fetch(c, "[Gmail]/All Mail", "(X-GM-LABELS X-GM-MSGID X-GM-THRID)")
    assert row["labels"] == {"\\Inbox", "\\Important", "Muy Importante", "foo"}
    assert row["X-GM-MSGID"] == gid and row["X-GM-THRID"] == gid
    assert gid.bit_length() > 32 and gid < 2**64  # a 64-bit number, as on Gmail
    # The label of the selected folder is left out (observed Gmail behaviour).
    assert fetch(c, "INBOX")[0]["labels"] == {"\\Important", "Muy Importante", "foo"}
    assert fetch(c, "foo")[0]["labels"] == {"\\Inbox", "\\Important", "Muy Importante"}
    c.select('"[Gmail]/All Mail"')
    _typ, data = c.uid("FETCH", "1", "(X-GM-LABELS)")
    assert b'"\\\\Important"' in data[0] and b'"\\\\Inbox"' in data[0]  # quoted, as Gmail's
    assert b'"Muy Importante"' in data[0] and b" foo" in data[0]  # quoted only when needed
    c.logout()
    with GmailServer(users={ME: PW}, omit_selected_label=False) as g:
        g.add_message(ME, msg(1), {"\\Inbox", "foo"})
        c = login(g)
        assert fetch(c, "foo")[0]["labels"] == {"\\Inbox", "foo"}
        c.logout()


def test_thread_ids_follow_replies(server: GmailServer) -> None:
    first = server.add_message(ME, msg(1), {"\\Inbox"})
    reply = server.add_message(ME, msg(2, extra="In-Reply-To: <m1@example.org>"), {"\\Inbox"})
    other = server.add_message(ME, msg(3), {"\\Inbox"})
    threads = {m.msgid: m.thrid for m in server.messages(ME)}
    assert threads == {first: first, reply: first, other: other}
    c = login(server)
    c.select("INBOX")
    _typ, data = c.uid("SEARCH", None, "X-GM-THRID", str(first))
    assert data == [b"1 2"]
    c.logout()


def test_store_labels_makes_folders(server: GmailServer) -> None:
    gid = server.add_message(ME, msg(1), {"\\Inbox"})
    c = login(server)
    c.select("INBOX")
    typ, data = c.uid("STORE", "1", "+X-GM-LABELS", "(Receipts/2024 \\Starred)")
    assert typ == "OK"
    assert parse_labels(data[0]) == {"Receipts/2024", "\\Starred"}  # \Inbox: selected
    assert "Receipts/2024" in mailcheck.folders(c)
    assert [r["X-GM-MSGID"] for r in fetch(c, "Receipts/2024")] == [gid]
    assert [r["X-GM-MSGID"] for r in fetch(c, "[Gmail]/Starred")] == [gid]
    assert server.message(ME, gid).labels == {"\\Inbox", "Receipts/2024", "\\Starred"}
    assert server.message(ME, gid).flags == {"\\Flagged"}  # \Starred is \Flagged
    c.select("INBOX")
    typ, data = c.uid("STORE", "1", "-X-GM-LABELS", '("\\\\Inbox")')
    assert typ == "OK"
    assert c.untagged_responses.pop("EXPUNGE") == [b"1"]  # it left INBOX
    assert fetch(c, "INBOX") == []
    c.select("Receipts/2024")
    typ, data = c.uid("STORE", "1", "X-GM-LABELS", "(Taxes)")  # replace all labels
    assert typ == "OK"
    assert server.message(ME, gid).labels == {"Taxes"}
    assert server.message(ME, gid).flags == frozenset()
    c.logout()


def test_archived_mail_is_only_in_all_mail(server: GmailServer) -> None:
    gid = server.add_message(ME, msg(1))
    c = login(server)
    snap = mailcheck.snapshot(server.port, ME, PW)
    assert {f for f, msgs in snap.items() if msgs} == {"[Gmail]/All Mail"}
    assert [r["X-GM-MSGID"] for r in fetch(c, "[Gmail]/All Mail")] == [gid]
    assert fetch(c, "[Gmail]/All Mail")[0]["labels"] == set()
    c.logout()


def test_spam_and_trash_are_not_in_all_mail(server: GmailServer) -> None:
    spam = server.add_message(ME, msg(1), {"\\Spam"})
    trash = server.add_message(ME, msg(2), {"\\Trash", "Work"})
    kept = server.add_message(ME, msg(3), {"Work"})
    c = login(server)
    ids = {
        f: [r["X-GM-MSGID"] for r in fetch(c, f)]
        for f in ("[Gmail]/All Mail", "[Gmail]/Spam", "[Gmail]/Trash", "Work")
    }
    assert ids == {
        "[Gmail]/All Mail": [kept],
        "[Gmail]/Spam": [spam],
        "[Gmail]/Trash": [trash],
        "Work": [kept],
    }
    c.logout()


def test_copy_adds_a_label_and_move_takes_one_away(server: GmailServer) -> None:
    a = server.add_message(ME, msg(1), {"\\Inbox"})
    b = server.add_message(ME, msg(2), {"\\Inbox"})
    c = login(server)
    c.select("INBOX")
    typ, data = c._simple_command("UID", "COPY", "1:2", "Travel")
    assert typ == "NO" and b"TRYCREATE" in data[0]
    c.create("Travel")
    typ, data = c._simple_command("UID", "COPY", "1:2", "Travel")
    assert typ == "OK"
    validity = server.uidvalidity(ME, "Travel")
    assert data[0] == b"[COPYUID %d 1,2 1,2] (Success)" % validity
    assert len(server.messages(ME)) == 2  # no new message: a label
    assert {m.msgid: m.labels for m in server.messages(ME)} == {
        a: {"\\Inbox", "Travel"},
        b: {"\\Inbox", "Travel"},
    }
    typ, data = c._simple_command("UID", "MOVE", "2", "Travel")
    assert typ == "OK"
    assert c.untagged_responses.pop("EXPUNGE") == [b"2"]
    assert server.message(ME, b).labels == {"Travel"}
    assert [r["X-GM-MSGID"] for r in fetch(c, "INBOX")] == [a]
    # COPY to Trash hides the message everywhere else; COPY back out restores it.
    c.select("Travel")
    typ, data = c.uid("COPY", "1", '"[Gmail]/Trash"')
    assert typ == "OK"
    assert [r["X-GM-MSGID"] for r in fetch(c, "[Gmail]/All Mail")] == [b]
    c.logout()


def test_expunge_removes_a_label_or_deletes_from_trash(server: GmailServer) -> None:
    gid = server.add_message(ME, msg(1), {"\\Inbox", "Work"})
    c = login(server)
    c.select("Work")
    c.store("1", "+FLAGS", "(\\Deleted)")  # Gmail's default: auto-expunge
    c.noop()
    assert server.message(ME, gid).labels == {"\\Inbox"}
    c.select("INBOX")
    c.store("1", "+FLAGS", "(\\Deleted)")
    assert server.message(ME, gid).labels == frozenset()  # archived, still in All Mail
    c.select('"[Gmail]/All Mail"')
    c.uid("COPY", "1", '"[Gmail]/Trash"')
    c.select('"[Gmail]/Trash"')
    c.store("1", "+FLAGS", "(\\Deleted)")
    assert server.messages(ME) == []  # deleted forever
    c.logout()
    with GmailServer(users={ME: PW}, auto_expunge=False) as g:
        gid = g.add_message(ME, msg(1), {"Work"})
        c = login(g)
        c.select("Work")
        c.store("1", "+FLAGS", "(\\Deleted)")
        _typ, data = c.fetch("1", "(FLAGS)")
        assert b"\\Deleted" in data[0]
        assert g.message(ME, gid).labels == {"Work"}
        _typ, data = c.expunge()
        assert data == [b"1"]
        assert g.message(ME, gid).labels == frozenset()
        c.logout()


# ---------------------------------------------------------------------------- APPEND


def test_append_into_label_folder(server: GmailServer) -> None:
    c = login(server)
    body = msg(1)
    when = datetime(2019, 12, 31, 23, 0, 0, tzinfo=timezone(timedelta(hours=-5)))
    typ, data = c.append("Work", "(\\Seen $Forwarded)", imaplib.Time2Internaldate(when), body)
    assert typ == "NO" and b"TRYCREATE" in data[0]
    c.create("Work")
    typ, data = c.append("Work", "(\\Seen $Forwarded)", imaplib.Time2Internaldate(when), body)
    assert typ == "OK"
    m = re.match(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
    assert m and int(m.group(1)) == server.uidvalidity(ME, "Work")
    [snap] = server.messages(ME)
    assert snap.labels == {"Work"}
    assert snap.flags == {"\\Seen", "$Forwarded"}
    assert snap.internaldate == when  # the same instant (Gmail answers in UTC)
    assert snap.raw == body
    assert server.folder_uids(ME, "Work") == {int(m.group(2)): snap.msgid}
    assert fetch(c, "INBOX") == []
    rows = fetch(c, "[Gmail]/All Mail", "(UID INTERNALDATE)")
    assert len(rows) == 1
    typ, data = c.uid("FETCH", "1", "(INTERNALDATE)")
    assert b'INTERNALDATE "01-Jan-2020 04:00:00 +0000"' in data[0]
    c.logout()


def test_append_big_message_with_synchronizing_literal(server: GmailServer) -> None:
    body = msg(1) + bytes(range(256)) * 12_000 + b"\nbare LF\rbare CR\r\n"  # ~3 MB, not text
    raw = Raw(server.port)
    raw.login(ME, PW)
    raw.send(b'a APPEND INBOX (\\Seen) "04-Mar-2021 05:06:07 +0000" {%d}\r\n' % len(body))
    assert raw.line() == b"+ go ahead"  # a synchronizing literal waits for this
    raw.send(body + b"\r\n")
    assert re.match(rb"a OK \[APPENDUID \d+ 1\] \(Success\)", raw.until(b"a")[-1])
    [snap] = server.messages(ME)
    assert snap.raw == body and snap.labels == {"\\Inbox"}
    raw.send(b"b EXAMINE INBOX\r\nc UID FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n")
    raw.until(b"b")
    out = raw.until(b"c")
    n = len(body)
    assert out[0].startswith(b"* 1 FETCH (UID 1 RFC822.SIZE %d BODY[] {%d}\r\n" % (n, n))
    assert (
        hashlib.sha256(out[0].split(b"}\r\n", 1)[1][:-1]).digest() == hashlib.sha256(body).digest()
    )
    raw.close()


def test_literal_minus(server: GmailServer) -> None:
    raw = Raw(server.port)
    raw.login(ME, PW)
    small = msg(1)
    assert len(small) <= 4096
    raw.send(b"a APPEND INBOX {%d+}\r\n" % len(small) + small + b"\r\n")
    assert raw.until(b"a")[-1].startswith(b"a OK [APPENDUID")  # no continuation needed
    big = msg(2, size=5000)
    raw.send(b"b APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
    answer = raw.until(b"b")
    assert answer == [
        b"b BAD [TOOBIG] Non-synchronizing literal larger than 4096 bytes "
        b"(this server has LITERAL-, not LITERAL+)"
    ]
    raw.send(b"c NOOP\r\n")  # the refused literal was read and dropped: still in sync
    assert raw.until(b"c") == [b"c OK Success"]
    assert [m.raw for m in server.messages(ME)] == [small]
    raw.close()


def test_pipelined_commands_are_answered_in_order(server: GmailServer) -> None:
    for n in range(5):
        server.add_message(ME, msg(n), {"\\Inbox"})
    raw = Raw(server.port)
    raw.send(
        b"1 LOGIN " + ME.encode() + b" " + PW.encode() + b"\r\n"
        b"2 SELECT INBOX\r\n"
        b"3 UID FETCH 1:* (UID RFC822.SIZE)\r\n"
        b'4 STATUS "[Gmail]/All Mail" (MESSAGES)\r\n'
        b"5 UID STORE 2 +FLAGS.SILENT (\\Seen)\r\n"
        b"6 UID SEARCH SEEN\r\n"
        b"7 NOOP\r\n"
    )
    tags = []
    for tag in b"1234567":
        lines = raw.until(bytes((tag,)))
        tags.append(lines[-1].split()[:2])
        if tag == ord("3"):
            assert len([x for x in lines if b" FETCH " in x]) == 5
        if tag == ord("6"):
            assert lines[0] == b"* SEARCH 2"
    assert tags == [[bytes((t,)), b"OK"] for t in b"1234567"]
    raw.close()


def test_project_client_pipelines_appends_and_fetches(server: GmailServer) -> None:
    server.create_label(ME, "Work")
    bodies = [msg(n, size=n * 3000) for n in range(6)]  # some need a literal > 4096

    async def go() -> None:
        conn = await ImapConnection.open("127.0.0.1", server.port, security="none")
        await conn.login(ME, PW, allow_insecure=True)
        client = ImapClient(conn)
        assert not client.has("MULTIAPPEND") and not client.has("LITERAL+")
        await client.select(b"Work")
        futs = [
            await client.submit_append(
                b"Work", [AppendItem(b, ("\\Seen",), b"04-Mar-2021 05:06:07 +0000")]
            )
            for b in bodies
        ]
        uids = [append_result(await f).uids[0] for f in futs]  # type: ignore[union-attr]
        assert uids == [1, 2, 3, 4, 5, 6]
        got: dict[int, bytes] = {}
        fut = await client.submit_fetch_bodies(uids, got.__setitem__)
        assert (await fut).tagged.ok
        assert [got[u] for u in uids] == bodies
        info, meta = await client.select_and_list(b"Work", message_id=True)
        assert info.exists == 6 and info.uidvalidity == server.uidvalidity(ME, "Work")
        assert [m.message_id for m in meta] == [f"<m{n}@example.org>".encode() for n in range(6)]
        assert all(m.internaldate == b"04-Mar-2021 05:06:07 +0000" for m in meta)
        with pytest.raises(ValueError, match="MULTIAPPEND"):
            await client.submit_append(b"Work", [AppendItem(b, (), None) for b in bodies[:2]])
        await client.logout()

    asyncio.run(go())
    assert [m.raw for m in server.messages(ME)] == bodies


def test_condstore_and_xlist(server: GmailServer) -> None:
    server.add_message(ME, msg(1), {"\\Inbox"})
    server.add_message(ME, msg(2), {"\\Inbox"})
    raw = Raw(server.port)
    raw.login(ME, PW)
    raw.send(b"a SELECT INBOX (CONDSTORE)\r\n")
    highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(raw.until(b"a"))).group(1))
    raw.send(b"b UID STORE 2 +FLAGS (\\Seen)\r\n")
    [stored, done] = raw.until(b"b")
    modseq = int(re.search(rb"MODSEQ \((\d+)\)", stored).group(1))
    assert modseq > highest and done == b"b OK Success"
    raw.send(b"c UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)\r\n" % highest)
    assert raw.until(b"c") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (%d))" % modseq,
        b"c OK Success",
    ]
    raw.send(b"d UID STORE 1:2 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Answered)\r\n" % highest)
    out = raw.until(b"d")
    assert out[-1] == b"d OK [MODIFIED 2] Conditional STORE failed (Success)"
    assert [m.flags for m in server.messages(ME)] == [{"\\Answered"}, {"\\Seen"}]
    raw.send(b'e XLIST "" "*"\r\n')
    xlist = raw.until(b"e")
    assert b'* XLIST (\\HasNoChildren \\Inbox) "/" "Inbox"' in xlist
    assert b'* XLIST (\\AllMail \\HasNoChildren) "/" "[Gmail]/All Mail"' in xlist
    raw.close()


# ---------------------------------------------------------------------------- SEARCH


def test_search(server: GmailServer) -> None:
    ids = [
        server.add_message(ME, msg(n, size=n * 100), {"\\Inbox"}, (), WHEN + timedelta(days=n))
        for n in range(4)
    ]
    c = login(server)
    c.select("INBOX")
    assert c.uid("SEARCH", None, "X-GM-MSGID", str(ids[2]))[1] == [b"3"]
    assert c.uid("SEARCH", None, "X-GM-RAW", '"rfc822msgid:m1@example.org"')[1] == [b"2"]
    assert c.uid("SEARCH", None, "HEADER", "Message-ID", '"<m3@example.org>"')[1] == [b"4"]
    assert c.uid("SEARCH", None, "LARGER", "250")[1] == [b"3 4"]
    assert c.uid("SEARCH", None, "SINCE", "6-Mar-2021", "BEFORE", "7-Mar-2021")[1] == [b"3"]
    assert c.uid("SEARCH", None, "NOT", "UID", "1:2")[1] == [b"3 4"]
    assert c.uid("SEARCH", None, "OR", "UID", "1", "SUBJECT", '"message 3"')[1] == [b"1 4"]
    assert c.uid("SEARCH", None, "X-GM-LABELS", "\\Inbox")[1] == [b"1 2 3 4"]
    typ, _ = c.uid("SEARCH", None, "RETURN", "(MIN MAX COUNT)", "ALL")
    assert typ == "OK"
    assert c.untagged_responses.pop("ESEARCH")[0].endswith(b"UID MIN 1 MAX 4 COUNT 4")
    with pytest.raises(imaplib.IMAP4.error, match="SENTBEFORE is not supported"):
        c.uid("SEARCH", None, "SENTBEFORE", "1-Jan-2000")
    c.logout()


# ---------------------------------------------------------------------------- other sessions


def test_other_sessions_see_changes(server: GmailServer) -> None:
    server.add_message(ME, msg(1), {"\\Inbox"})
    watcher, actor = login(server), login(server)
    watcher.select("INBOX")
    actor.append("INBOX", None, None, msg(2))
    server.add_message(ME, msg(3), {"\\Inbox"})  # delivered meanwhile
    watcher.noop()
    assert watcher.untagged_responses.pop("EXISTS")[-1] == b"3"
    actor.select("INBOX")
    actor.uid("STORE", "1", "-X-GM-LABELS", '("\\\\Inbox")')
    watcher.noop()
    assert watcher.untagged_responses.pop("EXPUNGE") == [b"1"]
    _typ, data = watcher.fetch("1:*", "(UID)")
    assert data == [b"1 (UID 2)", b"2 (UID 3)"]
    watcher.logout()
    actor.logout()
    eventually(lambda: server.connections(ME) == 0)  # imaplib returns on BYE


def test_idle_reports_new_mail(server: GmailServer) -> None:
    raw = Raw(server.port)
    raw.login(ME, PW)
    raw.send(b"s SELECT INBOX\r\n")
    raw.until(b"s")
    raw.send(b"i IDLE\r\n")
    assert raw.line() == b"+ idling"
    server.add_message(ME, msg(1), {"\\Inbox"})
    assert raw.line() == b"* 1 EXISTS"
    raw.send(b"DONE\r\n")
    assert raw.until(b"i") == [b"i OK IDLE terminated (Success)"]
    raw.close()


# ---------------------------------------------------------------------------- quirks


def test_unsupported_commands_answer_bad_with_a_reason(server: GmailServer) -> None:
    c = login(server)
    with pytest.raises(imaplib.IMAP4.error, match=r"unknown STATUS item SIZE"):
        c.status("INBOX", "(MESSAGES SIZE)")  # Gmail has no STATUS=SIZE
    c.select("INBOX")
    server.add_message(ME, msg(1), {"\\Inbox"})
    c.noop()
    with pytest.raises(imaplib.IMAP4.error, match="ENVELOPE is not supported"):
        c.fetch("1", "(ENVELOPE)")
    with pytest.raises(imaplib.IMAP4.error, match="MIME parts"):
        c.fetch("1", "(BODY.PEEK[1])")
    c.logout()
    raw = Raw(server.port)
    raw.send(b"s STARTTLS\r\n")  # Gmail is TLS from the first byte (port 993): no STARTTLS
    assert raw.until(b"s")[0].startswith(b"s BAD Unknown command STARTTLS")
    raw.close()
    raw = Raw(server.port)
    raw.login(ME, PW)
    raw.send(b"z COMPRESS DEFLATE\r\n")
    [answer] = raw.until(b"z")
    assert answer.startswith(b"z BAD") and b"COMPRESS=DEFLATE is not emulated" in answer
    raw.close()
    assert {r.command for r in server.unsupported()} == {"STATUS", "COMPRESS", "STARTTLS", "FETCH"}


def test_dedupe_by_message_id(server: GmailServer) -> None:
    with GmailServer(users={ME: PW}, dedupe_message_id=True) as g:
        g.create_label(ME, "Work")
        c = login(g)
        first = msg(1)
        assert c.append("INBOX", "(\\Seen)", None, first)[0] == "OK"
        typ, data = c.append("Work", None, None, msg(1, size=10))  # same Message-ID
        assert typ == "OK"
        assert int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1)) == 1
        [only] = g.messages(ME)
        assert only.labels == {"\\Inbox", "Work"} and only.raw == first
        c.append("INBOX", None, None, msg(2, msgid=None))
        c.append("INBOX", None, None, msg(2, msgid=None))  # no Message-ID: never merged
        assert len(g.messages(ME)) == 3
        c.logout()
    # Off (the default): two messages.
    c = login(server)
    c.append("INBOX", None, None, msg(1))
    c.append("INBOX", None, None, msg(1))
    assert len(server.messages(ME)) == 2
    c.logout()


def test_too_many_simultaneous_connections() -> None:
    with GmailServer(users={ME: PW}, max_connections=2) as g:
        a, b = login(g), login(g)
        third = imaplib.IMAP4("127.0.0.1", g.port)
        with pytest.raises(
            imaplib.IMAP4.error, match=r"\[ALERT\] Too many simultaneous connections\. \(Failure\)"
        ):
            third.login(ME, PW)
        a.logout()
        eventually(lambda: g.connections(ME) == 1)
        third.login(ME, PW)
        b.logout()
        third.logout()

    async def go(port: int) -> None:
        conn = await ImapConnection.open("127.0.0.1", port, security="none")
        with pytest.raises(AuthenticationError, match="Too many simultaneous connections"):
            await conn.login(ME, PW, allow_insecure=True)
        conn.abort()

    with GmailServer(users={ME: PW}, max_connections=0) as g:
        asyncio.run(go(g.port))


def test_append_limit() -> None:
    with GmailServer(users={ME: PW}, append_limit=10_000) as g:
        raw = Raw(g.port)
        raw.login(ME, PW)
        body = msg(1, size=20_000)
        raw.send(b"a APPEND INBOX {%d}\r\n" % len(body))
        # Refused instead of the continuation: the client never sends the literal.
        assert raw.until(b"a") == [
            b"a BAD [TOOBIG] Message too large. https://support.google.com/mail/answer/6584#limit"
        ]
        raw.send(b"b NOOP\r\n")
        assert raw.until(b"b") == [b"b OK Success"]
        raw.send(b"c CAPABILITY\r\n")
        assert b"APPENDLIMIT=10000" in raw.until(b"c")[0]
        raw.close()

        async def go() -> None:
            conn = await ImapConnection.open("127.0.0.1", g.port, security="none")
            await conn.login(ME, PW, allow_insecure=True)
            client = ImapClient(conn)
            fut = await client.submit_append(b"INBOX", [AppendItem(body, (), None)])
            with pytest.raises(CommandError, match="TOOBIG"):
                append_result(await fut)
            ok = await client.submit_append(b"INBOX", [AppendItem(msg(2), (), None)])
            assert append_result(await ok) is not None
            await client.logout()

        asyncio.run(go())
        assert len(g.messages(ME)) == 1


def test_bandwidth_caps_and_hooks() -> None:
    with GmailServer(users={ME: PW}, download_limit=1000, upload_limit=1500) as g:
        g.add_message(ME, msg(1, size=1500), {"\\Inbox"})
        c = login(g)
        c.select("INBOX")
        assert c.uid("FETCH", "1", "(BODY.PEEK[])")[0] == "OK"  # the first day's download
        typ, data = c.uid("FETCH", "1", "(BODY.PEEK[])")
        assert (
            typ == "NO" and b"[OVERQUOTA] Account exceeded command or bandwidth limits" in data[0]
        )
        assert c.uid("FETCH", "1", "(UID FLAGS)")[0] == "OK"  # no body, no cap
        assert c.append("INBOX", None, None, msg(2, size=1000))[0] == "OK"
        typ, data = c.append("INBOX", None, None, msg(3, size=1000))
        assert typ == "NO" and b"OVERQUOTA" in data[0]
        assert g.bandwidth(ME)[1] < 1500
        g.reset_bandwidth()
        assert c.uid("FETCH", "1", "(BODY.PEEK[])")[0] == "OK"
        c.logout()
    calls: list[tuple[str | None, str]] = []

    def hook(user: str | None, command: str) -> str | None:
        calls.append((user, command))
        return "NO [UNAVAILABLE] Temporary System Error" if command == "SELECT" else None

    with GmailServer(users={ME: PW}, command_hook=hook, throttled=True) as g:
        c = login(g)
        typ, data = c.select("INBOX")
        assert typ == "NO" and data == [b"[UNAVAILABLE] Temporary System Error"]
        typ, data = c.noop()
        assert data == [b"Success [THROTTLED]"]
        c.logout()
    assert (ME, "SELECT") in calls and (None, "LOGIN") in calls


def test_localized_system_prefix() -> None:
    with GmailServer(users={ME: PW}, system_prefix="[Google Mail]") as g:
        g.add_message(ME, msg(1), {"\\Sent"})
        c = login(g)
        boxes = mailcheck.folders(c)
        assert "\\Sent" in boxes["[Google Mail]/Sent Mail"][1]
        assert "[Gmail]/Sent Mail" not in boxes
        assert len(fetch(c, "[Google Mail]/Sent Mail")) == 1
        c.logout()


# ---------------------------------------------------------------------------- lifecycle


def test_stop_closes_everything() -> None:
    before = {t.ident for t in threading.enumerate()}
    g = GmailServer(users={ME: PW}).start()
    port = g.port
    c = login(g)
    raw = Raw(port)
    g.stop()
    assert not g.running
    assert {t.ident for t in threading.enumerate()} <= before
    with pytest.raises((imaplib.IMAP4.abort, OSError, EOFError)):
        c.noop()
    with pytest.raises((EOFError, OSError)):
        raw.line()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    g.stop()  # twice is fine


def test_seeding_api_checks_its_arguments(server: GmailServer) -> None:
    with pytest.raises(ValueError, match="unknown system label"):
        server.add_message(ME, msg(1), {"\\Inbx"})
    with pytest.raises(ValueError, match="per folder"):
        server.add_message(ME, msg(1), (), {"\\Deleted"})
    with pytest.raises(ValueError, match="time zone"):
        server.add_message(ME, msg(1), internaldate=datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="invalid label"):
        server.add_message(ME, msg(1), {"[Gmail]/Mine"})
    with pytest.raises(KeyError):
        server.messages("nobody@gmail.test")


# ---------------------------------------------------------------------------- the CLI


def _contents(snap: dict[str, Counter[mailcheck.Msg]]) -> set[tuple[str, tuple[str, ...]]]:
    """(sha256, flags) of every message in any folder: independent of folder names.

    \\Deleted is left out: on Gmail it belongs to one folder (the same message shows
    without it in All Mail).
    """
    return {
        (m.sha, tuple(f for f in m.flags if f != "\\Deleted"))
        for msgs in snap.values()
        for m in msgs
    }


def test_cli_moves_dovecot_to_the_double(dovecot, gmail: GmailServer, tmp_path) -> None:
    """Smoke test: a mover run into the double completes and every message arrives.

    How many copies and which labels is the Gmail-aware mover's business (issue 5), so
    only "each source message is there, bytes and flags" is checked here.
    """
    from tests.transfer.test_move import populate

    populate(dovecot)
    src = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    proc = mailcheck.run_move(
        dovecot.port, gmail.port, tmp_path, "--no-starttls", dest_user="dst%40gmail.test"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert gmail.unsupported() == []
    stored = {hashlib.sha256(m.raw).hexdigest() for m in gmail.messages("dst@gmail.test")}
    assert stored == {sha for sha, _ in _contents(src)}
    assert _contents(mailcheck.snapshot(gmail.port, "dst@gmail.test", "dstpass")) == _contents(src)


def test_cli_moves_the_double_to_dovecot(dovecot, gmail: GmailServer, tmp_path) -> None:
    """Smoke test: a mover run out of the double completes and every message arrives."""
    src = "src@gmail.test"
    gmail.add_message(src, msg(1), {"\\Inbox", "Work", "Travel"}, {"\\Seen"}, WHEN)
    gmail.add_message(src, msg(2), (), (), WHEN)
    gmail.add_message(src, msg(3, size=9000), {"\\Sent"}, {"\\Seen"}, WHEN)
    gmail.add_message(src, msg(4), {"\\Starred", "Work/2024"}, (), WHEN)
    gmail.add_message(src, msg(5), {"\\Spam"}, (), WHEN)
    proc = mailcheck.run_move(
        gmail.port, dovecot.port, tmp_path, "--no-starttls", source_user="src%40gmail.test"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert gmail.unsupported() == []
    source = _contents(mailcheck.snapshot(gmail.port, src, "srcpass"))
    assert _contents(mailcheck.snapshot(dovecot.port, "dst", "dstpass")) == source
