"""Other writers are not our enemy (issue 12): mail that another client puts into a
destination folder while the mover copies into it is neither claimed, changed nor
doubled, and nothing of the source is lost or doubled either."""

from __future__ import annotations

import asyncio
import imaplib
from collections import Counter
from pathlib import Path

import pytest

from tests import mailcheck
from tests.transfer.test_move import FLAG_SETS, make_message
from yippiemove.testing.dovecot import MaildirMessage
from yippiemove.transfer import copy as copy_mod
from yippiemove.transfer.engine import Mover
from yippiemove.transfer.model import Endpoint, Options
from yippiemove.transfer.state import State


def _ep(server, user: str, password: str) -> Endpoint:
    return Endpoint("127.0.0.1", server.port, user, "none", password, allow_insecure_auth=True)


def _append_foreign(port: int) -> list[bytes]:
    """Another client (new mail after the MX moved) appends into the destination INBOX."""
    new = make_message(9001, size=3000)
    # Same size and Message-ID as source message 1, one other byte in its body: not a
    # copy of it (the duplicate check compares SHA-256).
    lookalike = bytearray(make_message(1, size=4000))
    lookalike[-5] = ord("Z") if lookalike[-5] != ord("Z") else ord("Y")
    lookalike = bytes(lookalike)
    c = imaplib.IMAP4("127.0.0.1", port)
    c.login("dst", "dstpass")
    for body, flags in ((new, "(\\Flagged)"), (lookalike, "()")):
        typ, data = c.append("INBOX", flags, None, body)
        assert typ == "OK", data
    c.logout()
    return [new, lookalike]


def test_mail_arriving_in_the_destination_during_the_copy(
    dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src_msgs = [
        MaildirMessage(make_message(i, size=(i % 7) * 4000), FLAG_SETS[i % 6])
        for i in range(1, 1201)
    ]
    dovecot.deliver_many("src", "INBOX", src_msgs)
    foreign: list[bytes] = []
    original = copy_mod.Copier.flush_group

    async def flush_then_someone_writes(self: copy_mod.Copier) -> None:
        await original(self)
        if not foreign:  # after our first APPEND group has gone out
            foreign.extend(_append_foreign(dovecot.port))

    monkeypatch.setattr(copy_mod.Copier, "flush_group", flush_then_someone_writes)
    opts = Options(connections=1, append_batch_messages=64)
    state = tmp_path / "state.sqlite"
    mover = Mover(
        _ep(dovecot, "src", "srcpass"),
        _ep(dovecot, "dst", "dstpass"),
        state=State(state),
        options=opts,
    )
    results = asyncio.run(mover.run())
    assert len(foreign) == 2, "the other writer never ran during the copy"
    assert sum(r.failed for r in results) == 0
    assert sum(r.copied for r in results) == 1200
    notes = [n for r in results for n in r.notes]
    assert any(n.startswith("2 other messages appeared in the destination folder") for n in notes)

    def check() -> None:
        src = mailcheck.snapshot(dovecot.port, "src", "srcpass")
        dst = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
        extra = dst["INBOX"] - src["INBOX"]
        # Every source message exactly once; the other writer's two, as it wrote them.
        assert dst["INBOX"] - extra == src["INBOX"]
        assert sum(extra.values()) == 2
        assert sorted(m.flags for m in extra) == [(), ("\\Flagged",)]

    check()
    monkeypatch.setattr(copy_mod.Copier, "flush_group", original)
    again = Mover(
        _ep(dovecot, "src", "srcpass"),
        _ep(dovecot, "dst", "dstpass"),
        state=State(state),
        options=opts,
    )
    rerun = asyncio.run(again.run())
    assert sum(r.copied for r in rerun) == 0 and sum(r.flags_fixed for r in rerun) == 0
    check()
    assert Counter(o for r in rerun for _, _, o in r.messages) == {"present": 1200}
    assert not any("other message" in n for r in rerun for n in r.notes)  # none new since
