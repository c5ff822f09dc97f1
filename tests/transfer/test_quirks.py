"""`yippiemove move` into and out of a server with each quirk of issue 13.

The quirky server (tests/doubles/quirky.py) plays one RFC-allowed behaviour at a time;
Dovecot is the other side.  The judge is tests/mailcheck.py (imaplib) on both sides:
per folder, per message the SHA-256 of the bytes, flags, INTERNALDATE (in UTC) and
multiplicity.  The quirk's own seeding API says what the quirky server holds.

Tests marked ``xfail(strict=True, reason="issue 13: ...")`` are the behaviours issue 13
asks to fix; whoever fixes one removes the mark (strict: a fix that makes it pass fails
the run until the mark goes).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import mailcheck
from tests.doubles.quirky import Quirks, QuirkyServer
from tests.transfer.test_cross_server import load_dovecot, mail_set
from yippiemove.imap import utf7

# Folders beside INBOX and the special ones (Unicode names); no emoji (a quirk refuses one).
ORDINARY = ["Archive/2019/Deep", "Geschäftlich", "R&D", "Projects/Ünïcode & more"]
SPECIAL = {"\\Sent": "Sent", "\\Drafts": "Drafts", "\\Trash": "Trash", "\\Junk": "Junk"}
QPW = "quirkpass"


def enc(name: str) -> str:
    return utf7.encode(name).decode()


def dovecot_mail() -> list[tuple[str, bytes, tuple[str, ...], Any]]:
    return mail_set(["INBOX", *SPECIAL.values(), *ORDINARY])


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


def move(
    src_port: int,
    dst_port: int,
    tmp: Path,
    *extra: str,
    src_pw: str = "srcpass",
    dst_pw: str = "dstpass",
    src_user: str = "src",
) -> Any:
    tmp.mkdir(exist_ok=True)
    return mailcheck.run_move(
        src_port,
        dst_port,
        tmp,
        "--no-starttls",
        "--report",
        str(tmp / "report.json"),
        *extra,
        source_user=src_user,
        source_password=src_pw,
        dest_password=dst_pw,
        timeout=180,
    )


def report(tmp: Path) -> dict[str, Any]:
    return json.loads((tmp / "report.json").read_text())


def snap(port: int, user: str, password: str) -> dict[str, Counter]:
    return mailcheck.in_utc(mailcheck.snapshot(port, user, password))


def seed_quirky(srv: QuirkyServer, mail: list, user: str = "src") -> None:
    for name in SPECIAL.values():
        srv.create_folder(user, name, special_use=f"\\{name}")
    for folder, raw, flags, when in mail:
        name = folder if folder == "INBOX" else folder.replace("/", srv.quirks.sep)
        srv.add_message(user, name, raw, flags=flags, internaldate=when)


def renamed(src: dict[str, Counter], rename: Callable[[str], str]) -> dict[str, Counter]:
    return {rename(name): msgs for name, msgs in src.items()}


def ok(r: Any) -> None:
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------- no quirks


def test_dovecot_to_plain_quirky_and_back_exact(dovecot, quirky, tmp_path):
    load_dovecot(dovecot, dovecot_mail())
    src = snap(dovecot.port, "src", "srcpass")
    srv = quirky()
    ok(move(dovecot.port, srv.port, tmp_path / "in", dst_pw=QPW))
    assert snap(srv.port, "dst", QPW) == src
    rep = report(tmp_path / "in")
    assert rep["totals"]["failed"] == 0 and rep["totals"]["copied"] == rep["totals"]["source_count"]
    # again: nothing copied, nothing changed
    before = srv.snapshot("dst")
    ok(move(dovecot.port, srv.port, tmp_path / "in", dst_pw=QPW))
    assert report(tmp_path / "in")["totals"]["copied"] == 0
    assert srv.snapshot("dst") == before
    # and back, into Dovecot's other account
    ok(move(srv.port, dovecot.port, tmp_path / "out", src_pw=QPW, src_user="dst"))
    assert snap(dovecot.port, "dst", "dstpass") == src
    assert srv.snapshot("dst") == before  # the source is never written
