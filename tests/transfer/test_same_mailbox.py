"""The same mailbox under another name is refused before anything is written (issue 12).

Step 1 (transfer/identity.py ``same_address``): the same resolved address, port and
user -- ``localhost`` against ``127.0.0.1`` -- is refused by the CLI at once.  Step 2
(``same_mailbox``, after logging in, before the destination is written): another port
of the same Dovecot, or a TCP forwarder in front of it, is recognised by INBOX's
X-GUID; Cyrus by RFC 8474 MAILBOXID; the Gmail double by identical folders,
UIDVALIDITYs and counts plus All Mail's newest X-GM-MSGID.  Look-alikes that are two
accounts (Dovecot's same-second UIDVALIDITYs, the Gmail double's counted ones) are not
refused.  Every refusal leaves the source as it was (tests/mailcheck.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import mailcheck

from .test_move import populate

MSG = b"From: a@example.org\r\nSubject: hi\r\nMessage-ID: <same@x>\r\n\r\nhello\r\n"


@contextmanager
def forwarder(port: int) -> Iterator[int]:
    """A TCP forwarder on 127.0.0.1 to ``127.0.0.1:port``; yields its own port."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        box["port"] = server.sockets[0].getsockname()[1]
        box["stop"] = stop = asyncio.Event()
        ready.set()
        async with server:
            await stop.wait()

    t = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield int(box["port"])  # type: ignore[call-overload]
    finally:
        loop.call_soon_threadsafe(box["stop"].set)  # type: ignore[attr-defined]
        t.join(10)


def move(tmp: Path, src: str, dst: str, *extra: str, ca: Path | None = None, pw: str = "srcpass"):
    (tmp / "pw").write_text(pw + "\n")
    args = [sys.executable, "-m", "yippiemove.cli", "move", "--source", src, "--dest", dst]
    args += ["--source-password-file", str(tmp / "pw"), "--dest-password-file", str(tmp / "pw")]
    args += ["--state", str(tmp / "state.sqlite"), *extra]
    if ca is not None:
        args += ["--ca-file", str(ca)]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def refused(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(
        "yippiemove: error: the source and the destination are the same mailbox ("
    ), lines[0]
    return lines[0]


def test_localhost_and_127_0_0_1_refused_at_once(dovecot, tmp_path):
    populate(dovecot)
    before = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    r = move(
        tmp_path,
        f"imap://src@127.0.0.1:{dovecot.port}",
        f"imap://SRC@localhost:{dovecot.port}",
        ca=dovecot.ca_file,
    )
    line = refused(r)
    assert "this machine" in line and f"port {dovecot.port}" in line
    assert mailcheck.snapshot(dovecot.port, "src", "srcpass") == before


def test_another_port_of_the_same_dovecot_refused(dovecot, tmp_path):
    populate(dovecot)
    before = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    r = move(
        tmp_path,
        f"imap://src@127.0.0.1:{dovecot.port}",
        f"imaps://src@127.0.0.1:{dovecot.tls_port}",
        ca=dovecot.ca_file,
    )
    assert "X-GUID" in refused(r)
    assert mailcheck.snapshot(dovecot.port, "src", "srcpass") == before


def test_through_a_forwarder_refused_even_a_dry_run(dovecot, tmp_path):
    populate(dovecot)
    before = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    with forwarder(dovecot.port) as fwd:
        for extra in ((), ("--dry-run",)):
            r = move(
                tmp_path,
                f"imap://src@127.0.0.1:{dovecot.port}",
                f"imap://src@127.0.0.1:{fwd}",
                *extra,
                ca=dovecot.ca_file,
            )
            assert "X-GUID" in refused(r)
    assert mailcheck.snapshot(dovecot.port, "src", "srcpass") == before


def test_cyrus_through_a_forwarder_refused_by_mailboxid(cyrus, tmp_path):
    cyrus.deliver("src", "INBOX", MSG)
    before = mailcheck.snapshot(cyrus.port, "src", "srcpass")
    with forwarder(cyrus.port) as fwd:
        r = move(
            tmp_path,
            f"imap://src@127.0.0.1:{cyrus.port}",
            f"imap://src@127.0.0.1:{fwd}",
            ca=cyrus.ca_file,
        )
    assert "MAILBOXID" in refused(r)
    assert mailcheck.snapshot(cyrus.port, "src", "srcpass") == before


def _gmail_load(gmail, user: str) -> None:
    when = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    for n, labels in enumerate([{"\\Inbox"}, {"Travel", "\\Inbox"}, set(), {"Travel"}]):
        raw = f"Subject: m{n}\r\nMessage-ID: <g{n}@x>\r\n\r\nbody {n}\r\n".encode()
        gmail.add_message(user, raw, labels, (), when)


def test_gmail_through_a_forwarder_refused(gmail, tmp_path):
    _gmail_load(gmail, "src@gmail.test")
    before = gmail.messages("src@gmail.test")
    with forwarder(gmail.port) as fwd:
        r = move(
            tmp_path,
            f"imap://src%40gmail.test@127.0.0.1:{gmail.port}",
            f"imap://src%40gmail.test@127.0.0.1:{fwd}",
            "--allow-insecure-auth",
        )
    assert "X-GM-MSGID" in refused(r)
    assert gmail.messages("src@gmail.test") == before


def test_gmail_look_alike_accounts_are_not_the_same(gmail, tmp_path):
    """Two Gmail double accounts filled alike: the same labels, UIDVALIDITYs (the double
    counts them from 1), UIDNEXTs and counts -- but other X-GM-MSGIDs: not refused."""
    _gmail_load(gmail, "src@gmail.test")
    _gmail_load(gmail, "dst@gmail.test")
    r = _run_pw(tmp_path, gmail.port)
    assert r.returncode == 0, r.stdout + r.stderr


def _run_pw(tmp: Path, port: int) -> subprocess.CompletedProcess[str]:
    (tmp / "s.pw").write_text("srcpass\n")
    (tmp / "d.pw").write_text("dstpass\n")
    args = [sys.executable, "-m", "yippiemove.cli", "move",
            "--source", f"imap://src%40gmail.test@127.0.0.1:{port}",
            "--dest", f"imap://dst%40gmail.test@127.0.0.1:{port}",
            "--source-password-file", str(tmp / "s.pw"), "--dest-password-file",
            str(tmp / "d.pw"), "--state", str(tmp / "state.sqlite"),
            "--allow-insecure-auth"]  # fmt: skip
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_dovecot_empty_look_alikes_are_not_the_same(dovecot_factory, tmp_path, monkeypatch):
    """Two new, empty accounts opened in the same second share their UIDVALIDITYs on
    Dovecot: X-GUID tells them apart, and without it (hidden here) empty look-alikes
    are not evidence; the move runs."""
    from yippiemove.imap.client import ImapClient
    from yippiemove.transfer.identity import same_mailbox
    from yippiemove.transfer.model import Endpoint
    from yippiemove.transfer.store import connect_store

    server = dovecot_factory(users={"src": "srcpass", "dst": "dstpass"})

    def ep(user: str) -> Endpoint:
        return Endpoint("127.0.0.1", server.port, user, "none", user + "pass",
                        allow_insecure_auth=True)  # fmt: skip

    async def main() -> tuple[str | None, str | None, bool]:
        opts = {"connect_timeout": 10, "idle_timeout": 30}
        a = await connect_store(ep("src"), "source", read_only=True, **opts)
        b = await connect_store(ep("dst"), "destination", **opts)
        try:
            st = await asyncio.gather(
                *(s.status_many([b"INBOX"], "(UIDVALIDITY UIDNEXT MESSAGES)") for s in (a, b))
            )
            alike = st[0] == st[1]
            by_guid = await same_mailbox(a, b)
            with monkeypatch.context() as m:
                m.setattr(ImapClient, "mailbox_id", _no_id)
                return by_guid, await same_mailbox(a, b), alike
        finally:
            await a.logout()
            await b.logout()

    by_guid, by_fingerprint, alike = asyncio.run(main())
    assert by_guid is None and by_fingerprint is None
    if alike:  # the hazard did show (same second): still not "the same"
        print("empty look-alikes: same INBOX UIDVALIDITY/UIDNEXT/MESSAGES")
    r = mailcheck.run_move(server.port, server.port, tmp_path, ca_file=server.ca_file)
    assert r.returncode == 0, r.stdout + r.stderr


async def _no_id(self: object, raw: bytes = b"INBOX") -> None:
    return None


@pytest.mark.parametrize("kind", ["x-guid", "fingerprint"])
def test_same_mailbox_unit_on_dovecot(dovecot, kind, monkeypatch):
    """In process: the same account twice is the same mailbox (by X-GUID, and by the
    folder fingerprint when X-GUID is hidden); two accounts are not."""
    from yippiemove.imap.client import ImapClient
    from yippiemove.transfer.identity import same_mailbox
    from yippiemove.transfer.model import Endpoint
    from yippiemove.transfer.store import connect_store

    populate(dovecot)
    dovecot.deliver("dst", "INBOX", MSG)
    if kind == "fingerprint":
        monkeypatch.setattr(ImapClient, "mailbox_id", _no_id)

    def ep(user: str) -> Endpoint:
        return Endpoint("127.0.0.1", dovecot.port, user, "none", user + "pass",
                        allow_insecure_auth=True)  # fmt: skip

    async def main() -> tuple[str | None, str | None]:
        opts = {"connect_timeout": 10, "idle_timeout": 30}
        a = await connect_store(ep("src"), "source", read_only=True, **opts)
        b = await connect_store(ep("src"), "destination", **opts)
        c = await connect_store(ep("dst"), "destination", **opts)
        try:
            return await same_mailbox(a, b), await same_mailbox(a, c)
        finally:
            for s in (a, b, c):
                await s.logout()

    same, other = asyncio.run(main())
    assert same is not None and ("X-GUID" in same) == (kind == "x-guid")
    assert other is None
