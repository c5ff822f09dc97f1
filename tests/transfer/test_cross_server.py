"""`yippiemove move` between two real servers of different kinds (issue 5, "Proven on two
servers"): Dovecot with "/" separators, Cyrus with its classic ``INBOX.`` namespace and "."
separators and special folders of other names, and Dovecot to Dovecot across layouts.

The judge is tests/mailcheck.py (stdlib imaplib): per folder, per message the SHA-256 of
the bytes, the flags and keywords, the INTERNALDATE instant and the multiplicity.
Servers show one instant differently (zone, day padding), so dates are compared in UTC.

Tests named ``*_special_*`` check that Sent, Drafts, Trash and Junk land in the
destination's own folders of that kind (found by SPECIAL-USE), with no second Sent.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests import mailcheck
from tests.doubles.cyrus import CyrusMessage, CyrusServer
from yippiemove.imap import utf7
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

# Folders on the Dovecot ("/") side besides INBOX and the special ones; Unicode names.
# None may be a well-known special name in any language ("Entwürfe" is German for
# Drafts): the mover maps those by name too.
ORDINARY = ["Archive/2019/Q1/Deep", "Geschäftlich", "😀 Emoji", "R&D", "Projects/Ünïcode & more"]
EMPTY = "Empty/Still empty"
# Dovecot's special folders (its configuration marks them \Sent... when they exist).
DOVECOT_SPECIAL = {"\\Sent": "Sent", "\\Drafts": "Drafts", "\\Trash": "Trash", "\\Junk": "Junk"}

INDIA = timezone(timedelta(hours=5, minutes=30))
PACIFIC = timezone(timedelta(hours=-8))
FLAG_SETS = [
    (),
    ("\\Seen",),
    ("\\Seen", "\\Answered"),
    ("\\Flagged", "$Forwarded"),
    ("\\Draft", "$label1", "NonJunk"),
    ("\\Seen", "\\Deleted"),
    ("\\Seen", "$Junk", "Work"),
]


def enc(name: str) -> str:
    return utf7.encode(name).decode()


def message(i: int, *, msgid: str | None = "auto", body: bytes = b"", extra: str = "") -> bytes:
    headers = [
        f"From: Sender {i} <sender{i}@example.org>",
        "To: Receiver <rcpt@example.net>",
        f"Subject: Test message {i} =?utf-8?q?=C3=A4?={extra}",
        f"Date: Mon, {1 + i % 28} Jan 2018 10:{i % 60:02d}:00 +0100",
    ]
    if msgid == "auto":
        headers.append(f"Message-ID: <msg{i}@example.org>")
    elif msgid is not None:
        headers.append(f"Message-ID: {msgid}")
    text = body or (f"Hello {i}\r\n".encode() + b"x" * (i * 37 % 3000))
    return "\r\n".join(headers).encode() + b"\r\n\r\n" + text + b"\r\n"


def mail_set(folders: list[str]) -> list[tuple[str, bytes, tuple[str, ...], datetime]]:
    """(folder, bytes, flags, INTERNALDATE) of a varied mailbox, in delivery order."""
    out = []
    n = 0
    for folder in folders:
        for k in range(6):
            n += 1
            zone = (UTC, INDIA, PACIFIC)[n % 3]
            when = datetime(2001 + n % 25, 1 + n % 12, 1 + n % 28, n % 24, n % 60, 7, tzinfo=zone)
            out.append((folder, message(n), FLAG_SETS[(n + k) % len(FLAG_SETS)], when))
    day = datetime(2010, 5, 5, 12, 0, tzinfo=INDIA)
    twin = message(1000)
    out += [
        # byte-identical twins, one Message-ID on two different messages, none at all
        ("INBOX", twin, ("\\Seen",), day),
        ("INBOX", twin, ("\\Seen",), day),
        ("INBOX", message(1001, msgid="<same@x>", body=b"one"), (), day),
        ("INBOX", message(1002, msgid="<same@x>", body=b"two"), (), day),
        ("INBOX", message(1003, msgid=None), ("\\Flagged",), day),
        # raw UTF-8 in a header (Cyrus keeps it: eight_bit_headers="keep"), a bare CR,
        # 8-bit body bytes, a big one
        ("INBOX", message(1004, extra=" M\xe4rz \u2713"), (), day),
        ("INBOX", message(1005, body=b"a bare CR\r here, 8-bit \xe4\xff\r\nend"), (), day),
        ("INBOX", message(1006, body=b"big\r\n" + b"0123456789abcdef" * 40000), (), day),
    ]
    return out


def dovecot_mail() -> list[tuple[str, bytes, tuple[str, ...], datetime]]:
    return mail_set(["INBOX", *DOVECOT_SPECIAL.values(), *ORDINARY])


def load_dovecot(server: DovecotServer, mail: list, user: str = "src") -> None:
    """Maildir delivery: the bytes exactly as given (imaplib's APPEND would rewrite the
    bare CR), each INTERNALDATE as its instant (Dovecot keeps no zone)."""
    by_folder: dict[str, list[MaildirMessage]] = {}
    for folder, raw, flags, when in mail:
        name = folder if folder == "INBOX" else server.prefix + folder
        by_folder.setdefault(name, []).append(MaildirMessage(raw, flags, when))
    for name, items in by_folder.items():
        server.deliver_many(user, name, items)


def load_cyrus(server: CyrusServer, mail: list, user: str = "src") -> None:
    """APPEND (MULTIAPPEND per folder), INTERNALDATEs with their zones."""
    by_folder: dict[str, list[CyrusMessage]] = {}
    for folder, raw, flags, when in mail:
        by_folder.setdefault(folder, []).append(CyrusMessage(raw, flags, when))
    for name, items in by_folder.items():
        server.deliver_many(user, name, items)


def snap(server: DovecotServer | CyrusServer, user: str) -> dict[str, Counter]:
    password = server.users[user]
    return mailcheck.in_utc(mailcheck.snapshot(server.port, user, password))


def move(src, dst, tmp_path, *extra: str, src_user: str = "src", dst_user: str = "dst"):
    # Both test servers' certificates come from one test CA (made once per process).
    assert src.ca_file.read_bytes() == dst.ca_file.read_bytes()
    return mailcheck.run_move(
        src.port,
        dst.port,
        tmp_path,
        "--report",
        str(tmp_path / "report.json"),
        *extra,
        ca_file=src.ca_file,
        source_user=src_user,
        dest_user=dst_user,
        source_password=src.users[src_user],
        dest_password=dst.users[dst_user],
    )


def report(tmp_path) -> dict:
    return json.loads((tmp_path / "report.json").read_text())


def assert_exact_except_specials(
    src: dict[str, Counter], dst: dict[str, Counter], name_map: dict[str, str], specials: set[str]
) -> None:
    """Every ordinary source folder exact at its mapped name; and, wherever the special
    folders' messages landed, the destination holds exactly the source's messages."""
    for folder, msgs in src.items():
        if folder in specials:
            continue
        target = name_map.get(folder, folder)
        assert target in dst, f"{folder!r} -> {target!r} missing; destination has {sorted(dst)}"
        assert dst[target] == msgs, f"folder {folder!r} -> {target!r} differs"
    assert mailcheck.everything(dst) == mailcheck.everything(src)


def assert_rerun_changes_nothing(src, dst, tmp_path, before: dict, dst_user: str = "dst") -> None:
    """A second run copies nothing and changes nothing (same UIDs, same messages)."""
    uids = mailcheck.uids(dst.port, dst_user, dst.users[dst_user])
    r = move(src, dst, tmp_path, dst_user=dst_user)
    assert r.returncode == 0, r.stderr + r.stdout
    rep = report(tmp_path)
    assert rep["totals"]["copied"] == 0
    assert rep["totals"]["failed"] == 0
    assert rep["totals"]["already_present"] == rep["totals"]["source_count"]
    assert mailcheck.uids(dst.port, dst_user, dst.users[dst_user]) == uids
    assert snap(dst, dst_user) == before


# --------------------------------------------------------------------------- Dovecot -> Cyrus


def dovecot_to_cyrus_names() -> dict[str, str]:
    names = {"INBOX": "INBOX"}
    for f in [*ORDINARY, EMPTY]:
        names[enc(f)] = enc("INBOX." + f.replace("/", "."))
    return names


def cyrus_parents(names: list[str]) -> set[str]:
    """The parent folders Cyrus makes (real, selectable) for nested names."""
    out = set()
    for name in names:
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(2, len(parts))}
    return out


@pytest.fixture
def dovecot_to_cyrus(dovecot, cyrus, tmp_path):
    """Dovecot (src) loaded and moved to Cyrus (dst); returns the snapshots and the run."""
    load_dovecot(dovecot, dovecot_mail())
    dovecot.deliver_many("src", EMPTY, [])
    src = snap(dovecot, "src")
    r = move(dovecot, cyrus, tmp_path)
    return src, r


def test_dovecot_to_cyrus_exact_then_rerun_changes_nothing(
    dovecot, cyrus, dovecot_to_cyrus, tmp_path
):
    src, r = dovecot_to_cyrus
    assert r.returncode == 0, r.stderr + r.stdout
    dst = snap(cyrus, "dst")
    specials = {enc(n) for n in DOVECOT_SPECIAL.values()}
    assert_exact_except_specials(src, dst, dovecot_to_cyrus_names(), specials)
    assert dst[enc("INBOX.Empty.Still empty")] == Counter()
    rep = report(tmp_path)
    total = sum(sum(v.values()) for v in src.values())
    assert total == len(dovecot_mail())
    # (a folder pass retried after a transient error finds its first appends present)
    t = rep["totals"]
    assert t["copied"] + t["already_present"] == total and t["copied"] > 0, (t, r.stderr)
    assert t["failed"] == 0, rep["failures"]
    # keywords survived (Cyrus keeps them), \Deleted too
    inbox = dst["INBOX"]
    assert any("$label1" in m.flags for m in inbox) and any("\\Deleted" in m.flags for m in inbox)
    assert_rerun_changes_nothing(dovecot, cyrus, tmp_path, dst)


def test_dovecot_to_cyrus_special_folders_land_in_cyrus_special_folders(
    dovecot, cyrus, dovecot_to_cyrus
):
    src, r = dovecot_to_cyrus
    assert r.returncode == 0, r.stderr + r.stdout
    dst = snap(cyrus, "dst")
    for use, name in DOVECOT_SPECIAL.items():
        target = enc(cyrus.special_folder(use))  # INBOX.Sent Items, INBOX.Deleted Items...
        assert dst[target] == src[enc(name)], f"{name} -> {target}"
    # no second Sent/Trash/Junk beside Cyrus's own, and nothing else unexpected
    ordinary = set(dovecot_to_cyrus_names().values())
    own = {enc(cyrus.special_folder(use)) for use in DOVECOT_SPECIAL}
    assert set(dst) == ordinary | own | cyrus_parents(sorted(ordinary))
    c = mailcheck.connect(cyrus.port, "dst", "dstpass")
    listed = mailcheck.folders(c)
    c.logout()
    assert "\\sent" in {a.lower() for a in listed["INBOX.Sent Items"][1]}


# --------------------------------------------------------------------------- Cyrus -> Dovecot

CYRUS_ORDINARY = ["INBOX." + f.replace("/", ".") for f in ORDINARY]


def cyrus_mail(server: CyrusServer) -> list:
    specials = [server.special_folder(use) for use in DOVECOT_SPECIAL]
    return mail_set(["INBOX", *specials, *CYRUS_ORDINARY])


def cyrus_to_dovecot_names(server: CyrusServer) -> dict[str, str]:
    names = {"INBOX": "INBOX"}
    for name in [*CYRUS_ORDINARY, *cyrus_parents(CYRUS_ORDINARY)]:
        names[enc(name)] = enc(name.removeprefix("INBOX.").replace(".", "/"))
    return names


@pytest.fixture
def cyrus_to_dovecot(dovecot, cyrus, tmp_path):
    """Cyrus (src) loaded and moved to a Dovecot (dst) whose own Sent, Drafts, Trash and
    Junk exist (empty), as on a real account."""
    load_cyrus(cyrus, cyrus_mail(cyrus))
    for name in DOVECOT_SPECIAL.values():
        dovecot.deliver_many("dst", name, [])
    src = snap(cyrus, "src")
    return src, move(cyrus, dovecot, tmp_path)


def test_cyrus_to_dovecot_exact_then_rerun_changes_nothing(
    dovecot, cyrus, cyrus_to_dovecot, tmp_path
):
    src, r = cyrus_to_dovecot
    assert r.returncode == 0, r.stderr + r.stdout
    dst = snap(dovecot, "dst")
    specials = {enc(cyrus.special_folder(use)) for use in DOVECOT_SPECIAL}
    assert_exact_except_specials(src, dst, cyrus_to_dovecot_names(cyrus), specials)
    t = report(tmp_path)["totals"]
    assert t["copied"] + t["already_present"] == len(cyrus_mail(cyrus)), (t, r.stderr)
    assert t["failed"] == 0
    assert_rerun_changes_nothing(cyrus, dovecot, tmp_path, dst)


def test_cyrus_to_dovecot_special_folders_land_in_dovecot_special_folders(
    dovecot, cyrus, cyrus_to_dovecot
):
    src, r = cyrus_to_dovecot
    assert r.returncode == 0, r.stderr + r.stdout
    dst = snap(dovecot, "dst")
    for use, name in DOVECOT_SPECIAL.items():
        source = enc(cyrus.special_folder(use))
        assert dst[enc(name)] == src[source], f"{source} -> {name}"
    # no "Sent Items", "Deleted Items" or "Spam" beside Dovecot's own
    assert set(dst) == set(cyrus_to_dovecot_names(cyrus).values()) | {
        enc(n) for n in DOVECOT_SPECIAL.values()
    }


# --------------------------------------------------------------------------- Dovecot -> Dovecot


@pytest.fixture
def dovecot_layouts(dovecot, dovecot_factory, tmp_path):
    """Dovecot "/" (maildir fs layout) -> Dovecot "." with prefix "INBOX." (Maildir++),
    whose Sent folder is "Sent Messages" (also \\Sent in Debian's configuration)."""
    dst = dovecot_factory(
        separator=".", prefix="INBOX.", layout="maildir++", users={"dst": "dstpass"}
    )
    for name in ("Sent Messages", "Drafts", "Trash", "Junk"):
        dst.deliver_many("dst", "INBOX." + name, [])
    load_dovecot(dovecot, dovecot_mail())
    dovecot.deliver_many("src", EMPTY, [])
    src = snap(dovecot, "src")
    return dst, src, move(dovecot, dst, tmp_path)


def test_dovecot_fs_slash_to_dovecot_maildirpp_dot_prefix_exact(dovecot, dovecot_layouts, tmp_path):
    dst_server, src, r = dovecot_layouts
    assert r.returncode == 0, r.stderr + r.stdout
    dst = snap(dst_server, "dst")
    names = {"INBOX": "INBOX"}
    for f in [*ORDINARY, EMPTY]:
        names[enc(f)] = enc("INBOX." + f.replace("/", "."))
    specials = {enc(n) for n in DOVECOT_SPECIAL.values()}
    assert_exact_except_specials(src, dst, names, specials)
    c = mailcheck.connect(dst_server.port, "dst", "dstpass")
    typ, data = c.namespace()
    c.logout()
    assert typ == "OK"
    assert data[0].startswith(b'(("INBOX." "."))')
    assert_rerun_changes_nothing(dovecot, dst_server, tmp_path, dst)


def test_dovecot_to_dovecot_special_folders_land_in_the_destinations_own(dovecot, dovecot_layouts):
    dst_server, src, r = dovecot_layouts
    assert r.returncode == 0, r.stderr + r.stdout
    dst = snap(dst_server, "dst")
    targets = {"Sent": "INBOX.Sent Messages", "Drafts": "INBOX.Drafts", "Trash": "INBOX.Trash"}
    targets["Junk"] = "INBOX.Junk"
    for name, target in targets.items():
        assert dst[enc(target)] == src[enc(name)], f"{name} -> {target}"
    assert enc("INBOX.Sent") not in dst  # no second Sent beside "Sent Messages"


# --------------------------------------------------------------------------- what Cyrus refuses


def test_messages_cyrus_refuses_are_reported_with_its_words(dovecot, cyrus_factory, tmp_path):
    """Dovecot keeps (and serves) mail Cyrus refuses: reported per message with the
    server's words, the rest copied exactly, and a re-run neither loses nor doubles."""
    cyrus = cyrus_factory(eight_bit_headers="reject")
    good = [message(1), message(2, body=b"fine")]
    refused = {
        b"": "Zero-length message literal",
        b"no header, just text\r\n": "Message contains invalid header",
        message(3, extra=" M\xe4rz"): "non-ASCII characters in headers",
    }
    for raw in [good[0], *refused, good[1]]:
        dovecot.deliver("src", "INBOX", raw, ("\\Seen",))
    src = snap(dovecot, "src")
    for attempt in range(2):
        r = move(dovecot, cyrus, tmp_path)
        assert r.returncode == 1, r.stderr + r.stdout  # 1: some messages failed
        rep = report(tmp_path)
        t = rep["totals"]
        assert t["failed"] == len(refused)
        assert t["copied"] + t["already_present"] == len(good)
        assert t["copied"] > 0 if attempt == 0 else t["copied"] == 0
        reasons = sorted(f["reason"] for f in rep["failures"])
        for words in refused.values():
            assert sum(words in reason for reason in reasons) == 1, reasons
            assert words in r.stdout + r.stderr
        sizes = sorted(f["size"] for f in rep["failures"])
        assert sizes == sorted(len(raw) for raw in refused)
        dst = snap(cyrus, "dst")
        shas = {hashlib.sha256(g).hexdigest() for g in good}
        assert dst["INBOX"] == Counter({m: n for m, n in src["INBOX"].items() if m.sha in shas})
        assert sum(dst["INBOX"].values()) == len(good)


def test_folder_name_cyrus_refuses_gets_a_plain_name_once(dovecot, cyrus, tmp_path):
    """Cyrus refuses "!" in names: the mover picks a plain name, says so, and a re-run
    uses that folder again (no second folder, no doubled messages)."""
    dovecot.deliver("src", "Wow!", message(1))
    dovecot.deliver("src", "Wow!", message(2))
    for attempt in range(2):
        r = move(dovecot, cyrus, tmp_path)
        assert r.returncode == 0, r.stderr + r.stdout
        assert "INBOX.Wow!" in r.stdout + r.stderr  # the refused name is named
        dst = snap(cyrus, "dst")
        made = [f for f in dst if f.startswith("INBOX.Wow")]
        assert made == ["INBOX.Wow_"], sorted(dst)
        assert dst["INBOX.Wow_"] == snap(dovecot, "src")["Wow!"]
        t = report(tmp_path)["totals"]
        assert t["copied"] + t["already_present"] == 2
        assert t["copied"] > 0 if attempt == 0 else t["copied"] == 0


def test_folder_name_cyrus_refuses_keeps_the_letters_it_takes(dovecot, cyrus, tmp_path):
    """Cyrus refuses "!" but takes accented letters: only "!" is replaced (the old
    fallback made every non-ASCII letter "_" too), the report names the final name and
    what was replaced, and a re-run uses that folder again."""
    name = "Wow! \u00dcn\u00efc\u00f6d\u00e9"
    dovecot.deliver("src", name, message(1))
    for attempt in range(2):
        r = move(dovecot, cyrus, tmp_path)
        assert r.returncode == 0, r.stderr + r.stdout
        dst = snap(cyrus, "dst")
        made = sorted(f for f in dst if f.startswith("INBOX.Wow"))
        assert made == [enc("INBOX.Wow_ \u00dcn\u00efc\u00f6d\u00e9")], made
        rep = report(tmp_path)
        (f,) = [f for f in rep["folders"] if f["source"] == name]
        assert f["dest"] == "INBOX.Wow_ \u00dcn\u00efc\u00f6d\u00e9"
        if attempt == 0:
            assert "'!' replaced by '_'" in r.stdout + r.stderr
        assert rep["totals"]["copied"] == (1 if attempt == 0 else 0)


# --------------------------------------------------------------------------- --verify-content


def test_verify_content_catches_a_server_that_changes_bytes(dovecot, cyrus_factory, tmp_path):
    """A stock Cyrus replaces 8-bit header bytes with "X": same size, so the ordinary
    verify (size, flags, INTERNALDATE) passes.  --verify-content reads the stored bytes
    back and reports exactly the altered messages; the others are content-verified."""
    cyrus = cyrus_factory(eight_bit_headers="munge")
    good = [message(1), message(2, body=b"fine")]
    altered = message(3, extra=" M\xe4rz")
    for raw in [good[0], altered, good[1]]:
        dovecot.deliver("src", "INBOX", raw, ("\\Seen",))

    r = move(dovecot, cyrus, tmp_path, "--folder", "INBOX")
    assert r.returncode == 0, r.stderr + r.stdout
    t = report(tmp_path)["totals"]
    assert t["copied"] == 3 and t["content_verified"] == 0
    # Issue 13: the first messages with 8-bit header bytes are read back (same size: only
    # their bytes tell); before, this went unseen without --verify-content.
    assert t["altered"] == 1 and t["verified"] == 2
    dst = snap(cyrus, "dst")["INBOX"]
    assert sum(dst.values()) == 3
    assert hashlib.sha256(altered).hexdigest() not in {m.sha for m in dst}  # it was changed

    # Issue 13: a change the mover recognises (8-bit header bytes replaced by "X") is
    # "stored, altered by the server" -- there, listed, not a failure (exit 0); before,
    # it was a failure (exit 1).
    for _ in range(2):  # the second time known from the state: reported, never re-sent
        r = move(dovecot, cyrus, tmp_path, "--folder", "INBOX", "--verify-content")
        assert r.returncode == 0, r.stderr + r.stdout
        assert "8-bit header bytes replaced by 'X'" in r.stdout
        rep = report(tmp_path)
        t = rep["totals"]
        assert t["copied"] == 0 and t["content_verified"] == 2 and t["failed"] == 0
        assert t["altered"] == 1
        (a,) = rep["altered_messages"]
        assert (a["size"], a["stored_size"]) == (len(altered), len(altered))
        assert a["what"] == "8-bit header bytes replaced by 'X'"
        assert sum(snap(cyrus, "dst")["INBOX"].values()) == 3  # nothing appended again


def test_cyrus_munge8bit_rerun_without_the_state_appends_nothing(dovecot, cyrus_factory, tmp_path):
    """Issue 13: Cyrus stores 8-bit header bytes as "X" (same size).  A re-run without
    the state file recognised no copy of those messages (other bytes) and appended each
    again; now the first such miss teaches the mover the change, and every altered copy
    is recognised by the SHA-256 of the source's bytes altered the same way."""
    cyrus = cyrus_factory(eight_bit_headers="munge")
    raws = [message(1), message(2, extra=" M\xe4rz"), message(3, extra=" K\xf6ln")]
    for raw in raws:
        dovecot.deliver("src", "INBOX", raw, ("\\Seen",))
    r = move(dovecot, cyrus, tmp_path, "--folder", "INBOX")
    assert r.returncode == 0, r.stderr + r.stdout
    before = snap(cyrus, "dst")["INBOX"]
    assert sum(before.values()) == 3
    for _ in range(2):
        (tmp_path / "state.sqlite").unlink()
        r = move(dovecot, cyrus, tmp_path, "--folder", "INBOX")
        assert r.returncode == 0, r.stderr + r.stdout
        assert snap(cyrus, "dst")["INBOX"] == before  # nothing appended again
        rep = report(tmp_path)
        t = rep["totals"]
        assert (t["copied"], t["already_present"], t["failed"]) == (0, 3, 0)
        assert t["altered"] == 2
        assert {a["what"] for a in rep["altered_messages"]} == {
            "8-bit header bytes replaced by 'X'"
        }


def test_verify_content_on_a_faithful_server_verifies_everything(dovecot, dovecot_dot, tmp_path):
    """First run: the hashes taken while copying are compared with the bytes read back;
    a re-run (nothing to copy) reads both sides; every message passes both times."""
    load_dovecot(dovecot, dovecot_mail())
    total = sum(sum(c.values()) for c in snap(dovecot, "src").values())
    for attempt in range(2):
        r = move(dovecot, dovecot_dot, tmp_path, "--verify-content")
        assert r.returncode == 0, r.stderr + r.stdout
        t = report(tmp_path)["totals"]
        assert t["failed"] == 0
        assert t["content_verified"] == total == t["verified"]
        assert t["copied"] == (total if attempt == 0 else 0)
