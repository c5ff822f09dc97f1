"""Issue 13, items 4 and 5, against the quirky server (tests/doubles/quirky.py) with
Dovecot on the other side: folder names a server refuses in part or takes whole in
UTF-8 (UTF8=ACCEPT), and keywords kept although PERMANENTFLAGS lacks ``\\*``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.doubles.quirky import Quirks, QuirkyServer
from tests.transfer.test_quirks import QPW, move, ok, report, snap
from yippiemove.imap import utf7

NAME = "\u00dcn\u00efc\u00f6d\u00e9 \U0001f389"  # Ünïcödé 🎉
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def quirky() -> Iterator[Callable[..., QuirkyServer]]:
    """``quirky(**quirks)``: a running quirky server with users src and dst."""
    servers: list[QuirkyServer] = []

    def make(**quirks: Any) -> QuirkyServer:
        srv = QuirkyServer(users={"src": QPW, "dst": QPW}, quirks=Quirks(**quirks)).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()
        assert not srv.internal_errors, srv.internal_errors


def _message(i: int) -> bytes:
    return (
        f"Message-ID: <q{i}@example.org>\r\nSubject: m{i}\r\nFrom: a@example.org\r\n\r\n"
        f"body {i}\r\n"
    ).encode()


def _names_case(dovecot, srv, tmp_path):  # type: ignore[no-untyped-def]
    for i in range(3):
        dovecot.deliver("src", NAME, _message(i), ("\\Seen",))
    r = move(dovecot.port, srv.port, tmp_path, dst_pw=QPW)
    ok(r)
    return r, report(tmp_path)


def test_utf8_accept_takes_the_whole_name(dovecot, quirky, tmp_path):
    """The server refuses the emoji in modified UTF-7 but advertises UTF8=ACCEPT, under
    which it takes the whole name: ENABLE, and the folder keeps its name."""
    srv = quirky(utf8_accept=True, refuse_chars="\U0001f389")
    _r, rep = _names_case(dovecot, srv, tmp_path)
    assert NAME in srv.folders("dst"), srv.folders("dst")
    (f,) = [f for f in rep["folders"] if f["source"] == NAME]
    assert f["dest"] == NAME and f["copied"] == 3 and f["failed"] == 0
    cmds = srv.commands("dst")
    assert any(c.upper().startswith(b"ENABLE UTF8=ACCEPT") for c in cmds), cmds[:6]
    assert any(c.startswith(b'CREATE "' + NAME.encode()) for c in cmds), cmds
    # the source side (Dovecot) offers no UTF8=ACCEPT: nothing to enable there
    src = snap(dovecot.port, "src", "srcpass")[utf7.encode(NAME).decode()]
    assert snap(srv.port, "dst", QPW)[utf7.encode(NAME).decode()] == src
    # a re-run finds it (UTF-8 LIST) and copies nothing
    ok(move(dovecot.port, srv.port, tmp_path, dst_pw=QPW))
    assert report(tmp_path)["totals"]["copied"] == 0
    assert srv.folders("dst").count(NAME) == 1


def test_only_the_refused_character_is_replaced(dovecot, quirky, tmp_path):
    """No UTF8=ACCEPT: the emoji is refused in modified UTF-7; only it is replaced (not
    every non-ASCII letter), and the report says the final name and what was replaced."""
    srv = quirky(refuse_chars="\U0001f389")
    r, rep = _names_case(dovecot, srv, tmp_path)
    final = "\u00dcn\u00efc\u00f6d\u00e9 _"
    assert final in srv.folders("dst") and NAME not in srv.folders("dst"), srv.folders("dst")
    (f,) = [f for f in rep["folders"] if f["source"] == NAME]
    assert f["dest"] == final and f["copied"] == 3
    assert "'\U0001f389' replaced by '_'" in r.stdout + r.stderr
    plan = {p["source"]: p for p in rep["plan"]["folders"]}
    assert any("replaced by '_'" in why for why in plan[NAME]["reasons"]), plan[NAME]
    creates = [c for c in srv.commands("dst") if c.upper().startswith(b"CREATE")]
    assert len(creates) == 2, creates  # the name, then the narrowed one
    ok(move(dovecot.port, srv.port, tmp_path, dst_pw=QPW))  # a re-run: same folder
    assert report(tmp_path)["totals"]["copied"] == 0
    assert [n for n in srv.folders("dst") if n.startswith("\u00dc")] == [final]


def test_keywords_kept_although_permanentflags_lacks_star(dovecot, quirky, tmp_path):
    """PERMANENTFLAGS without \\*, keywords stored all the same: every keyword arrives,
    none is reported dropped, and the evidence costs one probe, not one per message."""
    srv = quirky(permanentflags_star=False)
    n = 40
    for i in range(n):
        flags = ("\\Seen", "$Label1") if i % 2 else ("$Label1", "Work", "\\Flagged")
        dovecot.deliver("src", "INBOX", _message(i), flags)
    r = move(dovecot.port, srv.port, tmp_path, dst_pw=QPW)
    ok(r)
    rep = report(tmp_path)
    (f,) = [f for f in rep["folders"] if f["source"] == "INBOX"]
    assert f["copied"] == n and f["failed"] == 0
    assert f["unstorable_flags"] == [] and f["dropped_flags"] == {}, f
    assert "cannot store" not in r.stdout + r.stderr and "does not keep" not in r.stdout
    assert snap(srv.port, "dst", QPW)["INBOX"] == snap(dovecot.port, "src", "srcpass")["INBOX"]
    cmds = srv.commands("dst")
    assert sum(1 for c in cmds if c.upper().startswith(b"UID STORE")) == 0  # nothing fixed
    # again: nothing copied, no flag set
    ok(move(dovecot.port, srv.port, tmp_path, dst_pw=QPW))
    assert report(tmp_path)["totals"]["copied"] == 0
    assert sum(1 for c in srv.commands("dst") if c.upper().startswith(b"UID STORE")) == 0


def test_utf8_accept_source_names_are_read_as_utf8(dovecot, quirky, tmp_path):
    """A source offering UTF8=ACCEPT: the read-only session enables it too, reads its
    names as UTF-8 (an "&-" is two characters there) and is never written."""
    srv = quirky(utf8_accept=True)
    names = [NAME, "R&-D", "Caf\u00e9/Men\u00fc"]
    for i, name in enumerate(names):
        srv.create_folder("src", name)
        srv.add_message("src", name, _message(i), flags=("\\Seen", "$Label1"), internaldate=T0)
    before = srv.snapshot("src")
    ok(move(srv.port, dovecot.port, tmp_path, src_pw=QPW, dst_pw="dstpass"))
    dst = snap(dovecot.port, "dst", "dstpass")
    for name in names:
        assert sum(dst[utf7.encode(name).decode()].values()) == 1, sorted(dst)
    assert srv.snapshot("src") == before
    cmds = srv.commands("src")
    assert any(c.upper().startswith(b"ENABLE UTF8=ACCEPT") for c in cmds)
    assert not any(c.upper().split(b" ")[0] in (b"SELECT", b"APPEND", b"STORE") for c in cmds)


def test_keywords_without_uidplus_are_read_back_by_the_highest_uid(dovecot, quirky, tmp_path):
    """No UIDPLUS, no \\* in PERMANENTFLAGS: the probe is read back as ``UID FETCH *``."""
    srv = quirky(permanentflags_star=False, uidplus=False, multiappend=False)
    for i in range(6):
        dovecot.deliver("src", "INBOX", _message(i), ("$Label1",) if i % 2 else ("\\Seen",))
    ok(move(dovecot.port, srv.port, tmp_path, dst_pw=QPW))
    (f,) = [f for f in report(tmp_path)["folders"] if f["source"] == "INBOX"]
    assert f["copied"] == 6 and f["dropped_flags"] == {}, f
    assert snap(srv.port, "dst", QPW)["INBOX"] == snap(dovecot.port, "src", "srcpass")["INBOX"]
    assert any(b"UID FETCH *" in c.upper() for c in srv.commands("dst"))
