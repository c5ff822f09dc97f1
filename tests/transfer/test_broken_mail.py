"""Broken mail (issue 6, "Big and broken mail"): odd messages and the shared real-world
corpus, between real servers.

Each message arrives byte-exact -- the destination serves the bytes the source serves,
judged by tests/mailcheck.py (stdlib imaplib: SHA-256 of the bytes, flags, INTERNALDATE,
multiplicity) -- or is reported, per message, with the server's words; the job goes on,
and a re-run changes nothing.

What Dovecot 2.3 does with odd bytes (asserted below, so a Dovecot that changes shows up):

* serving a maildir file: a bare LF goes out as CRLF, a bare CR as it is, and a NUL
  byte as 0x80 (Dovecot never sends a NUL); lines of any length, 8-bit header bytes,
  headers without a body and bodies without headers go out unchanged;
* APPEND: a zero-byte message is refused (``NO Can't save a zero byte message``); a
  NUL is stored as 0x80; a CR just before CRLF and a CR at the very end are dropped
  (the stored message is shorter: the mover's verify reports it); an INTERNALDATE in
  the future is replaced by the time of the APPEND (the mover's verify notes it).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from tests import mailcheck
from yippiemove.testing.dovecot import MaildirMessage

FOLDER = "Broken"
WHEN = datetime(2019, 6, 1, 8, 30, tzinfo=UTC)


def head(name: str, *, date: bytes | None = b"Mon, 1 Jan 2018 10:00:00 +0100", mid: bool = True):
    """Ordinary CRLF header lines (no blank line after them)."""
    lines = [b"From: Sender <sender@example.org>", b"To: rcpt@example.net"]
    lines.append(b"Subject: " + name.encode())
    if date is not None:
        lines.append(b"Date: " + date)
    if mid:
        lines.append(b"Message-ID: <" + name.encode() + b"@broken.example>")
    return b"\r\n".join(lines) + b"\r\n"


def body(name: str, text: bytes = b"Hello\r\n") -> bytes:
    return head(name) + b"\r\n" + text


# name -> raw bytes as written into the source Maildir (each one is different)
ODD: dict[str, bytes] = {
    "utf8-header": b"From: J\xc3\xbcrgen M\xc3\xbcller <j@example.de>\r\n"
    b"Subject: M\xc3\xa4rz \xe2\x9c\x93 raw UTF-8, no encoded word\r\n"
    + head("utf8-header")
    + b"\r\nbody\r\n",
    "latin1-header": b"From: J\xfcrgen <j@example.de>\r\nSubject: Gr\xfc\xdfe aus K\xf6ln\r\n"
    + head("latin1-header")
    + b"\r\nLatin-1 in the body too: \xe9t\xe9\r\n",
    "bare-cr-body": body("bare-cr-body", b"a bare CR\r in the body\r\nand\rmore\r\n"),
    "bare-cr-header": b"X-Odd: a bare\rCR in a header\r\n" + body("bare-cr-header"),
    "bare-lf-mixed": body("bare-lf-mixed", b"CRLF line\r\nbare LF line\nlast\r\n"),
    "lf-only": body("lf-only").replace(b"\r\n", b"\n") + b"every line ends in LF\n",
    "nul-bytes": b"X-Nul: a\x00b\r\n" + body("nul-bytes", b"NUL \x00 in the body\r\n\x00\r\n"),
    "line-1000": body("line-1000", b"L" * 1000 + b"\r\nend\r\n"),
    "line-20000": body("line-20000", b"w" * 20_000 + b"\r\n"),
    "no-newline-at-end": body("no-newline-at-end", b"no line end after this"),
    "header-12000": b"X-Long: " + b"h" * 12_000 + b"\r\n" + body("header-12000"),
    "folded-header-5000": b"X-Folded: "
    + b"\r\n\t".join(b"part%04d" % i for i in range(500))
    + b"\r\n"
    + body("folded-header-5000"),
    "no-date": head("no-date", date=None) + b"\r\nno Date header\r\n",
    "no-message-id": head("no-message-id", mid=False) + b"\r\nno Message-ID\r\n",
    "date-words": head("date-words", date=b"sometime last week") + b"\r\nx\r\n",
    "date-impossible": head("date-impossible", date=b"Fri, 31 Feb 1900 25:61:61 +9999")
    + b"\r\nx\r\n",
    "date-empty": head("date-empty", date=b"") + b"\r\nx\r\n",
    "date-twice": b"Date: Tue, 2 Jan 2018 10:00:00 +0000\r\n" + body("date-twice"),
    "empty-body": head("empty-body") + b"\r\n",
    "headers-only": head("headers-only"),
    "no-header": b"no header at all, just text\r\n",
    "just-crlf": b"\r\n",
    "just-lf": b"\n",
    "8bit-body": body("8bit-body", bytes(range(0x80, 0x100)) + b"\r\n"),
}
# Twins without Date or Message-ID: byte-identical, so only multiplicity tells them apart.
TWIN = b"Subject: twin without Date and Message-ID\r\n\r\nsame bytes\r\n"
# What Dovecot refuses to store, with its words.
EMPTY = b""
EMPTY_REFUSAL = "Can't save a zero byte message"
# INTERNALDATEs: the epoch is kept; a date in the future is replaced by Dovecot's APPEND.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE = datetime(2031, 3, 3, 3, 3, 3, tzinfo=UTC)
FLAG_SETS = [(), ("\\Seen",), ("\\Seen", "\\Answered"), ("\\Flagged", "$Forwarded"), ("\\Draft",)]


def served(raw: bytes) -> bytes:
    """What Dovecot serves for a maildir file: bare LF as CRLF, NUL as 0x80."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", raw).replace(b"\x00", b"\x80")


def load_odd(server) -> list[tuple[str, bytes, datetime]]:
    """Deliver every odd message (plus the twins, the empty one and two odd dates) into
    FOLDER, in a fixed order; returns (name, raw, INTERNALDATE) in UID order."""
    items: list[tuple[str, bytes, datetime]] = [("empty", EMPTY, WHEN)]
    for k, (name, raw) in enumerate(ODD.items()):
        items.append((name, raw, WHEN + timedelta(hours=k)))
    items += [("twin-1", TWIN, WHEN), ("twin-2", TWIN, WHEN)]
    items += [("epoch", body("epoch"), EPOCH), ("future", body("future"), FUTURE)]
    server.deliver_many(
        "src",
        FOLDER,
        [
            MaildirMessage(raw, FLAG_SETS[k % len(FLAG_SETS)], when)
            for k, (_, raw, when) in enumerate(items)
        ],
    )
    return items


def folder_messages(server, user: str, folder: str) -> list[tuple[int, mailcheck.Msg, bytes]]:
    c = mailcheck.connect(server.port, user, server.users[user])
    try:
        return mailcheck.messages(c, folder)
    finally:
        c.logout()


def run(src, dst, tmp_path, *extra: str):
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    r = mailcheck.run_move(
        src.port,
        dst.port,
        tmp_path,
        "--report",
        str(report),
        *extra,
        ca_file=src.ca_file,
        source_password=src.users["src"],
        dest_password=dst.users["dst"],
    )
    return r, json.loads(report.read_text())


def test_odd_messages_arrive_exact_or_reported_and_rerun_changes_nothing(dovecot, tmp_path):
    items = load_odd(dovecot)
    src = folder_messages(dovecot, "src", FOLDER)
    assert len(src) == len(items)
    # What the source serves: Dovecot's conversions only (see the module docstring).
    for (name, raw, _), (_uid, _m, got) in zip(items, src, strict=True):
        assert got == served(raw), name
    uid_of = {name: uid for (name, _, _), (uid, _, _) in zip(items, src, strict=True)}

    r, rep = run(dovecot, dovecot, tmp_path, "--verify-content")
    assert r.returncode == 1, r.stderr + r.stdout  # 1: some messages failed, the rest done
    # Exactly the empty message is refused, with Dovecot's words, and the job went on.
    (f,) = rep["failures"]
    assert (f["uid"], f["size"], f["folder"]) == (uid_of["empty"], 0, FOLDER)
    assert f["reason"].startswith("destination refused it: ") and EMPTY_REFUSAL in f["reason"]
    assert f"FAILED UID {uid_of['empty']} (0 bytes" in r.stdout
    t = rep["totals"]
    assert t["copied"] == len(items) - 1 and t["failed"] == 1
    # The mover read every stored message back: the same SHA-256 as the source's.
    assert t["content_verified"] == len(items) - 1

    # Everything else arrived with the source's bytes and flags; the dates too, except
    # the future one that Dovecot replaced -- which the report notes.
    dst = folder_messages(dovecot, "dst", FOLDER)
    want = Counter(m for uid, m, _ in src if uid != uid_of["empty"])
    got = Counter(m for _, m, _ in dst)
    future_src = next(m for uid, m, _ in src if uid == uid_of["future"])
    (future_dst,) = [m for m in got if m.sha == future_src.sha]
    assert future_dst.date != future_src.date
    assert got - Counter([future_dst]) == want - Counter([future_src])
    assert replace(future_dst, date=future_src.date) == future_src
    (folder,) = [x for x in rep["folders"] if x["source"] == FOLDER]
    (note,) = [n for n in folder["notes"] if f"UID {uid_of['future']}:" in n]
    assert "INTERNALDATE" in note and future_src.date in note
    # The epoch survived, and the two twins are two messages.
    assert any(m.date == "01-Jan-1970 00:00:00 +0000" for m in got)
    twin_sha = next(m.sha for uid, m, _ in src if uid == uid_of["twin-1"])
    assert sum(n for m, n in got.items() if m.sha == twin_sha) == 2

    # A re-run: the refusal again, nothing copied, nothing changed on the destination.
    before = mailcheck.uids(dovecot.port, "dst", "dstpass")
    r2, rep2 = run(dovecot, dovecot, tmp_path)
    assert r2.returncode == 1, r2.stderr + r2.stdout
    t2 = rep2["totals"]
    assert (t2["copied"], t2["already_present"], t2["failed"]) == (0, len(items) - 1, 1)
    assert [x["uid"] for x in rep2["failures"]] == [uid_of["empty"]]
    assert mailcheck.uids(dovecot.port, "dst", "dstpass") == before
    assert Counter(m for _, m, _ in folder_messages(dovecot, "dst", FOLDER)) == got


# Messages Dovecot stores changed on APPEND (one byte shorter), and an ordinary one.
ALTERED = {
    "trailing-cr": body("trailing-cr", b"ends in a bare CR\r"),
    "cr-cr-lf": body("cr-cr-lf", b"CR CR LF\r\r\nend\r\n"),
    "lone-cr": b"\r",
}


def load_altered(server) -> dict[str, int]:
    names = ["ordinary-1", *ALTERED, "ordinary-2"]
    raws = [body("ordinary-1"), *ALTERED.values(), body("ordinary-2")]
    server.deliver_many("src", FOLDER, [MaildirMessage(r, ("\\Seen",), WHEN) for r in raws])
    return {name: uid for uid, name in enumerate(names, start=1)}


def test_message_the_destination_stores_changed_is_reported(dovecot, tmp_path):
    """Dovecot accepts these APPENDs but stores one byte less; the verify says so."""
    uid_of = load_altered(dovecot)
    src = {uid: (m, raw) for uid, m, raw in folder_messages(dovecot, "src", FOLDER)}
    for name, raw in ALTERED.items():
        assert src[uid_of[name]][1] == raw  # served as delivered (bare CRs stay)
    r, rep = run(dovecot, dovecot, tmp_path)
    assert r.returncode == 1, r.stderr + r.stdout
    reasons = {f["uid"]: f["reason"] for f in rep["failures"]}
    assert set(reasons) == {uid_of[n] for n in ALTERED}
    for name, raw in ALTERED.items():
        reason = reasons[uid_of[name]]
        assert f"has {len(raw) - 1} bytes, the source {len(raw)}" in reason, reason
    # The ordinary ones are exact.
    dst = Counter(m for _, m, _ in folder_messages(dovecot, "dst", FOLDER))
    for name in ("ordinary-1", "ordinary-2"):
        assert dst[src[uid_of[name]][0]] == 1


def test_message_the_destination_stores_changed_is_not_appended_again(dovecot, tmp_path):
    load_altered(dovecot)
    run(dovecot, dovecot, tmp_path)
    after_first = mailcheck.uids(dovecot.port, "dst", "dstpass")[FOLDER]
    assert len(after_first) == 2 + len(ALTERED)
    r2, rep2 = run(dovecot, dovecot, tmp_path)
    assert r2.returncode == 1
    assert len(rep2["failures"]) == len(ALTERED)  # still reported...
    # ...but not stored a second time.
    assert mailcheck.uids(dovecot.port, "dst", "dstpass")[FOLDER] == after_first


# --------------------------------------------------------------------------- the corpus

LIMIT = 100_000  # bytes: the destination's quota_max_mail_size


def load_corpus(server, corpus_dir) -> list[str]:
    """Every corpus file into folder "Corpus" (flags and dates varied); names by UID."""
    files = sorted(p for p in corpus_dir.iterdir() if p.suffix == ".eml")
    assert len(files) > 50
    zone = timezone(timedelta(hours=-3))
    server.deliver_many(
        "src",
        "Corpus",
        [
            MaildirMessage(
                p.read_bytes(),
                FLAG_SETS[k % len(FLAG_SETS)],
                datetime(2005 + k % 20, 1 + k % 12, 1 + k % 28, k % 24, tzinfo=zone),
            )
            for k, p in enumerate(files)
        ],
    )
    # and an ordinary folder after it, to see the job go on
    server.deliver_many("src", "Later", [MaildirMessage(body(f"later-{i}")) for i in range(3)])
    return [p.name for p in files]


def test_corpus_with_a_size_limit_on_the_destination(
    dovecot, dovecot_factory, tmp_path, corpus_dir
):
    """The big corpus messages and the empty one are refused with Dovecot's words, every
    other one arrives exact, other folders are copied, and a re-run changes nothing."""
    names = load_corpus(dovecot, corpus_dir)
    dest = dovecot_factory(users={"dst": "dstpass"}, max_message_size=LIMIT)
    src = folder_messages(dovecot, "src", "Corpus")
    assert len(src) == len(names)
    too_big = {uid for uid, m, _ in src if m.size > LIMIT}
    empty = {uid for uid, m, _ in src if m.size == 0}
    # the corpus's 3 MB, 1.8 MB, 246 kB and 210 kB messages, and its empty file
    assert len(too_big) == 4 and len(empty) == 1

    for attempt in range(2):
        r, rep = run(dovecot, dest, tmp_path)
        assert r.returncode == 1, r.stderr + r.stdout
        reasons = {f["uid"]: f["reason"] for f in rep["failures"]}
        assert set(reasons) == too_big | empty, {names[u - 1]: w for u, w in reasons.items()}
        for uid in too_big:
            assert reasons[uid].startswith("destination refused it: NO [LIMIT] Mail size is ")
        for uid in empty:
            assert EMPTY_REFUSAL in reasons[uid]
        t = rep["totals"]
        assert t["failed"] == len(too_big | empty)
        assert t["copied"] == (len(names) - len(reasons) + 3 if attempt == 0 else 0)
        got = mailcheck.snapshot(dest.port, "dst", "dstpass")
        want = Counter(m for uid, m, _ in src if uid not in reasons)
        assert got["Corpus"] == want
        assert got["Later"] == mailcheck.snapshot(dovecot.port, "src", "srcpass")["Later"]
        if attempt == 0:
            first = got
            uids = mailcheck.uids(dest.port, "dst", "dstpass")
    assert got == first
    assert mailcheck.uids(dest.port, "dst", "dstpass") == uids


def test_corpus_to_a_strict_cyrus_is_exact_or_refused_in_its_words(
    dovecot, cyrus_factory, tmp_path, corpus_dir
):
    """Cyrus refusing 8-bit headers (reject8bit) and empty messages: those are reported
    with Cyrus's words, the rest is exact (the mover also reads every one back), and a
    re-run changes nothing."""
    names = load_corpus(dovecot, corpus_dir)
    cyrus = cyrus_factory(eight_bit_headers="reject")
    src = folder_messages(dovecot, "src", "Corpus")
    eight_bit = set()
    for uid, _m, raw in src:
        header = re.split(rb"\r\n\r\n", raw, maxsplit=1)[0]
        if any(b > 0x7F for b in header):
            eight_bit.add(uid)
    empty = {uid for uid, m, _ in src if m.size == 0}
    assert len(eight_bit) >= 3 and len(empty) == 1
    for attempt in range(2):
        r, rep = run(dovecot, cyrus, tmp_path, "--verify-content")
        assert r.returncode == 1, r.stderr + r.stdout
        reasons = {f["uid"]: f["reason"] for f in rep["failures"]}
        assert set(reasons) == eight_bit | empty, {names[u - 1]: w for u, w in reasons.items()}
        for uid in eight_bit:
            assert "Message contains non-ASCII characters in headers" in reasons[uid]
        for uid in empty:
            assert "Zero-length message literal" in reasons[uid]
        t = rep["totals"]
        assert t["content_verified"] == len(names) - len(reasons) + 3
        assert t["copied"] == (len(names) - len(reasons) + 3 if attempt == 0 else 0)
        got = mailcheck.in_utc(mailcheck.snapshot(cyrus.port, "dst", "dstpass"))
        want = Counter(m for uid, m, _ in src if uid not in reasons)
        assert got["INBOX.Corpus"] == mailcheck.in_utc({"c": want})["c"]
        if attempt == 0:
            first = got
    assert got == first


def test_failed_messages_are_reported_with_their_message_id(dovecot, tmp_path):
    """Every failure line carries the Message-ID of a message that has one (issue 13),
    the verify's too (its source listing is fetched without Message-IDs), on a re-run too."""
    uid_of = load_altered(dovecot)
    want = {
        uid_of["trailing-cr"]: "<trailing-cr@broken.example>",
        uid_of["cr-cr-lf"]: "<cr-cr-lf@broken.example>",
        uid_of["lone-cr"]: None,  # no header at all
    }
    for _ in range(2):
        r, rep = run(dovecot, dovecot, tmp_path)
        assert r.returncode == 1, r.stderr + r.stdout
        assert {f["uid"]: f["message_id"] for f in rep["failures"]} == want
        for mid in filter(None, want.values()):
            assert mid in r.stdout + r.stderr  # the failure lines name it
