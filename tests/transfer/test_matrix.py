"""The cross-server matrix of issue 13: every server as source and as destination.

Each server kind is an adapter (:class:`Kind`) with one interface: start it, its users and
login names, seed the shared mailbox (:func:`shared_mailbox`), read it back through
tests/mailcheck.py (imaplib, not the mover's code) as *logical* folders ("/"-separated
Unicode names, without an ``INBOX.`` prefix), and say what it can hold (keywords? an
INTERNALDATE set by APPEND? bytes changed on APPEND? characters refused in names?).
The expected destination of a pair is computed from the source's snapshot and what the
destination can hold, never "something arrived":

* bytes: exactly the source's, or (a server that alters what it stores) the source's as
  that server alters them, and then the report says "stored, altered by the server";
* flags: the source's, without keywords on a server that stores none (imap4d);
* INTERNALDATE: the source's instant; a server that takes it from the ``Date:`` header
  (imap4d) gets the same instant because every seeded message's ``Date:`` is its
  INTERNALDATE;
* folders: the same logical names (a name with a character the server refuses: only
  that character replaced); multiplicity exact, nothing anywhere else.

Per pair, one test runs ``yippiemove move`` as a subprocess, as a user would: the first
run is exact; a re-run copies 0; a re-run with the state file deleted copies 0 and
doubles nothing; into a second account, a run killed with SIGKILL while copying (the
source throttled through tests/faultproxy.py, the kill sent when the first message is on
the destination), nothing doubled, then a re-run: exact.  The source never changes.

By default (CI) the bounded set runs: every kind as source into Dovecot, Dovecot into
every kind, and Cyrus <-> imap4d.  ``--matrix-full`` runs every pair (docs/testing.md,
"The cross-server matrix").  Pairs whose fix has not landed are
``xfail(strict=True, reason="issue 13: ...")`` (the reasons of test_quirks.py), so the
merge of a fix flips them.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import imaplib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests import mailcheck
from tests.doubles.cyrus import CyrusMessage, CyrusServer
from tests.doubles.mailutils import Imap4dMessage, Imap4dServer
from tests.doubles.quirky import Quirks, QuirkyServer
from tests.faultproxy import Fault, FaultProxy
from tests.source_guard import guard_sources
from yippiemove.imap import utf7
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

USERS = ("src", "dst", "dst2")  # dst2: the destination of the killed run
PW = "matrixpass"
#: The source link's rate while the run is to be killed (bytes per second, per connection).
KILL_RATE = 250_000

# ---------------------------------------------------------------------------- the mailbox

#: Logical folders (Unicode, "/" as separator): nested, non-ASCII, an emoji (refused by
#: the "names" profile), a character that needs quoting in mUTF-7.
FOLDERS = ["INBOX", "Archive/2019", "Ünïcödé 🎉", "R&D"]
FLAG_SETS = [
    ("\\Seen",),
    ("\\Seen", "$Forwarded"),
    (),
    ("\\Flagged", "Work"),
    ("\\Seen", "\\Answered", "$label1", "NonJunk"),
    ("\\Draft",),
]
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Mail:
    folder: str
    raw: bytes
    flags: tuple[str, ...]
    when: datetime


def rfc822_date(when: datetime) -> str:
    off = when.utcoffset()
    assert off is not None
    minutes = int(off.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    return (
        f"{_DAYS[when.weekday()]}, {when.day} {_MONTHS[when.month - 1]} {when.year} "
        f"{when:%H:%M:%S} {sign}{hh:02d}{mm:02d}"
    )


def message(
    i: int, when: datetime, *, msgid: bool = True, subject: bytes = b"", body: bytes = b""
) -> bytes:
    """A message whose ``Date:`` is ``when`` (its INTERNALDATE too, see the module doc)."""
    headers = [
        f"From: Sender {i} <sender{i}@example.org>".encode(),
        b"To: Receiver <rcpt@example.net>",
        b"Subject: " + (subject or f"Matrix message {i}".encode()),
        f"Date: {rfc822_date(when)}".encode(),
    ]
    if msgid:
        headers.append(f"Message-ID: <matrix{i}@example.org>".encode())
    text = body or (f"Hello {i}\r\n".encode() + b"z" * (i * 97 % 3000) + b"\r\n")
    return b"\r\n".join(headers) + b"\r\n\r\n" + text


def shared_mailbox() -> list[Mail]:
    """The mailbox every pair moves: four folders of flagged messages with keywords, and
    in INBOX byte-identical twins, a message without Message-ID, one with 8-bit header
    bytes (raw UTF-8 in Subject:) and one of 200 kB."""
    out: list[Mail] = []
    n = 0
    for folder in FOLDERS:
        for _ in range(5):
            n += 1
            when = datetime(
                2003 + n % 20, 1 + n % 12, 1 + n % 28, n % 24, n % 60, 9, tzinfo=ZONES[n % 3]
            )
            out.append(Mail(folder, message(n, when), FLAG_SETS[n % len(FLAG_SETS)], when))
    day = datetime(2011, 6, 7, 8, 9, 10, tzinfo=ZONES[1])
    twin = message(900, day)
    out += [
        Mail("INBOX", twin, ("\\Seen",), day),
        Mail("INBOX", twin, ("\\Seen",), day),
        Mail("INBOX", message(901, day, msgid=False), ("\\Flagged", "$label1"), day),
        Mail("INBOX", message(902, day, subject="Grüße, 8-bit".encode()), ("\\Seen",), day),
        Mail(
            "INBOX",
            message(903, day, body=b"big\r\n" + (b"0123456789abcdef" * 63 + b"\r\n") * 200),
            ("\\Seen",),
            day,
        ),
    ]
    return out


# ---------------------------------------------------------------------------- snapshots


@dataclass(frozen=True, order=True)
class Item:
    """One message as the judge sees it: bytes (hash, size), flags, INTERNALDATE in UTC."""

    sha: str
    size: int
    flags: tuple[str, ...]
    date: str


Snap = dict[str, Counter[Item]]


@dataclass
class Seen:
    """A logical snapshot, and the bytes of each hash (to compute what a server alters)."""

    folders: Snap
    raw: dict[str, bytes] = field(default_factory=dict)

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.folders.values())

    def everything(self) -> Counter[Item]:
        out: Counter[Item] = Counter()
        for c in self.folders.values():
            out.update(c)
        return out


# ---------------------------------------------------------------------------- server kinds


@dataclass(frozen=True)
class Kind:
    """A kind of server in the matrix and what it can hold."""

    name: str
    #: stores keywords (imap4d: no)
    keywords: bool = True
    #: APPEND's date-time becomes the INTERNALDATE (imap4d: taken from Date:)
    internaldate_settable: bool = True
    #: the quirky server's profile (None: a real server)
    quirks: dict[str, Any] | None = None
    #: personal namespace "INBOX." with separator "."
    inbox_dot: bool = False
    #: what the fix of issue 13 that this kind waits for is, as source / as destination
    source_fix: str | None = None
    dest_fix: str | None = None

    @property
    def namespace_known(self) -> bool:
        """Says its ``INBOX.`` prefix (NAMESPACE): a client can tell it from a parent."""
        return self.inbox_dot and (self.quirks or {}).get("namespace", True)

    def dest_folder(self, folder: str) -> str:
        """Where a (logical) source folder must land on this server.  A server with an
        ``INBOX.`` namespace that does not say so (no NAMESPACE) shows its folders as
        INBOX's children (logical "INBOX/Archive"): a folder moved into it lands under
        INBOX.  Into one that says so, a child of INBOX elsewhere ("INBOX/Archive") is
        ``INBOX.Archive``, its logical "Archive" (on such a server both are one name)."""
        if not self.inbox_dot or folder == "INBOX":
            return folder
        under_inbox = folder.startswith("INBOX/")
        if self.namespace_known:
            return folder[len("INBOX/") :] if under_inbox else folder
        return folder if under_inbox else "INBOX/" + folder

    def fix_as_destination(self, source: Kind) -> str | None:
        """The fix this kind waits for as destination of ``source`` (none today: every
        fix of issue 13 has landed; the mark stays for the next quirk found)."""
        return self.dest_fix

    @property
    def altering(self) -> Quirks | None:
        q = Quirks(**self.quirks) if self.quirks else None
        return q if q is not None and (q.store_lf or q.replace_8bit_headers) else None

    @property
    def refused(self) -> str:
        return (self.quirks or {}).get("refuse_chars", "")


MINIMAL = {
    "literal_plus": False,
    "multiappend": False,
    "uidplus": False,
    "namespace": False,
    "special_use": False,
    "inbox_dot": True,
}
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("dovecot"),
        Kind("cyrus", inbox_dot=True),
        Kind("imap4d", keywords=False, internaldate_settable=False),
        Kind("quirky-minimal", quirks=MINIMAL, inbox_dot=True),
        Kind("quirky-quoted", quirks={"fetch_spelling": "quoted"}),
        Kind("quirky-altering", quirks={"store_lf": True}),
        Kind("quirky-keywords", quirks={"permanentflags_star": False}),
        Kind(
            "quirky-names",
            quirks={"refuse_chars": "🎉", "utf8_accept": False},
        ),
    )
}


class Running:
    """A started server of a kind: ports, logins, seeding and snapshots."""

    def __init__(self, kind: Kind, server: Any) -> None:
        self.kind = kind
        self.server = server

    @property
    def port(self) -> int:
        return int(self.server.port)

    def login(self, user: str) -> str:
        return Imap4dServer.login(user) if self.kind.name == "imap4d" else user

    def wire_name(self, folder: str) -> str:
        """A logical folder's name on this server, in Unicode."""
        if folder == "INBOX":
            return folder
        return "INBOX." + folder.replace("/", ".") if self.kind.inbox_dot else folder

    def logical(self, raw_name: str) -> str:
        name = utf7.decode(raw_name.encode())
        if self.kind.inbox_dot and name.upper().startswith("INBOX."):
            name = name[len("INBOX.") :].replace(".", "/")
            if not self.kind.namespace_known:  # its folders are INBOX's children
                name = "INBOX/" + name
        return name

    def seed(self, user: str, mail: list[Mail]) -> None:
        """Deliver ``mail`` as the server holds it (imap4d: no keywords, it has none)."""
        by_folder: dict[str, list[Mail]] = {}
        for m in mail:
            by_folder.setdefault(m.folder, []).append(m)
        for folder, items in by_folder.items():
            name = self.wire_name(folder)
            s = self.server
            if isinstance(s, DovecotServer):
                s.deliver_many(
                    user,
                    name if name == "INBOX" else s.prefix + name,
                    [MaildirMessage(m.raw, m.flags, m.when) for m in items],
                )
            elif isinstance(s, CyrusServer):
                s.deliver_many(user, name, [CyrusMessage(m.raw, m.flags, m.when) for m in items])
            elif isinstance(s, Imap4dServer):
                s.deliver_many(
                    user,
                    name,
                    [
                        Imap4dMessage(m.raw, tuple(f for f in m.flags if f[0] == "\\"))
                        for m in items
                    ],
                )
            else:
                name = folder if folder == "INBOX" else folder.replace("/", s.quirks.sep)
                for m in items:
                    s.add_message(user, name, m.raw, flags=m.flags, internaldate=m.when)

    def snapshot(self, user: str) -> Seen:
        c = mailcheck.connect(self.port, self.login(user), PW)
        try:
            seen = Seen({})
            for name, (_sep, attrs) in mailcheck.folders(c).items():
                if {a.lower() for a in attrs} & {"\\noselect", "\\nonexistent"}:
                    continue
                got: Counter[Item] = Counter()
                for _uid, m, raw in mailcheck.messages(c, name):
                    seen.raw[m.sha] = raw
                    got[Item(m.sha, m.size, m.flags, mailcheck.utc_date(m.date))] += 1
                seen.folders[self.logical(name)] = got
            return seen
        finally:
            c.logout()

    def count(self, user: str) -> int:
        """Messages in all folders (STATUS), cheap enough to poll."""
        c = imaplib.IMAP4("127.0.0.1", self.port)
        try:
            c.login(self.login(user), PW)
            n = 0
            for name, (_sep, attrs) in mailcheck.folders(c).items():
                if {a.lower() for a in attrs} & {"\\noselect", "\\nonexistent"}:
                    continue
                typ, data = c.status(
                    '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"', "(MESSAGES)"
                )
                if typ == "OK":
                    n += int(re.search(rb"MESSAGES (\d+)", data[-1] or b"")[1])  # type: ignore[index]
            return n
        finally:
            c.logout()


@pytest.fixture
def start(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[Kind], Running]]:
    """``start(kind)``: a running server of that kind with users src, dst and dst2, its
    ``src`` account under the source-untouched guard (tests/source_guard.py; Dovecot's and
    Cyrus's through their factories)."""
    quirky: list[QuirkyServer] = []
    others: list[Any] = []
    users = dict.fromkeys(USERS, PW)
    with contextlib.ExitStack() as guards:

        def make(kind: Kind) -> Running:
            if kind.name == "dovecot":
                factory = request.getfixturevalue("dovecot_factory")
                return Running(kind, factory(users=users, separator="/"))
            if kind.name == "cyrus":
                return Running(kind, request.getfixturevalue("cyrus_factory")(users=users))
            loaders: tuple[str, ...]
            if kind.name == "imap4d":
                request.getfixturevalue("imap4d_installed")
                srv: Any = Imap4dServer(tmp_path / f"imap4d-{len(others)}", users=users).start()
                others.append(srv)
                loaders = ("add_user", "create_folder", "deliver_many", "session")
            else:
                assert kind.quirks is not None
                srv = QuirkyServer(users=users, quirks=Quirks(**kind.quirks)).start()
                quirky.append(srv)
                loaders = ("add_user", "create_folder", "add_message")
            guards.enter_context(
                guard_sources(request, srv, users=lambda: list(USERS), loaders=loaders)
            )
            return Running(kind, srv)

        try:
            yield make
        finally:
            guards.close()
            for s in others:
                s.stop()
            for q in quirky:
                q.stop()
                assert not q.internal_errors, q.internal_errors


# ---------------------------------------------------------------------------- expectations


def utc_instant(raw: bytes) -> str:
    m = re.search(rb"^Date: (.*?)\r?$", raw, re.MULTILINE)
    assert m, raw[:200]
    when = email.utils.parsedate_to_datetime(m[1].decode())
    return when.astimezone(UTC).strftime("%d-%b-%Y %H:%M:%S +0000")


def expected(src: Seen, dst: Kind) -> Snap:
    """What the destination must hold: the source's mail as ``dst`` can hold it."""
    alters = dst.altering
    out: Snap = {}
    for folder, items in src.folders.items():
        if not items:
            continue
        got: Counter[Item] = Counter()
        for it, n in items.items():
            raw = src.raw[it.sha]
            if alters is not None:
                raw = alters.stored(raw)
            flags = it.flags if dst.keywords else tuple(f for f in it.flags if f[0] == "\\")
            date = it.date if dst.internaldate_settable else utc_instant(raw)
            got[Item(hashlib.sha256(raw).hexdigest(), len(raw), flags, date)] += n
        out[dst.dest_folder(folder)] = got
    return out


def target_folder(folder: str, dst: Kind, have: Snap) -> str:
    """Where a logical folder lands: its name, or (a character refused) the one folder
    whose name is it with only the refused characters replaced."""
    if not any(ch in folder for ch in dst.refused):
        return folder
    pattern = "".join(
        "[^" + re.escape(dst.refused) + "]+" if ch in dst.refused else re.escape(ch)
        for ch in folder
    )
    hits = [name for name in have if re.fullmatch(pattern, name)]
    assert len(hits) == 1, f"{folder!r}: no single folder like {pattern!r} in {sorted(have)}"
    return hits[0]


def assert_exact(want: Snap, got: Seen, dst: Kind) -> None:
    """Every folder exact at its name (multiplicity too), nothing anywhere else."""
    for folder, items in want.items():
        name = target_folder(folder, dst, got.folders)
        assert name in got.folders, f"{folder!r} missing: {sorted(got.folders)}"
        have = got.folders[name]
        assert have == items, (
            f"{folder!r}: missing or different {sorted((items - have).elements())}, "
            f"extra {sorted((have - items).elements())}"
        )
    everything: Counter[Item] = Counter()
    for items in want.values():
        everything.update(items)
    assert got.everything() == everything


def assert_nothing_doubled(want: Snap, got: Seen) -> None:
    """After a kill: no message (by its bytes) more often than it should be, in its
    folder and overall."""

    def by_bytes(items: Counter[Item]) -> Counter[str]:
        out: Counter[str] = Counter()
        for it, n in items.items():
            out[it.sha] += n
        return out

    for name, have in got.folders.items():
        extra = by_bytes(have) - by_bytes(want.get(name, Counter()))
        if name in want:
            assert not extra, f"{name!r}: {sum(extra.values())} more than on the source"
    everything: Counter[Item] = Counter()
    for items in want.values():
        everything.update(items)
    extra = by_bytes(got.everything()) - by_bytes(everything)
    assert not extra, f"{sum(extra.values())} messages more than on the source"


# ---------------------------------------------------------------------------- the runs


def move_args(src: Running, dst: Running, work: Path, dest_user: str, src_port: int) -> list[str]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "pw").write_text(PW + "\n")
    return [
        sys.executable,
        "-m",
        "yippiemove.cli",
        "move",
        "--source",
        f"imap://{src.login('src')}@127.0.0.1:{src_port}".replace("@yippiemove", "%40yippiemove"),
        "--dest",
        f"imap://{dst.login(dest_user)}@127.0.0.1:{dst.port}".replace(
            "@yippiemove", "%40yippiemove"
        ),
        "--source-password-file",
        str(work / "pw"),
        "--dest-password-file",
        str(work / "pw"),
        "--no-starttls",
        "--state",
        str(work / "state.sqlite"),
        "--report",
        str(work / "report.json"),
    ]


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )


def totals(work: Path) -> dict[str, int]:
    return json.loads((work / "report.json").read_text())["totals"]


def check_report(
    r: subprocess.CompletedProcess[str], work: Path, src: Seen, dst: Kind, copied: int
) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    t = totals(work)
    assert t["failed"] == 0 and t["source_count"] == src.total(), (t, out[-3000:])
    assert t["copied"] == copied, (t, out[-3000:])
    assert t["copied"] + t["already_present"] == src.total(), t
    if dst.altering is not None:  # every message has CRLFs: each is stored altered
        assert t.get("altered") == src.total(), t
        assert "altered by the server" in out, out[-3000:]
    else:
        assert not t.get("altered"), t


def pair_marks(source: Kind, dest: Kind) -> list[pytest.MarkDecorator]:
    reasons = [r for r in (source.source_fix, dest.fix_as_destination(source)) if r]
    return (
        [pytest.mark.xfail(strict=True, reason=" + ".join(dict.fromkeys(reasons)))]
        if reasons
        else []
    )


def default_pairs() -> list[tuple[str, str]]:
    pairs = [(k, "dovecot") for k in KINDS if k != "dovecot"]  # Dovecot -> Dovecot: --matrix-full
    pairs += [("dovecot", k) for k in KINDS if k != "dovecot"]
    return [*pairs, ("cyrus", "imap4d"), ("imap4d", "cyrus")]


def all_pairs() -> list[tuple[str, str]]:
    return [(a, b) for a in KINDS for b in KINDS]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pair" not in metafunc.fixturenames:
        return
    pairs = all_pairs() if metafunc.config.getoption("--matrix-full") else default_pairs()
    metafunc.parametrize(
        "pair",
        [
            pytest.param((a, b), id=f"{a}->{b}", marks=pair_marks(KINDS[a], KINDS[b]))
            for a, b in pairs
        ],
    )


def kill_mid_copy(args: list[str], dst: Running, work: Path, total: int) -> int:
    """Start the run, SIGKILL it once a first message is on the destination; returns
    how many were there then."""
    with open(work / "killed.log", "w") as log:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        there = 0
        while time.monotonic() < deadline and p.poll() is None:
            there = dst.count("dst2")
            if there:
                break
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    assert p.returncode == -signal.SIGKILL, (
        f"the run ended ({p.returncode}) before the kill: {(work / 'killed.log').read_text()[-2000:]}"
    )
    assert there < total, "killed only after every message was there"
    return there


def killed_then_resumed(src: Running, dst: Running, want: Snap, work: Path, total: int) -> None:
    """Into dst2: a run killed with SIGKILL while copying (a slow source link), nothing
    doubled; then a re-run: exact, nothing doubled."""
    slow = [True]
    with FaultProxy(src.port, lambda _n: [Fault.throttle(KILL_RATE)] if slow[0] else []) as link:
        args = move_args(src, dst, work, "dst2", link.port)
        kill_mid_copy(args, dst, work, total)
        assert_nothing_doubled(want, dst.snapshot("dst2"))
        slow[0] = False
        r = run(args)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        t = totals(work)
        assert t["failed"] == 0 and t["copied"] + t["already_present"] == total, t
    assert_exact(want, dst.snapshot("dst2"), dst.kind)


def test_matrix(pair: tuple[str, str], start: Callable[[Kind], Running], tmp_path: Path) -> None:
    source, dest = KINDS[pair[0]], KINDS[pair[1]]
    src = start(source)
    src.seed("src", shared_mailbox())
    seeded = time.monotonic()
    before = src.snapshot("src")
    assert before.total() == len(shared_mailbox())
    dst = start(dest)
    want = expected(before, dest)
    if not (source.quirks or dest.quirks):
        # Real servers take the clock's second for a new folder's UIDVALIDITY: let the
        # destination's differ from the source's, or a re-run without the state file
        # could take them for the same mailbox (test_mailutils_moves.py, the last test).
        time.sleep(max(0.0, 1.05 - (time.monotonic() - seeded)))

    # 4 (beside 1-3, into another account): kill -9 while copying, then a re-run
    with ThreadPoolExecutor(1) as pool:
        killed = pool.submit(
            killed_then_resumed, src, dst, want, tmp_path / "killed", before.total()
        )

        # 1. the first run: exact (or as the destination alters it, and said so)
        work = tmp_path / "run"
        args = move_args(src, dst, work, "dst", src.port)
        r = run(args)
        check_report(r, work, before, dest, copied=before.total())
        first = dst.snapshot("dst")
        assert_exact(want, first, dest)

        # 2. a re-run copies nothing
        r = run(args)
        check_report(r, work, before, dest, copied=0)
        assert dst.snapshot("dst").folders == first.folders

        # 3. without the state file: copies nothing, doubles nothing
        (work / "state.sqlite").unlink()
        r = run(args)
        check_report(r, work, before, dest, copied=0)
        assert dst.snapshot("dst").folders == first.folders

        killed.result()

    # the source never changes
    assert src.snapshot("src").folders == before.folders
