"""The verify works through a folder in chunks (real Dovecot): every message is checked
against its own destination message, flags put right, across chunk boundaries."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest

from tests import mailcheck
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage
from yippiemove.transfer import verify
from yippiemove.transfer.engine import Mover
from yippiemove.transfer.model import Endpoint, Options
from yippiemove.transfer.state import State


def _run(server: DovecotServer, state_path: Path) -> list:
    src = Endpoint("127.0.0.1", server.port, "src", "none", "srcpass", allow_insecure_auth=True)
    dst = Endpoint("127.0.0.1", server.port, "dst", "none", "dstpass", allow_insecure_auth=True)
    state = State(state_path)
    try:
        return asyncio.run(Mover(src, dst, state=state, options=Options()).run())
    finally:
        state.close()


def test_chunked_verify_checks_every_message_and_fixes_flags(
    dovecot: DovecotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "VERIFY_CHUNK", 7)  # 40 messages: 6 chunks
    dovecot.deliver_many(
        "src",
        "INBOX",
        [
            MaildirMessage(
                b"Subject: %d\r\nMessage-ID: <v%d@x>\r\n\r\nbody %d\r\n" % (i, i, i),
                ("\\Seen",) if i % 2 else ("\\Flagged", "$Work"),
                datetime(2022, 1, 1 + i % 28),
            )
            for i in range(40)
        ],
    )
    (res,) = _run(dovecot, tmp_path / "state.sqlite")
    assert (res.copied, res.verified, res.failed) == (40, 40, 0)
    want = mailcheck.in_utc(mailcheck.snapshot(dovecot.port, "src", "srcpass"))
    assert mailcheck.in_utc(mailcheck.snapshot(dovecot.port, "dst", "dstpass")) == want

    # Someone changes flags on the destination, in several chunks: the next run puts
    # them back (the verify compares each message with its own copy).
    c = mailcheck.connect(dovecot.port, "dst", "dstpass")
    c.select("INBOX")
    typ, _ = c.uid("STORE", "3,11,19,27,38", "FLAGS.SILENT", "(\\Answered)")
    assert typ == "OK"
    c.logout()
    (res,) = _run(dovecot, tmp_path / "state.sqlite")
    assert (res.copied, res.present, res.verified, res.flags_fixed) == (0, 40, 40, 5)
    assert mailcheck.in_utc(mailcheck.snapshot(dovecot.port, "dst", "dstpass")) == want
