"""What a server changes when it stores a message (transfer/altered.py), from byte
fixtures: which changes are recognised, and that nothing else is."""

from __future__ import annotations

from yippiemove.imap.client import MessageMeta
from yippiemove.transfer.altered import Alteration, header_end, learn, learn_any
from yippiemove.transfer.matching import altered_candidates

MSG = (
    b"From: J\xc3\xbcrgen <j@example.de>\r\nSubject: M\xe4rz\r\n"
    b"Message-ID: <a@x>\r\n\r\nK\xf6ln body\r\nline 2\r\n"
)
LF = MSG.replace(b"\r\n", b"\n")
Q = b"From: J??rgen <j@example.de>\r\nSubject: M?rz\r\nMessage-ID: <a@x>\r\n\r\nK\xf6ln body\r\nline 2\r\n"


def test_header_end_is_found_in_crlf_and_lf_text_alike() -> None:
    assert MSG[: header_end(MSG)].endswith(b"<a@x>\r\n")
    assert LF[: header_end(LF)].endswith(b"<a@x>\n")
    assert header_end(b"\r\nbody only") == 0
    assert header_end(b"Subject: all header\r\n") == len(b"Subject: all header\r\n")


def test_line_endings_stored_as_lf_are_recognised() -> None:
    alt = learn(MSG, LF)
    assert alt == Alteration(lf=True)
    assert alt.apply(MSG) == LF
    assert alt.changes(MSG) == ("line endings CRLF -> LF",)
    assert alt.changes(b"no line end at all") == ()


def test_8bit_header_bytes_replaced_are_recognised_the_body_is_not_touched() -> None:
    alt = learn(MSG, Q)
    assert alt == Alteration(header_8bit=b"?")
    assert alt.apply(MSG) == Q  # the body's 8-bit byte stays
    assert alt.changes(MSG) == ("8-bit header bytes replaced by '?'",)
    cyrus = learn(MSG, Q.replace(b"?", b"X"))
    assert cyrus == Alteration(header_8bit=b"X")


def test_both_at_once() -> None:
    both = Q.replace(b"\r\n", b"\n")
    alt = learn(MSG, both)
    assert alt == Alteration(lf=True, header_8bit=b"?")
    assert alt.apply(MSG) == both
    assert len(alt.changes(MSG)) == 2
    assert learn_any([(MSG, LF), (MSG, Q)]) == alt


def test_imap4d_blank_line_added_and_mbox_from_line_dropped() -> None:
    """GNU Mailutils' imap4d: a message that is all header gets a blank line; a leading
    mbox envelope line is dropped."""
    headers_only = b"From: a@example.org\r\nSubject: headers only\r\n"
    alt = learn(headers_only, headers_only + b"\r\n")
    assert alt == Alteration(blank_line=True)
    assert alt.changes(headers_only) == ("a blank line added after the header",)
    assert alt.apply(MSG) == MSG  # a message with a body is left alone
    envelope = b"From someone@example.org Mon Jan  1 00:00:00 2001\r\n"
    alt = learn(envelope + MSG, MSG)
    assert alt == Alteration(drop_from_line=True)
    assert alt.changes(envelope + MSG) == ("a leading mbox 'From ' line dropped",)
    assert alt.apply(b"From: a header, not an envelope\r\n\r\nx") == (
        b"From: a header, not an envelope\r\n\r\nx"
    )
    # together with the others
    both = learn(envelope + MSG, Q.replace(b"\r\n", b"\n"))
    assert both == Alteration(lf=True, header_8bit=b"?", drop_from_line=True)
    assert learn(headers_only, headers_only + b"\r\n\r\n") is None  # two blank lines


def test_other_changes_are_not_recognised() -> None:
    assert learn(MSG, MSG) is None  # not altered at all
    assert learn(MSG, MSG.replace(b"line 2", b"line 3")) is None  # other bytes
    assert learn(MSG, LF[:-1]) is None  # LF and something more
    assert learn(MSG, MSG.replace(b"K\xf6ln", b"K?ln")) is None  # a body byte replaced
    assert learn(MSG, Q.replace(b"M?rz", b"MXrz")) is None  # two replacement bytes
    # Dovecot drops a CR before CRLF: not a recognised change (reported failed)
    assert learn(b"a: b\r\n\r\nx\r\r\n", b"a: b\r\n\r\nx\r\n") is None


def test_apply_never_changes_the_bytes_it_is_given() -> None:
    body = bytearray(MSG)
    Alteration(lf=True, header_8bit=b"?").apply(bytes(body))
    assert bytes(body) == MSG


def meta(uid: int, size: int) -> MessageMeta:
    return MessageMeta(uid, size, (), b"01-Jan-2020 10:00:00 +0000", None)


def test_altered_candidates_by_message_id_and_no_larger() -> None:
    src = [meta(1, 100), meta(2, 100), meta(3, 50), meta(4, 80)]
    s_ids = {1: b"<a>", 2: b"<b>", 3: None, 4: None}
    dst = [meta(10, 95), meta(11, 120), meta(12, 40), meta(13, 45), meta(14, 100)]
    d_ids = {10: b"<a>", 11: b"<b>", 12: None, 13: None, 14: b"<a>"}
    sources, dests, pairs = altered_candidates(src, s_ids, dst, d_ids)
    assert sources == {1, 3, 4}  # <b>: 20 bytes larger, no recognised change does that
    assert dests == {10, 14, 12, 13}
    # by Message-ID first, then the no-Message-ID guesses (largest smaller one)
    assert pairs == [(1, 10), (3, 13), (4, 13)]
