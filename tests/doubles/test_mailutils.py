"""The GNU Mailutils imap4d fixture works, and imap4d is what docs/testing.md says it is
(section "GNU Mailutils imap4d")."""

from __future__ import annotations

import imaplib
import ssl

import pytest

from tests import mailcheck
from tests.doubles.mailutils import Imap4dServer


def connect(server: Imap4dServer, user: str = "src") -> imaplib.IMAP4:
    c = imaplib.IMAP4(server.host, server.port)
    c.starttls(ssl_context=ssl.create_default_context(cafile=str(server.ca_file)))
    c.login(server.login(user), server.users[user])
    return c


def test_capability_namespace_and_permanentflags(imap4d: Imap4dServer) -> None:
    c = imaplib.IMAP4(imap4d.host, imap4d.port)
    caps = set(c.capabilities)
    assert {"IMAP4REV1", "NAMESPACE", "LITERAL+", "IDLE", "UNSELECT", "STARTTLS"} <= caps
    # what issue 13 is about: none of these
    for missing in ("UIDPLUS", "MULTIAPPEND", "SPECIAL-USE", "ENABLE", "UTF8=ACCEPT", "MOVE"):
        assert missing not in caps
    c.starttls(ssl_context=ssl.create_default_context(cafile=str(imap4d.ca_file)))
    c.login(imap4d.login("src"), "srcpass")
    typ, data = c.namespace()
    assert (typ, data) == ("OK", [b'(("" "/")) NIL NIL'])
    typ, _ = c.select("INBOX")
    assert typ == "OK"
    assert c.untagged_responses["PERMANENTFLAGS"] == [
        b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
    ]
    c.logout()


def test_login_needs_the_domain_and_the_password(imap4d: Imap4dServer) -> None:
    assert imap4d.check_login("src", "srcpass")
    assert not imap4d.check_login("src", "wrong")
    c = imaplib.IMAP4(imap4d.host, imap4d.port)
    with pytest.raises(imaplib.IMAP4.error):
        c.login("src", "srcpass")  # no @domain: virtdomain has no file for it
    c.logout()


def test_implicit_tls_port(imap4d: Imap4dServer) -> None:
    ctx = ssl.create_default_context(cafile=str(imap4d.ca_file))
    c = imaplib.IMAP4_SSL(imap4d.host, imap4d.tls_port, ssl_context=ctx)
    c.login(imap4d.login("dst"), "dstpass")
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_deliver_list_fetch(imap4d: Imap4dServer) -> None:
    raw = b"From: a@example.org\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"
    assert imap4d.deliver_many("src", "Archive/2019", [raw, raw + b"2"]) == [1, 2]
    assert imap4d.deliver("src", "INBOX", raw, ["\\Seen", "\\Flagged"]) == 1
    c = connect(imap4d)
    listed = mailcheck.folders(c)
    assert listed["Archive/2019"][0] == "/"
    assert "\\noselect" in {a.lower() for a in listed["Archive"][1]}
    assert "\\noinferiors" in {a.lower() for a in listed["INBOX"][1]}
    msgs = mailcheck.messages(c, "INBOX")
    assert [(uid, m.flags, body) for uid, m, body in msgs] == [(1, ("\\Flagged", "\\Seen"), raw)]
    c.logout()
    with pytest.raises(ValueError, match="no keywords"):
        imap4d.deliver("src", "INBOX", raw, ["$label1"])


@pytest.mark.source_writes("it APPENDs to the src account to see what imap4d keeps")
def test_append_ignores_flags_and_date_and_refuses_keywords(imap4d: Imap4dServer) -> None:
    """What a mover meets when imap4d is the destination (docs/testing.md)."""
    raw = b"Received: from a by b; Mon, 3 Feb 2014 10:00:00 +0100\r\nFrom: a@b\r\n\r\nx\r\n"
    c = connect(imap4d)
    typ, _ = c.append("INBOX", "(\\Seen \\Flagged)", '"01-Jul-2020 23:30:00 -0700"', raw)
    assert typ == "OK"
    with pytest.raises(imaplib.IMAP4.error, match="Unrecognized flag"):
        c.append("INBOX", "(\\Seen $label1)", None, raw)
    c.select("INBOX")
    typ, data = c.fetch("1", "(FLAGS INTERNALDATE)")
    assert typ == "OK"
    assert b"FLAGS ()" in data[0] or b"FLAGS (\\Recent)" in data[0]
    # the date of the Received: header, not APPEND's
    assert b'INTERNALDATE "03-Feb-2014 09:00:00 +0000"' in data[0]
    c.logout()


def test_bytes_imap4d_changes(imap4d: Imap4dServer) -> None:
    """Bare LF comes back as CRLF; a NUL cuts the message."""
    imap4d.deliver("src", "INBOX", b"From: a@b\r\n\r\nbare\nlf\r\n")
    imap4d.deliver("src", "INBOX", b"From: a@b\r\n\r\nnul\x00after\r\n")
    c = connect(imap4d)
    bodies = [body for _, _, body in mailcheck.messages(c, "INBOX")]
    c.logout()
    assert bodies == [b"From: a@b\r\n\r\nbare\r\nlf\r\n", b"From: a@b\r\n\r\nnul"]


def test_restart_keeps_mail_and_uids(imap4d: Imap4dServer) -> None:
    # imap4d takes INTERNALDATE from the Date: header, else the time of reading: one is given.
    raw = b"From: a@b\r\nDate: Mon, 1 Jan 2018 10:00:00 +0100\r\n\r\nx\r\n"
    imap4d.deliver("src", "Box", raw, ["\\Answered"])
    c = connect(imap4d)
    before = mailcheck.messages(c, "Box")
    c.logout()
    imap4d.stop()
    assert not imap4d.running
    imap4d.start()
    c = connect(imap4d)
    assert mailcheck.messages(c, "Box") == before
    c.logout()


@pytest.mark.source_writes("it changes a flag on the src account to see the snapshot notice")
def test_snapshot_sees_every_change_and_makes_none(imap4d: Imap4dServer) -> None:
    """snapshot(user): the interface of the source-untouched guard (tests/source_guard.py)."""
    imap4d.deliver_many("src", "Box/Sub", [b"From: a@b\r\n\r\nx\r\n", b"From: c@d\r\n\r\ny\r\n"])
    first = imap4d.snapshot("src")
    assert first == imap4d.snapshot("src")  # reading changes nothing
    assert first["Box"] == (None, {})
    validity, msgs = first["Box/Sub"]
    assert validity and sorted(msgs) == [1, 2] and msgs[1][0] == frozenset()
    c = connect(imap4d)
    c.select("Box/Sub")
    c.uid("STORE", "2", "+FLAGS", "(\\Seen)")
    c.logout()
    after = imap4d.snapshot("src")
    assert after["Box/Sub"][1][2][0] == frozenset({"\\Seen"})
    assert after != first
