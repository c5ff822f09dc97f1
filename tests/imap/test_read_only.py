"""A read-only connection (the source of a transfer) refuses every verb that could
change a mailbox before a byte of it is written: from bytes (the sans-IO state) and
against a real Dovecot (the socket's byte count and the mailbox stay as they were)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from tests import mailcheck
from yippiemove.imap.commands import ClientState
from yippiemove.imap.connection import ImapConnection
from yippiemove.imap.errors import ReadOnlyViolation
from yippiemove.imap.protocol import Literal

MSG = b"From: a@example.org\r\nSubject: x\r\nMessage-ID: <ro@x>\r\n\r\nhello\r\n"

#: (verb, arguments): each could change a mailbox (or, SELECT, its \Recent).
FORBIDDEN: list[tuple[str, tuple[bytes | str | Literal, ...]]] = [
    ("APPEND", (b"INBOX", b"(\\Seen)", Literal(MSG))),
    ("CREATE", (b"New",)),
    ("DELETE", (b"INBOX/Old",)),
    ("RENAME", (b"Old", b"New")),
    ("STORE", (b"1", b"+FLAGS.SILENT", b"(\\Deleted)")),
    ("UID STORE", (b"1", b"FLAGS.SILENT", b"()")),
    ("COPY", (b"1", b"Trash")),
    ("UID COPY", (b"1", b"Trash")),
    ("MOVE", (b"1", b"Trash")),
    ("UID MOVE", (b"1", b"Trash")),
    ("EXPUNGE", ()),
    ("UID EXPUNGE", (b"1",)),
    ("SUBSCRIBE", (b"INBOX",)),
    ("UNSUBSCRIBE", (b"INBOX",)),
    ("SELECT", (b"INBOX",)),
    ("SETACL", (b"INBOX", b"anyone", b"lr")),  # not listed anywhere: the allow-list
    ("UID FETCH", (b"1:*", b"(UID BODY[])")),  # sets \Seen outside EXAMINE
    ("FETCH", (b"1", b"RFC822")),
]
IDS = [f"{v} {a[-1]!r}" if v.endswith("FETCH") else v for v, a in FORBIDDEN]


@pytest.mark.parametrize(("verb", "args"), FORBIDDEN, ids=IDS)
def test_state_refuses_before_a_tag_is_taken(verb, args):
    st = ClientState(greeted=True, read_only=True)
    with pytest.raises(ReadOnlyViolation) as err:
        st.send(verb, *args)
    assert err.value.verb == verb
    assert str(err.value).startswith(f"{verb} refused: the connection is read-only")
    assert st.in_flight == 0
    # Lower case and odd spacing are the same verb.
    with pytest.raises(ReadOnlyViolation):
        st.send(verb.lower().replace(" ", "  "), *args)
    # Nothing was taken: the next command is the first one.
    cmd, parts = st.send("EXAMINE", b"INBOX")
    assert cmd.tag == "Y1" and parts == [b"Y1 EXAMINE INBOX\r\n"]


def test_state_allows_what_the_source_side_sends():
    st = ClientState(greeted=True, read_only=True)
    for verb, args in [
        ("CAPABILITY", ()),
        ("NOOP", ()),
        ("LIST", (b'""', b'"*"')),
        ("LSUB", (b'""', b'"*"')),
        ("NAMESPACE", ()),
        ("STATUS", (b"INBOX", b"(UIDVALIDITY UIDNEXT MESSAGES)")),
        ("EXAMINE", (b"INBOX",)),
        ("UID FETCH", (b"1:*", b"(UID BODY.PEEK[])")),
        ("UID FETCH", (b"1:*", b"(UID RFC822.SIZE FLAGS INTERNALDATE)")),
        ("UID FETCH", (b"1", b"(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")),
        ("UID SEARCH", (b"ALL",)),
        ("LOGOUT", ()),
    ]:
        st.send(verb, *args)
    assert st.in_flight == 12
    # A writable state is not affected.
    assert ClientState(greeted=True).send("APPEND", b"INBOX", Literal(MSG))[0].tag == "Y1"


def test_dovecot_read_only_connection_writes_nothing(dovecot):
    dovecot.deliver("src", "INBOX", MSG)
    before = mailcheck.snapshot(dovecot.port, "src", "srcpass")

    async def main() -> None:
        conn = await ImapConnection.open(
            "127.0.0.1",
            dovecot.port,
            ssl_context=ssl.create_default_context(cafile=str(dovecot.ca_file)),
            read_only=True,
        )
        assert conn.read_only
        await conn.login("src", "srcpass")
        await conn.execute("EXAMINE", b"INBOX")
        for verb, args in FORBIDDEN:
            sent = conn.bytes_out
            with pytest.raises(ReadOnlyViolation, match=f"^{verb} refused"):
                await conn.submit(verb, *args)
            with pytest.raises(ReadOnlyViolation):
                await conn.execute(verb, *args)
            assert conn.bytes_out == sent, verb  # not a byte reached the socket
            assert conn.in_flight == 0
        # The connection is still in step and usable.
        res = await conn.execute("UID FETCH", b"1:*", b"(UID FLAGS BODY.PEEK[])")
        assert len(res.untagged) == 1
        await conn.logout()

    asyncio.run(main())
    assert mailcheck.snapshot(dovecot.port, "src", "srcpass") == before
