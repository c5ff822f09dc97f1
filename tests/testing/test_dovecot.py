"""Tests of the throwaway Dovecot launcher, through a real server and stdlib imaplib."""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from yippiemove.testing import dovecot as dovecot_module
from yippiemove.testing.dovecot import (
    DovecotError,
    DovecotNotInstalledError,
    DovecotServer,
    MaildirMessage,
    dovecot_available,
)

FETCH_RE = re.compile(
    rb"UID (\d+) FLAGS \(([^)]*)\) INTERNALDATE \"([^\"]+)\" RFC822\.SIZE (\d+) BODY\[\] \{(\d+)\}"
)


def login(server: DovecotServer, user: str, password: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4(server.host, server.port)
    imap.login(user, password)
    return imap


def fetch_all(imap: imaplib.IMAP4, folder: str) -> list[dict]:
    """UID, flags (without \\Recent), INTERNALDATE, RFC822.SIZE and body of each message."""
    typ, _ = imap.select(quote(folder), readonly=True)
    assert typ == "OK", folder
    typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    result = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        m = FETCH_RE.search(item[0])
        assert m, item[0]
        flags = set(m.group(2).decode().split()) - {"\\Recent"}
        result.append(
            {
                "uid": int(m.group(1)),
                "flags": flags,
                "date": datetime.strptime(m.group(3).decode(), "%d-%b-%Y %H:%M:%S %z"),
                "size": int(m.group(4)),
                "body": item[1],
            }
        )
    return sorted(result, key=lambda r: r["uid"])


def quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def list_names(imap: imaplib.IMAP4, command: str = "LIST") -> dict[str, tuple[str, str]]:
    """Mailbox name -> (attributes, separator) from LIST or LSUB."""
    typ, data = imap.list() if command == "LIST" else imap.lsub()
    assert typ == "OK"
    out = {}
    for line in data:
        m = re.match(rb'\(([^)]*)\) "(.)" (.*)', line)
        assert m, line
        name = m.group(3).decode()
        if name.startswith('"'):
            name = name[1:-1]
        out[name] = (m.group(1).decode(), m.group(2).decode())
    return out


def test_login_over_plain_port(dovecot: DovecotServer) -> None:
    imap = imaplib.IMAP4(dovecot.host, dovecot.port)
    assert imap.welcome.startswith(b"* OK")
    assert "STARTTLS" in imap.capabilities
    assert imap.login("src", "srcpass")[0] == "OK"
    _, data = imap.capability()
    caps = data[0].split()
    for cap in (b"LITERAL+", b"MULTIAPPEND", b"UIDPLUS", b"SPECIAL-USE", b"MOVE", b"CONDSTORE"):
        assert cap in caps
    imap.logout()


def test_wrong_password_fails_fast(dovecot: DovecotServer) -> None:
    started = time.monotonic()
    for _ in range(3):
        imap = imaplib.IMAP4(dovecot.host, dovecot.port)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("src", "wrong")
        imap.logout()
    # no auth_failure_delay (2 s) nor anvil penalty (2, 4, 8.. s); 2.3 still waits
    # for its 0.5 s failure timer
    assert time.monotonic() - started < 2.5
    login(dovecot, "src", "srcpass").logout()


def test_starttls_verifies_against_ca_file(dovecot: DovecotServer) -> None:
    imap = imaplib.IMAP4(dovecot.host, dovecot.port)
    imap.starttls(ssl.create_default_context(cafile=str(dovecot.ca_file)))
    assert imap.login("src", "srcpass")[0] == "OK"
    imap.logout()

    untrusted = imaplib.IMAP4(dovecot.host, dovecot.port)
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusted.starttls(ssl.create_default_context())
    with contextlib.suppress(OSError):
        untrusted.sock.close()


def test_imaps(dovecot: DovecotServer) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    imap = imaplib.IMAP4_SSL(dovecot.host, dovecot.tls_port, ssl_context=context)
    assert imap.login("dst", "dstpass")[0] == "OK"
    imap.logout()
    # "localhost" is in the certificate too
    with (
        socket.create_connection((dovecot.host, dovecot.tls_port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.recv(100).startswith(b"* OK")


def test_only_loopback_and_distinct_ports(
    dovecot: DovecotServer, dovecot_dot: DovecotServer
) -> None:
    ports = {dovecot.port, dovecot.tls_port, dovecot_dot.port, dovecot_dot.tls_port}
    assert len(ports) == 4
    config = dovecot.config_path.read_text()
    assert "listen = 127.0.0.1\n" in config
    assert "!include" not in config


def test_list_shows_separator_and_layout(
    dovecot: DovecotServer, dovecot_dot: DovecotServer
) -> None:
    imap = login(dovecot, "dst", "dstpass")
    assert imap.create("a/b")[0] == "OK"
    assert list_names(imap)["a/b"][1] == "/"
    imap.logout()
    assert (dovecot.maildir("dst") / "a" / "b" / "cur").is_dir()  # LAYOUT=fs

    imap = login(dovecot_dot, "dst", "dstpass")
    assert imap.create("a.b")[0] == "OK"
    names = list_names(imap)
    assert names["a.b"][1] == "."
    assert names["INBOX"][1] == "."
    imap.logout()
    assert (dovecot_dot.maildir("dst") / ".a.b" / "cur").is_dir()  # Maildir++


@pytest.mark.parametrize("server_name", ["dovecot", "dovecot_dot"])
def test_deliver_round_trip(request: pytest.FixtureRequest, server_name: str) -> None:
    server: DovecotServer = request.getfixturevalue(server_name)
    sep = server.separator
    tz = timezone(timedelta(hours=5, minutes=30))
    when = [
        datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2019, 12, 31, 23, 59, 59, tzinfo=tz),
        datetime(1999, 1, 1, 0, 0, 0, tzinfo=UTC),
    ]
    folder = f"Archiv{sep}2024{sep}Entwürfe & Co"
    server.deliver("dst", "INBOX", b"Subject: one\r\n\r\nbody\r\n", ["\\Seen"], when[0])
    server.deliver("dst", folder, b"Subject: two\r\n\r\n2\r\n", ("\\Flagged", "Junk"), when[1])
    server.deliver_many(
        "dst",
        folder,
        [
            MaildirMessage(
                b"Subject: three\r\n\r\n3\r\n",
                ("\\answered", "\\DELETED", "\\Draft", "$Forwarded", "Junk", "\\Seen"),
                when[2],
            ),
            b"Subject: four\r\n\r\n4\r\n",
        ],
    )

    imap = login(server, "dst", "dstpass")
    mutf7 = f"Archiv{sep}2024{sep}Entw&APw-rfe &- Co"
    names = list_names(imap)
    assert mutf7 in names
    assert "\\Noselect" in names[f"Archiv{sep}2024"][0]  # parents are not mailboxes
    assert mutf7 in list_names(imap, "LSUB")  # subscribed

    inbox = fetch_all(imap, "INBOX")
    assert [(m["flags"], m["date"], m["body"]) for m in inbox] == [
        ({"\\Seen"}, when[0], b"Subject: one\r\n\r\nbody\r\n")
    ]
    msgs = fetch_all(imap, mutf7)
    assert [m["body"] for m in msgs] == [
        b"Subject: two\r\n\r\n2\r\n",
        b"Subject: three\r\n\r\n3\r\n",
        b"Subject: four\r\n\r\n4\r\n",
    ]
    assert msgs[0]["flags"] == {"\\Flagged", "Junk"}
    assert msgs[1]["flags"] == {
        "\\Answered", "\\Deleted", "\\Draft", "$Forwarded", "Junk", "\\Seen"
    }  # fmt: skip
    assert msgs[2]["flags"] == set()
    assert msgs[0]["date"] == when[1]
    assert msgs[1]["date"] == when[2]
    assert all(m["size"] == len(m["body"]) for m in msgs)
    imap.logout()

    keywords = (server.folder_path("dst", folder) / "dovecot-keywords").read_text()
    assert keywords == "0 Junk\n1 $Forwarded\n"


def test_deliver_many_keeps_order_and_is_fast(dovecot: DovecotServer) -> None:
    count = 2000
    items = [
        MaildirMessage(f"Subject: {i}\r\n\r\n{i}\r\n".encode(), ("\\Seen",) if i % 2 else ())
        for i in range(count)
    ]
    started = time.perf_counter()
    paths = dovecot.deliver_many("src", "INBOX", items)
    elapsed = time.perf_counter() - started
    assert len(paths) == count and all(p.parent.name == "cur" for p in paths)
    assert elapsed < 10, elapsed
    imap = login(dovecot, "src", "srcpass")
    imap.select("INBOX", readonly=True)
    _, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = [int(item[1].split()[1]) for item in data if isinstance(item, tuple)]
    seen = [b"\\Seen" in item[0] for item in data if isinstance(item, tuple)]
    assert subjects == list(range(count))
    assert seen == [bool(i % 2) for i in range(count)]
    imap.logout()


def test_deliver_while_running_is_noticed(dovecot: DovecotServer) -> None:
    imap = login(dovecot, "src", "srcpass")
    assert list_names(imap).keys() == {"INBOX"}  # builds Dovecot's mailbox list index
    imap.select("INBOX")
    dovecot.deliver("src", "INBOX", b"Subject: a\r\n\r\na\r\n")
    dovecot.deliver("src", "INBOX", b"Subject: b\r\n\r\nb\r\n", ["later"])
    dovecot.deliver("src", "fresh/folder", b"Subject: c\r\n\r\nc\r\n")
    imap.noop()
    assert imap.select("INBOX")[1] == [b"2"]
    assert [m["flags"] for m in fetch_all(imap, "INBOX")] == [set(), {"later"}]
    assert len(fetch_all(imap, "fresh/folder")) == 1
    imap.logout()
    # a new folder shows up in LIST of sessions started afterwards
    imap = login(dovecot, "src", "srcpass")
    assert "fresh/folder" in list_names(imap)
    imap.logout()


@pytest.mark.source_writes("a launcher test: it APPENDs over IMAP as user src")
def test_line_endings_as_served(dovecot: DovecotServer) -> None:
    """Dovecot serves bare LF as CRLF, keeps CRLF and bare CR; sizes count CRLF."""
    cases = {
        b"Subject: lf\n\nbody\n": b"Subject: lf\r\n\r\nbody\r\n",
        b"Subject: crlf\r\n\r\nbody\r\n": b"Subject: crlf\r\n\r\nbody\r\n",
        b"Subject: mixed\r\n\nx\ny\r\n": b"Subject: mixed\r\n\r\nx\r\ny\r\n",
        b"Subject: cr\r\n\r\na\rb\r\n": b"Subject: cr\r\n\r\na\rb\r\n",
        b"Subject: end\n\nno newline": b"Subject: end\r\n\r\nno newline",
    }
    dovecot.deliver_many("src", "INBOX", list(cases))
    imap = login(dovecot, "src", "srcpass")
    served = fetch_all(imap, "INBOX")
    assert [m["body"] for m in served] == list(cases.values())
    assert [m["size"] for m in served] == [len(v) for v in cases.values()]
    # APPEND stores bare LF (mail_save_crlf = no): CRLF round-trips, bare LF does not
    imap.append("INBOX", None, None, b"Subject: app\r\n\r\nx\ny\r\n")
    assert fetch_all(imap, "INBOX")[-1]["body"] == b"Subject: app\r\n\r\nx\r\ny\r\n"
    imap.logout()


def test_deliver_rejects_bad_input(dovecot: DovecotServer) -> None:
    with pytest.raises(ValueError):
        dovecot.deliver("src", "INBOX", b"x", ["\\Recent"])
    with pytest.raises(ValueError):
        dovecot.deliver("src", "INBOX", b"x", ["bad keyword"])
    with pytest.raises(TypeError):
        dovecot.deliver("src", "INBOX", b"x", "\\Seen")
    for bad in ("a//b", "new/x", "x/cur", "~x", "/x"):
        with pytest.raises(ValueError):
            dovecot.deliver("src", bad, b"x")
    with pytest.raises(ValueError):
        dovecot.deliver_many("src", "many", [MaildirMessage(b"x", (f"k{i}",)) for i in range(27)])
    imap = login(dovecot, "src", "srcpass")
    assert fetch_all(imap, "INBOX") == []
    imap.logout()


def test_prefix_namespace(dovecot_factory) -> None:
    server = dovecot_factory(separator=".", prefix="INBOX.", users={"u": "p"})
    server.deliver("u", "INBOX.Sent", b"Subject: s\r\n\r\ns\r\n", ["\\Seen"])
    with pytest.raises(ValueError):
        server.deliver("u", "Sent", b"x")
    imap = login(server, "u", "p")
    names = list_names(imap)
    assert "\\Sent" in names["INBOX.Sent"][0]  # special_use, as in Debian's config
    assert [m["flags"] for m in fetch_all(imap, "INBOX.Sent")] == [{"\\Seen"}]
    imap.logout()


def test_add_user_while_running(dovecot: DovecotServer) -> None:
    imap = imaplib.IMAP4(dovecot.host, dovecot.port)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login("carol", "c:arol pw")
    imap.logout()
    dovecot.add_user("carol", "c:arol pw")  # ':' needs {PLAIN.BASE64}
    login(dovecot, "carol", "c:arol pw").logout()
    for password in ("new", "neu", "nex"):  # same size, same second
        dovecot.add_user("carol", password)
        login(dovecot, "carol", password).logout()
    assert not dovecot.check_login("carol", "neu")
    assert dovecot.users["carol"] == "nex"
    dovecot.add_user("dora", "pässwörd")  # non-ASCII (imaplib cannot send it)
    assert dovecot.check_login("dora", "pässwörd")
    login(dovecot, "src", "srcpass").logout()


def test_max_message_size(dovecot_factory) -> None:
    server = dovecot_factory(users={"u": "p"}, max_message_size=1000)
    imap = login(server, "u", "p")
    ok = b"Subject: s\r\n\r\n" + b"x" * (1000 - 14)
    assert imap.append("INBOX", None, None, ok)[0] == "OK"
    typ, data = imap.append("INBOX", None, None, ok + b"x")
    assert typ == "NO" and b"[LIMIT]" in data[0]
    imap.logout()


def test_stop_leaves_no_processes(dovecot: DovecotServer) -> None:
    dovecot.deliver("src", "INBOX", b"Subject: kept\r\n\r\nkept\r\n")
    busy = login(dovecot, "src", "srcpass")  # an imap process is running during stop
    busy.select("INBOX")
    pgid = dovecot.pid
    assert len(dovecot_module._group_members(pgid)) >= 4
    private = Path(dovecot.config_path.read_text().split("base_dir = ")[1].split("\n")[0])
    assert private.exists()
    port = dovecot.port
    dovecot.stop()
    assert dovecot_module._group_members(pgid) == []
    assert not _pids_mentioning(str(dovecot.config_path))
    assert not private.parent.exists()
    with pytest.raises(OSError):
        socket.create_connection((dovecot.host, port), timeout=1).close()
    maildir = dovecot.maildir("src")
    assert not maildir.parent.parent.is_symlink()
    assert len(list((maildir / "cur").iterdir())) == 1
    dovecot.stop()  # idempotent


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if text.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except (OSError, ValueError):
            pass
    return pids


def test_restart_keeps_mail_and_ports(dovecot: DovecotServer) -> None:
    dovecot.deliver("src", "Kept", b"Subject: kept\r\n\r\nkept\r\n", ["\\Seen"])
    imap = login(dovecot, "src", "srcpass")
    assert len(fetch_all(imap, "Kept")) == 1
    imap.logout()
    port, tls_port = dovecot.port, dovecot.tls_port
    dovecot.stop()
    dovecot.deliver("src", "Kept", b"Subject: offline\r\n\r\noffline\r\n")
    dovecot.start()
    assert (dovecot.port, dovecot.tls_port) == (port, tls_port)
    imap = login(dovecot, "src", "srcpass")
    assert [m["flags"] for m in fetch_all(imap, "Kept")] == [{"\\Seen"}, set()]
    imap.logout()


def test_context_manager_and_doveadm(dovecot_installed: None, tmp_path: Path) -> None:
    server = DovecotServer(tmp_path / "new", users={"u": "p"})
    server.deliver("u", "Before", b"Subject: x\r\n\r\nx\r\n")  # before the first start
    with server:
        assert server.running
        server.deliver("u", "Folder", b"Subject: x\r\n\r\nx\r\n")
        out = server.doveadm("mailbox", "list", "-u", "u").stdout.split()
        assert sorted(out) == ["Before", "Folder", "INBOX"]
        assert "1" in server.doveadm("mailbox", "status", "-u", "u", "messages", "Before").stdout
        pid = server.pid
    assert not server.running
    assert dovecot_module._group_members(pid) == []
    with pytest.raises(DovecotError):
        _ = server.pid


def test_failed_start_reports_log_and_cleans_up(dovecot_installed: None, tmp_path: Path) -> None:
    server = DovecotServer(tmp_path, users={"u": "p"}, extra_config="no_such_setting = 1\n")
    with pytest.raises(DovecotError, match="no_such_setting"):
        server.start()
    assert not server.running
    assert not (tmp_path / "mail").is_symlink()


def test_missing_binary_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dovecot_module, "_which", lambda name: None)
    assert not dovecot_available()
    with pytest.raises(DovecotNotInstalledError, match="dovecot-imapd"):
        DovecotServer(tmp_path).start()


def test_start_stop_timing(dovecot_installed: None, tmp_path: Path) -> None:
    server = DovecotServer(tmp_path, users={"u": "p"})
    server.start().stop()  # TLS material is made once per process
    started = time.perf_counter()
    for _ in range(3):
        server.start()
        server.stop()
    per_cycle = (time.perf_counter() - started) / 3
    print(f"Dovecot start+stop: {per_cycle * 1000:.0f} ms")
    assert per_cycle < 2


NON_ROOT_SCRIPT = """
import imaplib, ssl, sys, tempfile
from pathlib import Path
from yippiemove.testing.dovecot import DovecotServer, _group_members
with tempfile.TemporaryDirectory() as tmp:
    server = DovecotServer(Path(tmp), separator=".", users={"u": "p"})
    with server:
        server.deliver("u", "a.b", b"Subject: x\\r\\n\\r\\nx\\r\\n", ["\\\\Seen", "kw"])
        imap = imaplib.IMAP4(server.host, server.port)
        imap.starttls(ssl.create_default_context(cafile=str(server.ca_file)))
        imap.login("u", "p")
        imap.select("a.b")
        print(imap.fetch("1", "(FLAGS)")[1][0].decode())
        imap.logout()
        server.add_user("v", "w")
        pid = server.pid
    assert not _group_members(pid)
print("done")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to user nobody, needs root")
def test_runs_as_non_root_user(dovecot_installed: None) -> None:
    runuser, python = shutil.which("runuser"), "/usr/bin/python3"
    if runuser is None or not os.access(python, os.X_OK):
        pytest.skip("needs runuser and /usr/bin/python3")
    src = Path(dovecot_module.__file__).parents[2]
    readable = [runuser, "-u", "nobody", "--", "test", "-r", dovecot_module.__file__]
    if subprocess.run(readable, check=False).returncode != 0:
        pytest.skip(f"user nobody cannot read {src}")
    done = subprocess.run(
        [runuser, "-u", "nobody", "--", "env", f"PYTHONPATH={src}", "HOME=/tmp",
         python, "-c", NON_ROOT_SCRIPT],
        capture_output=True, text=True, timeout=120, cwd="/tmp", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\\Seen" in done.stdout and "kw" in done.stdout and "done" in done.stdout


def test_tls_addresses_are_named_in_the_certificate() -> None:
    """``tls_addresses`` (bench/fleet.py --hosts: a proxy on a fleet's bridge): the
    server certificate names them besides loopback, from the same kind of test CA."""
    from cryptography import x509

    from yippiemove.testing.dovecot import _tls_material

    plain = x509.load_pem_x509_certificate(_tls_material()["server.pem"])
    extra = x509.load_pem_x509_certificate(_tls_material(("10.9.8.1",))["server.pem"])

    def ips(cert: x509.Certificate) -> set[str]:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {str(a) for a in san.get_values_for_type(x509.IPAddress)}

    assert ips(plain) == {"127.0.0.1", "::1"}
    assert ips(extra) == {"127.0.0.1", "::1", "10.9.8.1"}
    with pytest.raises(ValueError):
        DovecotServer("/nonexistent", tls_addresses=["bridge.example"])
