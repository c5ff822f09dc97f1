"""The Service facade: customers, tokens, validation, tenant isolation, account checks."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from tests.svckit import free_port
from tests.transfer.test_move import make_message, populate
from yippiemove.service.core import (
    Account,
    Conflict,
    NotFound,
    ServiceError,
    default_selected,
)
from yippiemove.service.db import Job

SRC = Account("127.0.0.1", 143, "starttls", "src", "srcpass")
DST = Account("127.0.0.1", 143, "starttls", "dst", "dstpass")


@pytest.mark.sqlite_file("reads the SQLite file itself")
def test_users_and_authentication(make_service):
    svc = make_service()
    uid = svc.create_user(" Alice@Example.ORG ", "long enough pass")
    assert svc.user_email(uid) == "alice@example.org"
    assert svc.authenticate("alice@example.org", "long enough pass") == uid
    assert svc.authenticate("ALICE@example.org", "long enough pass") == uid
    assert svc.authenticate("alice@example.org", "wrong password") is None
    assert svc.authenticate("nobody@example.org", "long enough pass") is None
    assert svc.authenticate("not an address", "long enough pass") is None
    with pytest.raises(Conflict, match="email: a customer with this address exists"):
        svc.create_user("alice@example.org", "another one too")
    with pytest.raises(ServiceError, match="password: must be at least 12"):
        svc.create_user("bob@example.org", "short")
    with pytest.raises(ServiceError, match="email: is not a valid"):
        svc.create_user("bob", "long enough pass")
    with pytest.raises(NotFound):
        svc.user_email(999)
    # Only the argon2 hash is stored.
    con = sqlite3.connect(svc.settings.data_dir / "control.sqlite")
    (stored,) = con.execute("SELECT password_hash FROM users").fetchone()
    con.close()
    assert stored.startswith("$argon2id$") and "long enough pass" not in stored


@pytest.mark.sqlite_file("reads the SQLite file itself")
def test_tokens_are_stored_hashed_and_scoped(make_service):
    svc = make_service()
    alice = svc.create_user("alice@example.org", "long enough pass")
    bob = svc.create_user("bob@example.org", "long enough pass")
    tok = svc.create_token(alice, "laptop")
    assert svc.user_for_token(tok) == alice
    assert svc.user_for_token(tok + "x") is None
    assert svc.user_for_token("") is None
    [info] = svc.list_tokens(alice)
    assert info["name"] == "laptop" and info["last_used"] is not None
    assert svc.list_tokens(bob) == []
    raw = (svc.settings.data_dir / "control.sqlite").read_bytes()
    wal = svc.settings.data_dir / "control.sqlite-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert tok.encode() not in raw
    with pytest.raises(NotFound):
        svc.revoke_token(bob, info["id"])  # not Bob's
    assert svc.user_for_token(tok) == alice
    svc.revoke_token(alice, info["id"])
    assert svc.user_for_token(tok) is None
    with pytest.raises(NotFound):
        svc.create_token(999)


@pytest.mark.parametrize(
    ("source", "dest", "message"),
    [
        (Account("127.0.0.1", 0, "tls", "u", "p"), DST, "source.port: must be 1-65535"),
        (SRC, Account("127.0.0.1", 70000, "tls", "u", "p"), "dest.port: must be 1-65535"),
        (
            SRC,
            Account("mail.example.org", 143, "none", "u", "p"),
            "dest.security: 'none' is only allowed for loopback hosts",
        ),
        (Account("127.0.0.1", 993, "ssl", "u", "p"), DST, "source.security: must be one of"),
        (Account("", 993, "tls", "u", "p"), DST, "source.host: is required"),
        (Account("bad host!", 993, "tls", "u", "p"), DST, "source.host: 'bad host!' is not"),
        (Account("127.0.0.1", 993, "tls", "", "p"), DST, "source.username: is required"),
        (Account("127.0.0.1", 993, "tls", "u", ""), DST, "source.password: is required"),
        (Account("127.0.0.1", 993, "tls", "u", "a\r\nb"), DST, "source.password: must not"),
        (SRC, Account("127.0.0.1", 143, "starttls", "src", "x"), "dest: is the same account"),
    ],
)
def test_validation_names_the_field(make_service, source, dest, message):
    svc = make_service()
    uid = svc.create_user("alice@example.org", "long enough pass")
    with pytest.raises(ServiceError, match=message.replace("(", r"\(")) as info:
        svc.create_transfer(uid, source, dest)
    assert info.value.status == 400
    assert svc.list_transfers(uid) == []


def test_insecure_hosts_can_be_allowed_by_the_operator(make_service):
    svc = make_service(allow_insecure_hosts=True)
    uid = svc.create_user("alice@example.org", "long enough pass")
    view = svc.create_transfer(uid, SRC, Account("mail.example.org", 143, "none", "u", "p"))
    assert view.dest["security"] == "none"


def test_folder_selection_is_validated(make_service):
    svc = make_service()
    uid = svc.create_user("alice@example.org", "long enough pass")
    with pytest.raises(ServiceError, match=r"folders\.include: must be a list"):
        svc.create_transfer(uid, SRC, DST, {"include": "INBOX"})
    with pytest.raises(ServiceError, match=r"folders\.only: unknown key"):
        svc.create_transfer(uid, SRC, DST, {"only": ["INBOX"]})
    view = svc.create_transfer(uid, SRC, DST, {"exclude": ["Junk"]})
    assert view.folders == {"include": [], "exclude": ["Junk"]}


def test_account_from_api_data_names_the_field():
    a = Account.from_dict({"host": "imap.example.org", "username": "u", "password": "p"}, "source")
    assert (a.port, a.security) == (993, "tls")
    b = Account.from_dict(
        {"host": "h", "port": "143", "security": "STARTTLS", "username": "u", "password": "p"},
        "dest",
    )
    assert (b.port, b.security) == (143, "starttls")
    with pytest.raises(ServiceError, match=r"dest\.password: is required"):
        Account.from_dict({"host": "h", "username": "u"}, "dest")
    with pytest.raises(ServiceError, match=r"source\.port: must be 1-65535"):
        Account.from_dict({"host": "h", "port": "x", "username": "u", "password": "p"}, "source")
    with pytest.raises(ServiceError, match=r"source\.pasword: unknown field"):
        Account.from_dict({"host": "h", "username": "u", "pasword": "p"}, "source")
    assert "p'" not in repr(a) and "password" not in repr(a)


def test_transfers_are_private_to_their_owner(make_service):
    svc = make_service()
    alice = svc.create_user("alice@example.org", "long enough pass")
    bob = svc.create_user("bob@example.org", "long enough pass")
    job = svc.create_transfer(alice, SRC, DST)
    assert job.status == "queued"
    assert job.source == {
        "host": "127.0.0.1",
        "port": 143,
        "security": "starttls",
        "username": "src",
    }
    assert "srcpass" not in str(job.as_dict())
    assert [v.id for v in svc.list_transfers(alice)] == [job.id]
    assert [v.id for v in svc.list_transfers(alice, "queued")] == [job.id]
    assert svc.list_transfers(alice, "done") == []
    assert svc.list_transfers(bob) == []
    for call in (
        svc.get_transfer,
        svc.cancel_transfer,
        svc.rerun_transfer,
        svc.report,
        svc.state_file,
        svc.forget_credentials,
    ):
        with pytest.raises(NotFound, match="no such transfer") as info:
            call(bob, job.id)
        assert info.value.status == 404
    with pytest.raises(NotFound):
        svc.get_transfer(alice, "no-such-id")
    with pytest.raises(ServiceError, match="status: must be one of"):
        svc.list_transfers(alice, "bogus")
    # Alice's own: not run yet.
    with pytest.raises(NotFound, match="no report yet"):
        svc.report(alice, job.id)
    with pytest.raises(Conflict, match="still running"):
        svc.rerun_transfer(alice, job.id)
    # A queued job is cancelled at once; then it has ended.
    assert svc.cancel_transfer(alice, job.id).status == "cancelled"
    with pytest.raises(Conflict, match="already ended"):
        svc.cancel_transfer(alice, job.id)
    assert svc.get_transfer(alice, job.id).can_rerun


def test_credentials_are_encrypted_at_rest(make_service):
    svc = make_service()
    uid = svc.create_user("alice@example.org", "long enough pass")
    src = Account("127.0.0.1", 143, "starttls", "src", "Marker-Secret-1x")
    job = svc.create_transfer(uid, src, DST)
    with svc.db.session() as s:
        row = s.get(Job, job.id)
        assert row is not None and row.credentials is not None
        assert b"Marker-Secret-1x" not in row.credentials
        assert "Marker-Secret-1x" not in str(row.source)
        assert svc.box.decrypt(row.credentials)["source_password"] == "Marker-Secret-1x"
    for path in svc.settings.data_dir.rglob("*"):
        if path.is_file():
            assert b"Marker-Secret-1x" not in path.read_bytes(), path


def test_batch_csv(make_service):
    svc = make_service()
    text = (
        "source_host,source_port,source_security,source_username,source_password,"
        "dest_host,dest_port,dest_security,dest_username,dest_password\n"
        "imap.old.example,,tls,a@old.example,pw1,imap.new.example,,tls,a@new.example,pw2\n"
        "\n"
        "# a comment\n"
        "imap.old.example,99999,tls,b@old.example,secretpw,imap.new.example,,tls,b,pw\n"
        "imap.old.example,143,starttls,c,pw,imap.new.example\n"
        'imap.old.example,143,starttls,"d,e",pw,imap.new.example,993,tls,d,pw\n'
    )
    rows, errors = svc.validate_batch_csv(text)
    assert [(s.username, s.port, d.port) for s, d in rows] == [
        ("a@old.example", 993, 993),
        ("d,e", 143, 993),
    ]
    assert errors == [
        "line 5: source.port: must be 1-65535",
        "line 6: expected 10 columns, found 6",
    ]
    assert "secretpw" not in " ".join(errors)
    # Without a header: the documented order.
    rows, errors = svc.validate_batch_csv("h1,993,tls,u,p,h2,143,none,u,p\n")
    assert errors == ["line 1: dest.security: 'none' is only allowed for loopback hosts"]
    # A header in another order.
    rows, errors = svc.validate_batch_csv(
        "dest_host,dest_port,dest_security,dest_username,dest_password,"
        "source_host,source_port,source_security,source_username,source_password\n"
        "new.example,,tls,u,p,old.example,,tls,u,p\n"
    )
    assert errors == [] and rows[0][0].host == "old.example"


def test_default_selection():
    assert default_selected("INBOX", "/", frozenset())
    assert default_selected("Archive/2019", "/", frozenset())
    assert not default_selected("Junk", "/", frozenset())
    assert not default_selected("Spam", ".", frozenset())
    assert not default_selected("[Gmail]/Trash", "/", frozenset())
    assert not default_selected("Deleted Items", "/", frozenset())
    assert not default_selected("Müll", "/", frozenset({"\\TRASH"}))
    assert not default_selected("Unerwünscht", "/", frozenset({"\\JUNK"}))
    assert not default_selected("Trash/Old", "/", frozenset())


# ---------------------------------------------------------------------- check_account


def test_check_account_lists_folders_counts_and_ticks(make_service, dovecot, dovecot_dot):
    populate(dovecot)
    for folder in ("Junk", "Trash", "Spam"):
        dovecot.deliver("src", folder, make_message(7000))
    svc = make_service(ca_file=str(dovecot.ca_file))
    src = Account("127.0.0.1", dovecot.port, "starttls", "src", "srcpass")
    folders = {f.name: f for f in asyncio.run(svc.check_account(src, role="source"))}
    assert folders["INBOX"].messages == 8 + 6
    assert folders["INBOX"].bytes > 0
    assert folders["Archive/2019/Q1/Deep"].dest_name == "Archive/2019/Q1/Deep"
    assert folders["Empty/Still empty"].messages == 0
    ticks = {name: f.selected_by_default for name, f in folders.items()}
    assert ticks["Junk"] is False and ticks["Trash"] is False and ticks["Spam"] is False
    assert ticks["INBOX"] and ticks["Sent"] and ticks["Entwürfe"]
    # With the destination: names mapped as the transfer will map them.
    dst = Account("127.0.0.1", dovecot_dot.tls_port, "tls", "dst", "dstpass")
    svc2 = make_service(ca_file=str(dovecot.ca_file))
    mapped = {f.name: f.dest_name for f in asyncio.run(svc2.check_account(src, dest=dst))}
    assert mapped["Archive/2019/Q1/Deep"] == "Archive.2019.Q1.Deep"


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("wrong-password", "source: 127.0.0.1 refused the login for 'src'"),
        ("unknown-host", "source: host 'no-such-host.invalid' not found"),
        # Issue 14: a closed port and one that speaks no IMAP (here: no TLS) say the
        # same, so that the check is no port scanner.
        ("closed-port", "did not answer as an IMAP server"),
        ("untrusted-certificate", "source: TLS problem: TLS with 127.0.0.1"),
        ("tls-to-plain-port", "did not answer as an IMAP server"),
    ],
)
def test_check_account_errors_are_clear(make_service, dovecot, case, expect):
    ca = None if case == "untrusted-certificate" else str(dovecot.ca_file)
    svc = make_service(ca_file=ca)
    acc = {
        "wrong-password": Account("127.0.0.1", dovecot.port, "starttls", "src", "nope-nope"),
        "unknown-host": Account("no-such-host.invalid", 993, "tls", "src", "srcpass"),
        "closed-port": Account("127.0.0.1", free_port(), "tls", "src", "srcpass"),
        "untrusted-certificate": Account("127.0.0.1", dovecot.tls_port, "tls", "src", "srcpass"),
        "tls-to-plain-port": Account("127.0.0.1", dovecot.port, "tls", "src", "srcpass"),
    }[case]
    with pytest.raises(ServiceError) as info:
        asyncio.run(svc.check_account(acc, role="source"))
    msg = str(info.value)
    assert expect in msg, msg
    assert acc.password not in msg
    if case == "wrong-password":
        assert "Check the user name and password" in msg
        assert "app password" not in msg
    if case == "untrusted-certificate":
        assert "certificate verification failed" in msg


async def _fake_gmail(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every login like Gmail does for accounts that need an app password."""
    writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n")
    while line := await reader.readline():
        tag, _, rest = line.partition(b" ")
        verb = rest.split(b" ", 1)[0].strip().upper()
        if verb in (b"AUTHENTICATE", b"LOGIN"):
            writer.write(
                tag + b" NO [ALERT] Application-specific password required: "
                b"https://support.google.com/accounts/answer/185833 (Failure)\r\n"
            )
        elif verb == b"LOGOUT":
            writer.write(b"* BYE\r\n" + tag + b" OK\r\n")
            break
        else:
            writer.write(tag + b" BAD unknown\r\n")
        await writer.drain()
    writer.close()


def test_check_account_says_when_an_app_password_is_needed(make_service):
    svc = make_service()

    async def go() -> str:
        server = await asyncio.start_server(_fake_gmail, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(ServiceError) as info:
                await svc.check_account(
                    Account("127.0.0.1", port, "none", "me@gmail.example", "pw")
                )
            return str(info.value)
        finally:
            server.close()
            await server.wait_closed()

    msg = asyncio.run(go())
    assert "Application-specific password required" in msg
    assert "app password" in msg and "instead of your usual password" in msg
