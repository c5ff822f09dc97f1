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
    changes = source_changes(dovecot, wait=10)
    assert changes and all(line.startswith("src: ") for line in changes), changes


# ---- servers that snapshot an account (tests/source_guard.py): Cyrus, the Gmail double


def _cyrus_write(cyrus, how: str) -> None:
    c = imaplib.IMAP4("127.0.0.1", cyrus.port)
    c.login("src", "srcpass")
    c.select("INBOX")
    if how == "append":
        c.append("INBOX", "()", None, b"Subject: new\r\n\r\nz\r\n")
    elif how == "store":
        c.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
    elif how == "create":
        c.create("INBOX.Made")
    else:
        c.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
        c.expunge()
    c.logout()


def _gmail_write(gmail, how: str) -> None:
    c = imaplib.IMAP4("127.0.0.1", gmail.port)
    c.login("src@gmail.test", "srcpass")
    c.select("INBOX")
    if how == "append":
        c.append("INBOX", "()", None, b"Subject: new\r\n\r\nz\r\n")
    elif how == "store":
        c.uid("STORE", "1", "+FLAGS", "(\\Seen)")
    elif how == "create":
        c.create("Made")
    else:
        c.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
        c.expunge()
    c.logout()


KINDS = ["append", "store", "create", "expunge"]


def test_a_transfer_from_cyrus_and_gmail_leaves_the_guards_quiet(cyrus, gmail) -> None:
    from tests.source_guard import SourceGuard

    cyrus.deliver_many("src", "INBOX", [b"Subject: a\r\n\r\nx\r\n"])
    cyrus.deliver_many("src", "INBOX.Archive", [b"Subject: b\r\n\r\ny\r\n"])
    gmail.add_message("src@gmail.test", b"Subject: c\r\n\r\nz\r\n", labels={"\\Inbox", "Work"})
    guards = [SourceGuard(cyrus, lambda: ["src"]), SourceGuard(gmail, lambda: ["src@gmail.test"])]
    cy = Endpoint("127.0.0.1", cyrus.port, "src", "none", "srcpass", allow_insecure_auth=True)
    gm = Endpoint(
        "127.0.0.1", gmail.port, "src@gmail.test", "none", "srcpass", allow_insecure_auth=True
    )
    asyncio.run(Mover(cy, _ep(gmail_dst := gmail, "dst@gmail.test", "dstpass")).run())
    asyncio.run(Mover(gm, _ep(cyrus, "dst", "dstpass")).run())
    assert [c for g in guards for c in g.changes()] == []
    assert gmail_dst.folders("dst@gmail.test") and cyrus.snapshot("dst")["INBOX"][1]


@pytest.mark.source_writes("it writes to the source to see the guard notice")
@pytest.mark.parametrize("how", KINDS)
def test_the_guard_sees_every_kind_of_change_on_cyrus(cyrus, how: str) -> None:
    from tests.source_guard import SourceGuard

    cyrus.deliver_many("src", "INBOX", [b"Subject: a\r\n\r\nx\r\n"])
    guard = SourceGuard(cyrus, lambda: ["src", "dst"])
    _cyrus_write(cyrus, how)
    changes = guard.changes()
    assert changes and all(line.startswith("src: ") for line in changes), changes


@pytest.mark.source_writes("it writes to the source to see the guard notice")
@pytest.mark.parametrize("how", KINDS)
def test_the_guard_sees_every_kind_of_change_on_the_gmail_double(gmail, how: str) -> None:
    from tests.source_guard import SourceGuard

    gmail.add_message("src@gmail.test", b"Subject: a\r\n\r\nx\r\n", labels={"\\Inbox"})
    guard = SourceGuard(gmail, lambda: ["src@gmail.test", "dst@gmail.test"])
    _gmail_write(gmail, how)
    changes = guard.changes()
    assert changes and all(line.startswith("src@gmail.test: ") for line in changes), changes


@pytest.mark.parametrize("server", ["cyrus", "gmail"])
def test_the_fixtures_fail_an_unmarked_test_that_writes_to_a_source(tmp_path, server: str) -> None:
    """The real thing: an unmarked test that writes to a Cyrus or Gmail-double source is
    reported by its fixture's teardown; the same test marked source_writes passes."""
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import *  # noqa: F403\n\n"
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'source_writes(reason): on purpose')\n"
    )
    write = "_cyrus_write(cyrus" if server == "cyrus" else "_gmail_write(gmail"
    load = (
        'cyrus.deliver_many("src", "INBOX", [b"Subject: a\\r\\n\\r\\nx\\r\\n"])'
        if server == "cyrus"
        else 'gmail.add_message("src@gmail.test", b"Subject: a\\r\\n\\r\\nx\\r\\n", labels={"\\\\Inbox"})'
    )
    body = (
        "import pytest\n"
        "from tests.test_source_guard import _cyrus_write, _gmail_write\n\n"
        f"def test_unmarked({server}):\n    {load}\n    {write}, 'store')\n\n"
        "@pytest.mark.source_writes('on purpose')\n"
        f"def test_marked({server}):\n    {load}\n    {write}, 'store')\n"
    )
    (tmp_path / "test_probe.py").write_text(body)
    # Its own --basetemp: without one, the inner pytest resets /tmp/pytest-of-root to 0700,
    # and a job process of another test running meanwhile (xdist), under a user id of its
    # own, can no longer reach its state file ("Permission denied").
    inner = ["-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner-tmp")]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *inner, "test_probe.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout
    assert "2 passed, 1 error in" in out, out
    assert "ERROR at teardown of test_unmarked" in out, out
    assert "a source mailbox was changed over IMAP" in out and "UID 1 flags" in out, out


@pytest.mark.source_writes("it writes to the source to see the guard notice")
@pytest.mark.parametrize("how", ["append", "create"])
def test_an_unloaded_cyrus_source_is_expected_new_and_empty(cyrus, how: str) -> None:
    """Without a loader call there is no snapshot of the start (it would cost a login
    and the account's creation): a new, empty account is the "before"."""
    from tests.source_guard import SourceGuard

    guard = SourceGuard(cyrus, lambda: ["src", "dst"], fresh=cyrus.fresh_folders)
    assert guard.changes() == []  # the account as Cyrus makes it
    c = imaplib.IMAP4("127.0.0.1", cyrus.port)
    c.login("src", "srcpass")
    if how == "append":
        c.append("INBOX.Spam", "()", None, b"Subject: new\r\n\r\nz\r\n")
    else:
        c.create("INBOX.Made")
    c.logout()
    assert guard.changes() in (
        ["src: INBOX.Spam: UID 1 added"],
        ["src: folder created: INBOX.Made"],
    )


def test_the_differences_in_words() -> None:
    from tests.source_guard import differences

    before = {"INBOX": (1, {1: (frozenset(), "a")}), "Old": (5, {}), "Empty": (7, {})}
    after = {
        "INBOX": (1, {1: (frozenset({"\\Seen"}), "a"), 2: (frozenset(), "b")}),
        "Empty": (8, {}),  # an empty folder's UIDVALIDITY (imap4d's INBOX not yet on disk)
        "New": (9, {}),
    }
    assert differences("src", before, after) == [
        "src: INBOX: UID 1 flags [] -> ['\\\\Seen']",
        "src: INBOX: UID 2 added",
        "src: folder created: New",
        "src: folder deleted or renamed: Old",
    ]
    assert differences("src", before, before) == []
    assert differences("src", 1, 2) == ["src: the account's snapshot changed"]


def test_the_guard_sees_a_change_on_the_quirk_server() -> None:
    """Any server with snapshot(user) plugs in."""
    from tests.doubles.quirky import QuirkyServer
    from tests.source_guard import SourceGuard

    with QuirkyServer(users={"src": "pw", "dst": "pw"}) as srv:
        srv.add_message("src", "INBOX", b"Subject: a\r\n\r\nx\r\n")
        guard = SourceGuard(srv, lambda: ["src", "dst"])
        assert guard.changes() == []
        c = imaplib.IMAP4("127.0.0.1", srv.port)
        c.login("src", "pw")
        c.select("INBOX")
        c.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
        c.logout()
        assert guard.changes() == ["src: INBOX: UID 1 flags [] -> ['\\\\Flagged']"]
