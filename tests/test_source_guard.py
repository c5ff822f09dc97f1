"""The source-untouched guard (tests/conftest.py) sees a change to a source account."""

from __future__ import annotations

import asyncio
import imaplib

import pytest

from tests.conftest import source_changes
from yippiemove.testing.dovecot import MaildirMessage
from yippiemove.transfer.engine import Mover
from yippiemove.transfer.model import Endpoint


def _ep(server, user: str, password: str) -> Endpoint:
    return Endpoint("127.0.0.1", server.port, user, "none", password, allow_insecure_auth=True)


def test_a_transfer_leaves_no_change_on_the_source(dovecot) -> None:
    dovecot.deliver_many("src", "INBOX", [MaildirMessage(b"Subject: a\r\n\r\nx\r\n", ())])
    dovecot.deliver_many("src", "Archive", [MaildirMessage(b"Subject: b\r\n\r\ny\r\n", ())])
    asyncio.run(Mover(_ep(dovecot, "src", "srcpass"), _ep(dovecot, "dst", "dstpass")).run())
    assert source_changes(dovecot) == []
    assert any("save" in line for line in dovecot.log_path.read_text().splitlines())


@pytest.mark.source_writes("it writes to the source to see the guard notice")
@pytest.mark.parametrize("how", ["append", "store", "create", "expunge"])
def test_the_guard_sees_every_kind_of_change(dovecot, how: str) -> None:
    dovecot.deliver_many("src", "INBOX", [MaildirMessage(b"Subject: a\r\n\r\nx\r\n", ())])
    c = imaplib.IMAP4("127.0.0.1", dovecot.port)
    c.login("src", "srcpass")
    c.select("INBOX")
    if how == "append":
        c.append("INBOX", "()", None, b"Subject: new\r\n\r\nz\r\n")
    elif how == "store":
        c.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
    elif how == "create":
        c.create("Made")
    else:
        c.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
        c.expunge()
    c.logout()
    changes = source_changes(dovecot)
    assert changes and all(line.startswith("src: ") for line in changes), changes
