"""OAuth2 SASL (OAUTHBEARER, XOAUTH2), sans I/O: the client messages, error challenges,
the conversation's bounds, and the parser's bound on a continuation line."""

from __future__ import annotations

import base64
import json

import pytest

from yippiemove.imap.protocol import MAX_CONTINUATION, Continuation, ProtocolError, ResponseParser
from yippiemove.imap.sasl import (
    OAuth2Challenge,
    OAuth2Exchange,
    SaslError,
    choose_mechanism,
    oauthbearer_message,
    parse_challenge,
    xoauth2_message,
)

TOKEN = "ya29.MARKER-token_value~x+y/z=="


def b64json(doc: object) -> bytes:
    return base64.b64encode(json.dumps(doc).encode())


def test_oauthbearer_message_is_rfc7628():
    # RFC 7628 3.1 / 4.1: GS2 header, then key=value pairs each ended by ^A, then ^A.
    msg = oauthbearer_message("user@example.com", TOKEN, "imap.example.com", 993)
    assert msg == (
        b"n,a=user@example.com,\x01host=imap.example.com\x01port=993\x01"
        b"auth=Bearer " + TOKEN.encode() + b"\x01\x01"
    )
    # RFC 5801 saslname: "," and "=" escaped in the authzid.
    assert oauthbearer_message("a,b=c", TOKEN, "h", None).startswith(
        b"n,a=a=2Cb=3Dc,\x01host=h\x01auth="
    )


def test_xoauth2_message_is_what_google_and_microsoft_document():
    assert xoauth2_message("someuser@example.com", TOKEN) == (
        b"user=someuser@example.com\x01auth=Bearer " + TOKEN.encode() + b"\x01\x01"
    )


@pytest.mark.parametrize("token", ["has space", "has\x01ctl", "", "t\r\nA1 LOGOUT"])
def test_a_token_that_is_no_bearer_token_is_refused_without_being_named(token):
    with pytest.raises(ValueError) as e:
        xoauth2_message("u", token)
    assert token not in str(e.value) or not token
    with pytest.raises(ValueError):
        oauthbearer_message("u", token, "h", 1)
    with pytest.raises(ValueError):
        xoauth2_message("u\x01auth=Bearer x", TOKEN)


def test_mechanism_is_chosen_by_capability():
    assert choose_mechanism({"AUTH=XOAUTH2", "AUTH=OAUTHBEARER"}) == "OAUTHBEARER"
    assert choose_mechanism({"AUTH=XOAUTH2", "AUTH=PLAIN"}) == "XOAUTH2"
    assert choose_mechanism({"AUTH=PLAIN"}) is None


def test_error_challenges_are_read_and_anything_else_gives_empty_fields():
    google = b64json({"status": "400", "schemes": "Bearer", "scope": "https://mail.google.com/"})
    assert parse_challenge(google) == OAuth2Challenge("400", "https://mail.google.com/", "Bearer")
    assert parse_challenge(b64json({"status": 401})).status == "401"
    assert parse_challenge(b64json({"status": "invalid_token"})).status == "invalid_token"
    empty = OAuth2Challenge()
    for text in (
        b"",
        b"not base64 !!",
        base64.b64encode(b"not json"),
        b64json(["a", "list"]),
        base64.b64encode(b"[" * 50_000),  # nesting beyond the JSON parser's recursion
        b64json({"status": None}),
    ):
        assert parse_challenge(text) == empty
    # A status we would repeat in our messages is short and plain, or dropped.
    assert parse_challenge(b64json({"status": "x" * 41})).status is None
    assert parse_challenge(b64json({"status": "bad\r\nA1 OK"})).status is None


def test_exchange_with_sasl_ir_answers_one_error_challenge_then_gives_up():
    ex = OAuth2Exchange("OAUTHBEARER", "u@example.com", TOKEN, host="h", port=143)
    assert base64.b64decode(ex.initial or b"") == oauthbearer_message(
        "u@example.com", TOKEN, "h", 143
    )
    # RFC 7628 3.2.3: the dummy ^A after an error challenge.
    assert ex.respond(b64json({"status": "invalid_token"})) == b"AQ=="
    assert ex.challenge is not None and ex.challenge.status == "invalid_token"
    with pytest.raises(SaslError, match="2 SASL challenges") as e:
        ex.respond(b64json({"status": "again"}))
    assert TOKEN not in str(e.value) and TOKEN not in repr(ex)


def test_exchange_without_sasl_ir_sends_its_message_after_the_empty_challenge():
    ex = OAuth2Exchange("XOAUTH2", "u", TOKEN, sasl_ir=False)
    assert ex.initial is None
    assert base64.b64decode(ex.respond(b"")) == xoauth2_message("u", TOKEN)
    assert ex.challenge is None
    assert ex.respond(b64json({"status": "401"})) == b""  # XOAUTH2's dummy: an empty line
    assert ex.challenge == OAuth2Challenge("401")
    with pytest.raises(SaslError):
        ex.respond(b"")
    with pytest.raises(ValueError, match="not an OAuth2 mechanism"):
        OAuth2Exchange("PLAIN", "u", TOKEN)


def test_a_continuation_that_never_ends_is_bounded():
    # Failed on the old code: a "+" line was buffered up to MAX_LINE (64 MiB).
    p = ResponseParser(bulk=True)
    p.feed(b"+ ")
    with pytest.raises(ProtocolError, match="continuation request longer"):
        for _ in range(200):
            p.feed(b"A" * 4096)
    assert 200 * 4096 > MAX_CONTINUATION
    p = ResponseParser()
    with pytest.raises(ProtocolError, match="continuation request longer"):
        p.feed(b"+ " + b"A" * (MAX_CONTINUATION + 10) + b"\r\n")


def test_ordinary_continuations_and_long_untagged_lines_still_parse():
    p = ResponseParser(bulk=True)
    assert p.feed(b"+ Ready for literal data\r\n") == [Continuation(b"Ready for literal data")]
    challenge = b64json({"status": "invalid_token", "scope": "x" * 1000})
    assert p.feed(b"+ " + challenge + b"\r\n") == [Continuation(challenge)]
    # Only "+" lines are capped so: a long SEARCH answer is not.
    long = b"* SEARCH " + b" ".join(b"%d" % i for i in range(1, 30_000)) + b"\r\n"
    assert len(long) > MAX_CONTINUATION
    (r,) = p.feed(long)
    assert r.kind == "SEARCH"
