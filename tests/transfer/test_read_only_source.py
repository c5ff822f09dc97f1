"""Real transfers whose source connections are read-only (issue 12): every store the
engine opens for the source refuses writes (imap/commands.py), and the transfer still
plans, copies and verifies -- every source-side call is one a read-only connection
allows (EXAMINE, never SELECT; BODY.PEEK).  Dovecot to Dovecot, and out of the Gmail
double (its own planning and passes: transfer/gmail.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests import mailcheck
from yippiemove.transfer import pairs
from yippiemove.transfer.engine import Mover
from yippiemove.transfer.model import Endpoint, Options
from yippiemove.transfer.state import State
from yippiemove.transfer.store import ImapStore

from .test_move import populate


def _ep(port: int, user: str, password: str) -> Endpoint:
    return Endpoint("127.0.0.1", port, user, "none", password, allow_insecure_auth=True)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ImapStore]]:
    """Every store the engine opens, with its role."""
    seen: list[tuple[str, ImapStore]] = []
    real = pairs.connect_store

    async def spy(ep: Endpoint, role: str, **kw: Any) -> ImapStore:
        store = await real(ep, role, **kw)
        seen.append((role, store))
        return store

    monkeypatch.setattr(pairs, "connect_store", spy)
    return seen


def _run(mover: Mover, tmp: Path) -> list[Any]:
    state = State(tmp / "state.sqlite")
    mover.state = state
    try:
        return asyncio.run(asyncio.wait_for(mover.run(), timeout=120))
    finally:
        state.close()


def test_dovecot_transfer_with_read_only_sources(dovecot, tmp_path, opened):
    populate(dovecot)
    before = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    opts = Options(connections=3, verify_content=True)
    mover = Mover(_ep(dovecot.port, "src", "srcpass"), _ep(dovecot.port, "dst", "dstpass"),
                  options=opts)  # fmt: skip
    results = _run(mover, tmp_path)
    assert results and not any(r.failures for r in results)
    roles = [r for r, _ in opened]
    assert roles.count("source") >= 3 and roles.count("destination") >= 3
    for role, store in opened:
        assert store.read_only == (role == "source"), role
    assert mailcheck.snapshot(dovecot.port, "src", "srcpass") == before
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == before
    # A second run (everything already there: match and verify only) too.
    opened.clear()
    mover = Mover(_ep(dovecot.port, "src", "srcpass"), _ep(dovecot.port, "dst", "dstpass"),
                  options=opts)  # fmt: skip
    results = _run(mover, tmp_path)
    assert not any(r.failures for r in results) and not any(r.copied for r in results)
    assert all(s.read_only for r, s in opened if r == "source")
    assert mailcheck.snapshot(dovecot.port, "src", "srcpass") == before


def test_gmail_source_transfer_with_read_only_sources(gmail, dovecot, tmp_path, opened):
    when = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    for n, labels in enumerate([{"\\Inbox"}, {"Travel", "\\Inbox"}, set(), {"Travel"}]):
        raw = f"Subject: m{n}\r\nMessage-ID: <g{n}@x>\r\n\r\nbody {n}\r\n".encode()
        gmail.add_message("src@gmail.test", raw, labels, (), when)
    before = gmail.messages("src@gmail.test")
    mover = Mover(_ep(gmail.port, "src@gmail.test", "srcpass"),
                  _ep(dovecot.port, "dst", "dstpass"), options=Options(connections=2))  # fmt: skip
    results = _run(mover, tmp_path)
    assert results and not any(r.failures for r in results)
    assert sum(r.copied for r in results) == 5  # once per label, the archived one once
    sources = [s for r, s in opened if r == "source"]
    assert sources and all(s.read_only for s in sources)
    assert gmail.messages("src@gmail.test") == before
