"""Tests of the throwaway Cyrus IMAP launcher, through a real server and stdlib imaplib."""

from __future__ import annotations

import imaplib
import os
import re
import socket
import ssl
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.doubles.cyrus import (
    DEFAULT_SPECIAL_FOLDERS,
    CyrusError,
    CyrusMessage,
    CyrusServer,
)
from yippiemove.testing.dovecot import _group_members

FETCH_RE = re.compile(
    rb"UID (\d+)|FLAGS \(([^)]*)\)|INTERNALDATE \"([^\"]+)\"|RFC822\.SIZE (\d+)", re.IGNORECASE
)
LIST_RE = re.compile(rb'\(([^)]*)\) "(.)" (.*)')


def login(server: CyrusServer, user: str = "src", password: str = "srcpass") -> imaplib.IMAP4:
    imap = imaplib.IMAP4(server.host, server.port)
    imap.login(user, password)
    return imap


def quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def listing(imap: imaplib.IMAP4, command: str = "LIST") -> dict[str, tuple[set[str], str]]:
    """Mailbox name -> (attributes, lower-cased; separator)."""
    typ, data = imap.list('""', "*") if command == "LIST" else imap.lsub('""', "*")
    assert typ == "OK", data
    out = {}
    for line in data:
        m = LIST_RE.match(line)
        assert m, line
        name = m.group(3).decode()
        if name.startswith('"'):
            name = name[1:-1]
        out[name] = ({a.lower() for a in m.group(1).decode().split()}, m.group(2).decode())
    return out


def fetch_all(imap: imaplib.IMAP4, folder: str) -> list[dict]:
    typ, data = imap.select(quote(folder), readonly=True)
    assert typ == "OK", (folder, data)
    typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK", data
    out = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        got: dict = {"body": item[1]}
        for m in FETCH_RE.finditer(item[0]):
            if m.group(1):
                got["uid"] = int(m.group(1))
            elif m.group(2) is not None:
                got["flags"] = set(m.group(2).decode().split()) - {"\\Recent"}
            elif m.group(3):
                got["date"] = datetime.strptime(m.group(3).decode().strip(), "%d-%b-%Y %H:%M:%S %z")
            elif m.group(4):
                got["size"] = int(m.group(4))
        out.append(got)
    return sorted(out, key=lambda g: g["uid"])


def msg(i: int, extra: bytes = b"") -> bytes:
    return (
        (
            f"From: Sender {i} <s{i}@example.org>\r\nTo: r@example.net\r\n"
            f"Subject: message {i}\r\nMessage-ID: <m{i}@example.org>\r\n\r\n"
        ).encode()
        + b"Hello\r\n"
        + extra
    )


# --------------------------------------------------------------------------- basics


def test_namespace_special_use_and_subscriptions(cyrus):
    imap = login(cyrus)
    typ, data = imap.namespace()
    assert typ == "OK"
    # the personal namespace is Cyrus's classic one: INBOX. with "." separators
    assert data[0].startswith(b'(("INBOX." "."))'), data
    listed = listing(imap)
    specials = {f"INBOX.{name}": use.lower() for use, name in DEFAULT_SPECIAL_FOLDERS.items()}
    assert set(listed) == {"INBOX", *specials}
    for name, use in specials.items():
        attrs, sep = listed[name]
        assert sep == "."
        assert use in attrs, (name, attrs)
    # names differ from Dovecot's Sent/Trash/Junk, on purpose
    assert "INBOX.Sent Items" in specials and "INBOX.Deleted Items" in specials
    assert cyrus.special_folder("\\SENT") == "INBOX.Sent Items"
    # the server made them for the user, subscribed; RETURN (SPECIAL-USE) agrees
    assert set(listing(imap, "LSUB")) == {"INBOX", *specials}
    typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
    assert typ == "OK"
    typ, data = imap._untagged_response(typ, data, "LIST")
    assert any(b"\\junk" in line.lower() and b"INBOX.Spam" in line for line in data), data
    imap.logout()
    # the other user has their own
    other = login(cyrus, "dst", "dstpass")
    assert set(listing(other)) == {"INBOX", *specials}
    other.logout()


def test_wrong_password_and_unknown_user_fail(cyrus):
    assert cyrus.check_login("src", "srcpass")
    assert not cyrus.check_login("src", "wrong")
    assert not cyrus.check_login("nobody", "srcpass")
    imap = imaplib.IMAP4(cyrus.host, cyrus.port)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login("dst", "srcpass")
    imap.logout()


def test_special_folders_are_configurable(cyrus_factory):
    server = cyrus_factory(users={"u": "pw"}, special_folders={"\\Sent": "Gesendet"})
    imap = login(server, "u", "pw")
    listed = listing(imap)
    imap.logout()
    assert set(listed) == {"INBOX", "INBOX.Gesendet"}
    assert "\\sent" in listed["INBOX.Gesendet"][0]
    with pytest.raises(ValueError):
        CyrusServer(server.base_dir / "x", special_folders={"\\Sent": "a.b"})
    with pytest.raises(ValueError):
        CyrusServer(server.base_dir / "x", special_folders={"\\Bogus": "B"})
    with pytest.raises(ValueError):
        CyrusServer(server.base_dir / "x", users={"Bad.Name": "pw"})


def test_append_fetch_round_trip_with_flags_keywords_and_dates(cyrus):
    india = timezone(timedelta(hours=5, minutes=30))
    pacific = timezone(timedelta(hours=-8))
    items = [
        CyrusMessage(msg(1), ("\\Seen", "\\Answered"), datetime(2019, 3, 10, 23, 59, 59, tzinfo=india)),
        CyrusMessage(msg(2), ("\\Flagged", "$Forwarded", "$label1"), datetime(2001, 1, 2, 3, 4, 5, tzinfo=pacific)),
        CyrusMessage(msg(3), ("\\Draft", "\\Deleted", "NonJunk"), datetime(2024, 2, 29, 12, 0, 0, tzinfo=UTC)),
        CyrusMessage(msg(4, b"8-bit body: \xc3\xa4\xff and a bare CR \r here\r\n")),
        CyrusMessage(msg(1), ("\\Seen", "\\Answered"), datetime(2019, 3, 10, 23, 59, 59, tzinfo=india)),
    ]  # fmt: skip
    uids = cyrus.deliver_many("src", "INBOX", items)
    assert uids == [1, 2, 3, 4, 5]
    assert cyrus.deliver("src", "INBOX", msg(5), ["\\Seen"], datetime(2010, 5, 5)) == 6
    imap = login(cyrus)
    got = fetch_all(imap, "INBOX")
    imap.logout()
    assert [g["uid"] for g in got] == [1, 2, 3, 4, 5, 6]
    for g, item in zip(got, items, strict=False):
        assert g["body"] == item.raw  # byte for byte, twins included
        assert g["size"] == len(item.raw)
        assert g["flags"] == set(item.flags)
        if item.internaldate is not None:
            assert g["date"] == item.internaldate  # the same instant
    # a naive datetime is local time
    assert got[5]["date"] == datetime(2010, 5, 5).astimezone()
    assert got[5]["flags"] == {"\\Seen"}


def test_deliver_creates_nested_and_non_ascii_folders(cyrus):
    assert cyrus.deliver("src", "INBOX.Archive.2019.Q1", msg(1)) == 1
    assert cyrus.deliver_many("src", "INBOX.Entwürfe", [msg(2), msg(3)]) == [1, 2]
    assert cyrus.deliver_many("src", "INBOX.😀 Emoji", []) == []
    cyrus.create_folder("src", "INBOX.R&D")
    cyrus.create_folder("src", "INBOX.R&D")  # exists already: fine
    imap = login(cyrus)
    listed = listing(imap)
    subscribed = listing(imap, "LSUB")
    assert fetch_all(imap, "INBOX.Entw&APw-rfe")[1]["body"] == msg(3)
    imap.logout()
    for name in ("INBOX.Archive.2019.Q1", "INBOX.Entw&APw-rfe", "INBOX.R&-D"):
        assert name in listed and name in subscribed
    # the empty list created nothing; Cyrus makes the parents real folders
    assert "INBOX.&2D3eAA- Emoji" not in listed
    assert "\\noselect" not in listed["INBOX.Archive"][0]


def test_deliver_many_batches_are_multiappends(cyrus, monkeypatch):
    from tests.doubles import cyrus as cyrus_module

    monkeypatch.setattr(cyrus_module, "_BATCH_BYTES", 500)
    items = [msg(i, b"x" * 100) for i in range(20)]
    assert cyrus.deliver_many("src", "INBOX.Bulk", items) == list(range(1, 21))
    imap = login(cyrus)
    assert [g["body"] for g in fetch_all(imap, "INBOX.Bulk")] == items
    imap.logout()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (msg(1).replace(b"\r\n", b"\n"), "Message contains bare newlines"),
        (msg(1, b"a NUL \x00 byte\r\n"), "Message contains NUL characters"),
        (b"no header at all\r\n", "Message contains invalid header"),
        (b"", "Zero-length message literal"),
    ],
)
def test_cyrus_refuses_what_dovecot_would_keep(cyrus, raw, words):
    with pytest.raises(CyrusError, match=words):
        cyrus.deliver("src", "INBOX", raw)
    imap = login(cyrus)
    assert fetch_all(imap, "INBOX") == []
    imap.logout()


def test_eight_bit_headers_keep_munge_reject(cyrus_factory):
    raw = b"From: a@example.org\r\nSubject: M\xc3\xa4rz \xff\r\n\r\nbody\r\n"
    keep = cyrus_factory(users={"u": "pw"})
    munge = cyrus_factory(users={"u": "pw"}, eight_bit_headers="munge")
    reject = cyrus_factory(users={"u": "pw"}, eight_bit_headers="reject")
    keep.deliver("u", "INBOX", raw)
    munge.deliver("u", "INBOX", raw)
    with pytest.raises(CyrusError, match="non-ASCII characters in headers"):
        reject.deliver("u", "INBOX", raw)
    bodies = {}
    for name, server in (("keep", keep), ("munge", munge)):
        imap = login(server, "u", "pw")
        bodies[name] = [g["body"] for g in fetch_all(imap, "INBOX")]
        imap.logout()
    assert bodies["keep"] == [raw]
    # Cyrus's stock default: every 8-bit header byte becomes "X", silently, same size
    assert bodies["munge"] == [b"From: a@example.org\r\nSubject: MXXrz X\r\n\r\nbody\r\n"]
    assert len(bodies["munge"][0]) == len(raw)


def test_keywords_are_limited_to_100_per_folder(cyrus):
    items = [CyrusMessage(msg(i), (f"kw{i}",)) for i in range(100)]
    cyrus.deliver_many("src", "INBOX.Keywords", items)
    with pytest.raises(CyrusError, match="Too many user flags"):
        cyrus.deliver("src", "INBOX.Keywords", msg(100), ["kw100"])
    cyrus.deliver("src", "INBOX.Keywords", msg(101), ["kw5"])  # a known one is fine


@pytest.mark.parametrize("name", ["INBOX.Wow!", "INBOX.per%cent", "INBOX.a{b", "INBOX.tab\there"])
def test_folder_names_cyrus_refuses(cyrus, name):
    with pytest.raises(CyrusError, match="Invalid mailbox name"):
        cyrus.create_folder("src", name)


def test_folders_live_under_inbox(cyrus):
    with pytest.raises(CyrusError, match="Permission denied"):
        cyrus.create_folder("src", "Toplevel")
    cyrus.create_folder("src", "INBOX.Sub.Deeper")
    imap = login(cyrus)
    assert {"INBOX.Sub", "INBOX.Sub.Deeper"} <= set(listing(imap))
    imap.logout()


# --------------------------------------------------------------------------- TLS, users


def test_starttls_and_imaps_with_the_test_ca(cyrus):
    ctx = ssl.create_default_context(cafile=str(cyrus.ca_file))
    with imaplib.IMAP4_SSL(cyrus.host, cyrus.tls_port, ssl_context=ctx) as imap:
        imap.login("src", "srcpass")
        assert "INBOX.Sent Items" in listing(imap)
    imap = imaplib.IMAP4(cyrus.host, cyrus.port)
    assert "STARTTLS" in imap.capabilities
    imap.starttls(ssl_context=ctx)
    imap.login("dst", "dstpass")
    imap.logout()


def test_add_user_while_running_and_password_change(cyrus):
    cyrus.add_user("carol", 'c-pass with spaces & "quotes"')
    imap = login(cyrus, "carol", 'c-pass with spaces & "quotes"')
    assert "INBOX.Spam" in listing(imap)
    imap.logout()
    cyrus.add_user("carol", "nöt ascii")  # sent as UTF-8 in a literal
    assert cyrus.check_login("carol", "nöt ascii")
    assert not cyrus.check_login("carol", 'c-pass with spaces & "quotes"')
    assert cyrus.users["carol"] == "nöt ascii"
    with pytest.raises(ValueError):
        cyrus.add_user("carol", "two\nlines")


# --------------------------------------------------------------------------- lifecycle


def test_stop_kills_every_process_and_restart_keeps_mail(cyrus_installed, tmp_path):
    server = CyrusServer(tmp_path / "c", users={"src": "srcpass"})
    server.start()
    try:
        server.deliver("src", "INBOX.Kept", msg(1), ["\\Seen"])
        open_session = login(server)  # a busy imapd child while stopping
        pgid = server.pid
        members = _group_members(pgid)
        assert pgid in members and len(members) >= 2, members  # master and imapd(s)
        assert (tmp_path / "c" / "data").is_symlink()
    finally:
        server.stop()
    assert not server.running
    assert _group_members(pgid) == []
    for pid in members:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), pid
    with pytest.raises((OSError, imaplib.IMAP4.abort)):
        open_session.noop()
    server.stop()  # idempotent
    data = tmp_path / "c" / "data"
    assert data.is_dir() and not data.is_symlink()
    with pytest.raises(CyrusError):
        _ = server.pid

    # restart: the mail and the users are still there
    server.start()
    try:
        imap = login(server)
        got = fetch_all(imap, "INBOX.Kept")
        imap.logout()
        assert [(g["body"], g["flags"]) for g in got] == [(msg(1), {"\\Seen"})]
    finally:
        server.stop()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :].split()[0] == b"Z"


def test_restart_moves_to_free_ports_when_the_old_one_is_taken(cyrus_installed, tmp_path):
    server = CyrusServer(tmp_path / "c", users={"src": "srcpass"})
    with server:
        old = server.port
    blocker = socket.socket()
    try:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((server.host, old))
        blocker.listen()
        with server:
            assert server.port != old
            assert server.check_login("src", "srcpass")
    finally:
        blocker.close()


def test_context_manager_stops_on_error(cyrus_installed, tmp_path):
    server = CyrusServer(tmp_path / "c", users={"src": "srcpass"})
    with pytest.raises(RuntimeError, match="boom"), server:
        pgid = server.pid
        raise RuntimeError("boom")
    assert not server.running
    assert _group_members(pgid) == []
