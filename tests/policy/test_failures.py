"""The table of failures in the customer's words (policy/failures.py): every kind, named
from the exception a run ended with and from raw texts alone (the issue's examples)."""

from __future__ import annotations

import pytest

from yippiemove.imap.errors import (
    AuthenticationError,
    CommandError,
    ConnectError,
    ConnectionLost,
    ConsentRevoked,
    HostUnreachable,
    TlsError,
)
from yippiemove.imap.protocol import ResponseCode, Tagged
from yippiemove.policy.failures import KINDS, MESSAGES, describe, kind_of, kind_of_text, side_of


def no(code: str | None, text: str) -> Tagged:
    return Tagged("A1", "NO", ResponseCode(code) if code else None, text.encode())


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (AuthenticationError("NO [AUTHENTICATIONFAILED] Authentication failed."), "auth"),
        (AuthenticationError("x", no("AUTHENTICATIONFAILED", "nope")), "auth"),
        (ConsentRevoked(), "consent_revoked"),
        (HostUnreachable("Connect call failed ('127.0.0.1', 25999)"), "unreachable"),
        (ConnectError("no greeting within 20 s"), "unreachable"),
        (TlsError("certificate verify failed: self-signed certificate"), "tls"),
        (
            CommandError("APPEND", no("OVERQUOTA", "Quota exceeded (mailbox for user is full)")),
            "quota",
        ),
        (CommandError("APPEND", no("TOOBIG", "Message too large")), "too_large"),
        (CommandError("APPEND", no("LIMIT", "Mailbox too big")), "too_large"),
        (CommandError("SELECT", no("THROTTLED", "Slow down")), "rate_limited"),
        (CommandError("SELECT", no("NONEXISTENT", "Mailbox doesn't exist: Old")), "folder_gone"),
        (CommandError("SELECT", no(None, "Mailbox doesn't exist: Old")), "folder_gone"),
        (ConnectionLost("connection lost: timed out"), "unreachable"),
        (ValueError("folders.--since"), "internal"),  # a bug: not the customer's words
        (MemoryError(), "internal"),
    ],
)
def test_kind_of_an_exception(exc: BaseException, kind: str) -> None:
    assert kind_of(exc) == kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("NO [AUTHENTICATIONFAILED] Authentication failed..", "auth"),
        ("destination: login failed: invalid credentials", "auth"),
        ("Connect call failed ('127.0.0.1', 25999)", "unreachable"),
        ("source: host 'imap.nowhere.example' not found; check the server name", "unreachable"),
        ("TLS handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED]", "tls"),
        ("APPEND failed: NO [OVERQUOTA] Quota exceeded", "quota"),
        ("APPEND failed: NO [TOOBIG] message too large", "too_large"),
        ("SELECT failed: NO [THROTTLED] try again later", "rate_limited"),
        ("SELECT failed: NO [NONEXISTENT] Mailbox doesn't exist", "folder_gone"),
        ("the provider refused to give an access token: sign in again", "consent_revoked"),
        ("3 messages could not be copied (see the report)", "messages_failed"),
        ("internal error (KeyError); the operator can see job.log", "internal"),
        ("the job process was killed (SIGKILL); gave up after 3 restarts", "internal"),
        ("something nobody planned for", "other"),
        ("", "other"),
    ],
)
def test_kind_of_a_raw_text(text: str, kind: str) -> None:
    assert kind_of_text(text) == kind


def test_every_kind_has_a_message_and_a_next_step() -> None:
    assert set(KINDS) >= {
        "auth",
        "unreachable",
        "tls",
        "quota",
        "too_large",
        "rate_limited",
        "folder_gone",
        "consent_revoked",
        "internal",
    }
    for kind in KINDS:
        for side in ("source", "dest", None):
            d = describe("raw words", kind, side)
            assert d is not None and d["kind"] == kind and d["side"] == side
            assert d["message"] and d["next_step"] and "{" not in d["message"]
            assert d["message"][0].isupper() and d["detail"] == "raw words"


def test_describe_names_the_side_and_keeps_the_raw_text_as_detail() -> None:
    raw = "NO [AUTHENTICATIONFAILED] Authentication failed."
    d = describe(raw, "auth", "dest")
    assert d == {
        "kind": "auth",
        "side": "dest",
        "message": "The destination mailbox refused the user name or password.",
        "next_step": MESSAGES["auth"].next_step,
        "detail": raw,
    }
    assert "AUTHENTICATIONFAILED" not in d["message"] + d["next_step"]
    # Known only by its text (an older job): named from it, side unknown.
    d = describe("Connect call failed ('127.0.0.1', 25999)")
    assert d is not None and d["kind"] == "unreachable" and d["side"] is None
    assert "one of the two mailboxes" in d["message"] and "25999" not in d["message"]
    assert describe(None) is None and describe("") is None
    assert describe("x", "no such kind", "elsewhere") == describe("x")


def test_side_of_reads_the_mark_of_the_connector() -> None:
    exc = AuthenticationError("nope")
    assert side_of(exc) is None
    exc.yippiemove_side = "dest"  # type: ignore[attr-defined]
    assert side_of(exc) == "dest"
