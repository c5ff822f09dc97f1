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

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests import mailcheck
from tests.doubles.quirky import Quirks, QuirkyServer
from tests.source_guard import guard_sources
from tests.transfer.test_cross_server import (
    assert_exact_except_specials,
    load_dovecot,
    mail_set,
    message,
)
from yippiemove.imap import utf7
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

# Folders beside INBOX and the special ones (Unicode names); no emoji (a quirk refuses one).
ORDINARY = ["Archive/2019/Deep", "Geschäftlich", "R&D", "Projects/Ünïcode & more"]
SPECIAL = {"\\Sent": "Sent", "\\Drafts": "Drafts", "\\Trash": "Trash", "\\Junk": "Junk"}
QPW = "quirkpass"
PARTY = "Ünïcödé 🎉"  # a name with a character a quirk refuses
WHEN = datetime(2020, 2, 3, 4, 5, 6, tzinfo=UTC)


def enc(name: str) -> str:
    return utf7.encode(name).decode()


def dovecot_mail() -> list[tuple[str, bytes, tuple[str, ...], Any]]:
    return mail_set(["INBOX", *SPECIAL.values(), *ORDINARY])


@pytest.fixture
def quirky(request: pytest.FixtureRequest) -> Iterator[Callable[..., QuirkyServer]]:
    """``quirky(**quirks)``: a running quirky server with users src and dst; the
    source-untouched guard (tests/source_guard.py) checks src at teardown."""
    servers: list[QuirkyServer] = []
    with contextlib.ExitStack() as guards:

        def make(**quirks: Any) -> QuirkyServer:
            srv = QuirkyServer(users={"src": QPW, "dst": QPW}, quirks=Quirks(**quirks)).start()
            servers.append(srv)
            guards.enter_context(
                guard_sources(
                    request,
                    srv,
                    users=lambda: ["src", "dst"],
                    loaders=("add_user", "create_folder", "add_message"),
                )
            )
            return srv

        try:
            yield make
        finally:
            guards.close()
            for srv in servers:
                srv.stop()
    for srv in servers:
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


WRITES = {b"APPEND", b"STORE", b"COPY", b"MOVE", b"EXPUNGE", b"CREATE", b"DELETE", b"RENAME"}


def verb(line: bytes) -> bytes:
    """A command line's verb (UID FETCH -> FETCH)."""
    words = line.upper().split(b" ")
    return words[1] if words[0] == b"UID" and len(words) > 1 else words[0]


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
    seen = len(srv.commands("dst"))
    ok(move(srv.port, dovecot.port, tmp_path / "out", src_pw=QPW, src_user="dst"))
    assert snap(dovecot.port, "dst", "dstpass") == src
    assert srv.snapshot("dst") == before  # the source is never written
    verbs = {verb(c) for c in srv.commands("dst")[seen:]}
    assert b"EXAMINE" in verbs and not verbs & WRITES, verbs


def total(snapshot: dict[str, Counter]) -> int:
    return sum(mailcheck.everything(snapshot).values())


def into(dovecot: DovecotServer, srv: QuirkyServer, tmp: Path, *extra: str) -> Any:
    return move(dovecot.port, srv.port, tmp, *extra, dst_pw=QPW)


def out_of(srv: QuirkyServer, dovecot: DovecotServer, tmp: Path, *extra: str) -> Any:
    return move(srv.port, dovecot.port, tmp, *extra, src_pw=QPW)


def fresh_rerun_copies_nothing(run: Callable[[Path], Any], tmp: Path, dst: Callable[[], Any]):
    """Without the state file (as after a lost disk or a new machine), a re-run finds
    every message already there: nothing copied, the destination unchanged."""
    before = dst()
    (tmp / "state.sqlite").unlink()
    r = run(tmp)
    ok(r)
    assert report(tmp)["totals"]["copied"] == 0, r.stdout
    assert dst() == before


# ---------------------------------------------------------------------------- what works today


@pytest.mark.parametrize(
    "quirks",
    [
        {"uidplus": False},
        {"namespace": False},
        {"special_use": False},
        {"uidplus": False, "namespace": False, "special_use": False},
        {"literal_plus": False, "multiappend": False},
    ],
    ids=["no-uidplus", "no-namespace", "no-special-use", "none-of-the-three", "no-literal-plus"],
)
def test_quirky_destination_and_source_exact(dovecot, quirky, tmp_path, quirks):
    """Servers without UIDPLUS, NAMESPACE, SPECIAL-USE or LITERAL+/MULTIAPPEND: exact
    both ways, a re-run (with and without the state file) copies nothing."""
    load_dovecot(dovecot, dovecot_mail())
    src = snap(dovecot.port, "src", "srcpass")
    srv = quirky(**quirks)
    ok(into(dovecot, srv, tmp_path / "in"))
    assert_exact_except_specials(src, snap(srv.port, "dst", QPW), {}, set(SPECIAL.values()))
    fresh_rerun_copies_nothing(
        lambda t: into(dovecot, srv, t), tmp_path / "in", lambda: srv.snapshot("dst")
    )
    seed_quirky(srv, dovecot_mail())
    before = srv.snapshot("src")
    ok(out_of(srv, dovecot, tmp_path / "out"))
    assert snap(dovecot.port, "dst", "dstpass") == snap(srv.port, "src", QPW)
    fresh_rerun_copies_nothing(
        lambda t: out_of(srv, dovecot, t),
        tmp_path / "out",
        lambda: snap(dovecot.port, "dst", "dstpass"),
    )
    assert srv.snapshot("src") == before  # the source is never written


def dotted(name: str) -> str:
    """A Dovecot ("/") name as the INBOX.-namespace server names it (mUTF-7)."""
    return enc("INBOX." + name.replace("/", ".")) if name != "INBOX" else name


def test_inbox_dot_namespace_both_ways(dovecot, quirky, tmp_path):
    """Into an ``INBOX.`` namespace with "." every folder lands under INBOX.; out of it,
    the prefix goes and "." becomes "/"."""
    load_dovecot(dovecot, dovecot_mail())
    src = snap(dovecot.port, "src", "srcpass")
    srv = quirky(inbox_dot=True)
    ok(into(dovecot, srv, tmp_path / "in"))
    got = snap(srv.port, "dst", QPW)
    names = {enc(f): dotted(f) for f in ORDINARY} | {"INBOX": "INBOX"}
    assert_exact_except_specials(src, got, names, {enc(f) for f in SPECIAL.values()})
    assert all(name == "INBOX" or name.startswith("INBOX.") for name in got)
    fresh_rerun_copies_nothing(
        lambda t: into(dovecot, srv, t), tmp_path / "in", lambda: srv.snapshot("dst")
    )
    seed_quirky(srv, dovecot_mail())
    ok(out_of(srv, dovecot, tmp_path / "out"))
    back = snap(dovecot.port, "dst", "dstpass")
    from_quirky = snap(srv.port, "src", QPW)
    assert_exact_except_specials(
        from_quirky, back, {dotted(f): enc(f) for f in ORDINARY}, set(map(dotted, SPECIAL.values()))
    )


def test_utf8_accept_server_both_ways_exact(dovecot, quirky, tmp_path):
    """A server that offers UTF8=ACCEPT (and refuses nothing): non-ASCII names arrive and
    leave intact whether or not the mover enables it."""
    folders = ["INBOX", PARTY, "Geschäftlich/Ünter"]
    load_dovecot(dovecot, mail_set(folders))
    src = snap(dovecot.port, "src", "srcpass")
    srv = quirky(utf8_accept=True)
    ok(into(dovecot, srv, tmp_path / "in"))
    assert snap(srv.port, "dst", QPW) == src
    assert set(srv.folders("dst")) == set(folders)
    seed_quirky(srv, mail_set(folders))
    ok(out_of(srv, dovecot, tmp_path / "out"))
    plain = {enc(f) for f in folders}  # seed_quirky's empty special folders left aside
    back = snap(dovecot.port, "dst", "dstpass")
    assert {n: m for n, m in back.items() if n in plain} == {
        n: m for n, m in snap(srv.port, "src", QPW).items() if n in plain
    }
    assert set(back) - plain <= set(SPECIAL.values())


# ---------------------------------------------------------------------------- issue 13's bugs

FIX_ALTERED = "issue 13: servers that alter what they store (detect, report, recognise)"
FIX_SPEED = "issue 13: pipelining by capability (more connections without LITERAL+/MULTIAPPEND)"
FIX_NAMES = "issue 13: folder names (UTF8=ACCEPT; replace only what the server refuses)"
FIX_KEYWORDS = "issue 13: keywords by evidence, not only PERMANENTFLAGS"

# Every spelling a server may echo (protocol.fetch_key): found by meaning.
SPELLINGS = ["plain", "lower", "quoted", "mixed", "peek", "rfc822"]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_fetch_spelling_destination_rerun_without_state(dovecot, quirky, tmp_path, spelling):
    """A destination that spells the section of its FETCH answers otherwise: after the
    state file is gone, a re-run must still find every message there."""
    load_dovecot(dovecot, dovecot_mail())
    src = snap(dovecot.port, "src", "srcpass")
    srv = quirky(fetch_spelling=spelling)
    ok(into(dovecot, srv, tmp_path / "in"))
    assert_exact_except_specials(src, snap(srv.port, "dst", QPW), {}, set(SPECIAL.values()))
    fresh_rerun_copies_nothing(
        lambda t: into(dovecot, srv, t), tmp_path / "in", lambda: srv.snapshot("dst")
    )


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_fetch_spelling_source_exact_and_rerun_without_state(dovecot, quirky, tmp_path, spelling):
    """A source that spells its FETCH answers otherwise: exact, Message-IDs in the report,
    and a re-run without the state file copies nothing."""
    srv = quirky(fetch_spelling=spelling)
    seed_quirky(srv, dovecot_mail())
    ok(out_of(srv, dovecot, tmp_path / "out"))
    assert snap(dovecot.port, "dst", "dstpass") == snap(srv.port, "src", QPW)
    fresh_rerun_copies_nothing(
        lambda t: out_of(srv, dovecot, t),
        tmp_path / "out",
        lambda: snap(dovecot.port, "dst", "dstpass"),
    )


@pytest.mark.xfail(strict=True, reason=FIX_ALTERED)
@pytest.mark.parametrize("quirk", ["store_lf", "replace_8bit_headers"])
def test_destination_that_alters_bytes(dovecot, quirky, tmp_path, quirk):
    """Every message stored (altered by the server, as the report says), none "failed",
    and no re-run (with or without the state file) appends a second copy."""
    load_dovecot(dovecot, dovecot_mail())
    src = snap(dovecot.port, "src", "srcpass")
    srv = quirky(**{quirk: True})
    r = into(dovecot, srv, tmp_path / "in")
    assert r.returncode != 2, r.stdout + r.stderr
    rep = report(tmp_path / "in")
    assert rep["totals"]["failed"] == 0, r.stdout
    assert total(snap(srv.port, "dst", QPW)) == total(src)
    for state in (True, False):
        if not state:
            (tmp_path / "in" / "state.sqlite").unlink()
        r = into(dovecot, srv, tmp_path / "in")
        assert r.returncode != 2, r.stdout + r.stderr
        assert report(tmp_path / "in")["totals"]["copied"] == 0, r.stdout
        assert total(snap(srv.port, "dst", QPW)) == total(src)


@pytest.mark.xfail(strict=True, reason=FIX_KEYWORDS)
def test_keywords_kept_without_star_in_permanentflags(dovecot, quirky, tmp_path):
    """PERMANENTFLAGS without \\* but keywords stored all the same: every keyword arrives."""
    load_dovecot(dovecot, dovecot_mail())
    src = snap(dovecot.port, "src", "srcpass")
    srv = quirky(permanentflags_star=False)
    ok(into(dovecot, srv, tmp_path / "in"))
    assert_exact_except_specials(src, snap(srv.port, "dst", QPW), {}, set(SPECIAL.values()))


@pytest.mark.xfail(strict=True, reason=FIX_NAMES)
def test_utf8_accept_takes_the_whole_name(dovecot, quirky, tmp_path):
    """A server that refuses the emoji in modified UTF-7 but offers UTF8=ACCEPT gets the
    whole name in UTF-8."""
    load_dovecot(dovecot, mail_set(["INBOX", PARTY]))
    srv = quirky(refuse_chars="🎉", utf8_accept=True)
    ok(into(dovecot, srv, tmp_path / "in"))
    assert PARTY in srv.folders("dst")
    assert len(srv.messages("dst", PARTY)) == 6


@pytest.mark.xfail(strict=True, reason=FIX_NAMES)
def test_refused_character_replaced_alone(dovecot, quirky, tmp_path):
    """Without UTF8=ACCEPT, only the refused character is replaced: the accented letters
    the server takes stay."""
    load_dovecot(dovecot, mail_set(["INBOX", PARTY]))
    srv = quirky(refuse_chars="🎉")
    ok(into(dovecot, srv, tmp_path / "in"))
    (name,) = [f for f in srv.folders("dst") if f != "INBOX"]
    assert name.startswith("Ünïcödé ") and "🎉" not in name, name
    assert len(srv.messages("dst", name)) == 6


@pytest.mark.xfail(strict=True, reason=FIX_SPEED)
def test_no_literal_plus_no_multiappend_waits_for_continuations_in_parallel(
    dovecot, quirky, tmp_path
):
    """A server that takes one message per APPEND and answers each synchronizing literal's
    continuation after DELAY: the mover must not wait for them one after the other (today
    one connection appends: N x DELAY).  Measured against the same server with LITERAL+
    (no continuations), so start-up and the machine's load cancel out."""
    n, delay = 150, 0.02
    raws = [MaildirMessage(message(i), (), WHEN) for i in range(n)]
    dovecot.deliver_many("src", "INBOX", raws)
    elapsed = {}
    for name, quirks in (
        ("literal+", {"sync_literal_delay": delay}),
        ("sync", {"literal_plus": False, "multiappend": False, "sync_literal_delay": delay}),
    ):
        srv = quirky(**quirks)
        t0 = time.monotonic()
        ok(into(dovecot, srv, tmp_path / name))
        elapsed[name] = time.monotonic() - t0
        assert len(srv.messages("dst", "INBOX")) == n
    extra = elapsed["sync"] - elapsed["literal+"]
    assert extra <= n * delay / 2, f"{extra / n * 1000:.1f} ms per message waiting for '+'"
