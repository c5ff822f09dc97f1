"""FETCH answers are read by meaning, not by spelling (issue 13, bug 1), from byte fixtures.

RFC 3501 lets a server echo the section it was asked for in many spellings: a header
field name is an astring (atom, quoted string or literal), keywords and field names
are case-insensitive, ``BODY.PEEK[...]`` is answered as ``BODY[...]`` (or echoed as
asked), and ``RFC822``/``RFC822.HEADER``/``RFC822.TEXT`` are ``BODY[]``/``BODY[HEADER]``/
``BODY[TEXT]``.  Each spelling below must give the engine the Message-ID or the body.
"""

from __future__ import annotations

from typing import Any

import pytest

from yippiemove.imap import client as imap_client
from yippiemove.imap.client import META_KEY_MSGID, parse_meta
from yippiemove.imap.protocol import FetchRun, ResponseParser, Untagged

HDR = b"Message-ID: <a@b.example>\r\n\r\n"
META = (
    b'* 7 FETCH (UID 42 RFC822.SIZE 1234 FLAGS (\\Seen) INTERNALDATE "01-Jan-2020 00:00:00 +0000" '
)

#: How a server may name the answer to BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)].
MSGID_SPELLINGS = {
    "plain": b"BODY[HEADER.FIELDS (MESSAGE-ID)]",
    "quoted": b'BODY[HEADER.FIELDS ("MESSAGE-ID")]',
    "quoted-mixed-case": b'BODY[HEADER.FIELDS ("Message-ID")]',
    "lower": b"body[header.fields (message-id)]",
    "mixed": b'Body[Header.Fields ("Message-Id")]',
    "peek-echo": b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]",
    "peek-echo-quoted-lower": b'body.peek[header.fields ("message-id")]',
    "extra-spaces": b"BODY[HEADER.FIELDS  ( MESSAGE-ID )]",
    "quoted-escape": b'BODY[HEADER.FIELDS ("MESSAGE\\-ID")]',
    "literal": b"BODY[HEADER.FIELDS ({10}\r\nMESSAGE-ID)]",
    "literal-lower-peek": b"BODY.PEEK[HEADER.FIELDS ({10}\r\nmessage-id)]",
}


def parse(data: bytes, step: int | None = None, *, bulk: bool = False) -> list[Untagged]:
    p = ResponseParser(bulk=bulk)
    out: list[Any] = []
    if step is None:
        out += p.feed(data)
    else:
        for i in range(0, len(data), step):
            out += p.feed(data[i : i + step])
    flat: list[Untagged] = []
    for r in out:
        flat += r.untagged() if isinstance(r, FetchRun) else [r]
    return flat


@pytest.mark.parametrize("step", [None, 1, 7])
@pytest.mark.parametrize("bulk", [False, True])
@pytest.mark.parametrize("name", sorted(MSGID_SPELLINGS))
def test_message_id_found_however_the_section_is_spelled(name: str, step: int | None, bulk: bool):
    wire = META + MSGID_SPELLINGS[name] + b" {%d}\r\n" % len(HDR) + HDR + b")\r\n"
    (u,) = parse(wire, step, bulk=bulk)
    assert u.kind == "FETCH" and u.number == 7
    item = u.data[0]
    assert item[META_KEY_MSGID] == HDR
    meta = parse_meta(item)
    assert (meta.uid, meta.size, meta.message_id) == (42, 1234, b"<a@b.example>")


@pytest.mark.parametrize("name", sorted(MSGID_SPELLINGS))
def test_message_id_found_after_the_header_too(name: str):
    """Item order is the server's: the section first, UID last."""
    wire = (
        b"* 3 FETCH ("
        + MSGID_SPELLINGS[name]
        + b" {%d}\r\n" % len(HDR)
        + HDR
        + b' UID 9 RFC822.SIZE 5 FLAGS () INTERNALDATE "01-Jan-2020 00:00:00 +0000")\r\n'
    )
    (u,) = parse(wire, 1)
    assert parse_meta(u.data[0]).message_id == b"<a@b.example>"


BODY = b"Subject: x\r\n\r\nhello\r\n"

#: How a server may name the answer to BODY.PEEK[].
BODY_SPELLINGS = {
    "plain": b"BODY[]",
    "lower": b"body[]",
    "peek-echo": b"BODY.PEEK[]",
    "rfc822": b"RFC822",
    "rfc822-lower": b"rfc822",
}


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("bulk", [False, True])
@pytest.mark.parametrize("name", sorted(BODY_SPELLINGS))
def test_body_found_however_it_is_spelled(name: str, step: int | None, bulk: bool):
    wire = b"* 1 FETCH (UID 5 " + BODY_SPELLINGS[name] + b" {%d}\r\n" % len(BODY) + BODY + b")\r\n"
    got: list[tuple[int, bytes]] = []
    collect = imap_client._BodyCollector(lambda uid, body: got.append((uid, bytes(body))))
    p = ResponseParser(bulk=bulk)
    chunks = [wire] if step is None else [wire[i : i + step] for i in range(len(wire))]
    for c in chunks:
        for r in p.feed(c):
            if isinstance(r, FetchRun):
                collect.on_run(r)
            else:
                collect(r)
    assert got == [(5, BODY)]


@pytest.mark.parametrize(
    ("spelled", "meant"),
    [
        (b"RFC822.HEADER", b"BODY[HEADER]"),
        (b"rfc822.header", b"BODY.PEEK[HEADER]"),
        (b"RFC822.TEXT", b"BODY[TEXT]"),
        (b"body[text]", b"BODY.PEEK[TEXT]"),
        (b"BODY[]<0>", b"BODY.PEEK[]<0.100>"),
        (b"body[1.2.mime]", b"BODY[1.2.MIME]"),
        (
            b'BODY[HEADER.FIELDS.NOT ("Received" x-spam)]',
            b"BODY[HEADER.FIELDS.NOT (RECEIVED X-SPAM)]",
        ),
        (
            b"BODY[HEADER.FIELDS ({7}\r\nSubject {4}\r\nDate)]",
            b"BODY[HEADER.FIELDS (SUBJECT DATE)]",
        ),
        (b"BINARY[1]", b"BINARY.PEEK[1]"),
    ],
)
def test_other_sections_keyed_by_meaning(spelled: bytes, meant: bytes):
    from yippiemove.imap.protocol import fetch_key

    wire = b"* 1 FETCH (UID 5 " + spelled + b' "v")\r\n'
    (u,) = parse(wire, 1)
    assert u.data[0] == {"UID": "5", fetch_key(meant.decode()): b"v"}


def test_items_beside_a_literal_field_name_are_kept():
    """The literal inside the section is no item value: nothing shifts."""
    wire = (
        b"* 1 FETCH (UID 5 BODY[HEADER.FIELDS ({10}\r\nMESSAGE-ID)] {%d}\r\n" % len(HDR)
        + HDR
        + b" FLAGS (\\Seen) BODY[] {2}\r\nab)\r\n"
    )
    (u,) = parse(wire)
    assert u.data[0] == {"UID": "5", META_KEY_MSGID: HDR, "FLAGS": ["\\Seen"], "BODY[]": b"ab"}


def test_rfc822_size_and_other_names_are_not_sections():
    from yippiemove.imap.protocol import fetch_key

    assert fetch_key("rfc822.size") == "RFC822.SIZE"
    assert fetch_key("x-gm-labels") == "X-GM-LABELS"
    assert fetch_key("BODY") == "BODY"  # BODYSTRUCTURE without extensions, no section
